/*
 * verify.h - webhook secrets and signature verification (GitHub
 * X-Hub-Signature-256 and Standard Webhooks for callbacks, Stripe-Signature
 * for Stripe events).
 *
 * Everything here is pure: no I/O, no clock (callers pass "now"), so the
 * unit tests and fuzzing targets call it directly with published vectors.
 */
#ifndef PROVISION_VERIFY_H
#define PROVISION_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRETS_MAX      16
#define SECRET_MAX_BYTES 512
#define SECRET_MIN_BYTES 16 /* an HMAC key shorter than this is guessable */

struct secret
{
	unsigned char key[SECRET_MAX_BYTES];
	size_t        len;
};

/* The accepted keys; several during a rotation, any of them verifies. */
struct secrets
{
	struct secret items[SECRETS_MAX];
	int           count;
};

/* How a secret line becomes key bytes. */
enum secret_form
{
	SECRET_FORM_WEBHOOK, /* "whsec_" + base64 is decoded, anything else is raw */
	SECRET_FORM_EXACT    /* the line's bytes as given (Stripe keys with "whsec_...") */
};

/*
 * Parses secrets, one per line.  One trailing \r is dropped (files written
 * on Windows) and empty lines are skipped.  A line that is only whitespace,
 * starts or ends with whitespace, or gives a key shorter than
 * SECRET_MIN_BYTES is an error, as are no secret at all and more than
 * SECRETS_MAX.  Returns false with a message in err that names the line
 * number and never holds secret material.
 */
bool secrets_parse(const char *text, size_t len, enum secret_form form, struct secrets *out,
				   char *err, size_t errlen);

/* Wipes key material. */
void secrets_clear(struct secrets *secrets);

/*
 * Strict RFC 4648 base64 (standard alphabet, padding required): returns
 * false on any other character, a bad length or a buffer too small.
 */
bool base64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap, size_t *outlen);

enum verify_status
{
	VERIFY_OK,
	VERIFY_MISSING,   /* no signature header of an accepted scheme, nor of another */
	VERIFY_SCHEME,    /* signed only with a scheme this listener does not accept */
	VERIFY_MALFORMED, /* a header is present but unusable */
	VERIFY_TIMESTAMP, /* webhook-timestamp outside the tolerance */
	VERIFY_MISMATCH,  /* well formed, but no secret produces it */
	VERIFY_INTERNAL   /* OpenSSL failed */
};

enum verify_scheme
{
	SCHEME_NONE,
	SCHEME_GITHUB,
	SCHEME_STANDARD,
	SCHEME_STRIPE /* POST /webhooks/stripe only, with the Stripe secrets */
};

/* The callback schemes a listener accepts (--schemes), as a bit set. */
#define SCHEMES_GITHUB   (1u << SCHEME_GITHUB)
#define SCHEMES_STANDARD (1u << SCHEME_STANDARD)

/* The request headers that matter (NULL when absent) and the raw body. */
struct verify_input
{
	const char          *hub_signature; /* X-Hub-Signature-256 */
	const char          *webhook_id;
	const char          *webhook_timestamp;
	const char          *webhook_signature;
	const char          *stripe_signature; /* Stripe-Signature */
	const unsigned char *body;
	size_t               body_len;
	int64_t              now;       /* Unix seconds */
	int64_t              tolerance; /* seconds, both directions */
};

struct verify_result
{
	enum verify_status status;
	char               message[200]; /* for the 401 body; names the header */
};

/*
 * The one scheme a callback is verified with, decided once per request
 * from its headers alone (an empty header counts as absent): Standard
 * Webhooks when webhook-signature is present and accepted, else GitHub when
 * X-Hub-Signature-256 is present and accepted, else SCHEME_NONE.
 */
enum verify_scheme verify_choose_scheme(const struct verify_input *in, unsigned int accepted);

/*
 * The header that carries the delivery id under the chosen scheme.  For
 * SCHEME_NONE, the one of the scheme the request claims, so that the log
 * line of its 401 still shows the id the sender used.
 */
const char *verify_delivery_header(const struct verify_input *in, enum verify_scheme scheme);

/*
 * Verifies a request with the scheme verify_choose_scheme() chose for it.
 * SCHEME_NONE gives VERIFY_SCHEME when the request is signed with a scheme
 * outside accepted, else VERIFY_MISSING; either message names the accepted
 * schemes.
 */
void verify_request(const struct secrets *secrets, const struct verify_input *in,
					enum verify_scheme scheme, unsigned int accepted, struct verify_result *result);

#define STRIPE_HEADER_MAX 1024 /* bytes of Stripe-Signature */
#define STRIPE_V1_MAX     8    /* v1 signatures in one header */

/* A parsed Stripe-Signature header. */
struct stripe_signature
{
	const char   *timestamp; /* the t= digits as sent (they are signed as text) */
	size_t        timestamp_len;
	int64_t       t; /* the same, as Unix seconds */
	unsigned char v1[STRIPE_V1_MAX][32];
	int           nv1;
};

/*
 * Parses Stripe-Signature: "t=<unix seconds>,v1=<64 hex>[,v1=...][,...]",
 * strictly: t first and only once, comma-separated key=value elements with
 * no spaces or empty elements, every v1 exactly 64 hex digits (either
 * case), at least one v1 and at most STRIPE_V1_MAX, at most
 * STRIPE_HEADER_MAX bytes in all.  Other keys (v0, the test-mode scheme, or
 * a future one) are skipped, as Stripe asks, so that a downgrade to them is
 * impossible.  Returns NULL, or why the header was refused (a constant
 * naming the header, never its value).
 */
const char *stripe_parse_signature(const char *header, struct stripe_signature *out);

/*
 * Verifies a Stripe event: HMAC-SHA256 keyed with each secret's bytes over
 * "<t>.<raw body>", any v1 may match, t at most tolerance seconds from now
 * either way.
 */
enum verify_status verify_stripe(const struct secrets *secrets, const char *header,
								 const unsigned char *body, size_t body_len, int64_t now,
								 int64_t tolerance, const char **problem);

enum verify_status verify_github(const struct secrets *secrets, const char *header,
								 const unsigned char *body, size_t body_len);

enum verify_status verify_standard(const struct secrets *secrets, const char *id,
								   const char *timestamp, const char *signature,
								   const unsigned char *body, size_t body_len, int64_t now,
								   int64_t tolerance);

#endif
