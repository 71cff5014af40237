/* KMIP binary encoding, TTLV (KMIP 1.4 §9.1, KMIP 2.0 §9.1): pure, no I/O.
 *
 * Every item is Tag (3 bytes, big-endian), Type (1 byte), Length (4 bytes,
 * big-endian, the value length without padding), then the value padded with
 * zeros to a multiple of 8 bytes. A Structure's value is its children.
 *
 * The decoder reads through common/cursor.h only and is strict: fixed-size
 * types must have their exact length, padding bytes must be zero, a
 * Structure's children must consume exactly its length, Booleans are 0 or 1,
 * Text Strings are UTF-8 without NUL, Big Integers are a non-zero multiple of
 * 8 bytes, tags are 0x42xxxx (KMIP) or 0x54xxxx (extensions), and a message is
 * one Structure with nothing after it, at most KMS_TTLV_MAX_MESSAGE bytes and
 * KMS_TTLV_MAX_DEPTH levels deep. It does not know what tags mean: that is
 * kmip_msg.c's job.
 *
 * The encoder appends to a common/buf.h buffer and back-patches each
 * Structure's length when the Structure is closed. */
#ifndef KMS_HSM_KMIP_TTLV_H
#define KMS_HSM_KMIP_TTLV_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

#define KMS_TTLV_MAX_MESSAGE (64u * 1024u) /* whole message, header included */
#define KMS_TTLV_MAX_DEPTH 16u             /* the message itself is depth 1 */
#define KMS_TTLV_HEADER_LEN 8u

enum kms_ttlv_type {
    KMS_TTLV_STRUCTURE = 0x01,
    KMS_TTLV_INTEGER = 0x02,      /* 4 bytes, signed */
    KMS_TTLV_LONG_INTEGER = 0x03, /* 8 bytes, signed */
    KMS_TTLV_BIG_INTEGER = 0x04,  /* n x 8 bytes, two's complement, big-endian */
    KMS_TTLV_ENUMERATION = 0x05,  /* 4 bytes, unsigned */
    KMS_TTLV_BOOLEAN = 0x06,      /* 8 bytes, 0 or 1 */
    KMS_TTLV_TEXT_STRING = 0x07,  /* UTF-8 */
    KMS_TTLV_BYTE_STRING = 0x08,
    KMS_TTLV_DATE_TIME = 0x09,    /* 8 bytes, signed POSIX seconds */
    KMS_TTLV_INTERVAL = 0x0A,     /* 4 bytes, unsigned seconds */
    KMS_TTLV_DATE_TIME_EXTENDED = 0x0B, /* KMIP 2.0: 8 bytes, signed POSIX microseconds */
};

/* One decoded item. Every pointer borrows: value points into the message
 * given to kms_ttlv_decode, the links into the document. */
struct kms_ttlv {
    uint32_t tag;
    uint8_t type;                  /* enum kms_ttlv_type */
    uint32_t len;                  /* value length, without padding */
    const uint8_t *value;          /* the value bytes (never NULL; for Structures, the children) */
    int64_t num;                   /* Integer, Long Integer, Enumeration, Boolean, Interval, Date-Time
                                      (Extended): the value; 0 for other types */
    const struct kms_ttlv *child;  /* first child of a Structure, NULL when empty or not a Structure */
    const struct kms_ttlv *next;   /* next sibling, NULL at the end */
};

struct kms_ttlv_doc;

/* Decodes one message msg[0..len). The document borrows msg, which must stay
 * alive (and unchanged) until kms_ttlv_doc_free; *out is the caller's.
 * Errors: KMS_ERR_MALFORMED (any encoding error, trailing bytes; the detail
 * names the reason and offset), KMS_ERR_TOO_LARGE (len > KMS_TTLV_MAX_MESSAGE),
 * KMS_ERR_NO_MEMORY. */
kms_rc kms_ttlv_decode(const uint8_t *msg, size_t len, struct kms_ttlv_doc **out) KMS_MUST_CHECK;
void kms_ttlv_doc_free(struct kms_ttlv_doc **d);
/* The message item. Never NULL for a decoded document. */
const struct kms_ttlv *kms_ttlv_doc_root(const struct kms_ttlv_doc *d);
/* Number of items in the document (for tests and limits). */
size_t kms_ttlv_doc_count(const struct kms_ttlv_doc *d);

/* Framing on a stream: from the first 8 bytes of a message, the total
 * message length (header included). KMS_ERR_MALFORMED when the item is not a
 * Structure or has a KMIP tag prefix other than 0x42; KMS_ERR_TOO_LARGE past
 * max (at most KMS_TTLV_MAX_MESSAGE). */
kms_rc kms_ttlv_frame_len(const uint8_t hdr[KMS_TTLV_HEADER_LEN], size_t max, size_t *total) KMS_MUST_CHECK;

/* Children of s with tag: the first one (NULL if none or s is not a
 * Structure), the next one after n, and how many. */
const struct kms_ttlv *kms_ttlv_first(const struct kms_ttlv *s, uint32_t tag);
const struct kms_ttlv *kms_ttlv_next_same(const struct kms_ttlv *n);
size_t kms_ttlv_count(const struct kms_ttlv *s, uint32_t tag);

/* The single child of s with tag: *out NULL (and KMS_OK) when absent;
 * KMS_ERR_MALFORMED when it occurs twice or has another type. */
kms_rc kms_ttlv_get_one(const struct kms_ttlv *s, uint32_t tag, enum kms_ttlv_type type,
                        const struct kms_ttlv **out) KMS_MUST_CHECK;

/* "Structure", "Integer", ...; "unknown" otherwise. Static strings. */
const char *kms_ttlv_type_name(unsigned type);

/* ---- encoder ----------------------------------------------------------- */

struct kms_ttlv_enc {
    struct kms_buf *out;                /* borrowed */
    size_t open[KMS_TTLV_MAX_DEPTH];    /* offsets of the open Structures' headers */
    unsigned depth;
};

/* Items are appended to out (borrowed; its max bounds the message). Every
 * put returns KMS_ERR_TOO_LARGE or KMS_ERR_NO_MEMORY from the buffer,
 * KMS_ERR_INVALID_FIELD for a value the encoding cannot carry (a text that
 * is not UTF-8 or holds a NUL, a Big Integer not a multiple of 8 bytes, a
 * length past 2^32-1, a tag outside 0x420000..0x54FFFF) and KMS_ERR_INTERNAL
 * for begin past KMS_TTLV_MAX_DEPTH or end with nothing open. */
void kms_ttlv_enc_init(struct kms_ttlv_enc *e, struct kms_buf *out);
kms_rc kms_ttlv_begin(struct kms_ttlv_enc *e, uint32_t tag) KMS_MUST_CHECK;
kms_rc kms_ttlv_end(struct kms_ttlv_enc *e) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_int(struct kms_ttlv_enc *e, uint32_t tag, int32_t v) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_long(struct kms_ttlv_enc *e, uint32_t tag, int64_t v) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_bigint(struct kms_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t len) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_enum(struct kms_ttlv_enc *e, uint32_t tag, uint32_t v) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_bool(struct kms_ttlv_enc *e, uint32_t tag, int v) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_text(struct kms_ttlv_enc *e, uint32_t tag, const char *s, size_t len) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_bytes(struct kms_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t len) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_datetime(struct kms_ttlv_enc *e, uint32_t tag, int64_t seconds) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_interval(struct kms_ttlv_enc *e, uint32_t tag, uint32_t seconds) KMS_MUST_CHECK;
kms_rc kms_ttlv_put_datetime_ext(struct kms_ttlv_enc *e, uint32_t tag, int64_t microseconds) KMS_MUST_CHECK;
/* KMS_ERR_INTERNAL when a Structure is still open. */
kms_rc kms_ttlv_enc_finish(const struct kms_ttlv_enc *e) KMS_MUST_CHECK;

/* Non-zero when s[0..len) is UTF-8 (no overlongs, surrogates or code points
 * past U+10FFFF) without NUL: what a Text String may hold. */
int kms_ttlv_text_valid(const uint8_t *s, size_t len);

#endif
