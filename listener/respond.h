/*
 * respond.h - the pure decisions behind each HTTP answer: which content
 * types are JSON, what an SQLSTATE means for the client, and the JSON bodies
 * themselves (always built with cJSON).  No MHD, no libpq.
 */
#ifndef PROVISION_RESPOND_H
#define PROVISION_RESPOND_H

#include "metrics.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* application/json, any case, optionally followed by ";" parameters. */
bool content_type_is_json(const char *content_type);

/* The headers of a request that decide_headers() looks at (NULL: absent). */
struct request_head
{
	enum endpoint ep;
	const char   *method;
	const char   *content_length; /* the first one */
	const char   *transfer_encoding;
	const char   *content_type;
	long          max_body;
	bool          stripe_configured;  /* else /webhooks/stripe is unknown */
	int           content_lengths;    /* how many Content-Length headers */
	int           transfer_encodings; /* how many Transfer-Encoding headers */
};

/* What the headers alone decide. */
struct head_decision
{
	unsigned int status;           /* 0: carry on and read the body */
	const char  *allow;            /* for a 405 */
	char         message[128];     /* the error for a non-zero status */
	bool         is_webhook;       /* a callback or Stripe event to check and run */
	bool         check_type_later; /* chunked: Content-Type after the size */
	bool         close;            /* answer, then close: the framing is ambiguous */
};

/*
 * Route (404, 405), framing (400: more than one Content-Length or
 * Transfer-Encoding header, or both kinds), size (413 by Content-Length)
 * and, when the length is known, content type (415), in that order, from
 * the headers alone.
 */
void decide_headers(const struct request_head *head, struct head_decision *d);

/* What to do with a database error, from its SQLSTATE alone. */
struct sqlstate_action
{
	unsigned int http_status;
	bool         retry;       /* serialization failure or deadlock: retry */
	bool         retry_after; /* transient: answer with Retry-After */
};

/* sqlstate may be NULL or empty: the connection failed without one. */
struct sqlstate_action sqlstate_to_http(const char *sqlstate);

/*
 * The same for handle_stripe_event on POST /webhooks/stripe: 22023 (an
 * event without an agent reference) is 422, so that Stripe retries and
 * alerts instead of dropping the event as a client error it need not
 * repeat; everything else as sqlstate_to_http.
 */
struct sqlstate_action stripe_sqlstate_to_http(const char *sqlstate);

/*
 * The status named by a 55000 DETAIL "current status: X"; copies X into buf
 * and returns it, or returns NULL when the detail has another form.
 */
const char *detail_current_status(const char *detail, char *buf, size_t len);

/* {"error": message}; the caller frees the result with cJSON_free. */
char *json_error_body(const char *message);

/*
 * The run that owns a job, from a run-fencing refusal's HINT
 * "workflow_run_id: N": copies N into buf and returns it when N is a
 * positive 64-bit integer in plain digits (no sign, no leading zero, nothing
 * after it), else NULL.  N goes into the 409 body as a JSON number, so a
 * hint of any other form is left out rather than trusted.
 */
const char *hint_workflow_run_id(const char *hint, char *buf, size_t len);

/*
 * {"error": message, "job_id": job_id, "status": status}, NULLs becoming
 * null, and "workflow_run_id": N (a JSON number) when workflow_run_id, as
 * returned by hint_workflow_run_id, is not NULL.
 */
char *json_conflict_body(const char *message, const char *job_id, const char *status,
						 const char *workflow_run_id);

/*
 * True when a 23505 message is the delivery binding's refusal of this
 * delivery id, `delivery id "<id>" was already used for another callback`,
 * and not some other unique violation.
 */
bool is_delivery_conflict(const char *message, const char *delivery_id);

/*
 * {"error": message, "delivery_id": delivery_id} with "detail" (what
 * differs: the job or the payload) when detail is not NULL.
 */
char *json_delivery_conflict_body(const char *message, const char *delivery_id, const char *detail);

/*
 * Parses a callback body or a Stripe event.  Returns the object, or NULL
 * with an error message
 * for the 400 body in err: not JSON, trailing bytes, not an object, or a key
 * that appears twice at the top level.
 */
cJSON *parse_callback_body(const char *body, size_t len, char *err, size_t errlen);

/*
 * The "job_id" string member of a payload or result, copied into buf, or
 * NULL when it is missing or not a string.
 */
const char *json_job_id(const cJSON *obj, char *buf, size_t len);

/*
 * The string member key of obj copied into buf, cut to len - 1 bytes, or
 * NULL when it is missing or not a string (a Stripe event's id and type,
 * for the log).
 */
const char *json_string_member(const cJSON *obj, const char *key, char *buf, size_t len);

/* True when a handle_callback result reports "duplicate": true. */
bool result_is_duplicate(const cJSON *result);

#endif
