/* KMIP messages kmsd sends and the responses it reads (KMIP 1.4, binary
 * TTLV through hsm/kmip/ttlv.h). Pure: builds bytes, parses bytes, no I/O.
 *
 * Requests carry one batch item and no TimeStamp (PyKMIP rejects a request
 * TimeStamp older than 60 s or in the future; leaving it out is always
 * accepted) and no Authentication (the client is identified by its TLS
 * certificate). Field order is the specification's, which PyKMIP's reader
 * demands. Encrypt/Decrypt use AES-GCM with the KMIP 1.4 fields: a client
 * nonce in IV/Counter/Nonce, the AAD in Authenticated Encryption Additional
 * Data, the tag in Authenticated Encryption Tag; CryptographicParameters
 * always name the algorithm (PyKMIP requires it, conformant servers accept
 * it) and TagLength 16.
 *
 * Responses are read tolerantly (reference kmip-pykmip.md §8.2): fields are
 * found by tag, not position; unknown fields are ignored; a failed batch
 * item may lack its Operation, and its header may say version 1.0. What the
 * parser does demand: a ResponseMessage with a header, a Batch Count equal
 * to the number of batch items, a Result Status in every item, no duplicate
 * single-valued field, the right type for every field it reads. */
#ifndef KMS_HSM_KMIP_MSG_H
#define KMS_HSM_KMIP_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "hsm/backend.h"
#include "hsm/kmip/ttlv.h"

/* Tags (KMIP 1.4 §9.1.3.1; 2.0 for Attributes). */
enum kms_kmip_tag {
    KMS_KMIP_TAG_ACTIVATION_DATE = 0x420001,
    KMS_KMIP_TAG_ATTRIBUTE = 0x420008,
    KMS_KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
    KMS_KMIP_TAG_ATTRIBUTE_NAME = 0x42000A,
    KMS_KMIP_TAG_ATTRIBUTE_VALUE = 0x42000B,
    KMS_KMIP_TAG_AUTHENTICATION = 0x42000C,
    KMS_KMIP_TAG_BATCH_COUNT = 0x42000D,
    KMS_KMIP_TAG_BATCH_ITEM = 0x42000F,
    KMS_KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
    KMS_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
    KMS_KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002A,
    KMS_KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS = 0x42002B,
    KMS_KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK = 0x42002C,
    KMS_KMIP_TAG_INITIAL_DATE = 0x420039,
    KMS_KMIP_TAG_IV_COUNTER_NONCE = 0x42003D,
    KMS_KMIP_TAG_MAXIMUM_ITEMS = 0x42004F,
    KMS_KMIP_TAG_NAME = 0x420053,
    KMS_KMIP_TAG_NAME_TYPE = 0x420054,
    KMS_KMIP_TAG_NAME_VALUE = 0x420055,
    KMS_KMIP_TAG_OBJECT_TYPE = 0x420057,
    KMS_KMIP_TAG_OPERATION = 0x42005C,
    KMS_KMIP_TAG_OPERATION_POLICY_NAME = 0x42005D,
    KMS_KMIP_TAG_PROTOCOL_VERSION = 0x420069,
    KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006A,
    KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006B,
    KMS_KMIP_TAG_QUERY_FUNCTION = 0x420074,
    KMS_KMIP_TAG_REQUEST_HEADER = 0x420077,
    KMS_KMIP_TAG_REQUEST_MESSAGE = 0x420078,
    KMS_KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
    KMS_KMIP_TAG_RESPONSE_HEADER = 0x42007A,
    KMS_KMIP_TAG_RESPONSE_MESSAGE = 0x42007B,
    KMS_KMIP_TAG_RESPONSE_PAYLOAD = 0x42007C,
    KMS_KMIP_TAG_RESULT_MESSAGE = 0x42007D,
    KMS_KMIP_TAG_RESULT_REASON = 0x42007E,
    KMS_KMIP_TAG_RESULT_STATUS = 0x42007F,
    KMS_KMIP_TAG_SERVER_INFORMATION = 0x420088,
    KMS_KMIP_TAG_STATE = 0x42008D,
    KMS_KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
    KMS_KMIP_TAG_TIME_STAMP = 0x420092,
    KMS_KMIP_TAG_UNIQUE_BATCH_ITEM_ID = 0x420093,
    KMS_KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
    KMS_KMIP_TAG_VENDOR_IDENTIFICATION = 0x42009D,
    KMS_KMIP_TAG_DATA = 0x4200C2,
    KMS_KMIP_TAG_TAG_LENGTH = 0x4200CE,
    KMS_KMIP_TAG_AE_ADDITIONAL_DATA = 0x4200FE, /* KMIP 1.4 */
    KMS_KMIP_TAG_AE_TAG = 0x4200FF,             /* KMIP 1.4 */
};

enum kms_kmip_operation {
    KMS_KMIP_OP_CREATE = 0x01,
    KMS_KMIP_OP_REGISTER = 0x03,
    KMS_KMIP_OP_LOCATE = 0x08,
    KMS_KMIP_OP_GET = 0x0A,
    KMS_KMIP_OP_GET_ATTRIBUTES = 0x0B,
    KMS_KMIP_OP_ACTIVATE = 0x12,
    KMS_KMIP_OP_REVOKE = 0x13,
    KMS_KMIP_OP_DESTROY = 0x14,
    KMS_KMIP_OP_QUERY = 0x18,
    KMS_KMIP_OP_DISCOVER_VERSIONS = 0x1E,
    KMS_KMIP_OP_ENCRYPT = 0x1F,
    KMS_KMIP_OP_DECRYPT = 0x20,
};

enum kms_kmip_result_status {
    KMS_KMIP_STATUS_SUCCESS = 0,
    KMS_KMIP_STATUS_OPERATION_FAILED = 1,
    KMS_KMIP_STATUS_OPERATION_PENDING = 2,
    KMS_KMIP_STATUS_OPERATION_UNDONE = 3,
};

enum kms_kmip_result_reason {
    KMS_KMIP_REASON_ITEM_NOT_FOUND = 0x01,
    KMS_KMIP_REASON_RESPONSE_TOO_LARGE = 0x02,
    KMS_KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
    KMS_KMIP_REASON_INVALID_MESSAGE = 0x04,
    KMS_KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
    KMS_KMIP_REASON_MISSING_DATA = 0x06,
    KMS_KMIP_REASON_INVALID_FIELD = 0x07,
    KMS_KMIP_REASON_FEATURE_NOT_SUPPORTED = 0x08,
    KMS_KMIP_REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
    KMS_KMIP_REASON_ILLEGAL_OPERATION = 0x0B,
    KMS_KMIP_REASON_PERMISSION_DENIED = 0x0C,
    KMS_KMIP_REASON_GENERAL_FAILURE = 0x100,
    KMS_KMIP_REASON_UNSUPPORTED_PROTOCOL_VERSION = 0x3F, /* KMIP 2.0 */
};

enum kms_kmip_object_type { KMS_KMIP_OBJECT_SYMMETRIC_KEY = 2 };
enum kms_kmip_algorithm { KMS_KMIP_ALG_AES = 3 };
enum kms_kmip_block_cipher_mode { KMS_KMIP_MODE_GCM = 9 };
enum kms_kmip_name_type { KMS_KMIP_NAME_UNINTERPRETED_TEXT = 1 };
enum kms_kmip_usage { KMS_KMIP_USAGE_ENCRYPT = 0x04, KMS_KMIP_USAGE_DECRYPT = 0x08 };
enum kms_kmip_state {
    KMS_KMIP_STATE_PRE_ACTIVE = 1,
    KMS_KMIP_STATE_ACTIVE = 2,
    KMS_KMIP_STATE_DEACTIVATED = 3,
    KMS_KMIP_STATE_COMPROMISED = 4,
    KMS_KMIP_STATE_DESTROYED = 5,
    KMS_KMIP_STATE_DESTROYED_COMPROMISED = 6,
};
enum kms_kmip_query_function {
    KMS_KMIP_QUERY_OPERATIONS = 1,
    KMS_KMIP_QUERY_OBJECTS = 2,
    KMS_KMIP_QUERY_SERVER_INFORMATION = 3,
};

#define KMS_KMIP_UID_MAX KMS_MASTER_NAME_MAX /* a UID is kept in struct kms_master_ref */
#define KMS_KMIP_TEXT_MAX 255                /* names, vendor, result messages (longer: truncated) */
#define KMS_KMIP_MAX_BATCH 8                 /* batch items a response may carry */
#define KMS_KMIP_GCM_NONCE_LEN 12
#define KMS_KMIP_GCM_TAG_LEN 16

struct kms_kmip_version {
    int32_t major;
    int32_t minor;
};

/* ---- requests ---------------------------------------------------------- */
/* Each appends one complete RequestMessage with header version v and one
 * batch item to out (borrowed; its max bounds the message). On failure out
 * is wiped and emptied. Errors: KMS_ERR_INVALID_FIELD (a name or UID that
 * is empty, longer than KMS_KMIP_TEXT_MAX / KMS_KMIP_UID_MAX or not UTF-8;
 * GCM below KMIP 1.4; a nonce that is not 12 bytes, a tag that is not 16),
 * KMS_ERR_TOO_LARGE, KMS_ERR_NO_MEMORY. */

/* DiscoverVersions (KMIP 1.4 §4.26) offering offer[0..n) (n 0: ask for all). */
kms_rc kms_kmip_req_discover_versions(struct kms_buf *out, struct kms_kmip_version v,
                                      const struct kms_kmip_version *offer, size_t n) KMS_MUST_CHECK;
/* Query (§4.25) with functions[0..n) (enum kms_kmip_query_function). */
kms_rc kms_kmip_req_query(struct kms_buf *out, struct kms_kmip_version v, const uint32_t *functions,
                          size_t n) KMS_MUST_CHECK;
/* Create (§4.1) a Symmetric Key: AES, 256 bits, usage Encrypt|Decrypt, Name
 * (Uninterpreted Text String), as a TemplateAttribute. */
kms_rc kms_kmip_req_create_aes256(struct kms_buf *out, struct kms_kmip_version v, const char *name) KMS_MUST_CHECK;
/* Activate (§4.19). */
kms_rc kms_kmip_req_activate(struct kms_buf *out, struct kms_kmip_version v, const char *uid) KMS_MUST_CHECK;
/* Locate (§4.9) by Name (Uninterpreted Text String). */
kms_rc kms_kmip_req_locate_name(struct kms_buf *out, struct kms_kmip_version v, const char *name) KMS_MUST_CHECK;
/* GetAttributes (§4.12) of uid: names[0..n) (n 0: all). */
kms_rc kms_kmip_req_get_attributes(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                   const char *const *names, size_t n) KMS_MUST_CHECK;

/* AES-GCM input: data (plaintext or ciphertext), the 12-byte nonce, the AAD
 * (may be empty), and for Decrypt the 16-byte tag. All borrowed. */
struct kms_kmip_gcm {
    const uint8_t *data;
    size_t data_len;
    const uint8_t *nonce;
    size_t nonce_len;
    const uint8_t *aad;
    size_t aad_len;
    const uint8_t *tag;
    size_t tag_len;
};
/* Encrypt (§4.29) / Decrypt (§4.30) with AES-GCM under uid; v >= 1.4. The
 * message holds the plaintext (Encrypt): out should be a buffer that is
 * wiped (kms_buf is). */
kms_rc kms_kmip_req_encrypt_gcm(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                const struct kms_kmip_gcm *g) KMS_MUST_CHECK;
kms_rc kms_kmip_req_decrypt_gcm(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                const struct kms_kmip_gcm *g) KMS_MUST_CHECK;

/* ---- responses --------------------------------------------------------- */

struct kms_kmip_batch_result {
    int has_operation;            /* PyKMIP leaves it out of parse/auth errors */
    uint32_t operation;
    uint32_t status;              /* enum kms_kmip_result_status */
    int has_reason;
    uint32_t reason;              /* enum kms_kmip_result_reason */
    char message[KMS_KMIP_TEXT_MAX + 1]; /* ResultMessage, printable ASCII ('?' for others), "" if absent */
    const struct kms_ttlv *payload;      /* ResponsePayload, NULL when absent; borrowed from the response */
};

struct kms_kmip_response {
    struct kms_ttlv_doc *doc;
    int has_version;
    struct kms_kmip_version version;
    int64_t timestamp;                   /* 0 when absent */
    size_t n_items;
    struct kms_kmip_batch_result items[KMS_KMIP_MAX_BATCH];
};

/* Parses a ResponseMessage msg[0..len) into *out (which borrows msg: keep
 * it alive until kms_kmip_response_clear). Every failure is KMS_ERR_BACKEND
 * ("a backend's garbage is the backend's error") with the reason in the
 * detail, or KMS_ERR_NO_MEMORY. */
kms_rc kms_kmip_response_parse(const uint8_t *msg, size_t len, struct kms_kmip_response *out) KMS_MUST_CHECK;
void kms_kmip_response_clear(struct kms_kmip_response *r);

/* The outcome of a one-item response to operation op: KMS_OK with *payload
 * (never NULL on success) or the error table's code for the item's result
 * (kms_kmip_result_rc). KMS_ERR_BACKEND when there is not exactly one item,
 * its Operation (when present) is not op, or a success has no payload. */
kms_rc kms_kmip_response_expect(const struct kms_kmip_response *r, uint32_t op,
                                const struct kms_ttlv **payload) KMS_MUST_CHECK;

/* Maps a result to the error table, recording "KMIP <op>: <status> / <reason>:
 * <message>" as the detail: Success -> KMS_OK; Item Not Found ->
 * KMS_ERR_KEY_NOT_FOUND; on Decrypt, General Failure or Cryptographic Failure
 * (a tag that does not verify; PyKMIP says General Failure) ->
 * KMS_ERR_UNWRAP; anything else -> KMS_ERR_BACKEND. */
kms_rc kms_kmip_result_rc(const struct kms_kmip_batch_result *item, uint32_t op) KMS_MUST_CHECK;

/* Payload readers. Every failure is KMS_ERR_BACKEND (missing or mistyped
 * field, a value out of range) with a detail. Borrowed pointers point into
 * the response's message. */
kms_rc kms_kmip_parse_versions(const struct kms_ttlv *payload, struct kms_kmip_version *out, size_t cap,
                               size_t *n) KMS_MUST_CHECK;
/* The UniqueIdentifier of a Create/Activate/Encrypt/... payload, into uid
 * (KMS_KMIP_UID_MAX + 1 bytes). */
kms_rc kms_kmip_parse_uid(const struct kms_ttlv *payload, char uid[KMS_KMIP_UID_MAX + 1]) KMS_MUST_CHECK;
/* Locate: the first min(cap, found) identifiers into uids, *found = all. */
kms_rc kms_kmip_parse_locate(const struct kms_ttlv *payload, char (*uids)[KMS_KMIP_UID_MAX + 1], size_t cap,
                             size_t *found) KMS_MUST_CHECK;
/* Encrypt: the ciphertext and the tag (NULL/0 when the server sent none). */
kms_rc kms_kmip_parse_encrypt(const struct kms_ttlv *payload, const uint8_t **data, size_t *data_len,
                              const uint8_t **tag, size_t *tag_len) KMS_MUST_CHECK;
/* Decrypt: the plaintext (borrowed: copy it into a secret, then clear the
 * response and wipe its message). */
kms_rc kms_kmip_parse_decrypt(const struct kms_ttlv *payload, const uint8_t **data, size_t *data_len) KMS_MUST_CHECK;

#define KMS_KMIP_MAX_NAMES 8
struct kms_kmip_attributes {
    char uid[KMS_KMIP_UID_MAX + 1];
    uint32_t object_type;      /* 0 when absent */
    uint32_t state;            /* 0 when absent */
    uint32_t algorithm;        /* 0 when absent */
    int32_t length;            /* bits; 0 when absent */
    int has_usage_mask;
    int32_t usage_mask;
    int64_t initial_date;      /* POSIX seconds; 0 when absent */
    int64_t activation_date;   /* 0 when absent */
    char policy[KMS_KMIP_TEXT_MAX + 1];
    size_t n_names;            /* all Name attributes; the first KMS_KMIP_MAX_NAMES are kept */
    char names[KMS_KMIP_MAX_NAMES][KMS_KMIP_TEXT_MAX + 1];
};
/* GetAttributes (KMIP 1.x: Attribute structures). Unknown attributes are
 * ignored. */
kms_rc kms_kmip_parse_attributes(const struct kms_ttlv *payload, struct kms_kmip_attributes *out) KMS_MUST_CHECK;

#define KMS_KMIP_MAX_QUERY_ITEMS 96
struct kms_kmip_server_info {
    size_t n_operations;
    uint32_t operations[KMS_KMIP_MAX_QUERY_ITEMS];
    size_t n_objects;
    uint32_t objects[KMS_KMIP_MAX_QUERY_ITEMS];
    char vendor[KMS_KMIP_TEXT_MAX + 1]; /* "" when absent */
    int has_server_information;
};
kms_rc kms_kmip_parse_query(const struct kms_ttlv *payload, struct kms_kmip_server_info *out) KMS_MUST_CHECK;

/* Names for logs and kmsctl ("Encrypt", "Item Not Found", "Active", "AES",
 * "Symmetric Key", ...); "unknown" otherwise. Static strings. */
const char *kms_kmip_operation_name(uint32_t op);
const char *kms_kmip_status_name(uint32_t status);
const char *kms_kmip_reason_name(uint32_t reason);
const char *kms_kmip_state_name(uint32_t state);
const char *kms_kmip_algorithm_name(uint32_t alg);
const char *kms_kmip_object_type_name(uint32_t type);

#endif
