/*
 * outcome.h - what became of a job on the database side, in the database's
 * own terms.  db.c fills one in and knows nothing of HTTP; respond.c turns
 * it into a status, a body and a Retry-After (answer_outcome).
 */
#ifndef PROVISION_OUTCOME_H
#define PROVISION_OUTCOME_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum outcome_kind
{
	OUTCOME_NONE,          /* not filled in */
	OUTCOME_RESULT,        /* the function's result: text */
	OUTCOME_NO_RESULT,     /* the function returned no row or NULL */
	OUTCOME_ERROR,         /* the server refused: sqlstate, message, detail, hint */
	OUTCOME_LOST,          /* the connection broke mid-call: committed or not, unknown */
	OUTCOME_NO_CONNECTION, /* the database is down or refuses connections */
	OUTCOME_POOL_TIMEOUT,  /* no pool connection became free within --pool-wait */
	OUTCOME_BUSY,          /* the work queue was full or closed: nothing ran */
	OUTCOME_READY,         /* /readyz: every readiness check passed */
	OUTCOME_NOT_READY,     /* /readyz: text says what is missing */
	OUTCOME_SHUTTING_DOWN  /* /readyz arrived while the pool stopped */
};

struct outcome
{
	enum outcome_kind kind;
	char             *text;   /* RESULT: the JSON text; NOT_READY: the reason */
	char             *job_id; /* RESULT: its "job_id" string, NULL when none */
	char              sqlstate[6];
	char             *message; /* ERROR: each NULL when the server sent none */
	char             *detail;
	char             *hint;
};

/* Serialization failure or deadlock: the call ran nothing and may be retried. */
static inline bool
sqlstate_is_serialization_failure(const char *sqlstate)
{
	return sqlstate != NULL && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/* Frees what the outcome holds and sets it to OUTCOME_NONE. */
static inline void
outcome_clear(struct outcome *o)
{
	free(o->text);
	free(o->job_id);
	free(o->message);
	free(o->detail);
	free(o->hint);
	memset(o, 0, sizeof *o);
}

#endif
