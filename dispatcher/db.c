/*
 * db.c - the dispatcher's database connection and statements.
 *
 * One connection, used by the main loop only.  Statements are sent with
 * PQsendQueryParams and waited for with poll() up to the statement timeout
 * plus a grace period, so a server that stops answering (a network
 * partition) costs a bounded wait and a reconnect, never a hung daemon.  A
 * broken connection is re-established no sooner than its backoff allows
 * (250 ms doubling to 10 s).  The session pins search_path to pg_catalog,
 * so no object of the dispatcher's role can stand in for the built-in
 * operators and functions the statements use.
 */
#include "db.h"

#include "deadline.h"
#include "log.h"
#include "metrics.h"
#include "pqlog.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_S     0.25
#define BACKOFF_MAX_S     10.0
#define CLIENT_GRACE_MS   5000
#define CONNECT_TIMEOUT_S "5"

static const char SETUP_SQL[] =
	"SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false), "
	"pg_catalog.set_config('statement_timeout', $1::pg_catalog.text, false)";
static const char LISTEN_SQL[] = "LISTEN provision_events";
static const char RETRY_SQL[] = "SELECT provision.retry_failed_jobs()";
static const char CLAIM_SQL[] =
	"SELECT j.id::pg_catalog.text, j.agent_id::pg_catalog.text, "
	"pg_catalog.pg_try_advisory_lock($2::pg_catalog.int4, pg_catalog.hashtext(j.id::pg_catalog.text)) "
	"FROM provision.claim_jobs($1::pg_catalog.int4) j";
static const char RECORD_SQL[] =
	"SELECT j.workflow_run_id FROM provision.record_dispatch($1::pg_catalog.uuid, "
	"$2::pg_catalog.int8, $3::pg_catalog.text) j";
/*
 * Only a job still waiting for its first run is failed: if a run of an
 * earlier dispatch has recorded itself or moved the job on meanwhile, that
 * run owns the job and this refusal means nothing.
 */
static const char FAIL_SQL[] =
	"SELECT (provision.update_job_status(j.id, 'failed'::provision.job_status, "
	"$2::pg_catalog.text)).status::pg_catalog.text "
	"FROM provision.provisioning_jobs j "
	"WHERE j.id = $1::pg_catalog.uuid AND j.status = 'dispatched'::provision.job_status "
	"AND j.workflow_run_id IS NULL";
static const char ORPHANS_SQL[] =
	"SELECT j.id::pg_catalog.text, j.agent_id::pg_catalog.text, "
	"pg_catalog.date_part('epoch', j.dispatched_at)::pg_catalog.int8, "
	"pg_catalog.date_part('epoch', pg_catalog.now() - j.dispatched_at) "
	"FROM provision.provisioning_jobs j "
	"WHERE j.status = 'dispatched'::provision.job_status AND j.workflow_run_id IS NULL "
	"AND j.dispatched_at < pg_catalog.now() - pg_catalog.make_interval(secs => "
	"$1::pg_catalog.float8) "
	"ORDER BY j.dispatched_at LIMIT $2::pg_catalog.int4";
static const char LOCK_SQL[] = "SELECT pg_catalog.pg_try_advisory_lock($1::pg_catalog.int4, "
							   "pg_catalog.hashtext($2::pg_catalog.text))";
static const char UNLOCK_SQL[] = "SELECT pg_catalog.pg_advisory_unlock($1::pg_catalog.int4, "
								 "pg_catalog.hashtext($2::pg_catalog.text))";

struct db
{
	const struct config *cfg;
	PGconn              *conn;
	bool                 ever_connected;
	double               backoff_s;
	double               next_attempt;
	bool                 wakeup;
	char                 down_reason[512];
};

struct db *
db_new(const struct config *cfg)
{
	struct db *db = calloc(1, sizeof *db);

	if (db != NULL)
	{
		db->cfg = cfg;
		db->backoff_s = BACKOFF_MIN_S;
		snprintf(db->down_reason, sizeof db->down_reason, "not connected yet");
	}
	return db;
}

void
db_free(struct db *db)
{
	if (db == NULL)
		return;
	if (db->conn != NULL)
		PQfinish(db->conn);
	free(db);
}

bool
db_is_up(const struct db *db)
{
	return db->conn != NULL;
}

int
db_socket(const struct db *db)
{
	return db->conn != NULL ? PQsocket(db->conn) : -1;
}

double
db_next_attempt(const struct db *db)
{
	return db->next_attempt;
}

const char *
db_down_reason(const struct db *db)
{
	return db->conn != NULL ? "" : db->down_reason;
}

/* Drops the connection; the next attempt waits for the backoff. */
static void
mark_down(struct db *db, const char *why)
{
	char reason[sizeof db->down_reason];

	/* why may be PQerrorMessage(db->conn), which PQfinish frees */
	snprintf(reason, sizeof reason, "%.*s", pq_first_line(why), why);
	if (db->conn != NULL)
	{
		log_warn("database connection lost: %s", reason);
		PQfinish(db->conn);
		db->conn = NULL;
	}
	snprintf(db->down_reason, sizeof db->down_reason, "%s", reason);
	metrics_db_error();
	db->next_attempt = monotonic_seconds() + db->backoff_s;
	db->backoff_s *= 2;
	if (db->backoff_s > BACKOFF_MAX_S)
		db->backoff_s = BACKOFF_MAX_S;
}

/* Notifications libpq has read so far; only new pending jobs wake the loop. */
static void
collect_notifications(struct db *db)
{
	PGnotify *n;

	while ((n = PQnotifies(db->conn)) != NULL)
	{
		cJSON       *payload = cJSON_Parse(n->extra);
		const cJSON *kind = cJSON_GetObjectItemCaseSensitive(payload, "kind");

		/* a hint to look, never a fact: any role may NOTIFY this channel */
		if (cJSON_IsString(kind) && (strcmp(kind->valuestring, "enqueued") == 0 ||
									 strcmp(kind->valuestring, "retried") == 0))
			db->wakeup = true;
		cJSON_Delete(payload);
		PQfreemem(n);
	}
}

bool
db_take_wakeup(struct db *db)
{
	bool woken;

	if (db->conn != NULL)
	{
		if (!PQconsumeInput(db->conn))
			mark_down(db, PQerrorMessage(db->conn));
		else
			collect_notifications(db);
	}
	woken = db->wakeup;
	db->wakeup = false;
	return woken;
}

static long
ms_until(double deadline)
{
	return (long) ((deadline - monotonic_seconds()) * 1000);
}

/* Is this error the connection's end rather than the statement's? */
static bool
connection_error(PGconn *conn, const PGresult *res)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(conn) != CONNECTION_OK)
		return true;
	/* 57P01..57P03: the server is shutting down or restarting; 08: connection */
	return state != NULL && (strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0);
}

/*
 * Runs one statement and waits for it within the statement timeout plus a
 * grace period.  On DB_OK *res holds the result (PQclear it).
 */
static enum db_outcome
exec(struct db *db, const char *sql, int nparams, const char *const *values, PGresult **res,
	 struct db_error *err)
{
	double    deadline;
	PGresult *r;
	PGresult *first = NULL;

	*res = NULL;
	memset(err, 0, sizeof *err);
	if (db->conn == NULL)
	{
		snprintf(err->message, sizeof err->message, "%s", db->down_reason);
		return DB_DOWN;
	}
	if (!PQsendQueryParams(db->conn, sql, nparams, NULL, values, NULL, NULL, 0))
	{
		snprintf(err->message, sizeof err->message, "%.*s", pq_first_line(PQerrorMessage(db->conn)),
				 PQerrorMessage(db->conn));
		mark_down(db, PQerrorMessage(db->conn));
		return DB_DOWN;
	}
	deadline = monotonic_seconds() + (db->cfg->statement_timeout_ms + CLIENT_GRACE_MS) / 1000.0;
	for (;;)
	{
		while (PQisBusy(db->conn))
		{
			struct pollfd pfd = {PQsocket(db->conn), POLLIN, 0};
			long          left = ms_until(deadline);
			int           n;

			if (left <= 0)
			{
				snprintf(err->message, sizeof err->message,
						 "no answer from the database within the statement timeout");
				PQclear(first);
				mark_down(db, err->message);
				return DB_DOWN;
			}
			n = poll(&pfd, 1, (int) left);
			if ((n < 0 && errno != EINTR) || (n > 0 && !PQconsumeInput(db->conn)))
			{
				snprintf(err->message, sizeof err->message, "%.*s",
						 pq_first_line(PQerrorMessage(db->conn)), PQerrorMessage(db->conn));
				PQclear(first);
				mark_down(db, PQerrorMessage(db->conn));
				return DB_DOWN;
			}
		}
		r = PQgetResult(db->conn);
		if (r == NULL)
			break;
		if (first == NULL)
			first = r;
		else
			PQclear(r);
	}
	collect_notifications(db);

	if (first != NULL &&
		(PQresultStatus(first) == PGRES_TUPLES_OK || PQresultStatus(first) == PGRES_COMMAND_OK))
	{
		*res = first;
		return DB_OK;
	}
	if (first != NULL)
	{
		const char *state = PQresultErrorField(first, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(first, PG_DIAG_MESSAGE_PRIMARY);

		snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state ? state : "");
		snprintf(err->message, sizeof err->message, "%s", msg ? msg : PQresultErrorMessage(first));
	}
	else
		snprintf(err->message, sizeof err->message, "%.*s", pq_first_line(PQerrorMessage(db->conn)),
				 PQerrorMessage(db->conn));
	if (connection_error(db->conn, first))
	{
		PQclear(first);
		mark_down(db, err->message);
		return DB_DOWN;
	}
	PQclear(first);
	metrics_db_error();
	return DB_SQL_ERROR;
}

bool
db_ensure(struct db *db, bool *fresh)
{
	/* the user's conninfo comes after the defaults, so its values win */
	const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
	const char *const values[] = {CONNECT_TIMEOUT_S, "provision-dispatcher", db->cfg->database,
								  NULL};
	char              timeout[32];
	const char       *params[1] = {timeout};
	PGresult         *res;
	struct db_error   err;
	enum db_outcome   rc;

	*fresh = false;
	if (db->conn != NULL)
		return true;
	if (monotonic_seconds() < db->next_attempt)
		return false;

	db->conn = PQconnectdbParams(keys, values, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK)
	{
		char why[512];

		snprintf(why, sizeof why, "cannot connect to the database: %.*s",
				 db->conn ? pq_first_line(PQerrorMessage(db->conn)) : 13,
				 db->conn ? PQerrorMessage(db->conn) : "out of memory");
		if (db->conn != NULL)
			PQfinish(db->conn);
		db->conn = NULL;
		if (strcmp(why, db->down_reason) != 0)
			log_warn("%s", why);
		mark_down(db, why);
		return false;
	}
	PQsetNoticeReceiver(db->conn, pq_log_notice, NULL);

	snprintf(timeout, sizeof timeout, "%ldms", db->cfg->statement_timeout_ms);
	rc = exec(db, SETUP_SQL, 1, params, &res, &err);
	if (rc == DB_OK)
	{
		PQclear(res);
		rc = exec(db, LISTEN_SQL, 0, NULL, &res, &err);
	}
	if (rc != DB_OK)
	{
		char why[600];

		snprintf(why, sizeof why, "cannot set up the database session: %s", err.message);
		log_warn("%s", why);
		/* a refused statement leaves the connection up: drop it all the same */
		if (db->conn != NULL)
		{
			PQfinish(db->conn);
			db->conn = NULL;
			mark_down(db, why);
		}
		return false;
	}
	PQclear(res);

	if (db->ever_connected)
	{
		metrics_db_reconnect();
		log_info("database connection re-established");
	}
	db->ever_connected = true;
	db->backoff_s = BACKOFF_MIN_S;
	db->down_reason[0] = '\0';
	*fresh = true;
	return true;
}

enum db_outcome
db_retry_failed_jobs(struct db *db, long *enqueued, struct db_error *err)
{
	PGresult       *res;
	enum db_outcome rc = exec(db, RETRY_SQL, 0, NULL, &res, err);

	*enqueued = 0;
	if (rc == DB_OK)
	{
		if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
			*enqueued = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
	}
	return rc;
}

enum db_outcome
db_claim_jobs(struct db *db, long max, struct claimed_job *jobs, int *n, struct db_error *err)
{
	char            max_text[24];
	char            lock_class[24];
	const char     *params[2] = {max_text, lock_class};
	PGresult       *res;
	enum db_outcome rc;

	*n = 0;
	snprintf(max_text, sizeof max_text, "%ld", max);
	snprintf(lock_class, sizeof lock_class, "%d", DB_JOB_LOCK_CLASS);
	rc = exec(db, CLAIM_SQL, 2, params, &res, err);
	if (rc != DB_OK)
		return rc;
	for (int i = 0; i < PQntuples(res) && i < max; i++)
	{
		snprintf(jobs[i].id, sizeof jobs[i].id, "%s", PQgetvalue(res, i, 0));
		snprintf(jobs[i].agent_id, sizeof jobs[i].agent_id, "%s", PQgetvalue(res, i, 1));
		jobs[i].locked = strcmp(PQgetvalue(res, i, 2), "t") == 0;
		(*n)++;
	}
	PQclear(res);
	return DB_OK;
}

enum db_outcome
db_record_dispatch(struct db *db, const char *job_id, long long run_id, const char *run_url,
				   struct db_error *err)
{
	char            run_text[24];
	const char     *params[3] = {job_id, NULL, NULL};
	PGresult       *res;
	enum db_outcome rc;

	if (run_id > 0)
	{
		snprintf(run_text, sizeof run_text, "%lld", run_id);
		params[1] = run_text;
		if (run_url != NULL && run_url[0] != '\0')
			params[2] = run_url;
	}
	rc = exec(db, RECORD_SQL, 3, params, &res, err);
	if (rc == DB_OK)
		PQclear(res);
	return rc;
}

enum db_outcome
db_fail_job(struct db *db, const char *job_id, const char *error, bool *failed,
			struct db_error *err)
{
	const char     *params[2] = {job_id, error};
	PGresult       *res;
	enum db_outcome rc = exec(db, FAIL_SQL, 2, params, &res, err);

	*failed = false;
	if (rc == DB_OK)
	{
		*failed = PQntuples(res) == 1;
		PQclear(res);
	}
	return rc;
}

enum db_outcome
db_orphans(struct db *db, double older_than_s, struct orphan *out, int max, int *n,
		   struct db_error *err)
{
	char            older[32];
	char            limit[24];
	const char     *params[2] = {older, limit};
	PGresult       *res;
	enum db_outcome rc;

	*n = 0;
	snprintf(older, sizeof older, "%.3f", older_than_s);
	snprintf(limit, sizeof limit, "%d", max);
	rc = exec(db, ORPHANS_SQL, 2, params, &res, err);
	if (rc != DB_OK)
		return rc;
	for (int i = 0; i < PQntuples(res) && i < max; i++)
	{
		snprintf(out[i].id, sizeof out[i].id, "%s", PQgetvalue(res, i, 0));
		snprintf(out[i].agent_id, sizeof out[i].agent_id, "%s", PQgetvalue(res, i, 1));
		out[i].dispatched_at = (time_t) strtoll(PQgetvalue(res, i, 2), NULL, 10);
		out[i].age_s = strtod(PQgetvalue(res, i, 3), NULL);
		(*n)++;
	}
	PQclear(res);
	return DB_OK;
}

static enum db_outcome
lock_call(struct db *db, const char *sql, const char *job_id, bool *result, struct db_error *err)
{
	char            lock_class[24];
	const char     *params[2] = {lock_class, job_id};
	PGresult       *res;
	enum db_outcome rc;

	snprintf(lock_class, sizeof lock_class, "%d", DB_JOB_LOCK_CLASS);
	rc = exec(db, sql, 2, params, &res, err);
	*result = false;
	if (rc == DB_OK)
	{
		*result = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	return rc;
}

enum db_outcome
db_lock_job(struct db *db, const char *job_id, bool *locked, struct db_error *err)
{
	return lock_call(db, LOCK_SQL, job_id, locked, err);
}

enum db_outcome
db_unlock_job(struct db *db, const char *job_id, struct db_error *err)
{
	bool released;

	return lock_call(db, UNLOCK_SQL, job_id, &released, err);
}
