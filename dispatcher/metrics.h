/*
 * metrics.h - the dispatcher's counters, gauges and histogram, rendered in
 * the Prometheus text format.  Updates are lock-free atomics: the main loop
 * writes, the metrics HTTP thread reads.
 */
#ifndef PROVISION_DISPATCHER_METRICS_H
#define PROVISION_DISPATCHER_METRICS_H

#include <stdbool.h>
#include <stddef.h>

enum api_endpoint
{
	API_DISPATCH, /* POST .../dispatches */
	API_RUNS,     /* GET .../runs (reconciliation) */
	API_TOKEN,    /* POST /app/installations/{id}/access_tokens */
	API_ENDPOINT_COUNT
};

/* What one dispatch call came to. */
enum dispatch_outcome
{
	OUTCOME_RUN,          /* accepted, the run recorded */
	OUTCOME_NO_RUN,       /* accepted without run details, recorded without a run */
	OUTCOME_FALLBACK,     /* run details refused: sent again without them */
	OUTCOME_RENEWED,      /* 401 with an App token: renewed, sent again */
	OUTCOME_RATE_LIMITED, /* paused, the job kept */
	OUTCOME_RETRY,        /* transient failure, retried later */
	OUTCOME_FAILED,       /* refused: the job failed */
	OUTCOME_GAVE_UP,      /* transient failures for --give-up: the job failed */
	OUTCOME_COUNT
};

const char *outcome_label(enum dispatch_outcome outcome);

void metrics_api_call(enum api_endpoint ep, long status, double seconds);
void metrics_dispatch(enum dispatch_outcome outcome);
void metrics_rate_limit_pause(void);
void metrics_retry(void);
void metrics_reconciled(bool adopted);
void metrics_token_renewal(void);
void metrics_db_error(void);
void metrics_db_reconnect(void);
void metrics_set_held_jobs(long n);
void metrics_set_paused(bool paused);

/* The whole exposition as a NUL-terminated string; free() it. */
char *metrics_render(size_t *len);

#endif
