/* Whole-file reads and atomic replacements, once for the project (issue 14):
 * keystores, the soft key file, secret files, properties files and state
 * files all go through these two. Messages name the path and the step that
 * failed. */
#ifndef KMS_COMMON_FILE_H
#define KMS_COMMON_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* The bound most callers read files with (keystores are far smaller). */
#define KMS_FILE_MAX (16u << 20)

/* Reads the whole regular file at path, at most max bytes, into *out
 * (malloc'd with one spare byte, which is 0; the caller wipes and frees it)
 * and *len. what names the file in messages ("the keystore"). Errors:
 * KMS_ERR_IO (cannot open or read, not a regular file, changed while read),
 * KMS_ERR_TOO_LARGE (over max), KMS_ERR_NO_MEMORY. When absent is not NULL,
 * a missing file is no error: *absent is set and *out is NULL. */
kms_rc kms_file_read(const char *path, size_t max, const char *what, uint8_t **out, size_t *len,
                     int *absent) KMS_MUST_CHECK;

/* kms_file_read for a file of any kind: a pipe (--config <(...)), /dev/null,
 * a device; max + 1 bytes are set aside at once for one that is not a
 * regular file. For configuration files, never for keystores. */
kms_rc kms_file_read_any(const char *path, size_t max, const char *what, uint8_t **out, size_t *len) KMS_MUST_CHECK;

struct kms_secret;
/* Reads the file at path (a regular file, a pipe, /dev/stdin...) straight
 * into a new secret of at most max bytes (secure memory: it never passes
 * through the ordinary heap; the caller frees it). what names the file in
 * messages, which never hold a byte of it. KMS_ERR_IO, KMS_ERR_TOO_LARGE
 * (more than max bytes), KMS_ERR_NO_MEMORY. An empty file gives a secret of
 * length 0. */
kms_rc kms_file_read_secret(const char *path, size_t max, const char *what, struct kms_secret **out) KMS_MUST_CHECK;

/* Replaces path with data[0..len) atomically: a temporary file beside it,
 * written, fsync'd, renamed over path, then the directory fsync'd. When path
 * exists its mode is kept, and its owner too when running as root; a new
 * file gets mode new_mode. With exists not NULL the file is only created,
 * never replaced (link(2), so two writers cannot both create it): *exists is
 * set and nothing is written when path is already there. KMS_ERR_IO with a
 * detail naming path and the step. */
kms_rc kms_file_write_atomic(const char *path, const uint8_t *data, size_t len, mode_t new_mode,
                             int *exists) KMS_MUST_CHECK;

#endif
