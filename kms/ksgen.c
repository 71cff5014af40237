#include "kms/ksgen.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "common/aead.h"
#include "common/buf.h"
#include "common/cursor.h"
#include "common/hex.h"
#include "common/token.h"
#include "kms/keystore_int.h"

#define MAGIC "KMSKS1"
#define MAGIC_LEN 6
#define KS_LABEL "kmsd cluster keystore v1"

const char *kms_ksgen_reject_name(enum kms_ksgen_reject r)
{
    switch (r) {
    case KMS_KSGEN_OK:
        return "ok";
    case KMS_KSGEN_MALFORMED:
        return "malformed";
    case KMS_KSGEN_CLUSTER:
        return "cluster";
    case KMS_KSGEN_GENERATION:
        return "generation";
    case KMS_KSGEN_AUTH:
        return "authentication";
    case KMS_KSGEN_STALE:
        return "stale";
    case KMS_KSGEN_INVALID:
        return "invalid";
    }
    return "unknown";
}

void kms_ksgen_free_bytes(uint8_t **p, size_t len)
{
    if (*p != NULL)
        kms_wipe(*p, len);
    free(*p);
    *p = NULL;
}

static kms_rc header(struct kms_buf *b, const char *cluster, uint64_t gen, enum kms_keystore_format f)
{
    KMS_GUARD(kms_buf_append(b, MAGIC, MAGIC_LEN));
    KMS_GUARD(kms_buf_append_u8(b, (uint8_t)strlen(cluster)));
    KMS_GUARD(kms_buf_append_str(b, cluster));
    KMS_GUARD(kms_buf_append_u64be(b, gen));
    return kms_buf_append_u8(b, (uint8_t)f);
}

kms_rc kms_ksgen_seal(const struct kms_secret *cluster_key, const char *cluster, const struct kms_ksgen_meta *m,
                      const uint8_t *ks, size_t ks_len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!kms_token_valid(cluster, KMS_KSGEN_NAME_MAX, "._-"))
        return kms_fail(KMS_ERR_INVALID_FIELD, "keystore generation: cluster name must be 1..64 of [A-Za-z0-9._-]");
    size_t wl = strlen(m->who), el = strlen(m->edit);
    if (wl > KMS_KSGEN_WHO_MAX || el > KMS_KSGEN_EDIT_MAX || ks_len == 0 || ks_len > KMS_KS_MAX_FILE ||
        m->generation == 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "keystore generation: empty or oversized keystore, who or edit");
    struct kms_secret *k = NULL;
    KMS_GUARD(kms_aead_derive(cluster_key, KS_LABEL, &k));
    struct kms_buf pt, blob;
    kms_buf_init(&pt, KMS_KSGEN_BLOB_MAX);
    kms_buf_init(&blob, KMS_KSGEN_BLOB_MAX);
    kms_rc rc = kms_buf_append_u64be(&pt, (uint64_t)m->time);
    if (rc == KMS_OK)
        rc = kms_buf_append_u8(&pt, (uint8_t)wl);
    if (rc == KMS_OK)
        rc = kms_buf_append(&pt, m->who, wl);
    if (rc == KMS_OK)
        rc = kms_buf_append_u16be(&pt, (uint16_t)el);
    if (rc == KMS_OK)
        rc = kms_buf_append(&pt, m->edit, el);
    if (rc == KMS_OK)
        rc = kms_buf_append(&pt, ks, ks_len);
    struct kms_buf hdr;
    kms_buf_init(&hdr, 256);
    if (rc == KMS_OK)
        rc = header(&hdr, cluster, m->generation, m->format);
    if (rc == KMS_OK)
        rc = kms_buf_append(&blob, hdr.data, hdr.len);
    /* why: the AAD is the header's own buffer; blob's storage moves as it grows */
    if (rc == KMS_OK)
        rc = kms_aead_seal(k, hdr.data, hdr.len, pt.data, pt.len, &blob);
    kms_secret_free(&k);
    kms_buf_free(&hdr);
    kms_buf_free(&pt); /* wipes */
    if (rc != KMS_OK) {
        kms_buf_free(&blob);
        return rc;
    }
    *out = blob.data; /* why: the buffer's storage is handed over, not copied */
    *out_len = blob.len;
    return KMS_OK;
}

static kms_rc refuse(enum kms_ksgen_reject r, enum kms_ksgen_reject *why, const char *detail)
{
    *why = r;
    return kms_fail(KMS_ERR_UNWRAP, "keystore generation refused (%s): %s", kms_ksgen_reject_name(r), detail);
}

kms_rc kms_ksgen_open(const struct kms_secret *cluster_key, const char *cluster, uint64_t expect_gen,
                      const uint8_t *blob, size_t len, struct kms_ksgen_meta *m, uint8_t **ks, size_t *ks_len,
                      enum kms_ksgen_reject *why)
{
    *ks = NULL;
    *ks_len = 0;
    *why = KMS_KSGEN_OK;
    memset(m, 0, sizeof(*m));
    if (len > KMS_KSGEN_BLOB_MAX)
        return refuse(KMS_KSGEN_MALFORMED, why, "larger than a keystore can be");
    struct kms_cursor c;
    kms_cursor_init(&c, blob, len);
    const uint8_t *magic, *name;
    uint8_t nlen = 0, fmt = 0;
    uint64_t gen = 0;
    if (kms_cursor_bytes(&c, MAGIC_LEN, &magic) != KMS_OK || memcmp(magic, MAGIC, MAGIC_LEN) != 0 ||
        kms_cursor_u8(&c, &nlen) != KMS_OK || kms_cursor_bytes(&c, nlen, &name) != KMS_OK ||
        kms_cursor_u64be(&c, &gen) != KMS_OK || kms_cursor_u8(&c, &fmt) != KMS_OK || fmt > KMS_KEYSTORE_PEM ||
        kms_cursor_remaining(&c) < KMS_AEAD_OVERHEAD + 8 + 1 + 2 + 1)
        return refuse(KMS_KSGEN_MALFORMED, why, "not a sealed keystore generation");
    if (strlen(cluster) != nlen || memcmp(name, cluster, nlen) != 0)
        return refuse(KMS_KSGEN_CLUSTER, why, "sealed for another cluster name");
    if (gen != expect_gen)
        return refuse(KMS_KSGEN_GENERATION, why, "its generation is not the one it is stored as");
    size_t hlen = c.pos;
    size_t sealed = kms_cursor_remaining(&c);
    uint8_t *pt = malloc(sealed);
    if (pt == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "keystore generation");
    struct kms_secret *k = NULL;
    kms_rc rc = kms_aead_derive(cluster_key, KS_LABEL, &k);
    size_t ptlen = 0;
    if (rc == KMS_OK)
        rc = kms_aead_open(k, blob, hlen, &c, sealed, pt, sealed, &ptlen);
    kms_secret_free(&k);
    if (rc != KMS_OK) {
        free(pt);
        if (rc == KMS_ERR_UNWRAP)
            return refuse(KMS_KSGEN_AUTH, why, "does not authenticate under this cluster key (changed, or sealed "
                                               "under another key)");
        return rc;
    }
    struct kms_cursor p;
    kms_cursor_init(&p, pt, ptlen);
    uint64_t t = 0;
    uint8_t wl = 0;
    uint16_t el = 0;
    const uint8_t *who, *edit;
    if (kms_cursor_u64be(&p, &t) != KMS_OK || kms_cursor_u8(&p, &wl) != KMS_OK ||
        kms_cursor_bytes(&p, wl, &who) != KMS_OK || kms_cursor_u16be(&p, &el) != KMS_OK ||
        el > KMS_KSGEN_EDIT_MAX || kms_cursor_bytes(&p, el, &edit) != KMS_OK || kms_cursor_remaining(&p) == 0) {
        kms_ksgen_free_bytes(&pt, ptlen);
        return refuse(KMS_KSGEN_MALFORMED, why, "sealed content is malformed");
    }
    m->generation = gen;
    m->time = (int64_t)t;
    memcpy(m->who, who, wl);
    memcpy(m->edit, edit, el);
    m->format = (enum kms_keystore_format)fmt;
    size_t off = p.pos, n = ptlen - off;
    memmove(pt, pt + off, n);
    kms_wipe(pt + n, ptlen - n);
    kms_hex_sha256(pt, n, m->sha256);
    *ks = pt;
    *ks_len = n;
    return KMS_OK;
}

/* Inside its validity period now; the detail names the alias and date. */
static kms_rc valid_now(const char *name, const char *alias, X509 *x)
{
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s: the certificate of '%s' has expired", name, alias);
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s: the certificate of '%s' is not valid yet", name, alias);
    return KMS_OK;
}

kms_rc kms_ksgen_check(const uint8_t *ks, size_t len, const char *name, const char *password,
                       const char *server_alias, const char *client_alias, struct kms_keystore **out)
{
    if (out != NULL)
        *out = NULL;
    struct kms_keystore *k = NULL;
    KMS_GUARD(kms_keystore_load_mem(ks, len, name, password, &k));
    kms_rc rc = KMS_OK;
    const struct kms_ks_entry *e = kms_keystore_find(k, server_alias);
    if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY)
        rc = kms_fail(KMS_ERR_ALIAS_NOT_FOUND, "%s has no private-key entry '%s' (kms.server.key.alias)", name,
                      server_alias);
    else if (X509_check_private_key(kms_ks_entry_cert(e), kms_ks_entry_key(e)) != 1)
        rc = kms_fail(KMS_ERR_INVALID_FIELD, "%s: the private key of '%s' does not match its certificate", name,
                      server_alias);
    else
        rc = valid_now(name, server_alias, kms_ks_entry_cert(e));
    if (rc == KMS_OK && client_alias != NULL && client_alias[0] != '\0' &&
        (e = kms_keystore_find(k, client_alias)) != NULL)
        rc = valid_now(name, client_alias, kms_ks_entry_cert(e));
    if (rc != KMS_OK || out == NULL)
        kms_keystore_free(&k);
    else
        *out = k;
    ERR_clear_error();
    return rc;
}
