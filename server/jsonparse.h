/* A strict, fast JSON parser for request bodies that builds jansson trees.
 *
 * It accepts and rejects what json_loadb(data, len, JSON_REJECT_DUPLICATES,
 * &err) of jansson 2.14 accepts and rejects (RFC 8259; top-level array or
 * object only, as jansson without JSON_DECODE_ANY), with two deliberate
 * differences, both stricter:
 *   - nesting deeper than KMS_JSON_MAX_DEPTH containers is refused (jansson:
 *     2048); request bodies are never deeper than 3;
 *   - a NUL byte is refused everywhere; jansson silently drops a single NUL
 *     that directly follows a number or true/false/null.
 * Why it exists: jansson's lexer reads byte by byte through callbacks, which
 * was 17% of kmsd's CPU on the unwrap hot path (issue 7). This one scans
 * strings in bulk and builds the same json_t values through jansson's own
 * constructors, so jansson's (wiping) allocator holds every copy. */
#ifndef KMS_SERVER_JSONPARSE_H
#define KMS_SERVER_JSONPARSE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define KMS_JSON_MAX_DEPTH 32

/* Parses data[0..len) into a new tree the caller owns (*out, json_decref).
 * On failure *out is NULL and err (errcap bytes, may be 0) holds
 * "line L column C: reason" — never any byte of the input, which may be key
 * material. Columns count characters, from 1. Returns KMS_ERR_BAD_JSON for
 * input that is not accepted, KMS_ERR_NO_MEMORY when an allocation fails.
 * Sets no thread-local error detail: the caller does, with err. */
kms_rc kms_json_parse(const uint8_t *data, size_t len, json_t **out, char *err, size_t errcap) KMS_MUST_CHECK;

#endif
