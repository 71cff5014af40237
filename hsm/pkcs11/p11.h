/* A PKCS#11 module and one token of it, as kmsd uses them (SPEC §12): the
 * module is loaded with dlopen and C_GetFunctionList (no link-time
 * dependency), initialised with CKF_OS_LOCKING_OK, the user logged in once,
 * and a pool of sessions ("lanes") kept open, one thread per session.
 *
 * why a thread per session: a PKCS#11 call cannot be interrupted. A caller
 * queues its call and waits at most the configured timeout; the first free
 * lane takes it (a lane that finishes takes the next call at once). If the
 * token is slower the caller gets KMS_ERR_BACKEND_TIMEOUT while the lane
 * finishes the call on its own, wipes and frees the call's argument (which
 * it owns from then on), and takes the next one. So no request waits on a
 * slow token past its timeout, and a session is never used by two calls at
 * once.
 *
 * A call that fails with a session or login error (CKR_SESSION_HANDLE_INVALID,
 * CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN) is tried once more on a new
 * session; a device error (CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
 * CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_MEMORY) closes the session, which is
 * opened again (and the user logged in again) with backoff: 100 ms doubling
 * to 5 s, as the KMIP pool reconnects. Meanwhile kms_p11_degraded says so. */
#ifndef KMS_HSM_PKCS11_P11_H
#define KMS_HSM_PKCS11_P11_H

#include <p11-kit/pkcs11.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "hsm/pkcs11/pkcs11_backend.h"

struct kms_p11_options {
    const char *library;     /* path of the module */
    const char *token_label; /* the token by label; "" or NULL: by slot */
    long slot;               /* the slot id, when token_label is empty (-1: none) */
    const char *pin;         /* the user PIN (borrowed during open) */
    unsigned sessions;       /* lanes, >= 1 */
    unsigned timeout_ms;     /* one call, waiting for a lane included */
};

struct kms_p11;

/* Loads, initialises, finds the token, opens the first session and logs in,
 * then opens the other lanes. Each step that fails says which and why. */
kms_rc kms_p11_open(const struct kms_p11_options *o, struct kms_p11 **out) KMS_MUST_CHECK;
/* Stops the lanes (waiting for calls in flight), closes the sessions,
 * C_Finalize, dlclose. Takes NULL. */
void kms_p11_free(struct kms_p11 **p);

/* A call run on a lane's session, with arg (the lane's copy). */
typedef CK_RV (*kms_p11_fn)(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg);

/* A call's argument: len zeroed bytes on the secure heap (it may hold key
 * material), and its release (wiped). */
void *kms_p11_job_new(size_t len);
void kms_p11_job_free(void *job, size_t len);

/* Runs fn on a free lane with *argp (from kms_p11_job_new, len bytes).
 * KMS_OK with *rv the call's result (which may be an error of the call's
 * own, such as a failed tag check), or: KMS_ERR_BACKEND_TIMEOUT (no lane
 * free, or no answer, within the timeout), KMS_ERR_BACKEND_UNAVAILABLE (no
 * session could be opened, or a device error). what names the call in
 * messages ("C_Decrypt"). When the call is abandoned at the timeout, *argp
 * becomes NULL: the lane owns the argument and frees it when the call ends;
 * otherwise the caller still owns it. */
kms_rc kms_p11_call(struct kms_p11 *p, const char *what, kms_p11_fn fn, void **argp, size_t len, CK_RV *rv)
    KMS_MUST_CHECK;

/* 1 while the last attempt to open a session, or the last call, failed
 * with a device or session error (readiness shows the backend degraded). */
int kms_p11_degraded(struct kms_p11 *p);

/* The module, the token and the sessions (everything but degraded, which
 * kms_p11_degraded gives). */
void kms_p11_get_info(struct kms_p11 *p, struct kms_pkcs11_info *out);
/* The function list, for calls kms_p11_call's users make inside fn. */
CK_FUNCTION_LIST *kms_p11_functions(struct kms_p11 *p);

/* "CKR_PIN_INCORRECT" for a return value, else "CKR_0x..." (static or out). */
const char *kms_p11_rv_name(CK_RV rv, char *buf, size_t cap);

#endif
