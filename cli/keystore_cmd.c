/* kmsctl keystore (SPEC §6, issue 6): list and show what an operator needs to
 * see of a keystore, as keytool names it (PrivateKeyEntry, trustedCertEntry),
 * and edit it at parity with MID Server's manage-certificates: add, import,
 * delete, clear, convert, verify, backups, restore, migrate. Every change is
 * backed up first (kms/keystore_backup.h) and written atomically in the
 * file's own format (kms/keystore_write.h). */
#define _GNU_SOURCE /* why: nftw */
#include "cli/kmsctl.h"

#include <errno.h>
#include <ftw.h>
#include <openssl/crypto.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/file.h"
#include "common/log.h"
#include "common/secret.h"
#include "kms/keystore.h"
#include "kms/keystore_backup.h"
#include "kms/keystore_write.h"
#include "kms/ksgen.h"
#include "kms/config.h"
#include "cluster/keystore_dist.h"

#define KMS_BUNDLE_MAX 16

extern char **environ;

struct options {
    const char *keystore;
    struct kmsctl_password_source pw;
    int json;
    const char *alias; /* show, add, import-cert, import-p12, delete */
    const char *file;  /* add, import-cert, import-p12: the input; restore: BACKUP */
    int force;
    const char *backup_dir;
    size_t max_backups;
    int days;
    const char *server_alias, *client_alias;
    const char *to, *out;        /* convert: format, output file; migrate: NEW */
    const char *from, *strategy; /* migrate */
    const char *p12_pw_file;
    const char *src_alias; /* import-p12: the entry of FILE.p12 to import */
    /* --cluster (SPEC §11): the edit runs on a private copy of the cluster's keystore */
    int cluster;
    const char *config;
    unsigned wait_s;
};

void kmsctl_keystore_usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsctl keystore COMMAND [--keystore FILE | --config kms.properties] [PASSWORD] [OPTIONS]\n"
            "\n"
            "Without --keystore, the keystore and its password are the node's kms.keystore.file and\n"
            "kms.keystore.password: from --config FILE, else $KMS_CONFIG, else /etc/kmsd/kms.properties.\n"
            "\n"
            "  create [--to jks|pkcs12]     a new, empty keystore (format from --to or the .jks/.p12 name)\n"
            "  list [--json]                one line per entry: alias, type, SHA-256, not-after\n"
            "  show ALIAS [--json]          subject, issuer, serial, validity, fingerprint, key, chain\n"
            "  add ALIAS BUNDLE.pem         PKCS#8 key + chain, leaf first (validated); no key: certificate entry\n"
            "  import-cert ALIAS FILE.crt   certificate entry from a PEM or DER certificate\n"
            "  import-p12 ALIAS FILE.p12    private-key entry from a PKCS#12 file [--p12-password-file F]\n"
            "                               [--src-alias A: the entry of FILE.p12, needed when it holds several]\n"
            "  delete ALIAS                 remove an entry\n"
            "  clear                        remove everything but the server entry [--server-alias A]\n"
            "  convert --to pkcs12|jks|pem  write the keystore in another format [--out FILE]\n"
            "  verify                       server key with chain, client key, cmxbackend* and cmxdevice*\n"
            "                               entries present, all certificates valid for --days N (30)\n"
            "                               [--server-alias A (kmsserver)] [--client-alias A (kmsclient)]\n"
            "  backups                      list the backups of the keystore\n"
            "  restore BACKUP               put a backup's exact bytes back (the current file is backed up)\n"
            "  migrate --from OLD --to NEW --strategy migrate_delta|migrate_non_ca|do_not_migrate\n"
            "                               copy certificate entries of OLD missing in NEW (all / non-CA / none)\n"
            "  create --cluster [--from FILE] [--force]\n"
            "                               seed the cluster with FILE (default: the config's kms.keystore.file)\n"
            "                               as its first keystore generation (--force: over an existing one)\n"
            "  history --cluster [--json]   the generations kept: number, time, who, the edit, SHA-256\n"
            "\n"
            "The whole cluster at once: add, import-cert, import-p12, delete, clear, convert (without --out),\n"
            "migrate (--to is the cluster), restore GEN, create and history take --cluster [--config FILE]\n"
            "(a node's kms.properties, else $KMS_CONFIG, else /etc/kmsd/kms.properties) instead of --keystore:\n"
            "the cluster's newest keystore is edited in a private copy, checked as a node would check it, and\n"
            "published through Redis as a new generation sealed under the cluster key; every node applies it\n"
            "live. restore --cluster GEN republishes generation GEN as a new one. --wait SECONDS waits until\n"
            "every live node holds the new generation (exit 1 if not). The password is the config's\n"
            "kms.keystore.password unless given below.\n"
            "\n"
            "Changes: an existing alias is refused unless --force; aliases are case-insensitive. Every change\n"
            "first backs up the file into --backup-dir DIR (default: <keystore dir>/../<name>.backups), with a\n"
            "line in DIR/audit.log, keeping at most --max-backups N (10). The file keeps its format, owner and\n"
            "mode and is replaced atomically.\n"
            "\n"
            "The keystore may be JKS, PKCS#12 or a PEM bundle (detected from its content).\n"
            "PASSWORD, first found wins:\n"
            "  --password-file FILE     the first line of FILE\n"
            "  $KMS_KEYSTORE_PASSWORD   the environment variable\n"
            "  --storepass PASS         on the command line (visible to other users)\n");
}

/* ---- formatting --------------------------------------------------------- */

static void hex_colons(const uint8_t *d, size_t n, char *out, size_t cap)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 3 < cap; i++) {
        if (i > 0)
            out[o++] = ':';
        out[o++] = hx[d[i] >> 4];
        out[o++] = hx[d[i] & 15];
    }
    out[o] = '\0';
}

static void fingerprint(const struct kms_ks_entry *e, char *out, size_t cap)
{
    hex_colons(kms_ks_entry_sha256(e), 32, out, cap);
}

static void cert_fingerprint(X509 *x, char *out, size_t cap)
{
    uint8_t md[32];
    unsigned int n = 0;
    if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != sizeof(md)) {
        snprintf(out, cap, "?");
        return;
    }
    hex_colons(md, n, out, cap);
}

static void format_time(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "?");
}

/* RFC 2253 one-liner; control characters escaped (XN_FLAG_RFC2253). */
static char *name_string(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p;
    if (b != NULL && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        long n = BIO_get_mem_data(b, &p);
        if (n >= 0 && (out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    return out != NULL ? out : strdup("?");
}

static char *serial_hex(X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *h = bn != NULL ? BN_bn2hex(bn) : NULL;
    char *out = strdup(h != NULL ? h : "?");
    OPENSSL_free(h);
    BN_free(bn);
    return out;
}

static const char *entry_type(const struct kms_ks_entry *e)
{
    if (kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY)
        return "PrivateKeyEntry";
    return kms_ks_entry_is_ca(e) ? "trustedCertEntry (CA)" : "trustedCertEntry";
}

static void key_description(X509 *x, char *out, size_t cap, const char **alg, int *bits, char *group, size_t gcap)
{
    EVP_PKEY *pk = X509_get0_pubkey(x);
    group[0] = '\0';
    *alg = "unknown";
    *bits = 0;
    if (pk != NULL) {
        const char *n = EVP_PKEY_get0_type_name(pk);
        *alg = n != NULL ? n : "unknown";
        *bits = EVP_PKEY_get_bits(pk);
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pk, group, gcap, &glen) != 1)
            group[0] = '\0';
    }
    ERR_clear_error();
    if (group[0] != '\0')
        snprintf(out, cap, "%s %d bits (%s)", *alg, *bits, group);
    else
        snprintf(out, cap, "%s %d bits", *alg, *bits);
}

/* ---- commands ----------------------------------------------------------- */

static int load(const struct options *o, struct kms_keystore **ks)
{
    char *pw = NULL;
    int rc = kmsctl_password_get(&o->pw, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    kms_error_clear();
    kms_rc r = kms_keystore_load(o->keystore, pw, ks);
    int had_password = pw != NULL;
    kmsctl_password_free(&pw);
    if (r != KMS_OK) {
        const char *d = kms_error_detail();
        if (d[0] != '\0')
            fprintf(stderr, "kmsctl: %s\n", d);
        else
            fprintf(stderr, "kmsctl: %s: %s\n", o->keystore, kms_error_message(r));
        return KMSCTL_EXIT_ERROR;
    }
    if (!had_password && kms_keystore_format(*ks) == KMS_KEYSTORE_JKS)
        fprintf(stderr, "kmsctl: warning: %s: no password given, so the JKS integrity check was skipped\n",
                o->keystore);
    return KMSCTL_EXIT_OK;
}

static int print_json(json_t *j)
{
    if (j == NULL) {
        fprintf(stderr, "kmsctl: out of memory\n");
        return KMSCTL_EXIT_ERROR;
    }
    int rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? KMSCTL_EXIT_OK : KMSCTL_EXIT_ERROR;
    fputc('\n', stdout);
    json_decref(j);
    return rc;
}

static int cmd_list(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    int rc = load(o, &ks);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    size_t n = kms_keystore_count(ks);
    char fp[100], na[40];
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
            fingerprint(e, fp, sizeof(fp));
            format_time(X509_get0_notAfter(kms_ks_entry_cert(e)), na, sizeof(na));
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:b, s:s, s:s}", "alias", kms_ks_entry_alias(e), "type",
                               kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY ? "PrivateKeyEntry" : "trustedCertEntry",
                               "ca", kms_ks_entry_is_ca(e), "sha256", fp, "not_after", na));
        }
        json_t *secrets = json_array();
        for (size_t i = 0; i < kms_keystore_secret_count(ks); i++)
            json_array_append_new(secrets, json_string(kms_keystore_secret_alias(ks, i)));
        rc = print_json(json_pack("{s:s, s:s, s:o, s:o}", "keystore", kms_keystore_path(ks), "format",
                                  kms_keystore_format_name(kms_keystore_format(ks)), "entries", arr, "secret_keys",
                                  secrets));
        kms_keystore_free(&ks);
        return rc;
    }
    int width = 5;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(kms_ks_entry_alias(kms_keystore_entry(ks, i)));
        if ((int)l > width)
            width = l > 40 ? 40 : (int)l;
    }
    printf("Keystore: %s (%s, %zu %s)\n", kms_keystore_path(ks), kms_keystore_format_name(kms_keystore_format(ks)),
           n, n == 1 ? "entry" : "entries");
    for (size_t i = 0; i < n; i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
        fingerprint(e, fp, sizeof(fp));
        format_time(X509_get0_notAfter(kms_ks_entry_cert(e)), na, sizeof(na));
        printf("%-*s  %-21s  SHA-256 %s  not after %s\n", width, kms_ks_entry_alias(e), entry_type(e), fp, na);
    }
    for (size_t i = 0; i < kms_keystore_secret_count(ks); i++)
        printf("%-*s  %-21s  (a key kmsd reads by alias, such as kms.audit.key.alias; never shown)\n", width,
               kms_keystore_secret_alias(ks, i), "SecretKeyEntry");
    kms_keystore_free(&ks);
    return KMSCTL_EXIT_OK;
}

struct cert_text {
    char *subject, *issuer, *serial;
    char nb[40], na[40], fp[100];
};

static void cert_text(X509 *x, struct cert_text *t)
{
    t->subject = name_string(X509_get_subject_name(x));
    t->issuer = name_string(X509_get_issuer_name(x));
    t->serial = serial_hex(x);
    format_time(X509_get0_notBefore(x), t->nb, sizeof(t->nb));
    format_time(X509_get0_notAfter(x), t->na, sizeof(t->na));
    cert_fingerprint(x, t->fp, sizeof(t->fp));
}

static void cert_text_free(struct cert_text *t)
{
    free(t->subject);
    free(t->issuer);
    free(t->serial);
}

static int show_json(const struct kms_keystore *ks, const struct kms_ks_entry *e, const struct cert_text *t,
                     const char *alg, int bits, const char *group)
{
    json_t *key = json_pack("{s:s, s:i}", "algorithm", alg, "bits", bits);
    if (key != NULL && group[0] != '\0')
        json_object_set_new(key, "group", json_string(group));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:o*}", "keystore",
                          kms_keystore_path(ks), "alias", kms_ks_entry_alias(e), "type",
                          kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY ? "PrivateKeyEntry" : "trustedCertEntry",
                          "format", kms_keystore_format_name(kms_keystore_format(ks)), "ca", kms_ks_entry_is_ca(e),
                          "subject", t->subject, "issuer", t->issuer, "serial", t->serial, "not_before", t->nb,
                          "not_after", t->na, "sha256", t->fp, "key", key);
    if (j != NULL && kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY) {
        json_t *chain = json_array();
        STACK_OF(X509) *sk = kms_ks_entry_chain(e);
        for (int i = -1; i < sk_X509_num(sk); i++) {
            struct cert_text c;
            cert_text(i < 0 ? kms_ks_entry_cert(e) : sk_X509_value(sk, i), &c);
            json_array_append_new(chain, json_pack("{s:s, s:s, s:s, s:s}", "subject", c.subject, "issuer",
                                                   c.issuer, "not_after", c.na, "sha256", c.fp));
            cert_text_free(&c);
        }
        json_object_set_new(j, "chain", chain);
    }
    return print_json(j);
}

static int cmd_show(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    int rc = load(o, &ks);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    const struct kms_ks_entry *e = kms_keystore_find(ks, o->alias);
    if (e == NULL) {
        fprintf(stderr, "kmsctl: %s: no entry with alias '%s'; the aliases are:", kms_keystore_path(ks), o->alias);
        for (size_t i = 0; i < kms_keystore_count(ks); i++)
            fprintf(stderr, "%s %s", i ? "," : "", kms_ks_entry_alias(kms_keystore_entry(ks, i)));
        fprintf(stderr, "%s\n", kms_keystore_count(ks) ? "" : " (none)");
        kms_keystore_free(&ks);
        return KMSCTL_EXIT_ERROR;
    }
    X509 *x = kms_ks_entry_cert(e);
    struct cert_text t;
    char keydesc[160], group[80];
    const char *alg;
    int bits;
    cert_text(x, &t);
    key_description(x, keydesc, sizeof(keydesc), &alg, &bits, group, sizeof(group));
    if (o->json) {
        rc = show_json(ks, e, &t, alg, bits, group);
    } else {
        printf("Alias:       %s\n", kms_ks_entry_alias(e));
        printf("Entry type:  %s\n", entry_type(e));
        printf("Subject:     %s\n", t.subject);
        printf("Issuer:      %s\n", t.issuer);
        printf("Serial:      %s\n", t.serial);
        printf("Not before:  %s\n", t.nb);
        printf("Not after:   %s\n", t.na);
        printf("SHA-256:     %s\n", t.fp);
        printf("Key:         %s\n", keydesc);
        if (kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY) {
            STACK_OF(X509) *sk = kms_ks_entry_chain(e);
            printf("Chain:       %d certificate%s\n", sk_X509_num(sk) + 1, sk_X509_num(sk) ? "s" : "");
            for (int i = -1; i < sk_X509_num(sk); i++) {
                struct cert_text c;
                cert_text(i < 0 ? x : sk_X509_value(sk, i), &c);
                printf("  [%d] subject: %s\n      issuer:  %s\n", i + 2, c.subject, c.issuer);
                cert_text_free(&c);
            }
        }
    }
    cert_text_free(&t);
    kms_keystore_free(&ks);
    return rc;
}

/* ---- editing: shared steps ---------------------------------------------- */

static void print_detail(const char *fallback, kms_rc r)
{
    const char *d = kms_error_detail();
    if (d[0] != '\0')
        fprintf(stderr, "kmsctl: %s\n", d);
    else
        fprintf(stderr, "kmsctl: %s: %s\n", fallback, kms_error_message(r));
}

/* Loads o->keystore for editing; *pw keeps the password (it is needed to
 * write the file back). */
static int load_for_edit(const struct options *o, struct kms_keystore **ks, char **pw)
{
    *ks = NULL;
    int rc = kmsctl_password_get(&o->pw, pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if (*pw == NULL || (*pw)[0] == '\0') {
        kmsctl_password_free(pw);
        fprintf(stderr, "kmsctl: %s: changing a keystore needs its password (--password-file, "
                        "KMS_KEYSTORE_PASSWORD or --storepass)\n",
                o->keystore);
        return KMSCTL_EXIT_ERROR;
    }
    kms_error_clear();
    kms_rc r = kms_keystore_load(o->keystore, *pw, ks);
    if (r != KMS_OK) {
        print_detail(o->keystore, r);
        kmsctl_password_free(pw);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

static int backup_dir_for(const struct options *o, const char *path, char **dir)
{
    *dir = NULL;
    if (o->backup_dir != NULL) {
        *dir = strdup(o->backup_dir);
        if (*dir == NULL) {
            fprintf(stderr, "kmsctl: out of memory\n");
            return KMSCTL_EXIT_ERROR;
        }
        return KMSCTL_EXIT_OK;
    }
    kms_error_clear();
    kms_rc r = kms_backup_default_dir(path, dir);
    if (r != KMS_OK) {
        print_detail(path, r);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* Backs up path (aliases from a fresh load; an unreadable file is backed up
 * too) and prints the backup's name. */
static int backup(const struct options *o, const char *path, const char *pw)
{
    char *dir = NULL, *made = NULL;
    int rc = backup_dir_for(o, path, &dir);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    struct kms_keystore *cur = NULL;
    kms_error_clear();
    if (kms_keystore_load(path, pw, &cur) != KMS_OK)
        cur = NULL;
    kms_error_clear();
    kms_rc r = kms_backup_make(path, cur, dir, o->max_backups, &made);
    kms_keystore_free(&cur);
    if (r != KMS_OK) {
        print_detail(path, r);
        fprintf(stderr, "kmsctl: %s: not changed, because the backup failed\n", path);
        rc = KMSCTL_EXIT_ERROR;
    } else {
        if (!o->cluster) /* why: a --cluster edit's copy and its backup are temporary */
            printf("Backup: %s\n", made);
    }
    free(made);
    free(dir);
    return rc;
}

/* Backs up o->keystore, then writes ks over it. */
static int commit(const struct options *o, const struct kms_keystore *ks, const char *pw)
{
    int rc = backup(o, o->keystore, pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    kms_error_clear();
    kms_rc r = kms_keystore_save(ks, o->keystore, pw);
    if (r != KMS_OK) {
        print_detail(o->keystore, r);
        return KMSCTL_EXIT_ERROR;
    }
    printf("Wrote %s (%s, %zu %s)\n", o->cluster ? "the cluster's keystore copy" : o->keystore,
           kms_keystore_format_name(kms_keystore_format(ks)), kms_keystore_count(ks),
           kms_keystore_count(ks) == 1 ? "entry" : "entries");
    return KMSCTL_EXIT_OK;
}

/* Refuses an existing alias unless --force, which removes it first. */
static int make_room(const struct options *o, struct kms_keystore *ks, const char *alias)
{
    if (kms_keystore_find(ks, alias) == NULL)
        return KMSCTL_EXIT_OK;
    if (!o->force) {
        fprintf(stderr, "kmsctl: %s: alias '%s' already exists (aliases are case-insensitive); use --force to "
                        "replace it\n",
                o->keystore, kms_ks_entry_alias(kms_keystore_find(ks, alias)));
        return KMSCTL_EXIT_ERROR;
    }
    kms_error_clear();
    if (kms_keystore_remove(ks, alias) != KMS_OK)
        return KMSCTL_EXIT_ERROR;
    printf("Replacing the existing entry '%s' (--force)\n", alias);
    return KMSCTL_EXIT_OK;
}

static int add_entry(const struct options *o, struct kms_keystore *ks, const char *alias, X509 *cert,
                     STACK_OF(X509) *chain, EVP_PKEY *key)
{
    kms_error_clear();
    kms_rc r = kms_keystore_add(ks, alias, cert, chain, key);
    if (r != KMS_OK) {
        print_detail(o->keystore, r);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* ---- reading certificates, keys and bundles ---------------------------- */

struct bundle {
    X509 *certs[KMS_BUNDLE_MAX];
    int n;
    EVP_PKEY *key;
};

static void bundle_free(struct bundle *b)
{
    for (int i = 0; i < b->n; i++)
        X509_free(b->certs[i]);
    EVP_PKEY_free(b->key);
    memset(b, 0, sizeof(*b));
}

static int read_file(const char *path, uint8_t **d, size_t *n)
{
    kms_error_clear();
    kms_rc r = kms_file_read(path, KMS_FILE_MAX, "the keystore", d, n, NULL);
    if (r != KMS_OK) {
        print_detail(path, r);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* PEM blocks of a bundle in file order: certificates, at most one key
 * (PKCS#8, encrypted with pw or not, or a traditional unencrypted key). */
static int read_bundle(const char *path, const char *pw, struct bundle *b)
{
    uint8_t *d = NULL;
    size_t n = 0;
    memset(b, 0, sizeof(*b));
    int rc = read_file(path, &d, &n);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if (n == 0 || n > INT_MAX) {
        free(d);
        fprintf(stderr, "kmsctl: %s: empty file\n", path);
        return KMSCTL_EXIT_ERROR;
    }
    BIO *bio = BIO_new_mem_buf(d, (int)n);
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    int block = 0;
    rc = KMSCTL_EXIT_OK;
    while (bio != NULL && rc == KMSCTL_EXIT_OK &&
           PEM_read_bio_ex(bio, &name, &header, &der, &len, PEM_FLAG_SECURE | PEM_FLAG_EAY_COMPATIBLE)) {
        block++;
        const unsigned char *p = der;
        if (strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "TRUSTED CERTIFICATE") == 0) {
            X509 *x = strcmp(name, "CERTIFICATE") == 0 ? d2i_X509(NULL, &p, len) : d2i_X509_AUX(NULL, &p, len);
            if (x == NULL || p != der + len) {
                X509_free(x);
                fprintf(stderr, "kmsctl: %s: PEM block %d is not a valid certificate\n", path, block);
                rc = KMSCTL_EXIT_ERROR;
            } else if (b->n >= KMS_BUNDLE_MAX) {
                X509_free(x);
                fprintf(stderr, "kmsctl: %s: more than %d certificates\n", path, KMS_BUNDLE_MAX);
                rc = KMSCTL_EXIT_ERROR;
            } else {
                b->certs[b->n++] = x;
            }
        } else if (strstr(name, "PRIVATE KEY") != NULL) {
            EVP_PKEY *k = NULL;
            if (b->key != NULL) {
                fprintf(stderr, "kmsctl: %s: more than one private key (PEM block %d)\n", path, block);
                rc = KMSCTL_EXIT_ERROR;
            } else if (header != NULL && header[0] != '\0') {
                fprintf(stderr, "kmsctl: %s: PEM block %d is an encrypted traditional key; convert it to PKCS#8 "
                                "(openssl pkcs8 -topk8)\n", path, block);
                rc = KMSCTL_EXIT_ERROR;
            } else if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0) {
                X509_SIG *sig = d2i_X509_SIG(NULL, &p, len);
                PKCS8_PRIV_KEY_INFO *p8 =
                    sig != NULL && pw != NULL ? PKCS8_decrypt(sig, pw, (int)strlen(pw)) : NULL;
                k = p8 != NULL ? EVP_PKCS82PKEY(p8) : NULL;
                PKCS8_PRIV_KEY_INFO_free(p8);
                X509_SIG_free(sig);
                if (k == NULL) {
                    fprintf(stderr, "kmsctl: %s: the encrypted private key (PEM block %d) does not decrypt with the "
                                    "keystore password\n", path, block);
                    rc = KMSCTL_EXIT_ERROR;
                }
            } else {
                k = d2i_AutoPrivateKey(NULL, &p, len);
                if (k == NULL) {
                    fprintf(stderr, "kmsctl: %s: PEM block %d is not a readable private key\n", path, block);
                    rc = KMSCTL_EXIT_ERROR;
                }
            }
            b->key = k;
        } else {
            fprintf(stderr, "kmsctl: %s: PEM block %d is a '%s', expected CERTIFICATE or PRIVATE KEY\n", path,
                    block, name);
            rc = KMSCTL_EXIT_ERROR;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_secure_clear_free(der, (size_t)len);
        name = header = NULL;
        der = NULL;
    }
    ERR_clear_error();
    BIO_free(bio);
    kms_wipe(d, n);
    free(d);
    if (rc == KMSCTL_EXIT_OK && b->n == 0) {
        fprintf(stderr, "kmsctl: %s: no certificate in the bundle\n", path);
        rc = KMSCTL_EXIT_ERROR;
    }
    if (rc != KMSCTL_EXIT_OK)
        bundle_free(b);
    return rc;
}

/* A certificate file: PEM (the first CERTIFICATE block) or DER. */
static int read_cert(const char *path, X509 **out)
{
    uint8_t *d = NULL;
    size_t n = 0;
    *out = NULL;
    int rc = read_file(path, &d, &n);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    const unsigned char *p = d;
    if (n > 0 && n < INT_MAX && d[0] == 0x30) {
        *out = d2i_X509(NULL, &p, (long)n);
        if (*out != NULL && p != d + n) {
            X509_free(*out);
            *out = NULL;
        }
    } else if (n > 0 && n < INT_MAX) {
        BIO *bio = BIO_new_mem_buf(d, (int)n);
        *out = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    }
    ERR_clear_error();
    free(d);
    if (*out == NULL) {
        fprintf(stderr, "kmsctl: %s: not a certificate (PEM or DER)\n", path);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

static int signed_by(X509 *child, X509 *issuer)
{
    int ok = X509_check_issued(issuer, child) == X509_V_OK && X509_verify(child, X509_get0_pubkey(issuer)) == 1;
    ERR_clear_error();
    return ok;
}

/* Checks the bundle is leaf first, each certificate signed by the next,
 * ending at a self-signed root or a CA certificate entry of ks. */
static int validate_chain(const char *path, const struct kms_keystore *ks, const struct bundle *b)
{
    for (int i = 0; i < b->n; i++) {
        X509 *c = b->certs[i];
        if (i + 1 < b->n && signed_by(c, b->certs[i + 1]))
            continue;
        char *subj = kms_ks_subject(c);
        int other = -1;
        for (int j = 0; j < b->n && other < 0; j++)
            if (j != i && j != i + 1 && signed_by(c, b->certs[j]) && !signed_by(c, c))
                other = j;
        if (other >= 0) {
            char *is = kms_ks_subject(b->certs[other]);
            fprintf(stderr, "kmsctl: %s: the bundle is in the wrong order: certificate %d (%s) is signed by "
                            "certificate %d (%s), which must come right after it; order it leaf, "
                            "intermediates, root\n", path, i + 1, subj, other + 1, is);
            free(is);
            free(subj);
            return KMSCTL_EXIT_ERROR;
        }
        if (i + 1 < b->n) {
            char *next = kms_ks_subject(b->certs[i + 1]);
            fprintf(stderr, "kmsctl: %s: the chain does not link: certificate %d (%s) is not signed by the next "
                            "certificate %d (%s)\n", path, i + 1, subj, i + 2, next);
            free(next);
            free(subj);
            return KMSCTL_EXIT_ERROR;
        }
        /* the last certificate */
        if (signed_by(c, c)) {
            free(subj);
            return KMSCTL_EXIT_OK;
        }
        for (size_t k = 0; k < kms_keystore_count(ks); k++) {
            const struct kms_ks_entry *e = kms_keystore_entry(ks, k);
            if (kms_ks_entry_type(e) == KMS_KS_CERTIFICATE && kms_ks_entry_is_ca(e) &&
                signed_by(c, kms_ks_entry_cert(e))) {
                printf("Chain ends at the trusted CA '%s' of the keystore\n", kms_ks_entry_alias(e));
                free(subj);
                return KMSCTL_EXIT_OK;
            }
        }
        char *iss = name_string(X509_get_issuer_name(c));
        fprintf(stderr, "kmsctl: %s: the chain does not link: the last certificate %d (%s) is not self-signed "
                        "and its issuer (%s) is neither in the bundle nor a CA trusted in the keystore\n",
                path, i + 1, subj, iss);
        free(iss);
        free(subj);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* ---- editing commands ------------------------------------------------------ */

static int cmd_add(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    char *pw = NULL;
    struct bundle b;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    rc = read_bundle(o->file, pw, &b);
    if (rc != KMSCTL_EXIT_OK)
        goto out_ks;
    if (b.key != NULL) {
        EVP_PKEY *pub = X509_get0_pubkey(b.certs[0]);
        if (pub == NULL || EVP_PKEY_eq(pub, b.key) != 1) {
            int match = -1;
            for (int i = 1; i < b.n && match < 0; i++)
                if (X509_get0_pubkey(b.certs[i]) != NULL && EVP_PKEY_eq(X509_get0_pubkey(b.certs[i]), b.key) == 1)
                    match = i;
            char *subj = kms_ks_subject(b.certs[0]);
            if (match > 0)
                fprintf(stderr, "kmsctl: %s: the bundle is in the wrong order: the private key belongs to "
                                "certificate %d, not to the first certificate (%s); put the leaf first\n",
                        o->file, match + 1, subj);
            else
                fprintf(stderr, "kmsctl: %s: the private key does not match the leaf certificate (%s)\n", o->file,
                        subj);
            free(subj);
            ERR_clear_error();
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
    }
    if ((rc = validate_chain(o->file, ks, &b)) != KMSCTL_EXIT_OK || (rc = make_room(o, ks, o->alias)) != 0)
        goto out;
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (int i = 1; chain != NULL && b.key != NULL && i < b.n; i++)
        if (!sk_X509_push(chain, b.certs[i])) {
            sk_X509_free(chain);
            chain = NULL;
        }
    if (chain == NULL) {
        fprintf(stderr, "kmsctl: out of memory\n");
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    rc = add_entry(o, ks, o->alias, b.certs[0], chain, b.key);
    sk_X509_free(chain); /* why: the certificates are the bundle's; add took its own references */
    if (rc == KMSCTL_EXIT_OK) {
        if (b.key != NULL)
            printf("Added private-key entry '%s' with a chain of %d certificate%s\n", o->alias, b.n,
                   b.n == 1 ? "" : "s");
        else
            printf("Added certificate entry '%s'%s\n", o->alias,
                   b.n > 1 ? " (the bundle's first certificate; its chain validated)" : "");
        rc = commit(o, ks, pw);
    }
out:
    bundle_free(&b);
out_ks:
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_import_cert(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    char *pw = NULL;
    X509 *x = NULL;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if ((rc = read_cert(o->file, &x)) == KMSCTL_EXIT_OK && (rc = make_room(o, ks, o->alias)) == KMSCTL_EXIT_OK &&
        (rc = add_entry(o, ks, o->alias, x, NULL, NULL)) == KMSCTL_EXIT_OK) {
        char *subj = kms_ks_subject(x);
        printf("Added certificate entry '%s' (%s)\n", o->alias, subj);
        free(subj);
        rc = commit(o, ks, pw);
    }
    X509_free(x);
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_import_p12(const struct options *o)
{
    struct kms_keystore *ks = NULL, *src = NULL;
    char *pw = NULL, *srcpw = NULL;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if (o->p12_pw_file != NULL) {
        struct kmsctl_password_source ps = {.file = o->p12_pw_file};
        if ((rc = kmsctl_password_get(&ps, &srcpw)) != KMSCTL_EXIT_OK)
            goto out;
    }
    kms_error_clear();
    kms_rc r = kms_keystore_load(o->file, srcpw != NULL ? srcpw : pw, &src);
    if (r != KMS_OK) {
        print_detail(o->file, r);
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    const struct kms_ks_entry *e = NULL;
    if (o->src_alias != NULL) {
        e = kms_keystore_find(src, o->src_alias);
        if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY) {
            fprintf(stderr, "kmsctl: %s: no private-key entry with alias '%s' (--src-alias)\n", o->file,
                    o->src_alias);
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
    } else {
        /* why: with several keys in FILE, taking the first would import one by chance (keytool asks too) */
        char names[512] = "";
        size_t keys = 0, used = 0;
        for (size_t i = 0; i < kms_keystore_count(src); i++) {
            const struct kms_ks_entry *x = kms_keystore_entry(src, i);
            if (kms_ks_entry_type(x) != KMS_KS_PRIVATE_KEY)
                continue;
            if (keys++ == 0)
                e = x;
            int n = snprintf(names + used, sizeof(names) - used, "%s'%s'", used ? ", " : "", kms_ks_entry_alias(x));
            if (n > 0 && (size_t)n < sizeof(names) - used)
                used += (size_t)n;
        }
        if (keys == 0) {
            fprintf(stderr, "kmsctl: %s: no private-key entry to import\n", o->file);
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
        if (keys > 1) {
            fprintf(stderr, "kmsctl: %s holds %zu private-key entries (%s): name one with --src-alias\n", o->file,
                    keys, names);
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
    }
    if ((rc = make_room(o, ks, o->alias)) == KMSCTL_EXIT_OK &&
        (rc = add_entry(o, ks, o->alias, kms_ks_entry_cert(e), kms_ks_entry_chain(e), kms_ks_entry_key(e))) ==
            KMSCTL_EXIT_OK) {
        printf("Added private-key entry '%s' from '%s' of %s (chain of %d certificates)\n", o->alias,
               kms_ks_entry_alias(e), o->file, 1 + sk_X509_num(kms_ks_entry_chain(e)));
        rc = commit(o, ks, pw);
    }
out:
    kms_keystore_free(&src);
    kms_keystore_free(&ks);
    kmsctl_password_free(&srcpw);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_delete(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    char *pw = NULL;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    const struct kms_ks_entry *e = kms_keystore_find(ks, o->alias);
    if (e == NULL) {
        fprintf(stderr, "kmsctl: %s: no entry with alias '%s'\n", o->keystore, o->alias);
        rc = KMSCTL_EXIT_ERROR;
    } else {
        kms_error_clear();
        if (kms_keystore_remove(ks, o->alias) != KMS_OK) {
            rc = KMSCTL_EXIT_ERROR;
        } else {
            printf("Deleted entry '%s'\n", o->alias);
            rc = commit(o, ks, pw);
        }
    }
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_clear(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    char *pw = NULL;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    size_t removed = 0;
    for (size_t i = kms_keystore_count(ks); i-- > 0;) {
        char *alias = strdup(kms_ks_entry_alias(kms_keystore_entry(ks, i)));
        if (alias == NULL) {
            rc = KMSCTL_EXIT_ERROR;
            break;
        }
        if (strcasecmp(alias, o->server_alias) != 0) {
            if (kms_keystore_remove(ks, alias) == KMS_OK) {
                printf("Deleted entry '%s'\n", alias);
                removed++;
            }
        }
        free(alias);
    }
    if (rc == KMSCTL_EXIT_OK) {
        if (kms_keystore_find(ks, o->server_alias) == NULL)
            fprintf(stderr, "kmsctl: warning: %s: there is no server entry '%s' to keep\n", o->keystore,
                    o->server_alias);
        printf("Cleared %zu entr%s, kept '%s'\n", removed, removed == 1 ? "y" : "ies", o->server_alias);
        rc = commit(o, ks, pw);
    }
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_convert(const struct options *o)
{
    enum kms_keystore_format to;
    if (strcasecmp(o->to, "pkcs12") == 0 || strcasecmp(o->to, "p12") == 0)
        to = KMS_KEYSTORE_PKCS12;
    else if (strcasecmp(o->to, "jks") == 0)
        to = KMS_KEYSTORE_JKS;
    else if (strcasecmp(o->to, "pem") == 0)
        to = KMS_KEYSTORE_PEM;
    else {
        fprintf(stderr, "kmsctl: --to must be pkcs12, jks or pem, not '%s'\n", o->to);
        return KMSCTL_EXIT_USAGE;
    }
    struct kms_keystore *ks = NULL;
    char *pw = NULL;
    int rc = load_for_edit(o, &ks, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    const char *out = o->out != NULL ? o->out : o->keystore;
    if (o->out != NULL && access(o->out, F_OK) == 0 && !o->force) {
        fprintf(stderr, "kmsctl: %s already exists; use --force to replace it\n", o->out);
        rc = KMSCTL_EXIT_ERROR;
    } else {
        if (access(out, F_OK) == 0)
            rc = backup(o, out, pw);
        kms_keystore_set_format(ks, to);
        kms_error_clear();
        kms_rc r = rc == KMSCTL_EXIT_OK ? kms_keystore_save(ks, out, pw) : KMS_OK;
        if (r != KMS_OK) {
            print_detail(out, r);
            rc = KMSCTL_EXIT_ERROR;
        } else if (rc == KMSCTL_EXIT_OK) {
            printf("Converted %s to %s: %s (%zu entries)\n", o->keystore, kms_keystore_format_name(to), out,
                   kms_keystore_count(ks));
        }
    }
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

static int starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static void check_validity(X509 *x, const char *alias, int days, int *problems)
{
    char *subj = kms_ks_subject(x);
    time_t now = time(NULL), soon = now + (time_t)days * 86400;
    char na[40];
    format_time(X509_get0_notAfter(x), na, sizeof(na));
    if (X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
        printf("PROBLEM: '%s': certificate %s is not valid yet\n", alias, subj);
        (*problems)++;
    } else if (X509_cmp_time(X509_get0_notAfter(x), &now) < 0) {
        printf("PROBLEM: '%s': certificate %s expired on %s\n", alias, subj, na);
        (*problems)++;
    } else if (X509_cmp_time(X509_get0_notAfter(x), &soon) < 0) {
        printf("PROBLEM: '%s': certificate %s expires within %d days, on %s\n", alias, subj, days, na);
        (*problems)++;
    }
    free(subj);
}

static int cmd_verify(const struct options *o)
{
    struct kms_keystore *ks = NULL;
    int rc = load(o, &ks);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    int problems = 0, backend = 0, device = 0;
    const struct kms_ks_entry *srv = kms_keystore_find(ks, o->server_alias);
    if (srv == NULL || kms_ks_entry_type(srv) != KMS_KS_PRIVATE_KEY) {
        printf("PROBLEM: no server private-key entry '%s'%s\n", o->server_alias,
               srv != NULL ? " (it is a certificate entry)" : "");
        problems++;
    } else if (sk_X509_num(kms_ks_entry_chain(srv)) == 0 &&
               X509_check_issued(kms_ks_entry_cert(srv), kms_ks_entry_cert(srv)) != X509_V_OK) {
        printf("PROBLEM: the server entry '%s' has no certificate chain\n", o->server_alias);
        problems++;
    }
    const struct kms_ks_entry *cli = kms_keystore_find(ks, o->client_alias);
    if (cli == NULL || kms_ks_entry_type(cli) != KMS_KS_PRIVATE_KEY) {
        printf("PROBLEM: no client private-key entry '%s' (kmsd's identity toward the HSM)\n", o->client_alias);
        problems++;
    }
    for (size_t i = 0; i < kms_keystore_count(ks); i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
        const char *a = kms_ks_entry_alias(e);
        if (kms_ks_entry_type(e) == KMS_KS_CERTIFICATE) {
            backend |= starts_with_ci(a, "cmxbackend");
            device |= starts_with_ci(a, "cmxdevice");
        }
        check_validity(kms_ks_entry_cert(e), a, o->days, &problems);
        STACK_OF(X509) *ch = kms_ks_entry_chain(e);
        for (int k = 0; k < sk_X509_num(ch); k++)
            check_validity(sk_X509_value(ch, k), a, o->days, &problems);
    }
    ERR_clear_error();
    if (!backend) {
        printf("PROBLEM: no cmxbackend* certificate entry (the backend client)\n");
        problems++;
    }
    if (!device) {
        printf("PROBLEM: no cmxdevice* certificate entry (the device client)\n");
        problems++;
    }
    if (problems == 0)
        printf("OK: %s has everything kmsd needs; no certificate expires within %d days\n", kms_keystore_path(ks),
               o->days);
    else
        printf("%s: %d problem%s\n", kms_keystore_path(ks), problems, problems == 1 ? "" : "s");
    kms_keystore_free(&ks);
    return problems ? KMSCTL_EXIT_ERROR : KMSCTL_EXIT_OK;
}

static int cmd_backups(const struct options *o)
{
    char *dir = NULL, **names = NULL;
    size_t n = 0;
    int rc = backup_dir_for(o, o->keystore, &dir);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    kms_error_clear();
    kms_rc r = kms_backup_list(o->keystore, dir, &names, &n);
    if (r != KMS_OK) {
        print_detail(dir, r);
        free(dir);
        return KMSCTL_EXIT_ERROR;
    }
    printf("Backups of %s in %s (%zu, oldest first):\n", o->keystore, dir, n);
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        if (stat(p, &st) == 0)
            printf("  %s  %lld bytes  mode %04o\n", names[i], (long long)st.st_size, (unsigned)(st.st_mode & 07777));
        else
            printf("  %s\n", names[i]);
    }
    printf("Audit log: %s/audit.log\n", dir);
    kms_backup_list_free(&names, n);
    free(dir);
    return KMSCTL_EXIT_OK;
}

static int cmd_restore(const struct options *o)
{
    char *dir = NULL, *pw = NULL;
    char from[4096];
    int rc = backup_dir_for(o, o->keystore, &dir);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if (strchr(o->file, '/') != NULL)
        snprintf(from, sizeof(from), "%s", o->file);
    else
        snprintf(from, sizeof(from), "%s/%s", dir, o->file);
    free(dir);
    uint8_t *d = NULL;
    size_t n = 0;
    if ((rc = read_file(from, &d, &n)) != KMSCTL_EXIT_OK)
        return rc;
    if ((rc = kmsctl_password_get(&o->pw, &pw)) != KMSCTL_EXIT_OK)
        goto out;
    struct kms_keystore *chk = NULL;
    kms_error_clear();
    kms_rc r = kms_keystore_load_mem(d, n, from, pw, &chk);
    kms_keystore_free(&chk);
    if (r != KMS_OK) {
        print_detail(from, r);
        fprintf(stderr, "kmsctl: %s: not restored: the backup does not load with this password\n", o->keystore);
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    if (access(o->keystore, F_OK) == 0 && (rc = backup(o, o->keystore, pw)) != KMSCTL_EXIT_OK)
        goto out;
    kms_error_clear();
    r = kms_file_write_atomic(o->keystore, d, n, 0600, NULL);
    if (r != KMS_OK) {
        print_detail(o->keystore, r);
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    printf("Restored %s from %s (%zu bytes)\n", o->keystore, from, n);
out:
    kms_wipe(d, n);
    free(d);
    kmsctl_password_free(&pw);
    return rc;
}

static int has_fingerprint(const struct kms_keystore *ks, const uint8_t *sha256)
{
    for (size_t i = 0; i < kms_keystore_count(ks); i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
        if (memcmp(kms_ks_entry_sha256(e), sha256, 32) == 0)
            return 1;
        STACK_OF(X509) *ch = kms_ks_entry_chain(e);
        for (int k = 0; k < sk_X509_num(ch); k++) {
            uint8_t md[32];
            unsigned int mdn = 0;
            if (X509_digest(sk_X509_value(ch, k), EVP_sha256(), md, &mdn) == 1 && mdn == 32 &&
                memcmp(md, sha256, 32) == 0)
                return 1;
        }
    }
    return 0;
}

static int cmd_migrate(const struct options *o)
{
    int strategy;
    if (strcmp(o->strategy, "migrate_delta") == 0)
        strategy = 0;
    else if (strcmp(o->strategy, "migrate_non_ca") == 0)
        strategy = 1;
    else if (strcmp(o->strategy, "do_not_migrate") == 0)
        strategy = 2;
    else {
        fprintf(stderr, "kmsctl: --strategy must be migrate_delta, migrate_non_ca or do_not_migrate, not '%s'\n",
                o->strategy);
        return KMSCTL_EXIT_USAGE;
    }
    struct options oo = *o, on = *o;
    oo.keystore = o->from;
    on.keystore = o->to;
    struct kms_keystore *old = NULL, *neu = NULL;
    char *pw = NULL, *pw2 = NULL;
    int rc = load_for_edit(&oo, &old, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if ((rc = load_for_edit(&on, &neu, &pw2)) != KMSCTL_EXIT_OK)
        goto out;
    if ((rc = backup(&oo, o->from, pw)) != KMSCTL_EXIT_OK || (rc = backup(&on, o->to, pw2)) != KMSCTL_EXIT_OK)
        goto out;
    size_t copied = 0;
    for (size_t i = 0; strategy != 2 && i < kms_keystore_count(old); i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(old, i);
        if (kms_ks_entry_type(e) != KMS_KS_CERTIFICATE || has_fingerprint(neu, kms_ks_entry_sha256(e)))
            continue;
        if (strategy == 1 && kms_ks_entry_is_ca(e)) {
            printf("Skipped CA certificate '%s' (migrate_non_ca)\n", kms_ks_entry_alias(e));
            continue;
        }
        char alias[1100];
        snprintf(alias, sizeof(alias), "%s", kms_ks_entry_alias(e));
        for (int k = 2; kms_keystore_find(neu, alias) != NULL && k < 1000; k++)
            snprintf(alias, sizeof(alias), "%s-%d", kms_ks_entry_alias(e), k);
        if ((rc = add_entry(&on, neu, alias, kms_ks_entry_cert(e), NULL, NULL)) != KMSCTL_EXIT_OK)
            goto out;
        char *subj = kms_ks_subject(kms_ks_entry_cert(e));
        printf("Copied certificate '%s' as '%s' (%s)\n", kms_ks_entry_alias(e), alias, subj);
        free(subj);
        copied++;
    }
    printf("Migration %s: %zu certificate%s copied from %s to %s\n", o->strategy, copied, copied == 1 ? "" : "s",
           o->from, o->to);
    if (copied > 0) {
        kms_error_clear();
        kms_rc r = kms_keystore_save(neu, o->to, pw2);
        if (r != KMS_OK) {
            print_detail(o->to, r);
            rc = KMSCTL_EXIT_ERROR;
        } else {
            printf("Wrote %s (%zu entries)\n", o->to, kms_keystore_count(neu));
        }
    }
out:
    kms_keystore_free(&old);
    kms_keystore_free(&neu);
    kmsctl_password_free(&pw);
    kmsctl_password_free(&pw2);
    return rc;
}

struct subcommand {
    const char *name;
    int (*run)(const struct options *o);
    int nargs;           /* positional arguments: ALIAS [FILE] */
    int needs_keystore;
    int cluster;         /* --cluster: 0 not allowed, 1 allowed, 2 required */
};

/* ---- the whole cluster (--cluster) ----------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

/* Runs sc on a private copy of cur in a fresh 0700 directory; *out gets
 * the edited bytes (malloc'd). */
static int edit_copy(const struct subcommand *sc, const struct options *o, const char *password, const uint8_t *cur,
                     size_t cur_len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    const char *tmp = getenv("TMPDIR");
    char dir[4096], path[4200], backups[4200];
    snprintf(dir, sizeof(dir), "%s/kmsctl-cluster.XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "kmsctl: cannot make a private directory in %s: %s\n", tmp ? tmp : "/tmp", strerror(errno));
        return KMSCTL_EXIT_ERROR;
    }
    snprintf(path, sizeof(path), "%s/keystore", dir);
    snprintf(backups, sizeof(backups), "%s/backups", dir);
    int rc = KMSCTL_EXIT_ERROR;
    kms_error_clear();
    kms_rc r = kms_file_write_atomic(path, cur, cur_len, 0600, NULL);
    if (r != KMS_OK) {
        print_detail(path, r);
    } else {
        struct options eo = *o;
        eo.keystore = path;
        eo.backup_dir = backups;
        eo.pw.file = NULL;
        eo.pw.argument = NULL;
        eo.pw.value = password;
        if (strcmp(sc->name, "migrate") == 0)
            eo.to = path;
        rc = sc->run(&eo);
        if (rc == KMSCTL_EXIT_OK) {
            kms_error_clear();
            r = kms_file_read(path, KMS_FILE_MAX, "the keystore", out, out_len, NULL);
            if (r != KMS_OK) {
                print_detail(path, r);
                rc = KMSCTL_EXIT_ERROR;
            }
        }
    }
    /* why: the copy may hold private keys; nothing of it stays behind */
    uint8_t *again = NULL;
    size_t again_len = 0;
    if (kms_file_read(path, KMS_FILE_MAX, "the keystore", &again, &again_len, NULL) == KMS_OK) {
        kms_wipe(again, again_len);
        free(again);
    }
    (void)nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* The edit as history shows it: the command and its arguments, files by
 * their base name. */
static void describe(const char *sub, const struct options *o, char *out, size_t cap)
{
    const char *file = o->file ? strrchr(o->file, '/') : NULL;
    file = file ? file + 1 : o->file;
    snprintf(out, cap, "%s%s%s%s%s%s%s", sub, o->alias ? " " : "", o->alias ? o->alias : "", file ? " " : "",
             file ? file : "", o->to && strcmp(sub, "convert") == 0 ? " --to " : "",
             o->to && strcmp(sub, "convert") == 0 ? o->to : "");
}

static int history(struct kmsctl_cluster *c, int json)
{
    uint64_t gens[1024], head = 0;
    size_t n = 0;
    kms_error_clear();
    kms_rc r = kms_ksdist_head(c->dist, &head);
    if (r == KMS_OK)
        r = kms_ksdist_list(c->dist, gens, KMS_ARRAY_LEN(gens), &n);
    if (r != KMS_OK) {
        print_detail("redis", r);
        return KMSCTL_EXIT_ERROR;
    }
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-6s %-20s %-24s %-64s %s\n", "GEN", "PUBLISHED (UTC)", "BY", "SHA256", "EDIT");
    int rc = KMSCTL_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        struct kms_ksgen_meta m;
        uint8_t *ks = NULL;
        size_t len = 0;
        if (kmsctl_cluster_generation(c, gens[i], &m, &ks, &len) != KMSCTL_EXIT_OK) {
            rc = KMSCTL_EXIT_ERROR; /* why: a blob that does not open is worth an exit 1 (tampering) */
            if (!json)
                printf("%-6llu REFUSED: does not open (see above); nodes refuse it too\n",
                       (unsigned long long)gens[i]);
            continue;
        }
        kms_ksgen_free_bytes(&ks, len);
        char when[32];
        struct tm tm;
        time_t t = (time_t)m.time;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (json)
            json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:b}", "generation",
                                                 (json_int_t)m.generation, "time", when, "who", m.who, "edit", m.edit,
                                                 "sha256", m.sha256, "format", kms_keystore_format_name(m.format),
                                                 "head", m.generation == head));
        else
            printf("%-6llu %-20s %-24s %-64s %s%s\n", (unsigned long long)m.generation, when, m.who, m.sha256, m.edit,
                   m.generation == head ? "   (newest)" : "");
    }
    if (json) {
        json_t *j = json_pack("{s:I, s:o}", "head", (json_int_t)head, "generations", arr);
        rc = print_json(j) != KMSCTL_EXIT_OK ? KMSCTL_EXIT_ERROR : rc;
    } else if (n == 0) {
        printf("(no generation published yet: kmsctl keystore create --cluster)\n");
    }
    return rc;
}

static int parse_gen(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v == 0 || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int run_cluster(const struct subcommand *sc, const struct options *o)
{
    char *pw = NULL;
    int rc = KMSCTL_EXIT_OK;
    if ((o->pw.file != NULL || o->pw.argument != NULL || getenv("KMS_KEYSTORE_PASSWORD") != NULL) &&
        (rc = kmsctl_password_get(&o->pw, &pw)) != KMSCTL_EXIT_OK)
        return rc;
    struct kmsctl_cluster c;
    rc = kmsctl_cluster_open(o->config, pw, &c);
    const char *password = pw != NULL ? pw : c.cfg ? kms_config_secret(c.cfg, KMS_CFG_KEYSTORE_PASSWORD) : NULL;
    uint8_t *cur = NULL, *neu = NULL;
    size_t cur_len = 0, neu_len = 0;
    uint64_t head = 0;
    char edit[KMS_KSGEN_EDIT_MAX + 1];
    describe(sc->name, o, edit, sizeof(edit));
    if (rc != KMSCTL_EXIT_OK)
        goto out;
    if (password == NULL || password[0] == '\0') {
        fprintf(stderr, "kmsctl: %s has no kms.keystore.password; give --password-file\n", c.config_path);
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    if (strcmp(sc->name, "history") == 0) {
        rc = history(&c, o->json);
        goto out;
    }
    kms_error_clear();
    kms_rc r = kms_ksdist_head(c.dist, &head);
    if (r != KMS_OK) {
        print_detail("redis", r);
        rc = KMSCTL_EXIT_ERROR;
        goto out;
    }
    if (strcmp(sc->name, "restore") == 0) {
        uint64_t gen = 0;
        struct kms_ksgen_meta m;
        if (parse_gen(o->file, &gen) != 0) {
            fprintf(stderr, "kmsctl: restore --cluster takes a generation number (see history --cluster), not '%s'\n",
                    o->file);
            rc = KMSCTL_EXIT_USAGE;
            goto out;
        }
        if ((rc = kmsctl_cluster_generation(&c, gen, &m, &neu, &neu_len)) != KMSCTL_EXIT_OK)
            goto out;
        snprintf(edit, sizeof(edit), "restore %llu (%.300s by %.128s)", (unsigned long long)gen, m.edit, m.who);
    } else if (strcmp(sc->name, "create") == 0) {
        if (head > 0 && !o->force) {
            fprintf(stderr, "kmsctl: the cluster already has keystore generation %llu; edit it, or use --force to "
                            "replace it with a new seed\n",
                    (unsigned long long)head);
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
        const char *from = o->from ? o->from : kms_config_str(c.cfg, KMS_CFG_KEYSTORE_FILE);
        kms_error_clear();
        if ((r = kms_file_read(from, KMS_FILE_MAX, "the keystore", &neu, &neu_len, NULL)) != KMS_OK) {
            print_detail(from, r);
            rc = KMSCTL_EXIT_ERROR;
            goto out;
        }
        const char *base = strrchr(from, '/');
        snprintf(edit, sizeof(edit), "create from %s", base ? base + 1 : from);
    } else {
        if ((rc = kmsctl_cluster_current(&c, &head, &cur, &cur_len)) != KMSCTL_EXIT_OK)
            goto out;
        if ((rc = edit_copy(sc, o, password, cur, cur_len, &neu, &neu_len)) != KMSCTL_EXIT_OK) {
            fprintf(stderr, "kmsctl: nothing was published\n");
            goto out;
        }
        if (neu_len == cur_len && CRYPTO_memcmp(neu, cur, cur_len) == 0) {
            printf("The cluster's keystore is unchanged (generation %llu); nothing was published\n",
                   (unsigned long long)head);
            goto out;
        }
    }
    rc = kmsctl_cluster_publish(&c, head, neu, neu_len, password, edit, o->wait_s);
out:
    kms_ksgen_free_bytes(&cur, cur_len);
    kms_ksgen_free_bytes(&neu, neu_len);
    kmsctl_cluster_close(&c);
    kmsctl_password_free(&pw);
    return rc;
}

static int cmd_cluster_only(const struct options *o)
{
    (void)o;
    fprintf(stderr, "kmsctl: this command works on the cluster: add --cluster\n");
    return KMSCTL_EXIT_USAGE;
}

/* create: a new, empty keystore file (JKS or PKCS#12, from --to or the file's
 * extension) under the password; entries come next with add / import-*. */
static int cmd_create(const struct options *o)
{
    enum kms_keystore_format f;
    const char *dot = strrchr(o->keystore, '.');
    const char *kind = o->to != NULL ? o->to : dot != NULL ? dot + 1 : "";
    if (strcasecmp(kind, "jks") == 0)
        f = KMS_KEYSTORE_JKS;
    else if (strcasecmp(kind, "pkcs12") == 0 || strcasecmp(kind, "p12") == 0 || strcasecmp(kind, "pfx") == 0)
        f = KMS_KEYSTORE_PKCS12;
    else {
        fprintf(stderr, "kmsctl: %s: say which format with --to jks|pkcs12 (the name ends neither in .jks nor .p12)\n",
                o->keystore);
        return KMSCTL_EXIT_USAGE;
    }
    if (access(o->keystore, F_OK) == 0) {
        fprintf(stderr, "kmsctl: %s already exists; create makes a new keystore and never replaces one\n",
                o->keystore);
        return KMSCTL_EXIT_ERROR;
    }
    char *pw = NULL;
    int rc = kmsctl_password_get(&o->pw, &pw);
    if (rc != KMSCTL_EXIT_OK)
        return rc;
    if (pw == NULL || strlen(pw) < 6) {
        fprintf(stderr, "kmsctl: %s: a new keystore needs a password of at least 6 characters (--password-file, "
                        "KMS_KEYSTORE_PASSWORD or the configuration's kms.keystore.password)\n",
                o->keystore);
        kmsctl_password_free(&pw);
        return KMSCTL_EXIT_ERROR;
    }
    struct kms_keystore *ks = NULL;
    kms_error_clear();
    kms_rc r = kms_keystore_new(f, o->keystore, &ks);
    if (r == KMS_OK)
        r = kms_keystore_save(ks, o->keystore, pw);
    if (r != KMS_OK) {
        print_detail(o->keystore, r);
        rc = KMSCTL_EXIT_ERROR;
    } else {
        printf("Created %s, an empty %s keystore\n", o->keystore, kms_keystore_format_name(f));
    }
    kms_keystore_free(&ks);
    kmsctl_password_free(&pw);
    return rc;
}

/* No --keystore: the node's configuration (--config, $KMS_CONFIG or
 * /etc/kmsd/kms.properties) names the keystore and, unless a password option
 * is given, its password. *cfg owns both; the caller frees it after the command. */
static int keystore_from_config(struct options *o, struct kms_config **cfg)
{
    const char *path = kmsctl_config_path(o->config);
    kms_log_set_level(KMS_LOG_ERROR);
    kms_error_clear();
    kms_rc r = kms_config_load(path, environ, NULL, NULL, cfg);
    if (r != KMS_OK) {
        print_detail(path, r);
        return KMSCTL_EXIT_ERROR;
    }
    const char *file = kms_config_str(*cfg, KMS_CFG_KEYSTORE_FILE);
    if (file[0] == '\0') {
        fprintf(stderr, "kmsctl: %s sets no kms.keystore.file; give --keystore FILE\n", path);
        return KMSCTL_EXIT_ERROR;
    }
    o->keystore = file;
    if (o->pw.file == NULL && o->pw.argument == NULL)
        o->pw.value = kms_config_secret(*cfg, KMS_CFG_KEYSTORE_PASSWORD);
    return KMSCTL_EXIT_OK;
}

/* ---- argument parsing --------------------------------------------------- */

static int usage_error(const char *fmt, ...) KMS_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kmsctl keystore: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n");
    kmsctl_keystore_usage(stderr);
    return KMSCTL_EXIT_USAGE;
}


static const struct subcommand subcommands[] = {
    {"list", cmd_list, 0, 1, 0},
    {"show", cmd_show, 1, 1, 0},
    {"add", cmd_add, 2, 1, 1},
    {"import-cert", cmd_import_cert, 2, 1, 1},
    {"import-p12", cmd_import_p12, 2, 1, 1},
    {"delete", cmd_delete, 1, 1, 1},
    {"clear", cmd_clear, 0, 1, 1},
    {"convert", cmd_convert, 0, 1, 1},
    {"verify", cmd_verify, 0, 1, 0},
    {"backups", cmd_backups, 0, 1, 0},
    {"restore", cmd_restore, 1, 1, 1},
    {"migrate", cmd_migrate, 0, 0, 1},
    {"create", cmd_create, 0, 1, 1},
    {"history", cmd_cluster_only, 0, 0, 2},
};

static int parse_count(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int kmsctl_keystore_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"keystore", required_argument, NULL, 'k'},
        {"password-file", required_argument, NULL, 'f'},
        {"storepass", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"force", no_argument, NULL, 'F'},
        {"backup-dir", required_argument, NULL, 'b'},
        {"max-backups", required_argument, NULL, 'm'},
        {"days", required_argument, NULL, 'd'},
        {"server-alias", required_argument, NULL, 's'},
        {"client-alias", required_argument, NULL, 'c'},
        {"to", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},
        {"from", required_argument, NULL, 'r'},
        {"strategy", required_argument, NULL, 'S'},
        {"p12-password-file", required_argument, NULL, 'P'},
        {"cluster", no_argument, NULL, 'C'},
        {"config", required_argument, NULL, 'G'},
        {"wait", required_argument, NULL, 'W'},
        {"src-alias", required_argument, NULL, 'A'},
        {NULL, 0, NULL, 0},
    };
    struct options o = {.max_backups = KMS_BACKUP_DEFAULT_MAX, .days = 30, .server_alias = "kmsserver",
                        .client_alias = "kmsclient"};
    if (argc < 2)
        return usage_error("%s", "a subcommand is required");
    const char *sub = argv[1];
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        kmsctl_keystore_usage(stdout);
        return KMSCTL_EXIT_OK;
    }
    const struct subcommand *sc = NULL;
    for (size_t i = 0; i < KMS_ARRAY_LEN(subcommands) && sc == NULL; i++)
        if (strcmp(sub, subcommands[i].name) == 0)
            sc = &subcommands[i];
    if (sc == NULL)
        return usage_error("unknown subcommand '%s'", sub);

    /* why: parse after the subcommand word; av[0] plays getopt's program name */
    char **av = argv + 1;
    int ac = argc - 1;
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(ac, av, ":", longopts, NULL)) != -1) {
        switch (c) {
        case 'k':
            o.keystore = optarg;
            break;
        case 'f':
            o.pw.file = optarg;
            break;
        case 'p':
            o.pw.argument = optarg;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'F':
            o.force = 1;
            break;
        case 'b':
            o.backup_dir = optarg;
            break;
        case 'm':
            if (parse_count(optarg, 1, 100000, &v) != 0)
                return usage_error("--max-backups needs a number from 1 to 100000, not '%s'", optarg);
            o.max_backups = (size_t)v;
            break;
        case 'd':
            if (parse_count(optarg, 0, 36500, &v) != 0)
                return usage_error("--days needs a number from 0 to 36500, not '%s'", optarg);
            o.days = (int)v;
            break;
        case 's':
            o.server_alias = optarg;
            break;
        case 'c':
            o.client_alias = optarg;
            break;
        case 't':
            o.to = optarg;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'r':
            o.from = optarg;
            break;
        case 'S':
            o.strategy = optarg;
            break;
        case 'P':
            o.p12_pw_file = optarg;
            break;
        case 'C':
            o.cluster = 1;
            break;
        case 'A':
            o.src_alias = optarg;
            break;
        case 'G':
            o.config = optarg;
            break;
        case 'W':
            if (parse_count(optarg, 0, 3600, &v) != 0)
                return usage_error("--wait needs seconds from 0 to 3600, not '%s'", optarg);
            o.wait_s = (unsigned)v;
            break;
        case 'h':
            kmsctl_keystore_usage(stdout);
            return KMSCTL_EXIT_OK;
        case ':':
            return usage_error("option '%s' needs a value", av[optind - 1]);
        default:
            return usage_error("unknown option '%s'", av[optind - 1]);
        }
    }
    char **rest = av + optind;
    int nrest = ac - optind;
    if (nrest < sc->nargs)
        return usage_error("%s needs %s", sub,
                           sc->nargs == 2 ? "ALIAS and FILE" : strcmp(sub, "restore") == 0 ? "BACKUP" : "an ALIAS");
    if (strcmp(sub, "restore") == 0) {
        o.file = rest[0];
    } else {
        if (sc->nargs >= 1)
            o.alias = rest[0];
        if (sc->nargs >= 2)
            o.file = rest[1];
    }
    if (nrest > sc->nargs)
        return usage_error("unexpected argument '%s'", rest[sc->nargs]);
    if (o.cluster && sc->cluster == 0)
        return usage_error("%s does not take --cluster (it reads one file: use --keystore)", sub);
    if (!o.cluster && sc->cluster == 2)
        return usage_error("%s works on the cluster: add --cluster", sub);
    if (o.cluster && o.keystore != NULL)
        return usage_error("%s", "--cluster edits the cluster's keystore: give --config, not --keystore");
    if (o.cluster && strcmp(sub, "convert") == 0 && o.out != NULL)
        return usage_error("%s", "convert --cluster converts the cluster's keystore in place: no --out");
    if (o.cluster && strcmp(sub, "migrate") == 0 && o.to == NULL)
        o.to = "(cluster)";
    if (o.cluster) {
        if (strcmp(sub, "convert") == 0 && o.to == NULL)
            return usage_error("%s", "convert needs --to pkcs12|jks|pem");
        if (strcmp(sub, "migrate") == 0 && (o.from == NULL || o.strategy == NULL))
            return usage_error("%s", "migrate --cluster needs --from OLD --strategy STRATEGY");
        return run_cluster(sc, &o);
    }
    if (o.wait_s > 0)
        return usage_error("%s", "--wait goes with --cluster");
    if (o.config != NULL && o.keystore != NULL)
        return usage_error("%s", "give --keystore or --config (whose kms.keystore.file names it), not both");
    if (strcmp(sub, "convert") == 0 && o.to == NULL)
        return usage_error("%s", "convert needs --to pkcs12|jks");
    if (strcmp(sub, "migrate") == 0 && (o.from == NULL || o.to == NULL || o.strategy == NULL))
        return usage_error("%s", "migrate needs --from OLD --to NEW --strategy STRATEGY");
    struct kms_config *cfg = NULL;
    if (sc->needs_keystore && o.keystore == NULL && o.config == NULL && getenv("KMS_CONFIG") == NULL &&
        access(kmsctl_config_path(NULL), R_OK) != 0)
        return usage_error("--keystore FILE is required (or --config kms.properties, $KMS_CONFIG, or %s)",
                           kmsctl_config_path(NULL));
    if (sc->needs_keystore && o.keystore == NULL) {
        int rc = keystore_from_config(&o, &cfg);
        if (rc != KMSCTL_EXIT_OK) {
            kms_config_free(&cfg);
            return rc;
        }
    }
    int rc = sc->run(&o);
    kms_config_free(&cfg);
    return rc;
}
