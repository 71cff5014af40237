/* The token's own ceiling, for tests/bench/pkcs11-unwrap.sh: THREADS threads,
 * each with a session of its own, calling C_DecryptInit + C_Decrypt
 * (CKM_AES_GCM, 12-byte IV, 128-bit tag, 64 bytes of AAD) on a 32-byte key
 * wrapped under the newest master key labelled KEY - what kmsd asks of the
 * token for one cache-miss unwrap, and nothing else. Prints one JSON line:
 * {"threads":T,"seconds":S,"decrypts":N,"per_s":R,"errors":E}.
 *   p11_decrypt_loop MODULE TOKEN_LABEL PIN_FILE KEY THREADS SECONDS */
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static CK_FUNCTION_LIST *f;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static unsigned char iv[12], aad[64], ct[48];
static double seconds;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
    pthread_t t;
    unsigned long n, errors;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    CK_SESSION_HANDLE s;
    if (f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) {
        w->errors++;
        return NULL;
    }
    CK_GCM_PARAMS gp = {iv, sizeof(iv), sizeof(iv) * 8, aad, sizeof(aad), 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    unsigned char out[64];
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < 64; i++) {
            CK_ULONG len = sizeof(out);
            if (f->C_DecryptInit(s, &m, key) != CKR_OK || f->C_Decrypt(s, ct, sizeof(ct), out, &len) != CKR_OK ||
                len != 32)
                w->errors++;
            else
                w->n++;
        }
    }
    f->C_CloseSession(s);
    return NULL;
}

static int die(const char *what, CK_RV rv)
{
    fprintf(stderr, "p11_decrypt_loop: %s: CKR 0x%lx\n", what, (unsigned long)rv);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: p11_decrypt_loop MODULE TOKEN_LABEL PIN_FILE KEY THREADS SECONDS\n");
        return 2;
    }
    int threads = atoi(argv[5]);
    seconds = atof(argv[6]);
    char pin[256] = "";
    FILE *pf = fopen(argv[3], "r");
    if (pf == NULL || fgets(pin, sizeof(pin), pf) == NULL)
        return die("the PIN file", 0);
    fclose(pf);
    pin[strcspn(pin, "\r\n")] = '\0';
    void *dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get = NULL;
    if (dl != NULL)
        *(void **)&get = dlsym(dl, "C_GetFunctionList");
    if (get == NULL || get(&f) != CKR_OK)
        return die("loading the module", 0);
    CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    CK_RV rv = f->C_Initialize(&init);
    if (rv != CKR_OK)
        return die("C_Initialize", rv);
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    if ((rv = f->C_GetSlotList(CK_TRUE, slots, &ns)) != CKR_OK)
        return die("C_GetSlotList", rv);
    int found = 0;
    for (CK_ULONG i = 0; i < ns && !found; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        size_t n = strlen(argv[2]);
        found = n <= sizeof(ti.label) && memcmp(ti.label, argv[2], n) == 0 &&
                (n == sizeof(ti.label) || ti.label[n] == ' ');
        slot = slots[i];
    }
    if (!found)
        return die("no such token", 0);
    CK_SESSION_HANDLE s;
    if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s)) != CKR_OK)
        return die("C_OpenSession", rv);
    if ((rv = f->C_Login(s, CKU_USER, (unsigned char *)pin, strlen(pin))) != CKR_OK)
        return die("C_Login", rv);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, argv[4], strlen(argv[4])}};
    CK_OBJECT_HANDLE h[64];
    CK_ULONG nh = 0;
    if (f->C_FindObjectsInit(s, t, 2) != CKR_OK || f->C_FindObjects(s, h, 64, &nh) != CKR_OK || nh == 0)
        return die("finding the key", 0);
    f->C_FindObjectsFinal(s);
    /* the newest version: the highest 4-byte CKA_ID, as kmsd picks it */
    unsigned long best = 0;
    key = h[0];
    for (CK_ULONG i = 0; i < nh; i++) {
        unsigned char id[4];
        CK_ATTRIBUTE a = {CKA_ID, id, sizeof(id)};
        if (f->C_GetAttributeValue(s, h[i], &a, 1) == CKR_OK && a.ulValueLen == 4) {
            unsigned long v = (unsigned long)id[0] << 24 | (unsigned long)id[1] << 16 | id[2] << 8 | id[3];
            if (v > best) {
                best = v;
                key = h[i];
            }
        }
    }
    memset(iv, 7, sizeof(iv));
    memset(aad, 9, sizeof(aad));
    unsigned char pt[32];
    memset(pt, 0x5a, sizeof(pt));
    CK_GCM_PARAMS gp = {iv, sizeof(iv), sizeof(iv) * 8, aad, sizeof(aad), 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    CK_ULONG len = sizeof(ct);
    if ((rv = f->C_EncryptInit(s, &m, key)) != CKR_OK || (rv = f->C_Encrypt(s, pt, sizeof(pt), ct, &len)) != CKR_OK)
        return die("C_Encrypt", rv);
    struct worker *w = calloc((size_t)threads, sizeof(*w));
    double start = now();
    for (int i = 0; i < threads; i++)
        pthread_create(&w[i].t, NULL, run, &w[i]);
    unsigned long total = 0, errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].t, NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double took = now() - start;
    printf("{\"threads\":%d,\"seconds\":%.2f,\"decrypts\":%lu,\"per_s\":%.0f,\"errors\":%lu}\n", threads, took, total,
           (double)total / took, errors);
    free(w);
    f->C_CloseSession(s);
    f->C_Finalize(NULL);
    return errors == 0 ? 0 : 1;
}
