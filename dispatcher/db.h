/*
 * db.h - the dispatcher's one database connection: the statements it runs,
 * LISTEN provision_events, and reconnection with backoff.
 *
 * Every call returns a neutral outcome: DB_OK, DB_SQL_ERROR (the server
 * refused the statement; err holds the SQLSTATE and message) or DB_DOWN
 * (no connection, or it broke: the outcome of the statement is unknown and
 * the connection is re-established by a later db_ensure).
 */
#ifndef PROVISION_DISPATCHER_DB_H
#define PROVISION_DISPATCHER_DB_H

#include "config.h"

#include <stdbool.h>
#include <time.h>

/*
 * The advisory lock class of a job the dispatcher is working on
 * ("prov"); the key is hashtext(job id).  Held on the session from the
 * claim (or from reconciliation taking a job over) until its outcome is
 * recorded, so that no other dispatcher's reconciliation takes the job
 * meanwhile, and released by the server if the dispatcher dies.
 */
#define DB_JOB_LOCK_CLASS 1886547830

#define UUID_TEXT 37 /* 36 characters and the NUL */

enum db_outcome
{
	DB_OK,
	DB_SQL_ERROR,
	DB_DOWN
};

struct db_error
{
	char sqlstate[6];
	char message[512];
};

struct claimed_job
{
	char id[UUID_TEXT];
	char agent_id[UUID_TEXT];
	bool locked;
};

/* A dispatched job without a recorded run, as reconciliation sees it. */
struct orphan
{
	char   id[UUID_TEXT];
	char   agent_id[UUID_TEXT];
	time_t dispatched_at; /* the database's clock */
	double age_s;         /* since dispatched_at, by the database's clock */
};

struct db;

struct db *db_new(const struct config *cfg);
void       db_free(struct db *db);

/*
 * Connects if there is no connection and the backoff allows an attempt
 * now; sets search_path and statement_timeout and LISTENs.  Returns true
 * when connected; *fresh is true when this call made the connection.
 */
bool db_ensure(struct db *db, bool *fresh);

bool db_is_up(const struct db *db);

/* The socket to wait on for notifications, or -1 without a connection. */
int db_socket(const struct db *db);

/* Monotonic seconds of the next connection attempt (when down). */
double db_next_attempt(const struct db *db);

/* Why the database is unavailable (the last failure), "" when up. */
const char *db_down_reason(const struct db *db);

/*
 * Reads what the server sent; true when a notification of a new pending
 * job (kind enqueued or retried) arrived since the last call, also during
 * the statements run since.
 */
bool db_take_wakeup(struct db *db);

enum db_outcome db_retry_failed_jobs(struct db *db, long *enqueued, struct db_error *err);

/* Claims up to max jobs into jobs[] and locks each. */
enum db_outcome db_claim_jobs(struct db *db, long max, struct claimed_job *jobs, int *n,
							  struct db_error *err);

/* record_dispatch(job, run_id or NULL when 0, run_url or NULL when ""). */
enum db_outcome db_record_dispatch(struct db *db, const char *job_id, long long run_id,
								   const char *run_url, struct db_error *err);

/*
 * update_job_status(job, 'failed', error) if the job is still dispatched
 * without a run; *failed says whether it was.
 */
enum db_outcome db_fail_job(struct db *db, const char *job_id, const char *error, bool *failed,
							struct db_error *err);

/* Dispatched jobs without a run, dispatched more than older_than_s ago, oldest first. */
enum db_outcome db_orphans(struct db *db, double older_than_s, struct orphan *out, int max, int *n,
						   struct db_error *err);

enum db_outcome db_lock_job(struct db *db, const char *job_id, bool *locked, struct db_error *err);
enum db_outcome db_unlock_job(struct db *db, const char *job_id, struct db_error *err);

#endif
