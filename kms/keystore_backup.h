/* Keystore backups (issue 6): before every change kmsctl copies the keystore
 * file into a backup folder outside the keystore's own folder, keeps the
 * original's owner (when running as root) and mode, appends an audit line to
 * audit.log in that folder and prunes the oldest backups beyond a maximum.
 *
 * Backup file name: <keystore basename>.<UTC YYYYMMDDTHHMMSS.mmmZ>[_<nnn>].bak
 *                   (names sort oldest first)
 * Audit line:       <UTC ISO time> backup=<file> keystore=<path>
 *                   sha256=<hex of the keystore file> aliases=<a,b,...> */
#ifndef KMS_KMS_KEYSTORE_BACKUP_H
#define KMS_KMS_KEYSTORE_BACKUP_H

#include <stddef.h>

#include "kms/keystore.h"

#define KMS_BACKUP_DEFAULT_MAX 10

/* The default backup folder for keystore_path: "<dir>/../<basename>.backups"
 * (beside the keystore's folder, not in it). malloc'd into *out.
 * KMS_ERR_NO_MEMORY, KMS_ERR_IO (path too long). */
kms_rc kms_backup_default_dir(const char *keystore_path, char **out) KMS_MUST_CHECK;

/* Copies keystore_path into backup_dir (created 0700 when missing), appends
 * the audit line (aliases from ks, which may be NULL when the file does not
 * load: "aliases=?"), then prunes backups of this keystore beyond
 * max_backups (>= 1), oldest first. *made (malloc'd, may be NULL) receives
 * the backup's path. KMS_ERR_IO with a detail naming the file. */
kms_rc kms_backup_make(const char *keystore_path, const struct kms_keystore *ks, const char *backup_dir,
                       size_t max_backups, char **made) KMS_MUST_CHECK;

/* Backups of keystore_path in backup_dir, oldest first: *names (malloc'd
 * array of malloc'd file names, free with kms_backup_list_free), *count.
 * A missing folder is an empty list. KMS_ERR_IO, KMS_ERR_NO_MEMORY. */
kms_rc kms_backup_list(const char *keystore_path, const char *backup_dir, char ***names,
                       size_t *count) KMS_MUST_CHECK;
void kms_backup_list_free(char ***names, size_t count);

#endif
