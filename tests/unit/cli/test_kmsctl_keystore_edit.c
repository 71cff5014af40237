/* kmsctl keystore editing commands (issue 6), driven as an operator would:
 * the built kmsctl against JKS and PKCS#12 keystores that keytool writes at
 * test time (tests/unit/kms/make_keystores.sh), each result checked with
 * `keytool -list -v`. Fixtures are built once per test binary; every test
 * works on its own copies in its own directory.
 *
 * No per-test .timeout: see tests/unit/kms/test_keystore.c. */
#define _GNU_SOURCE /* strcasestr */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/keystore_fixtures.h"

#define PASSWORD "S3cret-pw!"

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixtures_build("kmsctl-edit-", "KMSCTL_FIXTURES", PASSWORD, 0);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixtures_remove();
}

/* ---- helpers ------------------------------------------------------------ */

static char work[256]; /* this test's directory */
static char out[65536];

/* Runs a shell command line in the test's directory with KMS_KEYSTORE_PASSWORD
 * and KS_PASS set; stdout+stderr into out; returns the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192], full[9000], outp[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(outp, sizeof(outp), "%s/.out", work);
    /* why the keytool function: its JVM's C2 compiler threads are most of these short runs;
     * C1 alone with the serial collector takes about half the CPU, and prints nothing more */
    snprintf(full, sizeof(full),
             "keytool() { command keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC \"$@\"; }; "
             "cd '%s' && { %s ; } >'%s' 2>&1",
             work, cmd, outp);
    const char *bin = getenv("KMS_BINARY_DIR");
    char kenv[4200];
    snprintf(kenv, sizeof(kenv), "K=%s/cli/kmsctl", bin ? bin : ".");
    char *envp[] = {"PATH=/usr/bin:/bin", "KMS_KEYSTORE_PASSWORD=" PASSWORD, "KS_PASS=" PASSWORD,
                    "F=" /* placeholder replaced below */, kenv, NULL};
    char fenv[300];
    snprintf(fenv, sizeof(fenv), "F=%s", getenv("KMSCTL_FIXTURES"));
    envp[3] = fenv;
    char *argv[] = {"/bin/sh", "-c", full, NULL};
    pid_t pid;
    int st;
    cr_assert_eq(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, envp), 0);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    FILE *f = fopen(outp, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(outp);
    cr_assert_null(strstr(out, PASSWORD), "output shows the password:\n%s", out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup_work(const char *name)
{
    const char *fx = getenv("KMSCTL_FIXTURES");
    cr_assert_not_null(fx, "fixtures were not built");
    snprintf(work, sizeof(work), "%s/%s", fx, name);
    cr_assert_eq(mkdir(work, 0700), 0);
}

#define KMSCTL(...) sh("\"$K\" keystore " __VA_ARGS__)

/* keytool -list -v; the entry type of alias (lower-case) or NULL. */
static const char *kt_type(const char *ks, const char *alias)
{
    static char type[64];
    cr_assert_eq(sh("keytool -list -v -keystore %s -storepass:env KS_PASS", ks), 0, "keytool: %s", out);
    char needle[300];
    snprintf(needle, sizeof(needle), "Alias name: %s\n", alias);
    const char *p = strstr(out, needle);
    if (p == NULL)
        return NULL;
    p = strstr(p, "Entry type: ");
    cr_assert_not_null(p);
    p += strlen("Entry type: ");
    size_t n = strcspn(p, "\n");
    snprintf(type, sizeof(type), "%.*s", (int)n, p);
    return type;
}

static int kt_count(const char *ks)
{
    cr_assert_eq(sh("keytool -list -keystore %s -storepass:env KS_PASS", ks), 0, "keytool: %s", out);
    const char *p = strstr(out, "Your keystore contains ");
    cr_assert_not_null(p, "%s", out);
    return (int)strtol(p + strlen("Your keystore contains "), NULL, 10);
}

static void kt_storetype(const char *ks, const char *type)
{
    cr_assert_eq(sh("keytool -list -keystore %s -storepass:env KS_PASS", ks), 0, "keytool: %s", out);
    char needle[64];
    snprintf(needle, sizeof(needle), "Keystore type: %s", type);
    cr_assert_not_null(strstr(out, needle), "expected %s:\n%s", needle, out);
}

static void expect(const char *needle)
{
    cr_assert_not_null(strstr(out, needle), "expected '%s' in:\n%s", needle, out);
}

static void expect_ci(const char *needle)
{
    cr_assert_not_null(strcasestr(out, needle), "expected '%s' (any case) in:\n%s", needle, out);
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static int count_backups(void)
{
    cr_assert_eq(sh("ls bk | grep -c '\\.bak$' || true"), 0);
    return (int)strtol(out, NULL, 10);
}

static const char *type_name(int jks) { return jks ? "JKS" : "PKCS12"; }
static const char *fixture(int jks) { return jks ? "ks.jks" : "ks-modern.p12"; }

/* ---- import-cert, delete, --force, case-insensitive aliases ------------- */

static void import_cert(int jks)
{
    setup_work(jks ? "import-jks" : "import-p12");
    cr_assert_eq(sh("cp $F/%s ks && cp $F/device.der $F/backend.crt .", fixture(jks)), 0);
    cr_assert_eq(KMSCTL("import-cert cmxDevice20261122 device.der --keystore ks --backup-dir bk"), 0, "%s", out);
    expect("Added certificate entry 'cmxDevice20261122'");
    expect("Backup: bk/ks.");
    cr_assert_str_eq(kt_type("ks", "cmxdevice20261122"), "trustedCertEntry");
    cr_assert_str_eq(kt_type("ks", "kmsserver"), "PrivateKeyEntry");
    kt_storetype("ks", type_name(jks));
    cr_assert_eq(kt_count("ks"), 5);
    /* already present, in another case: refused; --force replaces */
    cr_assert_eq(KMSCTL("import-cert CMXDEVICE20261122 backend.crt --keystore ks --backup-dir bk"), 1);
    expect("already exists");
    cr_assert_eq(KMSCTL("import-cert CMXDEVICE20261122 backend.crt --keystore ks --backup-dir bk --force"), 0,
                 "%s", out);
    cr_assert_eq(kt_count("ks"), 5);
    cr_assert_eq(sh("keytool -list -v -keystore ks -storepass:env KS_PASS -alias cmxdevice20261122"), 0);
    expect("CN=cmxBackend");
    /* delete */
    cr_assert_eq(KMSCTL("delete CmxDevice20261122 --keystore ks --backup-dir bk"), 0, "%s", out);
    expect("Deleted entry");
    cr_assert_null(kt_type("ks", "cmxdevice20261122"));
    cr_assert_eq(kt_count("ks"), 4);
    cr_assert_eq(KMSCTL("delete nosuch --keystore ks --backup-dir bk"), 1);
    expect("no entry with alias 'nosuch'");
    cr_assert_eq(count_backups(), 3);
}

Test(kmsctl_edit, import_cert_delete_jks) { import_cert(1); }
Test(kmsctl_edit, import_cert_delete_p12) { import_cert(0); }

/* ---- add: bundle validation --------------------------------------------- */

static void add_bundle(int jks)
{
    setup_work(jks ? "add-jks" : "add-p12");
    cr_assert_eq(sh("cp $F/%s ks && cd $F && cat server.p8 server.crt inter.crt ca.crt >%s/good.pem && "
                    "cat server.p8 server.crt ca.crt inter.crt >%s/wrong.pem && "
                    "cat server.p8 server.crt backend.crt >%s/nolink.pem && "
                    "cat server.p8 backend.crt inter.crt ca.crt >%s/nomatch.pem && "
                    "cat server.p8 server.crt inter.crt >%s/toca.pem && "
                    "cat device.crt inter.crt ca.crt >%s/nokey.pem",
                    fixture(jks), work, work, work, work, work, work),
                 0, "%s", out);
    cr_assert_eq(sh("cp ks ks.orig"), 0);
    cr_assert_eq(KMSCTL("add srv2 wrong.pem --keystore ks --backup-dir bk"), 1);
    expect("wrong order");
    expect("CN=kmsServer");
    cr_assert_eq(KMSCTL("add srv2 nolink.pem --keystore ks --backup-dir bk"), 1);
    expect("does not link");
    expect("CN=cmxBackend");
    cr_assert_eq(KMSCTL("add srv2 nomatch.pem --keystore ks --backup-dir bk"), 1);
    expect("does not match");
    cr_assert_eq(sh("cmp ks ks.orig"), 0, "a refused add changed the keystore");
    cr_assert_eq(count_backups(), 0);

    cr_assert_eq(KMSCTL("add srv2 good.pem --keystore ks --backup-dir bk"), 0, "%s", out);
    expect("Added private-key entry 'srv2' with a chain of 3 certificates");
    cr_assert_str_eq(kt_type("ks", "srv2"), "PrivateKeyEntry");
    cr_assert_eq(sh("keytool -list -v -keystore ks -storepass:env KS_PASS -alias srv2"), 0);
    expect("Certificate chain length: 3");
    /* ends at the keystore's trusted root kmipsigningca */
    cr_assert_eq(KMSCTL("add srv3 toca.pem --keystore ks --backup-dir bk"), 0, "%s", out);
    expect_ci("trusted CA 'kmipsigningca'");
    cr_assert_str_eq(kt_type("ks", "srv3"), "PrivateKeyEntry");
    /* no key: a certificate entry */
    cr_assert_eq(KMSCTL("add cmxDevice2 nokey.pem --keystore ks --backup-dir bk"), 0, "%s", out);
    cr_assert_str_eq(kt_type("ks", "cmxdevice2"), "trustedCertEntry");
    kt_storetype("ks", type_name(jks));
    /* our own reader agrees */
    cr_assert_eq(KMSCTL("list --keystore ks"), 0, "%s", out);
    expect("srv2");
    expect_ci("cmxDevice2 ");
}

Test(kmsctl_edit, add_bundle_jks) { add_bundle(1); }
Test(kmsctl_edit, add_bundle_p12) { add_bundle(0); }

/* ---- import-p12, clear, verify ------------------------------------------ */

static void p12_clear_verify(int jks)
{
    setup_work(jks ? "clear-jks" : "clear-p12");
    cr_assert_eq(sh("cp $F/%s ks && cp $F/src.p12 . && printf '%%s\\n' \"$KS_PASS\" >p12pw", fixture(jks)), 0);
    cr_assert_eq(KMSCTL("verify --keystore ks"), 1);
    expect("no client private-key entry 'kmsclient'");
    cr_assert_eq(KMSCTL("import-p12 kmsClient src.p12 --p12-password-file p12pw --keystore ks --backup-dir bk"), 0,
                 "%s", out);
    cr_assert_str_eq(kt_type("ks", "kmsclient"), "PrivateKeyEntry");
    cr_assert_eq(KMSCTL("verify --keystore ks --days 30"), 0, "%s", out);
    expect("OK:");
    cr_assert_eq(KMSCTL("verify --keystore ks --days 1000"), 1);
    expect("expires within 1000 days");
    cr_assert_eq(KMSCTL("clear --keystore ks --backup-dir bk"), 0, "%s", out);
    cr_assert_eq(kt_count("ks"), 1);
    cr_assert_str_eq(kt_type("ks", "kmsserver"), "PrivateKeyEntry");
    kt_storetype("ks", type_name(jks));
    cr_assert_eq(KMSCTL("verify --keystore ks"), 1);
    expect("no cmxbackend*");
    expect("no cmxdevice*");
}

Test(kmsctl_edit, import_p12_clear_verify_jks) { p12_clear_verify(1); }
Test(kmsctl_edit, import_p12_clear_verify_p12) { p12_clear_verify(0); }

/* ---- convert ------------------------------------------------------------ */

static void convert(int jks)
{
    setup_work(jks ? "convert-jks" : "convert-p12");
    cr_assert_eq(sh("cp $F/%s ks", fixture(jks)), 0);
    cr_assert_eq(KMSCTL("convert --to %s --out out.ks --keystore ks --backup-dir bk", jks ? "pkcs12" : "jks"), 0,
                 "%s", out);
    kt_storetype("out.ks", jks ? "PKCS12" : "JKS");
    cr_assert_eq(kt_count("out.ks"), 4);
    cr_assert_str_eq(kt_type("out.ks", "kmsserver"), "PrivateKeyEntry");
    cr_assert_str_eq(kt_type("out.ks", "kmipsigningca"), "trustedCertEntry");
    cr_assert_str_eq(kt_type("out.ks", "cmxbackend"), "trustedCertEntry");
    cr_assert_eq(sh("keytool -list -v -keystore out.ks -storepass:env KS_PASS -alias kmsserver"), 0);
    expect("Certificate chain length: 3");
    /* Java decrypts the private key we protected (keytool -list does not) */
    cr_assert_eq(sh("keytool -importkeystore -noprompt -srckeystore out.ks -srcstorepass:env KS_PASS "
                    "-destkeystore copy.p12 -deststoretype pkcs12 -deststorepass:env KS_PASS"),
                 0, "%s", out);
    expect("Entry for alias kmsserver successfully imported");
    cr_assert_eq(KMSCTL("convert --to pkcs12 --out out.ks --keystore ks --backup-dir bk"), 1);
    expect("already exists");
}

/* Two private-key entries whose chains share an intermediate CA, written as a
 * PEM bundle (each entry followed by its own chain) and read back: the
 * reader must take the copy after each leaf, not the earlier entry's. */
Test(kmsctl_edit, pem_bundle_of_two_chains_sharing_a_ca_reads_back)
{
    setup_work("pem-two-chains");
    cr_assert_eq(sh("cp $F/%s ks && cd $F && cat server.p8 server.crt inter.crt ca.crt >%s/good.pem", fixture(0),
                    work),
                 0, "%s", out);
    cr_assert_eq(KMSCTL("add srv2 good.pem --keystore ks --backup-dir bk"), 0, "%s", out);
    cr_assert_eq(KMSCTL("convert --to pem --out out.pem --keystore ks --backup-dir bk"), 0, "%s", out);
    cr_assert_eq(KMSCTL("list --keystore out.pem"), 0, "%s", out);
    expect("srv2");
    cr_assert_eq(KMSCTL("convert --to pkcs12 --out back.p12 --keystore out.pem --backup-dir bk"), 0, "%s", out);
    cr_assert_eq(sh("keytool -list -v -keystore back.p12 -storepass:env KS_PASS -alias srv2"), 0, "%s", out);
    expect("Certificate chain length: 3");
}

Test(kmsctl_edit, convert_jks_to_p12) { convert(1); }
Test(kmsctl_edit, convert_p12_to_jks) { convert(0); }

/* ---- backups, audit, pruning, restore, owner and mode ------------------- */

static void backups(int jks)
{
    setup_work(jks ? "backups-jks" : "backups-p12");
    cr_assert_eq(sh("cp $F/%s ks && cp $F/device.crt . && chmod 0640 ks && chown 1234:2345 ks", fixture(jks)),
                 0);
    cr_assert_eq(sh("cp -p ks ks.first"), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(KMSCTL("import-cert dev%d device.crt --keystore ks --backup-dir bk --max-backups 3", i), 0,
                     "%s", out);
    }
    cr_assert_eq(count_backups(), 3);
    char audit[400];
    snprintf(audit, sizeof(audit), "%s/bk/audit.log", work);
    cr_assert_eq(count_lines(audit), 5);
    cr_assert_eq(sh("grep -c 'backup=bk/ks\\..*sha256=[0-9a-f]\\{64\\} aliases=.*kmsserver' bk/audit.log"), 0,
                 "%s", out);
    cr_assert_eq(sh("grep -q \"sha256=$(sha256sum ks.first | cut -c1-64) \" bk/audit.log"), 0,
                 "the first audit line has the original file's SHA-256");
    /* owner and mode kept: the keystore and its backups */
    struct stat st;
    char p[400];
    snprintf(p, sizeof(p), "%s/ks", work);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0640);
    if (geteuid() == 0) {
        cr_assert_eq(st.st_uid, 1234);
        cr_assert_eq(st.st_gid, 2345);
    }
    cr_assert_eq(sh("stat -c '%%a %%u' bk/*.bak | sort -u"), 0);
    cr_assert_str_eq(out, geteuid() == 0 ? "640 1234\n" : "640 0\n");

    cr_assert_eq(KMSCTL("backups --keystore ks --backup-dir bk"), 0, "%s", out);
    expect("(3, oldest first)");
    /* restore the oldest kept backup: exact bytes */
    cr_assert_eq(sh("ls bk | grep '\\.bak$' | head -1"), 0);
    char oldest[256];
    snprintf(oldest, sizeof(oldest), "%.*s", (int)strcspn(out, "\n"), out);
    cr_assert_eq(sh("cp ks ks.before && cp bk/%s restore.ref", oldest), 0);
    cr_assert_eq(KMSCTL("restore %s --keystore ks --backup-dir bk --max-backups 3", oldest), 0, "%s", out);
    expect("Restored ks");
    cr_assert_eq(sh("cmp ks restore.ref"), 0, "restore is not byte-exact");
    /* the current file was backed up first (and the oldest pruned) */
    cr_assert_eq(sh("for f in bk/*.bak; do cmp -s $f ks.before && echo found; done"), 0);
    expect("found");
    cr_assert_eq(count_lines(audit), 6);
    cr_assert_eq(sh("stat -c '%%a' ks"), 0);
    cr_assert_str_eq(out, "640\n");
    kt_storetype("ks", type_name(jks));
    /* a backup that is not a keystore is not restored */
    cr_assert_eq(sh("echo junk >junk.bak"), 0);
    cr_assert_eq(KMSCTL("restore ./junk.bak --keystore ks --backup-dir bk"), 1);
}

Test(kmsctl_edit, backups_prune_restore_jks) { backups(1); }
Test(kmsctl_edit, backups_prune_restore_p12) { backups(0); }

/* ---- migrate ------------------------------------------------------------ */

static void truststores(void)
{
    /* old: root CA, intermediate CA, backend, device; new: root CA only */
    cr_assert_eq(sh("for c in ca:kmipsigningca inter:issuing backend:cmxbackend device:cmxdevice; do "
                    "keytool -importcert -noprompt -alias ${c#*:} -file $F/${c%%%%:*}.crt -keystore old.jks "
                    "-storetype jks -storepass:env KS_PASS || exit 1; done && "
                    "keytool -importcert -noprompt -alias rootca -file $F/ca.crt -keystore new.jks "
                    "-storetype jks -storepass:env KS_PASS"),
                 0, "%s", out);
}

Test(kmsctl_edit, migrate_delta)
{
    setup_work("migrate-delta");
    truststores();
    cr_assert_eq(KMSCTL("migrate --from old.jks --to new.jks --strategy migrate_delta --backup-dir bk"), 0, "%s",
                 out);
    expect("3 certificates copied");
    cr_assert_eq(kt_count("new.jks"), 4);
    cr_assert_str_eq(kt_type("new.jks", "issuing"), "trustedCertEntry");
    cr_assert_str_eq(kt_type("new.jks", "cmxbackend"), "trustedCertEntry");
    cr_assert_str_eq(kt_type("new.jks", "cmxdevice"), "trustedCertEntry");
    cr_assert_null(kt_type("new.jks", "kmipsigningca"), "the root is already in new (by fingerprint)");
    cr_assert_eq(sh("ls bk | grep -c '\\.bak$'"), 0);
    cr_assert_str_eq(out, "2\n", "both trust stores are backed up");
}

Test(kmsctl_edit, migrate_non_ca)
{
    setup_work("migrate-nonca");
    truststores();
    cr_assert_eq(KMSCTL("migrate --from old.jks --to new.jks --strategy migrate_non_ca --backup-dir bk"), 0, "%s",
                 out);
    expect("2 certificates copied");
    cr_assert_eq(kt_count("new.jks"), 3);
    cr_assert_null(kt_type("new.jks", "issuing"));
    cr_assert_str_eq(kt_type("new.jks", "cmxdevice"), "trustedCertEntry");
}

Test(kmsctl_edit, migrate_nothing)
{
    setup_work("migrate-none");
    truststores();
    cr_assert_eq(sh("cp new.jks new.orig"), 0);
    cr_assert_eq(KMSCTL("migrate --from old.jks --to new.jks --strategy do_not_migrate --backup-dir bk"), 0, "%s",
                 out);
    expect("0 certificates copied");
    cr_assert_eq(sh("cmp new.jks new.orig"), 0);
    cr_assert_eq(KMSCTL("migrate --from old.jks --to new.jks --strategy copy_all --backup-dir bk"), 2);
}

/* ---- password handling -------------------------------------------------- */

Test(kmsctl_edit, needs_password_and_refuses_wrong)
{
    setup_work("password");
    cr_assert_eq(sh("cp $F/ks.jks ks && cp $F/device.crt ."), 0);
    cr_assert_eq(sh("KMS_KEYSTORE_PASSWORD= \"$K\" keystore import-cert d device.crt --keystore ks --backup-dir bk"),
                 1);
    expect("needs its password");
    cr_assert_eq(sh("KMS_KEYSTORE_PASSWORD=wrong-Pa55 \"$K\" keystore delete cmxdevice --keystore ks "
                    "--backup-dir bk"),
                 1);
    cr_assert_eq(sh("cmp ks $F/ks.jks"), 0);
}

/* ---- malformed inputs: refused, keystore untouched, no backup ----------- */

Test(kmsctl_edit, malformed_bundles_and_certificates)
{
    setup_work("malformed");
    cr_assert_eq(sh("cp $F/ks-modern.p12 ks && cp ks ks.orig && cd $F && "
                    "cat server.p8 server.p8 server.crt inter.crt ca.crt >%s/twokeys.pem && "
                    "openssl pkey -in server.key -pubout >%s/pub.pem && cat server.crt >>%s/pub.pem && "
                    "head -c 300 server.crt >%s/trunc.pem && : >%s/empty.pem && "
                    "cat server.p8 >%s/keyonly.pem && "
                    "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do cat ca.crt; done >%s/many.pem && "
                    "cat server.der >%s/trailing.der && printf 'x' >>%s/trailing.der && "
                    "printf 'junk' >%s/junk.crt && cp server-trad-enc.key %s/tradenc.pem && "
                    "cat server.crt inter.crt ca.crt >>%s/tradenc.pem",
                    work, work, work, work, work, work, work, work, work, work, work, work),
                 0, "%s", out);
    cr_assert_eq(KMSCTL("add a twokeys.pem --keystore ks --backup-dir bk"), 1);
    expect("more than one private key");
    cr_assert_eq(KMSCTL("add a pub.pem --keystore ks --backup-dir bk"), 1);
    expect("expected CERTIFICATE or PRIVATE KEY");
    cr_assert_eq(KMSCTL("add a trunc.pem --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("add a empty.pem --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("add a keyonly.pem --keystore ks --backup-dir bk"), 1);
    expect("no certificate");
    cr_assert_eq(KMSCTL("add a many.pem --keystore ks --backup-dir bk"), 1);
    expect("more than 16 certificates");
    cr_assert_eq(KMSCTL("add a tradenc.pem --keystore ks --backup-dir bk"), 1);
    expect("PKCS#8");
    cr_assert_eq(KMSCTL("import-cert a trailing.der --keystore ks --backup-dir bk"), 1);
    expect("not a certificate");
    cr_assert_eq(KMSCTL("import-cert a junk.crt --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("import-cert a nosuch.crt --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("import-p12 a junk.crt --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("import-cert 'bad\001alias' $F/device.crt --keystore ks --backup-dir bk"), 1);
    cr_assert_eq(KMSCTL("add --keystore ks"), 2);
    cr_assert_eq(KMSCTL("verify --keystore ks --days -1"), 2);
    cr_assert_eq(KMSCTL("import-cert a $F/device.crt --keystore ks --max-backups 0"), 2);
    cr_assert_eq(sh("cmp ks ks.orig && test ! -e bk"), 0, "a refused command changed something");
}

/* ---- create, import-p12 --src-alias, the keystore from kms.properties (issue 13) ---- */

Test(kmsctl_edit, create_makes_an_empty_keystore_keytool_reads_and_never_replaces_one)
{
    setup_work("create");
    cr_assert_eq(KMSCTL("create --keystore new.jks"), 0, "%s", out);
    expect("Created new.jks, an empty JKS keystore");
    kt_storetype("new.jks", "JKS");
    cr_assert_eq(kt_count("new.jks"), 0);
    cr_assert_eq(KMSCTL("create --keystore new.p12"), 0, "%s", out);
    kt_storetype("new.p12", "PKCS12");
    cr_assert_eq(KMSCTL("create --keystore other --to pkcs12"), 0, "%s", out);
    kt_storetype("other", "PKCS12");
    /* an existing file is never replaced; an unnamed format is asked for */
    cr_assert_eq(sh("cp new.jks before && \"$K\" keystore create --keystore new.jks; echo rc=$?; cmp new.jks before"),
                 0, "%s", out);
    expect("rc=1");
    expect("already exists");
    cr_assert_eq(KMSCTL("create --keystore plain.ks"), 2);
    expect("--to jks|pkcs12");
    /* entries go in with the other commands, and keytool reads them */
    cr_assert_eq(sh("cp $F/src.p12 . && printf '%%s\\n' \"$KS_PASS\" >p12pw"), 0);
    cr_assert_eq(KMSCTL("import-p12 kmsClient src.p12 --p12-password-file p12pw --keystore new.jks --backup-dir bk"),
                 0, "%s", out);
    cr_assert_str_eq(kt_type("new.jks", "kmsclient"), "PrivateKeyEntry");
}

Test(kmsctl_edit, import_p12_with_several_keys_needs_src_alias)
{
    setup_work("src-alias");
    /* a PKCS#12 with two keys, as keytool makes it */
    cr_assert_eq(sh("cp $F/src.p12 one.p12 && keytool -importkeystore -srckeystore one.p12 -srcstoretype pkcs12 "
                    "-srcstorepass:env KS_PASS -destkeystore two.p12 -deststoretype pkcs12 -deststorepass:env KS_PASS "
                    ">/dev/null 2>&1 && keytool -genkeypair -keyalg EC -groupname secp256r1 -alias second "
                    "-dname CN=second -validity 30 -keystore two.p12 -storetype pkcs12 -storepass:env KS_PASS "
                    ">/dev/null 2>&1 && printf '%%s\\n' \"$KS_PASS\" >p12pw && \"$K\" keystore create --keystore ks.jks"),
                 0, "%s", out);
    cr_assert_eq(KMSCTL("import-p12 kmsClient two.p12 --p12-password-file p12pw --keystore ks.jks --backup-dir bk"), 1);
    expect("holds 2 private-key entries");
    expect("'second'");
    expect("--src-alias");
    cr_assert_eq(kt_count("ks.jks"), 0); /* nothing changed */
    cr_assert_eq(KMSCTL("import-p12 kmsClient two.p12 --src-alias nosuch --p12-password-file p12pw --keystore ks.jks "
                        "--backup-dir bk"),
                 1);
    expect("no private-key entry with alias 'nosuch'");
    cr_assert_eq(KMSCTL("import-p12 kmsClient two.p12 --src-alias SECOND --p12-password-file p12pw --keystore ks.jks "
                        "--backup-dir bk"),
                 0, "%s", out);
    expect("from 'second'");
    cr_assert_eq(sh("keytool -list -v -keystore ks.jks -storepass:env KS_PASS -alias kmsclient"), 0, "%s", out);
    expect("Owner: CN=second");
}

Test(kmsctl_edit, keystore_and_password_come_from_kms_properties_when_not_given)
{
    setup_work("from-config");
    cr_assert_eq(sh("cp $F/%s node.jks && printf '%%s\\n' \"$KS_PASS\" >pw.txt && "
                    "printf 'kms.hsm.protocol = soft\\nkms.keystore.file = %s/node.jks\\n"
                    "kms.keystore.password.file = %s/pw.txt\\n' >kms.properties",
                    fixture(1), work, work),
                 0, "%s", out);
    /* --config, with no password in the environment: both come from the file */
    cr_assert_eq(sh("env -u KMS_KEYSTORE_PASSWORD \"$K\" keystore list --config kms.properties"), 0, "%s", out);
    expect("kmsserver");
    /* $KMS_CONFIG, and a change */
    cr_assert_eq(sh("env -u KMS_KEYSTORE_PASSWORD KMS_CONFIG=kms.properties \"$K\" keystore import-cert dev2 "
                    "$F/backend.crt --backup-dir bk"),
                 0, "%s", out);
    cr_assert_str_eq(kt_type("node.jks", "dev2"), "trustedCertEntry");
    /* --keystore still wins over $KMS_CONFIG; both options at once is a usage error */
    cr_assert_eq(sh("cp node.jks copy.jks && KMS_CONFIG=kms.properties \"$K\" keystore delete dev2 --keystore copy.jks "
                    "--backup-dir bk2"),
                 0, "%s", out);
    cr_assert_str_eq(kt_type("node.jks", "dev2"), "trustedCertEntry");
    cr_assert_null(kt_type("copy.jks", "dev2"));
    cr_assert_eq(KMSCTL("list --config kms.properties --keystore copy.jks"), 2);
    /* a configuration that does not load is named */
    cr_assert_eq(sh("printf 'kms.server.port = x\\n' >bad.properties && \"$K\" keystore list --config bad.properties"), 1);
    expect("kms.server.port");
    expect("bad.properties");
}
