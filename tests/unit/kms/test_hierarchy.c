/* kms/hierarchy.c against the soft backend (SPEC §2, §3): the chain, every
 * way of tampering with or replaying a wrapped key, the generic primitive,
 * rotation and rewrap, and which errors pass through. */
#include "kms/hierarchy.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base64.h"
#include "hsm/soft/soft.h"
#include "kms/wrapped.h"

/* A backend that forwards to the soft one, and can be told to fail. */
struct fwd {
    struct kms_backend base;
    struct kms_backend *inner;
    kms_rc decrypt_rc; /* KMS_OK = forward */
    kms_rc encrypt_rc;
};

static kms_rc fwd_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct fwd *f = (struct fwd *)b;
    return f->inner->ops->resolve(f->inner, name, out);
}

static kms_rc fwd_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                          size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct fwd *f = (struct fwd *)b;
    if (f->encrypt_rc != KMS_OK)
        return kms_fail(f->encrypt_rc, "test: encrypt fails");
    return f->inner->ops->encrypt(f->inner, ref, aad, aad_len, pt, ct, ct_cap, ct_len);
}

static kms_rc fwd_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                          size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct fwd *f = (struct fwd *)b;
    if (f->decrypt_rc != KMS_OK)
        return kms_fail(f->decrypt_rc, "test: decrypt fails");
    return f->inner->ops->decrypt(f->inner, ref, aad, aad_len, ct, ct_len, pt);
}

static kms_rc fwd_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct fwd *f = (struct fwd *)b;
    return f->inner->ops->describe(f->inner, name, out);
}

static kms_rc fwd_probe(struct kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static void fwd_destroy(struct kms_backend *b) { (void)b; }

static const struct kms_backend_ops fwd_ops = {
    .name = "soft",
    .kind = KMS_BACKEND_SOFT,
    .resolve = fwd_resolve,
    .encrypt = fwd_encrypt,
    .decrypt = fwd_decrypt,
    .describe = fwd_describe,
    .probe = fwd_probe,
    .destroy = fwd_destroy,
};

static char dir[64];
static char path[128];
static struct kms_backend *soft;
static struct fwd fwd;
static struct kms_hierarchy *hier;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-test-hier-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/soft.keys", dir);
    cr_assert_eq(kms_soft_open(path, "test-password", "master-a", &soft), KMS_OK, "%s", kms_error_detail());
    fwd.base.ops = &fwd_ops;
    fwd.inner = soft;
    fwd.decrypt_rc = KMS_OK;
    fwd.encrypt_rc = KMS_OK;
    cr_assert_eq(kms_hierarchy_new(&fwd.base, NULL, "master-a", &hier), KMS_OK);
}

static void teardown(void)
{
    kms_hierarchy_free(&hier);
    kms_hierarchy_free(&hier); /* sets NULL, takes NULL */
    kms_backend_free(&soft);
    unlink(path);
    rmdir(dir);
}

struct chain {
    char *c, *u, *w;
};

static void make_chain(const char *site, struct chain *ch)
{
    cr_assert_eq(kms_hierarchy_create_customer(hier, site, &ch->c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_user(hier, site, ch->c, &ch->u), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_workspace(hier, site, ch->c, ch->u, &ch->w), KMS_OK, "%s",
                 kms_error_detail());
}

static void free_chain(struct chain *ch)
{
    free(ch->c);
    free(ch->u);
    free(ch->w);
}

static kms_rc unwrap_chain(const char *site, const char *c, const char *u, const char *w, struct kms_secret **k)
{
    kms_rc rc = kms_hierarchy_unwrap_workspace(hier, site, c, u, w, k);
    if (rc != KMS_OK)
        cr_assert_null(*k);
    return rc;
}

Test(hierarchy, full_chain, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k1 = NULL, *k2 = NULL, *k3 = NULL;
    char *w2 = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k1), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_secret_len(k1), KMS_KEY_BYTES);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k2), KMS_OK);
    cr_assert(kms_secret_equal(k1, k2), "the same workspace key twice");

    cr_assert_eq(kms_hierarchy_create_workspace(hier, "site-a", ch.c, ch.u, &w2), KMS_OK);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, w2, &k3), KMS_OK);
    cr_assert_not(kms_secret_equal(k1, k3), "two workspaces, two keys");

    struct kms_wrapped_info ci, ui, wi;
    cr_assert_eq(kms_wrapped_describe(ch.c, &ci), KMS_OK);
    cr_assert_eq(kms_wrapped_describe(ch.u, &ui), KMS_OK);
    cr_assert_eq(kms_wrapped_describe(ch.w, &wi), KMS_OK);
    cr_assert_str_eq(ci.level, "customer");
    cr_assert_str_eq(ci.wrapper, "soft");
    cr_assert_str_eq(ci.master_name, "master-a");
    cr_assert_eq(ci.master_version, 1);
    cr_assert_str_eq(ui.parent_id, ci.key_id);
    cr_assert_str_eq(wi.parent_id, ui.key_id);
    cr_assert_str_eq(wi.site_id, "site-a");
    kms_secret_free(&k1);
    kms_secret_free(&k2);
    kms_secret_free(&k3);
    free(w2);
    free_chain(&ch);
}

/* Every bit of every byte of the binary form of one of the keys. */
static void flip_every_bit(const char *site, struct chain *ch, int which)
{
    const char *orig = which == 0 ? ch->c : which == 1 ? ch->u : ch->w;
    struct kms_wrapped *w = NULL;
    cr_assert_eq(kms_wrapped_parse(orig, &w), KMS_OK);
    size_t n = w->blob_len;
    uint8_t *blob = malloc(n);
    memcpy(blob, w->blob, n);
    kms_wrapped_free(&w);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            blob[i] ^= (uint8_t)(1u << bit);
            char *text = NULL;
            cr_assert_eq(kms_wrapped_to_text(blob, n, &text), KMS_OK);
            struct kms_secret *k = NULL;
            kms_rc rc = unwrap_chain(site, which == 0 ? text : ch->c, which == 1 ? text : ch->u,
                                     which == 2 ? text : ch->w, &k);
            cr_assert_eq(rc, KMS_ERR_UNWRAP, "key %d byte %zu bit %d: %s (%s)", which, i, bit, kms_error_name(rc),
                         kms_error_detail());
            free(text);
            blob[i] ^= (uint8_t)(1u << bit);
        }
    }
    free(blob);
}

Test(hierarchy, any_flipped_bit_fails, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    make_chain("site-a", &ch);
    for (int which = 0; which < 3; which++)
        flip_every_bit("site-a", &ch, which);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k), KMS_OK, "the originals still work");
    kms_secret_free(&k);
    free_chain(&ch);
}

Test(hierarchy, any_flipped_bit_fails_with_a_cache, .init = setup, .fini = teardown, .timeout = 60)
{
    /* the customer key is cached (by digest of the untouched blob) */
    struct kms_cache *cache = NULL;
    struct chain ch;
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_cache_local_new(16, 0, 0, &cache), KMS_OK);
    kms_hierarchy_free(&hier);
    cr_assert_eq(kms_hierarchy_new(&fwd.base, cache, "master-a", &hier), KMS_OK);
    make_chain("site-a", &ch);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k), KMS_OK);
    kms_secret_free(&k);
    flip_every_bit("site-a", &ch, 0);
    flip_every_bit("site-a", &ch, 1);
    free_chain(&ch);
    kms_hierarchy_free(&hier);
    kms_cache_free(&cache);
}

Test(hierarchy, edited_text_fails, .init = setup, .fini = teardown, .timeout = 60)
{
    /* every character of the text replaced by another base64 character */
    struct chain ch;
    struct kms_secret *k = NULL;
    make_chain("site-a", &ch);
    char *t = strdup(ch.w);
    for (size_t i = 0; t[i] != '\0'; i++) {
        char save = t[i];
        t[i] = save == 'A' ? 'B' : 'A';
        cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, t, &k), KMS_ERR_UNWRAP, "char %zu", i);
        t[i] = save;
    }
    free(t);
    free_chain(&ch);
}

Test(hierarchy, replayed_as_another_level, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    char *out = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.u, &k), KMS_ERR_UNWRAP, "user key as workspace key");
    cr_assert(strstr(kms_error_detail(), "expected a workspace key") != NULL, "%s", kms_error_detail());
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.w, ch.w, &k), KMS_ERR_UNWRAP, "workspace key as user key");
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.c, ch.w, &k), KMS_ERR_UNWRAP, "customer key as user key");
    cr_assert_eq(unwrap_chain("site-a", ch.u, ch.u, ch.w, &k), KMS_ERR_UNWRAP, "user key as customer key");
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-a", ch.u, &out), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_hierarchy_create_workspace(hier, "site-a", ch.c, ch.w, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    free_chain(&ch);
}

Test(hierarchy, another_site_fails, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    char *out = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(unwrap_chain("site-b", ch.c, ch.u, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert(strstr(kms_error_detail(), "another site") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-b", ch.c, &out), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_hierarchy_create_workspace(hier, "site-b", ch.c, ch.u, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);

    /* a user key of site b under site a's chain */
    struct chain other;
    make_chain("site-b", &other);
    cr_assert_eq(unwrap_chain("site-a", ch.c, other.u, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert_eq(unwrap_chain("site-b", other.c, other.u, ch.w, &k), KMS_ERR_UNWRAP);
    free_chain(&other);
    free_chain(&ch);
}

Test(hierarchy, user_key_under_another_customer_key, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    char *c2 = NULL, *out = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(kms_hierarchy_create_customer(hier, "site-a", &c2), KMS_OK);
    cr_assert_eq(unwrap_chain("site-a", c2, ch.u, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert(strstr(kms_error_detail(), "user key's parent is") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_workspace(hier, "site-a", c2, ch.u, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    /* a workspace key under another user key of the same customer */
    char *u2 = NULL;
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-a", ch.c, &u2), KMS_OK);
    cr_assert_eq(unwrap_chain("site-a", ch.c, u2, ch.w, &k), KMS_ERR_UNWRAP);
    free(u2);
    free(c2);
    free_chain(&ch);
}

Test(hierarchy, invalid_site_ids, .init = setup, .fini = teardown, .timeout = 60)
{
    char *out = NULL;
    char longsite[KMS_SITE_ID_MAX + 2];
    memset(longsite, 'a', sizeof(longsite) - 1);
    longsite[sizeof(longsite) - 1] = '\0';
    const char *bad[] = {"", "a b", "site/1", "s\xc3\xa9", longsite, "a\tb"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        cr_assert_not(kms_site_id_valid(bad[i]), "%zu", i);
        cr_assert_eq(kms_hierarchy_create_customer(hier, bad[i], &out), KMS_ERR_INVALID_FIELD, "%zu", i);
    }
    cr_assert_eq(kms_hierarchy_create_customer(hier, NULL, &out), KMS_ERR_INVALID_FIELD);
    cr_assert_null(out);
    longsite[KMS_SITE_ID_MAX] = '\0';
    cr_assert(kms_site_id_valid(longsite));
    cr_assert(kms_site_id_valid("Site_1.x:y@z-2"));
    cr_assert_eq(kms_hierarchy_create_customer(hier, longsite, &out), KMS_OK);
    free(out);
}

Test(hierarchy, garbage_wrapped_keys, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(unwrap_chain("site-a", NULL, ch.u, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert_eq(unwrap_chain("site-a", ch.c, "", ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, "kms:v1:!!!!", &k), KMS_ERR_UNWRAP);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w + 7, &k), KMS_ERR_UNWRAP, "no prefix");
    free_chain(&ch);
}

Test(hierarchy, generic_wrap_unwrap, .init = setup, .fini = teardown, .timeout = 60)
{
    uint8_t pt[KMS_DATA_MAX + 1];
    for (size_t i = 0; i < sizeof(pt); i++)
        pt[i] = (uint8_t)(i * 31 + 7);
    size_t sizes[] = {1, 32, KMS_DATA_MAX};
    for (size_t i = 0; i < KMS_ARRAY_LEN(sizes); i++) {
        char *w = NULL;
        struct kms_secret *s = NULL;
        cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "", pt, sizes[i], &w), KMS_OK, "%s", kms_error_detail());
        cr_assert_leq(strlen(w), KMS_WRAPPED_TEXT_MAX);
        cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "", w, &s), KMS_OK, "%s", kms_error_detail());
        cr_assert_eq(kms_secret_len(s), sizes[i]);
        cr_assert_arr_eq(kms_secret_cdata(s), pt, sizes[i]);
        kms_secret_free(&s);
        /* site is bound too */
        cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", w, &s), KMS_ERR_UNWRAP);
        cr_assert_null(s);
        free(w);
    }
    char *w = NULL;
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, 0, &w), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, KMS_DATA_MAX + 1, &w), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "bad site", pt, 4, &w), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_wrap(hier, "bad name", "site-a", pt, 4, &w), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_wrap(hier, "no-such-key", "site-a", pt, 4, &w), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_null(w);

    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, 16, &w), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", w, &s), KMS_OK);
    kms_secret_free(&s);
    cr_assert_eq(kms_soft_create_key(soft, "master-b"), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-b", "site-a", w, &s), KMS_ERR_UNWRAP, "another master key");
    cr_assert(strstr(kms_error_detail(), "master-a") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_unwrap(hier, "no-such-key", "site-a", w, &s), KMS_ERR_UNWRAP, "unknown master key");
    cr_assert_null(s);
    free(w);
}

Test(hierarchy, generic_unwrap_refuses_hierarchy_keys, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *s = NULL;
    make_chain("site-a", &ch);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", ch.c, &s), KMS_ERR_UNWRAP, "customer key");
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", ch.u, &s), KMS_ERR_UNWRAP, "user key");
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", ch.w, &s), KMS_ERR_UNWRAP, "workspace key");
    cr_assert_null(s);
    /* and a data key is no customer key */
    char *d = NULL, *out = NULL;
    uint8_t pt[32] = {1};
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, sizeof(pt), &d), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-a", d, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    free(d);
    free_chain(&ch);
}

Test(hierarchy, datakey, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_secret *pt = NULL, *back = NULL;
    char *w = NULL;
    cr_assert_eq(kms_hierarchy_datakey(hier, "master-a", "site-a", 32, &pt, &w), KMS_OK);
    cr_assert_eq(kms_secret_len(pt), 32);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", w, &back), KMS_OK);
    cr_assert(kms_secret_equal(pt, back));
    kms_secret_free(&pt);
    kms_secret_free(&back);
    free(w);
    w = NULL;
    cr_assert_eq(kms_hierarchy_datakey(hier, "master-a", "site-a", 0, &pt, &w), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_datakey(hier, "master-a", "site-a", KMS_DATA_MAX + 1, &pt, &w),
                 KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_hierarchy_datakey(hier, "nope", "site-a", 16, &pt, &w), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_null(pt);
    cr_assert_null(w);
}

Test(hierarchy, rotation_and_rewrap, .init = setup, .fini = teardown, .timeout = 60)
{
    const uint8_t pt[20] = "rotate me, please!!";
    char *d1 = NULL, *d2 = NULL, *rw = NULL, *crw = NULL;
    struct kms_secret *s = NULL, *k1 = NULL, *k2 = NULL;
    struct chain ch;
    struct kms_wrapped_info i1, i2, ir;
    struct kms_key_info ki;
    make_chain("site-a", &ch);
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, sizeof(pt), &d1), KMS_OK);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k1), KMS_OK);

    cr_assert_eq(kms_soft_rotate(soft, "master-a"), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_key_info(hier, "master-a", &ki), KMS_OK);
    cr_assert_eq(ki.current_version, 2);
    cr_assert_eq(ki.min_version, 1);
    cr_assert_str_eq(ki.backend, "soft");

    /* old keys still unwrap */
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", d1, &s), KMS_OK, "%s", kms_error_detail());
    cr_assert_arr_eq(kms_secret_cdata(s), pt, sizeof(pt));
    kms_secret_free(&s);
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k2), KMS_OK);
    cr_assert(kms_secret_equal(k1, k2));
    kms_secret_free(&k2);

    /* new ones use v2 */
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, sizeof(pt), &d2), KMS_OK);
    cr_assert_eq(kms_wrapped_describe(d1, &i1), KMS_OK);
    cr_assert_eq(kms_wrapped_describe(d2, &i2), KMS_OK);
    cr_assert_eq(i1.master_version, 1);
    cr_assert_eq(i2.master_version, 2);

    /* rewrap moves v1 -> v2 keeping the key id */
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-a", "site-a", d1, &rw), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_describe(rw, &ir), KMS_OK);
    cr_assert_eq(ir.master_version, 2);
    cr_assert_str_eq(ir.key_id, i1.key_id);
    cr_assert_str_eq(ir.level, "data");
    cr_assert_str_eq(ir.site_id, "site-a");
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", rw, &s), KMS_OK);
    cr_assert_arr_eq(kms_secret_cdata(s), pt, sizeof(pt));
    kms_secret_free(&s);

    /* a customer key too: the user and workspace keys under it keep working */
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-a", "site-a", ch.c, &crw), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_describe(crw, &ir), KMS_OK);
    cr_assert_str_eq(ir.level, "customer");
    cr_assert_eq(ir.master_version, 2);
    cr_assert_eq(kms_wrapped_describe(ch.c, &i1), KMS_OK);
    cr_assert_str_eq(ir.key_id, i1.key_id);
    cr_assert_eq(unwrap_chain("site-a", crw, ch.u, ch.w, &k2), KMS_OK, "%s", kms_error_detail());
    cr_assert(kms_secret_equal(k1, k2));
    kms_secret_free(&k2);

    /* rewrap checks like unwrap */
    char *out = NULL;
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-a", "site-b", d1, &out), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-a", "site-a", ch.u, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);

    /* rotation to another master key (KMIP's way): rewrap moves the key to
     * master-b, keeping its key id; then only master-b's unwrap opens it */
    cr_assert_eq(kms_soft_create_key(soft, "master-b"), KMS_OK);
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-b", "site-a", d1, &out), KMS_OK, "%s", kms_error_detail());
    struct kms_wrapped_info ib, i0;
    cr_assert_eq(kms_wrapped_describe(out, &ib), KMS_OK);
    cr_assert_eq(kms_wrapped_describe(d1, &i0), KMS_OK);
    cr_assert_str_eq(ib.key_id, i0.key_id);
    cr_assert_str_eq(ib.master_name, "master-b");
    struct kms_secret *pa = NULL, *pb = NULL;
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", d1, &pa), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-b", "site-a", out, &pb), KMS_OK);
    cr_assert(kms_secret_equal(pa, pb));
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", out, &k2), KMS_ERR_UNWRAP);
    kms_secret_free(&pa);
    kms_secret_free(&pb);
    free(out);

    kms_secret_free(&k1);
    free(d1);
    free(d2);
    free(rw);
    free(crw);
    free_chain(&ch);
}

Test(hierarchy, backend_errors, .init = setup, .fini = teardown, .timeout = 60)
{
    struct chain ch;
    struct kms_secret *k = NULL;
    char *out = NULL;
    make_chain("site-a", &ch);
    /* availability passes through unchanged */
    kms_rc pass[] = {KMS_ERR_BACKEND, KMS_ERR_BACKEND_UNAVAILABLE, KMS_ERR_BACKEND_TIMEOUT};
    for (size_t i = 0; i < KMS_ARRAY_LEN(pass); i++) {
        fwd.decrypt_rc = pass[i];
        cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k), pass[i]);
        fwd.decrypt_rc = KMS_OK;
        fwd.encrypt_rc = pass[i];
        cr_assert_eq(kms_hierarchy_create_customer(hier, "site-a", &out), pass[i]);
        cr_assert_null(out);
        fwd.encrypt_rc = KMS_OK;
    }
    /* what the backend says about the ciphertext collapses to one error */
    kms_rc collapse[] = {KMS_ERR_UNWRAP, KMS_ERR_KEY_NOT_FOUND, KMS_ERR_MALFORMED, KMS_ERR_INVALID_FIELD};
    for (size_t i = 0; i < KMS_ARRAY_LEN(collapse); i++) {
        fwd.decrypt_rc = collapse[i];
        cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k), KMS_ERR_UNWRAP, "%s",
                     kms_error_name(collapse[i]));
        cr_assert_str_eq(kms_error_detail(), "test: decrypt fails", "the reason is kept for the log");
    }
    fwd.decrypt_rc = KMS_OK;
    cr_assert_eq(unwrap_chain("site-a", ch.c, ch.u, ch.w, &k), KMS_OK);
    kms_secret_free(&k);
    free_chain(&ch);
}

Test(hierarchy, configuration_errors, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_hierarchy *h2 = NULL;
    char *out = NULL;
    struct kms_key_info ki;
    cr_assert_eq(kms_hierarchy_new(&fwd.base, NULL, "", &h2), KMS_ERR_CONFIG);
    cr_assert_eq(kms_hierarchy_new(&fwd.base, NULL, NULL, &h2), KMS_ERR_CONFIG);
    cr_assert_eq(kms_hierarchy_new(NULL, NULL, "master-a", &h2), KMS_ERR_INTERNAL);
    cr_assert_null(h2);
    cr_assert_eq(kms_hierarchy_new(&fwd.base, NULL, "missing", &h2), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_customer(h2, "site-a", &out), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_null(out);
    cr_assert_eq(kms_hierarchy_key_info(h2, "missing", &ki), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_eq(kms_hierarchy_key_info(h2, "", &ki), KMS_ERR_INVALID_FIELD);
    kms_hierarchy_free(&h2);
    cr_assert_null(h2);
}

static void *worker(void *arg)
{
    struct chain *ch = arg;
    for (int i = 0; i < 50; i++) {
        struct kms_secret *k = NULL;
        if (kms_hierarchy_unwrap_workspace(hier, "site-a", ch->c, ch->u, ch->w, &k) != KMS_OK)
            return (void *)1;
        kms_secret_free(&k);
    }
    return NULL;
}

Test(hierarchy, concurrent_unwraps_with_a_cache, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_cache *cache = NULL;
    struct chain ch;
    pthread_t t[4];
    cr_assert_eq(kms_cache_local_new(4, 60, 60, &cache), KMS_OK);
    kms_hierarchy_free(&hier);
    cr_assert_eq(kms_hierarchy_new(&fwd.base, cache, "master-a", &hier), KMS_OK);
    make_chain("site-a", &ch);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &ch), 0);
    for (int i = 0; i < 4; i++) {
        void *r = (void *)1;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
    struct kms_cache_stats st;
    kms_cache_local_stats(cache, &st);
    cr_assert_geq(st.hits, 200);
    free_chain(&ch);
    kms_hierarchy_free(&hier);
    kms_cache_free(&cache);
}
