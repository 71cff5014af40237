/* kmsctl keystore list | show (SPEC §6): what an operator needs to see of a
 * keystore, as keytool names it (PrivateKeyEntry, trustedCertEntry). */
#include "cli/kmsctl.h"

#include <getopt.h>
#include <stdarg.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kms/keystore.h"

struct options {
    const char *keystore;
    struct kmsctl_password_source pw;
    int json;
    const char *alias; /* show */
};

void kmsctl_keystore_usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsctl keystore list --keystore FILE [PASSWORD] [--json]\n"
            "       kmsctl keystore show ALIAS --keystore FILE [PASSWORD] [--json]\n"
            "\n"
            "  list   one line per entry: alias, entry type, SHA-256 fingerprint, not-after\n"
            "  show   subject, issuer, serial, validity, fingerprint, entry type, key, chain\n"
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
        rc = print_json(json_pack("{s:s, s:s, s:o}", "keystore", kms_keystore_path(ks), "format",
                                  kms_keystore_format_name(kms_keystore_format(ks)), "entries", arr));
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

int kmsctl_keystore_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"keystore", required_argument, NULL, 'k'},
        {"password-file", required_argument, NULL, 'f'},
        {"storepass", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct options o = {0};
    if (argc < 2)
        return usage_error("%s", "a subcommand is required");
    const char *sub = argv[1];
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        kmsctl_keystore_usage(stdout);
        return KMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0)
        return usage_error("unknown subcommand '%s'", sub);

    /* why: parse after the subcommand word; av[0] plays getopt's program name */
    char **av = argv + 1;
    int ac = argc - 1;
    optind = 1;
    opterr = 0;
    int c;
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
    if (strcmp(sub, "show") == 0) {
        if (nrest < 1)
            return usage_error("%s", "show needs an ALIAS");
        o.alias = rest[0];
        rest++, nrest--;
    }
    if (nrest > 0)
        return usage_error("unexpected argument '%s'", rest[0]);
    if (o.keystore == NULL)
        return usage_error("%s", "--keystore FILE is required");
    return strcmp(sub, "list") == 0 ? cmd_list(&o) : cmd_show(&o);
}
