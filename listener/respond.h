/*
 * respond.h - the pure decisions behind each answer from the database
 * side: what an SQLSTATE means for the client, the JSON bodies (always built
 * with cJSON), and answer_outcome, which maps every outcome to its answer.
 * No MHD, no libpq.
 */
#ifndef PROVISION_RESPOND_H
#define PROVISION_RESPOND_H

#include "outcome.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

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

/* What answer_outcome needs to know about the request besides the outcome. */
struct answer_context
{
	bool        stripe;      /* handle_stripe_event on POST /webhooks/stripe */
	const char *delivery_id; /* the request's, NULL when none */
	const char *job_id;      /* the payload's, for a 409 body; may be NULL */
};

/* How loudly a database error is logged (the caller logs; this is pure). */
enum answer_log
{
	ANSWER_LOG_NONE,
	ANSWER_LOG_WARN,
	ANSWER_LOG_ERROR
};

struct answer
{
	unsigned int    status;
	char           *body;        /* JSON text, cJSON_free; NULL: out of memory (500) */
	unsigned int    retry_after; /* seconds; 0 for no Retry-After */
	enum answer_log log;         /* OUTCOME_ERROR: log the SQLSTATE and message */
	bool            db_error;    /* counts in provision_db_errors_total */
};

/*
 * The one place an outcome becomes an HTTP answer: status, body and
 * Retry-After.  A result is passed through as the database printed it.
 */
void answer_outcome(const struct outcome *o, const struct answer_context *ctx, struct answer *a);

#endif
