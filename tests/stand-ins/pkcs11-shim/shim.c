/* A PKCS#11 module for tests that forwards every call to a real module
 * (SoftHSM2) and, on command, makes some of them fail or wait - what a
 * network HSM does to its clients now and then. NOT a token: it holds no
 * key and adds no security; the tests load it in kmsd's place
 * (kms.hsm.pkcs11.library) to drive kmsd's PKCS#11 error handling.
 *
 * Environment (read at C_GetFunctionList):
 *   P11SHIM_TARGET   the real module (required)
 *   P11SHIM_CONTROL  a file holding one command, read again whenever it changes:
 *                      ok                        forward everything
 *                      CKR_DEVICE_ERROR [N]      the next N (default: every) C_EncryptInit/
 *                      CKR_SESSION_HANDLE_INVALID [N]   C_DecryptInit answer that, unforwarded
 *                      down                      every session call and C_OpenSession answer
 *                                                CKR_DEVICE_ERROR until the file changes
 *                      slow MS [N]               the next N C_Encrypt/C_Decrypt wait MS first
 *                      latency_us US             every C_Encrypt/C_Decrypt waits US microseconds
 *                                                first, off the CPU: a network HSM's round trip
 *                                                (tests/bench/pkcs11-unwrap.sh)
 *   P11SHIM_STATE    a file rewritten (atomically) whenever a session opens or
 *                    closes or a call is changed: "open=N opened=N closed=N injected=N"
 *
 * Sessions are counted so that a test can tell a leak: opened - closed is
 * what the real module holds open for kmsd. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static const char *control_path, *state_path;
static struct stat control_seen;
static CK_RV mode_rv;  /* CKR_OK: none */
static int mode_down;  /* everything fails */
static long mode_slow_ms;
static long mode_latency_us;
static long remaining; /* -1: every call */
static unsigned long opened, closed, injected;

static void write_state(void)
{
    if (state_path == NULL)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", state_path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f, "open=%lu opened=%lu closed=%lu injected=%lu\n", opened - closed, opened, closed, injected);
    fclose(f);
    rename(tmp, state_path);
}

/* Under mu: the control file again, if it changed. */
static void read_control(void)
{
    struct stat st;
    if (control_path == NULL || stat(control_path, &st) != 0)
        return;
    if (st.st_mtim.tv_sec == control_seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == control_seen.st_mtim.tv_nsec &&
        st.st_size == control_seen.st_size && st.st_ino == control_seen.st_ino)
        return;
    control_seen = st;
    char line[128] = "";
    FILE *f = fopen(control_path, "r");
    if (f != NULL) {
        if (fgets(line, sizeof(line), f) == NULL)
            line[0] = '\0';
        fclose(f);
    }
    char word[64] = "";
    long a = -1, b = -1;
    int n = sscanf(line, "%63s %ld %ld", word, &a, &b);
    mode_rv = CKR_OK;
    mode_down = 0;
    mode_slow_ms = 0;
    mode_latency_us = 0;
    remaining = -1;
    if (n < 1 || strcmp(word, "ok") == 0)
        return;
    if (strcmp(word, "down") == 0) {
        mode_down = 1;
    } else if (strcmp(word, "slow") == 0 && n >= 2) {
        mode_slow_ms = a;
        remaining = n >= 3 ? b : -1;
    } else if (strcmp(word, "latency_us") == 0 && n >= 2) {
        mode_latency_us = a;
    } else if (strcmp(word, "CKR_DEVICE_ERROR") == 0) {
        mode_rv = CKR_DEVICE_ERROR;
        remaining = n >= 2 ? a : -1;
    } else if (strcmp(word, "CKR_SESSION_HANDLE_INVALID") == 0) {
        mode_rv = CKR_SESSION_HANDLE_INVALID;
        remaining = n >= 2 ? a : -1;
    }
}

/* Under mu: one use of the command; 1 when it applies to this call. */
static int take(void)
{
    if (remaining == 0)
        return 0;
    if (remaining > 0)
        remaining--;
    injected++;
    write_state();
    return 1;
}

static CK_RV injected_rv(int init_call)
{
    pthread_mutex_lock(&mu);
    read_control();
    CK_RV rv = CKR_OK;
    if (mode_down) {
        injected++;
        rv = CKR_DEVICE_ERROR;
    } else if (init_call && mode_rv != CKR_OK && take()) {
        rv = mode_rv;
    }
    pthread_mutex_unlock(&mu);
    return rv;
}

static void maybe_slow(void)
{
    pthread_mutex_lock(&mu);
    read_control();
    long us = mode_slow_ms > 0 && take() ? mode_slow_ms * 1000 : mode_latency_us;
    pthread_mutex_unlock(&mu);
    if (us > 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}

static CK_RV shim_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify, CK_SESSION_HANDLE *s)
{
    CK_RV rv = injected_rv(0);
    if (rv != CKR_OK)
        return rv;
    rv = real->C_OpenSession(slot, flags, app, notify, s);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&mu);
        opened++;
        write_state();
        pthread_mutex_unlock(&mu);
    }
    return rv;
}

static CK_RV shim_CloseSession(CK_SESSION_HANDLE s)
{
    CK_RV rv = real->C_CloseSession(s);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&mu);
        closed++;
        write_state();
        pthread_mutex_unlock(&mu);
    }
    return rv;
}

static CK_RV shim_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV rv = real->C_CloseAllSessions(slot);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&mu);
        closed = opened;
        write_state();
        pthread_mutex_unlock(&mu);
    }
    return rv;
}

static CK_RV shim_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO *info)
{
    CK_RV rv = injected_rv(0);
    return rv != CKR_OK ? rv : real->C_GetSessionInfo(s, info);
}

static CK_RV shim_EncryptInit(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k)
{
    CK_RV rv = injected_rv(1);
    return rv != CKR_OK ? rv : real->C_EncryptInit(s, m, k);
}

static CK_RV shim_DecryptInit(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k)
{
    CK_RV rv = injected_rv(1);
    return rv != CKR_OK ? rv : real->C_DecryptInit(s, m, k);
}

static CK_RV shim_Encrypt(CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG in_len, CK_BYTE *out, CK_ULONG *out_len)
{
    maybe_slow();
    return real->C_Encrypt(s, in, in_len, out, out_len);
}

static CK_RV shim_Decrypt(CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG in_len, CK_BYTE *out, CK_ULONG *out_len)
{
    maybe_slow();
    return real->C_Decrypt(s, in, in_len, out, out_len);
}

static CK_RV shim_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n)
{
    CK_RV rv = injected_rv(0);
    return rv != CKR_OK ? rv : real->C_FindObjectsInit(s, t, n);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out)
{
    pthread_mutex_lock(&mu);
    if (real == NULL) {
        const char *target = getenv("P11SHIM_TARGET");
        void *dl = target != NULL ? dlopen(target, RTLD_NOW | RTLD_LOCAL) : NULL;
        CK_C_GetFunctionList get = NULL;
        if (dl != NULL)
            *(void **)&get = dlsym(dl, "C_GetFunctionList");
        if (get == NULL || get(&real) != CKR_OK || real == NULL) {
            real = NULL;
            pthread_mutex_unlock(&mu);
            fprintf(stderr, "pkcs11 shim: cannot load P11SHIM_TARGET=%s\n", target ? target : "(unset)");
            return CKR_GENERAL_ERROR;
        }
        control_path = getenv("P11SHIM_CONTROL");
        state_path = getenv("P11SHIM_STATE");
        shim = *real;
        shim.C_OpenSession = shim_OpenSession;
        shim.C_CloseSession = shim_CloseSession;
        shim.C_CloseAllSessions = shim_CloseAllSessions;
        shim.C_GetSessionInfo = shim_GetSessionInfo;
        shim.C_EncryptInit = shim_EncryptInit;
        shim.C_DecryptInit = shim_DecryptInit;
        shim.C_Encrypt = shim_Encrypt;
        shim.C_Decrypt = shim_Decrypt;
        shim.C_FindObjectsInit = shim_FindObjectsInit;
        write_state();
    }
    pthread_mutex_unlock(&mu);
    *out = &shim;
    return CKR_OK;
}
