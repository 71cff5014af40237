/* libFuzzer target for the readers of Vault's replies (hsm/vault/vault_json.h).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_vault_json.c \
 *       hsm/vault/vault_json.c common/base64.c common/buf.c common/error.c common/secret.c \
 *       -ljansson -lcrypto -lpthread -o fuzz_vault_json
 *   ./fuzz_vault_json tests/fuzz/corpus/vault_json
 *
 * Each input is a reply body: it is loaded as strict JSON and, when that
 * works, handed to every reader (key metadata, ciphertext, plaintext, batch,
 * lookup-self, auth, IMDS token and instance, health, errors). The raw input
 * is also checked as a "vault:vN:" ciphertext.
 *
 * Checks beyond "no crash": every failure is KMS_ERR_BACKEND (KMS_ERR_MALFORMED
 * for the ciphertext syntax) with no output left behind; every success
 * satisfies the reader's contract (versions > 0, lengths within caps, strings
 * NUL-terminated and printable where promised). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hsm/vault/vault_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static int printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return 0;
    return 1;
}

static void readers(json_t *root)
{
    char err[KMS_VAULT_ERROR_MAX];
    kms_vault_json_first_error(root, err, sizeof(err));
    check(strlen(err) < sizeof(err));
    for (const char *p = err; *p; p++)
        check(*p >= 0x20 && *p <= 0x7e);

    struct kms_vault_key_meta m;
    kms_rc rc = kms_vault_json_key(root, &m);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    if (rc == KMS_OK)
        check(m.latest_version > 0 && m.type[0] != '\0' && printable(m.type));

    uint8_t ct[KMS_BACKEND_CT_MAX];
    size_t len = 1;
    uint32_t v = 1;
    rc = kms_vault_json_ciphertext(root, ct, sizeof(ct), &len, &v);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    if (rc == KMS_OK) {
        uint32_t again = 0;
        check(len <= sizeof(ct) && v > 0);
        check(kms_vault_ct_parse(ct, len, &again) == KMS_OK && again == v);
    } else {
        check(len == 0 && v == 0);
    }

    json_t *results = NULL;
    rc = kms_vault_json_batch(root, 2, &results);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    check((rc == KMS_OK) == (results != NULL));
    for (size_t i = 0; rc == KMS_OK && i < 2; i++) {
        json_t *item = json_array_get(results, i);
        kms_vault_json_item_error(item, err, sizeof(err));
        kms_rc irc = kms_vault_json_ct_item(item, ct, sizeof(ct), &len, &v);
        check(irc == KMS_OK || irc == KMS_ERR_BACKEND);
    }

    struct kms_vault_token_info ti;
    rc = kms_vault_json_lookup_self(root, &ti);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    if (rc == KMS_OK)
        check(ti.ttl >= 0 && (ti.renewable == 0 || ti.renewable == 1));

    struct kms_vault_instance in;
    rc = kms_vault_json_imds_instance(root, &in);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    if (rc == KMS_OK)
        check(printable(in.subscription_id) && in.vm_name[0] != '\0');

    struct kms_vault_health h = {.status = 200};
    rc = kms_vault_json_health(root, &h);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    check(h.status == 200);

    /* the readers below wipe what they read: last */
    struct kms_secret *s = NULL;
    long long n = 0;
    int renewable = 0;
    rc = kms_vault_json_auth(root, &s, &n, &renewable);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    check((rc == KMS_OK) == (s != NULL));
    if (rc == KMS_OK)
        check(kms_secret_len(s) > 0 && kms_secret_len(s) <= KMS_VAULT_TOKEN_MAX && n >= 0);
    kms_secret_free(&s);
    rc = kms_vault_json_imds_token(root, &s, &n);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    check((rc == KMS_OK) == (s != NULL));
    kms_secret_free(&s);
    rc = kms_vault_json_plaintext(root, &s);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    check((rc == KMS_OK) == (s != NULL));
    if (rc == KMS_OK)
        check(kms_secret_len(s) > 0);
    kms_secret_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t v = 7;
    kms_rc rc = kms_vault_ct_parse(data, size, &v);
    check(rc == KMS_OK || rc == KMS_ERR_MALFORMED);
    check(rc == KMS_OK ? v > 0 : v == 0);

    json_t *root = (json_t *)1;
    rc = kms_vault_json_load(data, size, &root);
    check(rc == KMS_OK || rc == KMS_ERR_BACKEND);
    if (rc != KMS_OK) {
        check(root == NULL);
        return 0;
    }
    check(json_is_object(root));
    readers(root);
    json_decref(root);
    return 0;
}
