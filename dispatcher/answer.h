/*
 * answer.h - what the dispatcher does with each answer from GitHub's API.
 *
 * Every function here is pure (no I/O, the time passed in), so the unit
 * tests call them with the answers GitHub documents: the answer of one call
 * goes in, a decision comes out, and the loop (dispatch.c) carries it out.
 */
#ifndef PROVISION_ANSWER_H
#define PROVISION_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Rate limits: GitHub's advice when an answer names no time. */
#define RATE_LIMIT_DEFAULT_PAUSE_S 60
/* A pause never lasts longer than this, whatever a header says. */
#define RATE_LIMIT_MAX_PAUSE_S 3600
/* Backoff of transient failures: 1 s doubling up to this, with jitter. */
#define BACKOFF_BASE_S 1.0
#define BACKOFF_CAP_S  60.0
/* An installation token is renewed this long before it expires. */
#define TOKEN_RENEW_BEFORE_S 300

/* One answer of GitHub's API, independent of the HTTP library. */
struct api_answer
{
	long        status;          /* HTTP status; 0 when no answer arrived */
	const char *transport_error; /* status 0: what went wrong (timeout, refused, TLS) */
	const char *body;            /* NUL-terminated, "" when empty */
	const char *retry_after;     /* header values, NULL when absent */
	const char *ratelimit_remaining;
	const char *ratelimit_reset;
};

enum dispatch_action
{
	DISPATCH_RECORD,       /* accepted: record_dispatch(job, run_id or NULL, run_url or NULL) */
	DISPATCH_RESEND_PLAIN, /* the server knows no run details: send again without them */
	DISPATCH_RENEW_TOKEN,  /* 401 with an App token: renew the token at once, send again */
	DISPATCH_PAUSE,        /* rate limited: no job fails; all calls wait until pause_until */
	DISPATCH_RETRY,        /* transient: back off and send again until --give-up */
	DISPATCH_FAIL          /* refused: update_job_status(job, 'failed', error) */
};

/* How the call that got the answer was made. */
struct dispatch_call
{
	bool asked_run_details; /* the body held "return_run_details": true */
	bool app_token;         /* authenticated with an App installation token */
	bool renewed;           /* that token was already renewed after a 401 for this job */
};

struct dispatch_decision
{
	enum dispatch_action action;
	long long            run_id;       /* DISPATCH_RECORD: 0 when GitHub did not say */
	char                 run_url[512]; /* DISPATCH_RECORD: "" when GitHub did not say */
	time_t               pause_until;  /* 0, or until when no call may be made (any action) */
	char                 error[600];   /* FAIL: the job's error; RETRY: what failed, for logs */
};

/* The decision for the answer to a workflow dispatch. */
void decide_dispatch(const struct api_answer *a, const struct dispatch_call *call, time_t now,
					 struct dispatch_decision *d);

/*
 * When an answer says the rate limit is reached (403 or 429 with
 * retry-after, x-ratelimit-remaining: 0 or a rate-limit message) or used up
 * (any answer with x-ratelimit-remaining: 0), the time until which no call
 * may be made; otherwise 0.
 */
time_t decide_rate_limit(const struct api_answer *a, time_t now);

/* True when the answer is a rate-limit refusal (not merely the last call allowed). */
bool answer_rate_limited(const struct api_answer *a);

/*
 * GitHub's error message from the body's "message", else the start of a
 * body that is not JSON, else "no message"; on one line, at most len - 1
 * bytes.
 */
void answer_message(const struct api_answer *a, char *buf, size_t len);

/*
 * "HTTP <status>: <message>" or the transport error: what failed, for the
 * logs and the give-up error.
 */
void answer_describe(const struct api_answer *a, char *buf, size_t len);

/*
 * Backoff after the failures-th transient failure in a row (1 for the
 * first), the first at first_failure: false when give_up_s have passed
 * since then (fail the job); otherwise *retry_at is when to try again,
 * capped exponential with jitter (random01 in [0, 1)), never after the
 * give-up deadline, so that the last try falls on it.
 */
bool decide_backoff(int failures, double first_failure, double now, double give_up_s,
					double random01, double *retry_at);

enum token_action
{
	TOKEN_OK,     /* token and expires_at are set */
	TOKEN_PAUSE,  /* rate limited until pause_until */
	TOKEN_RETRY,  /* transient: try again later */
	TOKEN_REFUSED /* GitHub refused the App's JWT or the installation: fix the configuration */
};

struct token_decision
{
	enum token_action action;
	char             *token; /* TOKEN_OK: malloc'd; the caller cleanses and frees it */
	time_t            expires_at;
	time_t            pause_until;
	char              error[600];
};

/* The decision for the answer to POST /app/installations/{id}/access_tokens. */
void decide_token(const struct api_answer *a, time_t now, struct token_decision *d);

/* True when a token expiring at expires_at must be renewed before use now. */
bool token_needs_renewal(time_t expires_at, time_t now);

/*
 * The run whose title holds job_id on one page of GET .../runs (the
 * workflow_runs array): the oldest such run.  *nruns is the page's number
 * of runs, so the caller knows whether to read the next page.  Returns 1
 * when found, 0 when not, -1 when the body is not a runs page (err set).
 */
int runs_find(const char *body, const char *job_id, long long *run_id, char *run_url,
			  size_t url_len, int *nruns, char *err, size_t errlen);

/* "YYYY-MM-DDTHH:MM:SSZ" to and from Unix time. */
bool parse_utc_timestamp(const char *s, time_t *t);
void format_utc_timestamp(time_t t, char *buf, size_t len);

#endif
