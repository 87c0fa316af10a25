/*
 * db.c - connection pool, work queue and worker threads.
 *
 * Each slot of the pool holds one libpq connection.  A broken connection is
 * closed and re-opened by the next worker that borrows its slot, no sooner
 * than its backoff allows (100ms doubling to 5s), so while the database is
 * down requests get a quick 503 instead of piling up behind connect
 * attempts, and no worker ever waits for another one's reconnect.  Two
 * things cut a backoff short, so that the pool is whole again soon after a
 * restart or a failover: the pool as a whole tries a connection at least
 * once a second, and a connection that succeeds starts a new generation, in
 * which every slot that failed in an older one may retry at once.
 *
 * Each callback is one explicit transaction, BEGIN ISOLATION LEVEL READ
 * COMMITTED, the call, COMMIT, sent as one pipeline with a single Sync: one
 * round trip, and every result of it is read, so that an error raised at
 * COMMIT (a deferred constraint trigger, a serialization failure) is seen
 * and never answered 2xx.  The isolation level travels with the
 * transaction itself because the alternatives do not survive a pooler:
 * an "options=-c default_transaction_isolation=..." startup parameter is
 * refused by PgBouncer (or dropped with ignore_startup_parameters), and a
 * SET at connect stays on whichever server connection ran it while
 * PgBouncer in transaction pooling mode hands the next transaction to
 * another one.  So a role or database default of REPEATABLE READ or
 * SERIALIZABLE never reaches handle_callback, whose exactly-once guarantee
 * is stated for READ COMMITTED.
 *
 * Each new connection prepares the callback statement (--prepared-statements
 * auto), which saves the server parsing and planning it on every call.
 * Behind PgBouncer in transaction pooling mode a prepared statement lives on
 * one server connection while the next call may run on another, so a
 * connection whose PREPARE fails, or whose call finds the statement missing
 * (26000) or already there (42P05), sends unnamed statements with
 * PQsendQueryParams until it is reopened.  Every wait is
 * bounded: for a free slot by --pool-wait, on the server by statement_timeout,
 * and on the client side by the statement timeout plus a grace period, after
 * which the connection is dropped and the outcome treated as unknown (503).
 *
 * /readyz never takes a pool connection and never waits in the work queue:
 * a flood of probes must not delay a callback, and a pool busy with slow
 * callbacks must not make the listener look unready.  One prober thread
 * with a connection of its own runs the readiness query; its result is
 * cached, and a /readyz that finds it less than READY_MAX_AGE_MS old is
 * answered from it at once.  Otherwise the request waits for the probe
 * already running, or starts one, so there is at most one probe in flight
 * and at most about one per READY_MAX_AGE_MS however many requests come.
 * Anything to read on the prober's idle connection (the server closing it
 * on shutdown) also makes the cached result stale, so a database that goes
 * away is seen at the next /readyz.
 */
#include "db.h"

#include "deadline.h"
#include "log.h"
#include "metrics.h"
#include "pqlog.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_MS         100
#define BACKOFF_MAX_MS         5000
#define PROBE_INTERVAL_MS      1000
#define SERIALIZATION_ATTEMPTS 3
#define CLIENT_GRACE_MS        5000
#define CONNECT_TIMEOUT_S      "5"
#define READY_MAX_AGE_MS       1000
#define PROBE_TIMEOUT_MS       5000

static const char CALLBACK_STMT[] = "provision_handle_callback";
/*
 * Each call returns the result as the server prints it, passed through to
 * the client, with the two members the listener needs (the job id for the
 * log line, the duplicate flag for the metric) taken out by the server, so
 * the listener never parses or prints the result itself.
 */
#define RESULT_COLUMNS                                                                             \
	"SELECT r::pg_catalog.text, pg_catalog.jsonb_extract_path_text(r, 'job_id'),"                  \
	" pg_catalog.jsonb_extract_path_text(r, 'duplicate') FROM "
static const char CALLBACK_SQL[] =
	RESULT_COLUMNS "provision.handle_callback($1::pg_catalog.jsonb, $2::pg_catalog.text) AS r";
static const char STRIPE_SQL[] =
	RESULT_COLUMNS "provision.handle_stripe_event($1::pg_catalog.jsonb) AS r";
static const char BEGIN_SQL[] = "BEGIN ISOLATION LEVEL READ COMMITTED";
static const char COMMIT_SQL[] = "COMMIT";
static const char ROLLBACK_SQL[] = "ROLLBACK";

/*
 * What /readyz checks, in one round trip: the extension is installed, and
 * its version is the one the server's extension files make the default
 * (the library is shared by every version: after the files are upgraded, a
 * database not yet updated with ALTER EXTENSION fails its callbacks), and
 * the listener's role may use schema provision and EXECUTE handle_callback
 * (and handle_stripe_event when $3 names it).  Functions are looked up only
 * once USAGE is known, because to_regprocedure raises an error for a schema
 * the role may not use; a NULL privilege means the function does not exist.
 */
static const char READY_SQL[] =
	"SELECT p.role, p.installed IS NOT NULL, p.usage,"
	" CASE WHEN p.usage THEN pg_catalog.has_function_privilege("
	"pg_catalog.to_regprocedure($2::pg_catalog.text), 'EXECUTE') END,"
	" CASE WHEN p.usage AND $3::pg_catalog.text IS NOT NULL THEN"
	" pg_catalog.has_function_privilege(pg_catalog.to_regprocedure($3::pg_catalog.text),"
	" 'EXECUTE') END,"
	" p.installed, p.available"
	" FROM (SELECT current_user::pg_catalog.text AS role,"
	" (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = $1::pg_catalog.name)"
	" AS installed,"
	" (SELECT a.default_version FROM pg_catalog.pg_available_extensions a"
	" WHERE a.name = $1::pg_catalog.name) AS available,"
	" (SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') FROM pg_catalog.pg_namespace n"
	" WHERE n.nspname = $1::pg_catalog.name) AS usage) AS p";
static const char READY_SCHEMA[] = "provision";
static const char READY_CALLBACK[] = "provision.handle_callback(pg_catalog.jsonb, pg_catalog.text)";
static const char READY_STRIPE[] = "provision.handle_stripe_event(pg_catalog.jsonb)";
static const char SET_TIMEOUT_SQL[] =
	"SELECT pg_catalog.set_config('statement_timeout', $1::pg_catalog.text, false)";

struct slot
{
	PGconn         *conn; /* NULL or unusable: reconnect before use */
	bool            busy;
	bool            ever_connected;
	bool            prepared; /* CALLBACK_STMT is prepared on conn */
	long            backoff_ms;
	struct timespec next_attempt;
	unsigned long   failed_generation; /* pool generation when last released broken */
};

struct db_pool
{
	pthread_mutex_t lock;
	pthread_cond_t  slot_free;
	pthread_cond_t  work;
	struct slot    *slots;
	int             nslots;
	struct db_job  *head;
	struct db_job  *tail;
	long            queued;
	long            queue_cap;
	bool            stopping;
	pthread_t      *workers;
	int             nworkers;
	pthread_cond_t  expiry; /* the expirer waits for the head's deadline */
	pthread_t       expirer;
	bool            expirer_started;
	bool            expirer_idle;  /* waiting for a job, with no deadline */
	bool            expirer_timed; /* waiting until expirer_until */
	struct timespec expirer_until;
	unsigned long   generation; /* counts the connections made */
	struct timespec next_probe; /* any broken slot may try from then on */
	char           *conninfo;
	long            statement_timeout_ms;
	long            pool_wait_ms;
	bool            prepare;

	/* /readyz (see the top of the file); guarded by lock */
	pthread_t       prober;
	bool            prober_started;
	pthread_cond_t  probe_wanted;
	bool            probe_running; /* wanted or in flight */
	bool            probe_cached;  /* probe_status and probe_reason hold a result */
	struct timespec probe_started; /* when the cached result's probe began */
	unsigned int    probe_status;  /* 200 or 503 */
	char            probe_reason[256];
	struct db_job  *probe_waiters;
	bool            probe_stripe; /* also require EXECUTE on handle_stripe_event */
	PGconn         *probe_conn;   /* the prober's own; read elsewhere only when idle */
};

enum exec_outcome
{
	EXEC_RESULT, /* *res holds the server's answer */
	EXEC_BROKEN  /* connection lost or timed out: unknown */
};

/* The one place a failed borrow turns into a 503. */
enum borrow_outcome
{
	BORROW_OK,
	BORROW_TIMEOUT,
	BORROW_DOWN
};

/* A connection left inside a transaction (a failed ROLLBACK) is not reused. */
static bool
slot_usable(const struct slot *s)
{
	return s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK &&
		   PQtransactionStatus(s->conn) == PQTRANS_IDLE;
}

/*
 * An idle connection has nothing to read unless the server sent an error
 * (shutdown, restart, idle timeout) or closed it; notice that before the
 * request is sent, so it goes to a fresh connection instead of failing.
 */
static bool
idle_connection_alive(PGconn *conn)
{
	struct pollfd pfd = {PQsocket(conn), POLLIN, 0};

	/* an error message and the end of the stream may take two reads */
	for (int i = 0; i < 2; i++)
	{
		if (poll(&pfd, 1, 0) == 0)
			return PQstatus(conn) == CONNECTION_OK;
		if (!PQconsumeInput(conn))
			return false;
		while (!PQisBusy(conn))
		{
			PGresult *r = PQgetResult(conn);

			if (r == NULL)
				break;
			PQclear(r);
		}
		if (PQstatus(conn) != CONNECTION_OK)
			return false;
	}
	return false;
}

/*
 * How much a result says about the outcome: an error decides it, rows are
 * the answer, and a bare command status (BEGIN, COMMIT, SET) only confirms.
 */
static int
result_weight(const PGresult *r)
{
	switch (PQresultStatus(r))
	{
		case PGRES_FATAL_ERROR:
			return 2;
		case PGRES_TUPLES_OK:
			return 1;
		default:
			return 0;
	}
}

/*
 * Keeps the result that decides the outcome: the first error, else the
 * first rows, else the first result.  An error may follow a good result
 * (one raised at COMMIT), so no result is final until the last one has
 * been read.
 */
static void
keep_result(PGresult **kept, PGresult *r)
{
	if (*kept == NULL)
		*kept = r;
	else if (result_weight(r) > result_weight(*kept))
	{
		PQclear(*kept);
		*kept = r;
	}
	else
		PQclear(r);
}

/* Waits at most until deadline for libpq to have a result ready. */
static bool
wait_readable(PGconn *conn, const struct timespec *deadline)
{
	while (PQisBusy(conn))
	{
		struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
		long          left = deadline_ms_left(deadline, CLOCK_MONOTONIC);
		int           n;

		if (left <= 0)
			return false;
		n = poll(&pfd, 1, (int) left);
		if (n < 0 && errno != EINTR)
			return false;
		if (n > 0 && !PQconsumeInput(conn))
			return false;
	}
	return true;
}

/*
 * Waits at most until deadline for every result of what was just sent
 * (until PQgetResult returns NULL); *res is the one keep_result chose.
 */
static enum exec_outcome
exec_wait(PGconn *conn, const struct timespec *deadline, PGresult **res)
{
	PGresult *r;

	*res = NULL;
	for (;;)
	{
		if (!wait_readable(conn, deadline))
		{
			PQclear(*res);
			*res = NULL;
			return EXEC_BROKEN;
		}
		r = PQgetResult(conn);
		if (r == NULL)
			break;
		keep_result(res, r);
	}
	if (*res == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		PQclear(*res);
		*res = NULL;
		return EXEC_BROKEN;
	}
	return EXEC_RESULT;
}

/*
 * The pipeline counterpart of exec_wait: reads the results of every query
 * up to the Sync.  libpq ends each query's results with a NULL; two NULLs in
 * a row mean nothing more is coming, which only a broken connection does
 * before the Sync.  Queries skipped after an error report
 * PGRES_PIPELINE_ABORTED, which says nothing the error did not.
 */
static enum exec_outcome
pipeline_wait(PGconn *conn, const struct timespec *deadline, PGresult **res)
{
	bool ended = false;

	*res = NULL;
	for (;;)
	{
		PGresult *r;

		if (!wait_readable(conn, deadline))
			goto broken;
		r = PQgetResult(conn);
		if (r == NULL)
		{
			if (ended || PQstatus(conn) != CONNECTION_OK)
				goto broken;
			ended = true;
			continue;
		}
		ended = false;
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
		{
			PQclear(r);
			break;
		}
		if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED)
			PQclear(r);
		else
			keep_result(res, r);
	}
	if (*res == NULL || PQstatus(conn) != CONNECTION_OK || !PQexitPipelineMode(conn))
		goto broken;
	return EXEC_RESULT;

broken:
	PQclear(*res);
	*res = NULL;
	return EXEC_BROKEN;
}

/* Runs one statement outside the callback's transaction, at most timeout_ms. */
static enum exec_outcome
exec_params(PGconn *conn, const char *sql, int nparams, const char *const *values, long timeout_ms,
			PGresult **res)
{
	struct timespec deadline;

	*res = NULL;
	deadline_after_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
	if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
		return EXEC_BROKEN;
	return exec_wait(conn, &deadline, res);
}

/*
 * Runs one statement (prepared when name is not NULL) in its own READ
 * COMMITTED transaction, at most timeout_ms, and returns its result or the
 * first error of the transaction, COMMIT included (see the top of the
 * file).  After an error before COMMIT the server keeps the transaction
 * open and aborted: it is rolled back at once, so that behind a pooler the
 * server connection is not held, and so that the next call starts clean.
 */
static enum exec_outcome
exec_transaction(PGconn *conn, const char *name, const char *sql, int nparams,
				 const char *const *values, long timeout_ms, PGresult **res)
{
	struct timespec   deadline;
	enum exec_outcome out;
	PGresult         *rollback;
	bool              sent;

	*res = NULL;
	deadline_after_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
	if (!PQenterPipelineMode(conn))
		return EXEC_BROKEN;
	sent = PQsendQueryParams(conn, BEGIN_SQL, 0, NULL, NULL, NULL, NULL, 0) &&
		   (name != NULL ? PQsendQueryPrepared(conn, name, nparams, values, NULL, NULL, 0)
						 : PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0)) &&
		   PQsendQueryParams(conn, COMMIT_SQL, 0, NULL, NULL, NULL, NULL, 0) &&
		   PQpipelineSync(conn);
	if (!sent)
		return EXEC_BROKEN;
	out = pipeline_wait(conn, &deadline, res);
	if (out != EXEC_RESULT || PQtransactionStatus(conn) != PQTRANS_INERROR)
		return out;
	if (exec_params(conn, ROLLBACK_SQL, 0, NULL, deadline_ms_left(&deadline, CLOCK_MONOTONIC),
					&rollback) == EXEC_RESULT)
	{
		if (PQresultStatus(rollback) != PGRES_COMMAND_OK)
		{
			const char *msg = PQresultErrorMessage(rollback);

			log_warn("rollback after a failed call failed: %.*s", pq_first_line(msg), msg);
		}
		PQclear(rollback);
	}
	/* a connection still in the transaction is dropped on release */
	return EXEC_RESULT;
}

/*
 * Prepares the callback statement on a new connection.  False only when the
 * connection broke; a refused PREPARE leaves the connection on unnamed
 * statements.
 */
static bool
prepare_callback(struct db_pool *pool, struct slot *s, PGconn *conn)
{
	struct timespec deadline;
	PGresult       *res;

	s->prepared = false;
	if (!pool->prepare)
		return true;
	deadline_after_ms(&deadline, CLOCK_MONOTONIC, pool->statement_timeout_ms + CLIENT_GRACE_MS);
	if (!PQsendPrepare(conn, CALLBACK_STMT, CALLBACK_SQL, 2, NULL) ||
		exec_wait(conn, &deadline, &res) != EXEC_RESULT)
		return false;
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
		s->prepared = true;
	else
	{
		const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

		if (msg == NULL)
			msg = "no message";
		log_info("preparing %s failed (SQLSTATE %s: %.*s); this connection uses unnamed "
				 "statements",
				 CALLBACK_STMT, sqlstate ? sqlstate : "none", pq_first_line(msg), msg);
	}
	PQclear(res);
	return true;
}

/*
 * Opens a connection to --database with the listener's defaults (which the
 * conninfo may override); NULL with the reason in err on failure.
 */
static PGconn *
open_connection(const struct db_pool *pool, const char *application_name, char *err, size_t errlen)
{
	const char *keys[] = {"fallback_application_name", "connect_timeout", "dbname", NULL};
	const char *vals[] = {application_name, CONNECT_TIMEOUT_S, pool->conninfo, NULL};
	PGconn     *conn = PQconnectdbParams(keys, vals, 1);

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		log_one_line(conn ? PQerrorMessage(conn) : "out of memory", err, errlen);
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeReceiver(conn, pq_log_notice, NULL);
	return conn;
}

/*
 * Opens the slot's connection, sets statement_timeout and prepares the
 * callback statement; false on failure.
 */
static bool
slot_connect(struct db_pool *pool, struct slot *s)
{
	char        timeout[32];
	const char *params[1] = {timeout};
	char        err[1024];
	PGresult   *res;
	PGconn     *conn;

	if (s->conn != NULL)
		PQfinish(s->conn);
	s->conn = NULL;

	conn = open_connection(pool, "provision-listener", err, sizeof err);
	if (conn == NULL)
	{
		log_warn("database connection failed: PQconnectdbParams: %s", err);
		metrics_db_error();
		return false;
	}

	/*
	 * Behind PgBouncer in transaction pooling mode a session setting does
	 * not stick to a server connection; there statement_timeout belongs on
	 * the role (ALTER ROLE ... SET statement_timeout).
	 */
	snprintf(timeout, sizeof timeout, "%ldms", pool->statement_timeout_ms);
	if (exec_params(conn, SET_TIMEOUT_SQL, 1, params, pool->statement_timeout_ms + CLIENT_GRACE_MS,
					&res) != EXEC_RESULT ||
		PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

		log_warn("database connection failed: set statement_timeout: %.*s", pq_first_line(msg),
				 msg);
		metrics_db_error();
		PQclear(res);
		PQfinish(conn);
		return false;
	}
	PQclear(res);

	if (!prepare_callback(pool, s, conn))
	{
		const char *msg = PQerrorMessage(conn);

		log_warn("database connection failed: prepare %s: %.*s", CALLBACK_STMT, pq_first_line(msg),
				 msg);
		metrics_db_error();
		PQfinish(conn);
		return false;
	}

	if (s->ever_connected)
		metrics_db_reconnect();
	s->ever_connected = true;
	s->conn = conn;
	s->backoff_ms = 0;
	pthread_mutex_lock(&pool->lock);
	pool->generation++;
	pthread_mutex_unlock(&pool->lock);
	return true;
}

/* Marks the slot's connection broken and schedules the next attempt. */
static void
slot_fail(struct slot *s)
{
	long jitter;

	if (s->conn != NULL)
		PQfinish(s->conn);
	s->conn = NULL;
	s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_MIN_MS : s->backoff_ms * 2;
	if (s->backoff_ms > BACKOFF_MAX_MS)
		s->backoff_ms = BACKOFF_MAX_MS;
	jitter = s->backoff_ms / 4 > 0 ? random() % (s->backoff_ms / 4) : 0;
	deadline_after_ms(&s->next_attempt, CLOCK_MONOTONIC, s->backoff_ms + jitter);
}

/*
 * A broken slot may reconnect when its backoff has passed, when a connection
 * was made since it failed, or when the pool has tried none for
 * PROBE_INTERVAL_MS.  Called with the pool locked.
 */
static bool
slot_may_retry(const struct db_pool *pool, const struct slot *s)
{
	return deadline_ms_left(&s->next_attempt, CLOCK_MONOTONIC) <= 0 ||
		   s->failed_generation != pool->generation ||
		   deadline_ms_left(&pool->next_probe, CLOCK_MONOTONIC) <= 0;
}

/*
 * Borrows a slot: a healthy free one if any, else a broken free one that may
 * retry (the caller reconnects it).  When every free slot is still backing
 * off the database is down and waiting would not help.
 */
static enum borrow_outcome
pool_borrow(struct db_pool *pool, const struct timespec *deadline, struct slot **out)
{
	enum borrow_outcome result = BORROW_TIMEOUT;

	pthread_mutex_lock(&pool->lock);
	for (;;)
	{
		struct slot *retry = NULL;
		bool         any_free = false;

		for (int i = 0; i < pool->nslots; i++)
		{
			struct slot *s = &pool->slots[i];

			if (s->busy)
				continue;
			any_free = true;
			if (slot_usable(s))
			{
				*out = s;
				result = BORROW_OK;
				goto done;
			}
			if (retry == NULL && slot_may_retry(pool, s))
				retry = s;
		}
		if (retry != NULL)
		{
			deadline_after_ms(&pool->next_probe, CLOCK_MONOTONIC, PROBE_INTERVAL_MS);
			*out = retry;
			result = BORROW_OK;
			goto done;
		}
		if (any_free)
		{
			result = BORROW_DOWN;
			goto done;
		}
		if (pthread_cond_timedwait(&pool->slot_free, &pool->lock, deadline) == ETIMEDOUT)
		{
			result = BORROW_TIMEOUT;
			goto done;
		}
	}
done:
	if (result == BORROW_OK)
	{
		(*out)->busy = true;
		metrics_pool_in_use_add(1);
	}
	pthread_mutex_unlock(&pool->lock);
	return result;
}

static void
pool_release(struct db_pool *pool, struct slot *s)
{
	pthread_mutex_lock(&pool->lock);
	s->busy = false;
	if (s->conn == NULL)
		s->failed_generation = pool->generation;
	metrics_pool_in_use_add(-1);
	pthread_mutex_unlock(&pool->lock);
	/* after the unlock, so that the woken worker does not wait for the lock */
	pthread_cond_signal(&pool->slot_free);
}

/* Borrows a slot with a live connection, or sets the outcome and returns NULL. */
static struct slot *
borrow_connected(struct db_pool *pool, struct db_job *job)
{
	struct slot        *s = NULL;
	enum borrow_outcome b = pool_borrow(pool, &job->deadline, &s);

	if (b == BORROW_OK)
	{
		if ((slot_usable(s) && idle_connection_alive(s->conn)) || slot_connect(pool, s))
			return s;
		slot_fail(s);
		pool_release(pool, s);
		b = BORROW_DOWN;
	}
	job->outcome.kind = b == BORROW_TIMEOUT ? OUTCOME_POOL_TIMEOUT : OUTCOME_NO_CONNECTION;
	return NULL;
}

/* A copy of a libpq string, or NULL for NULL (and when out of memory). */
static char *
copy_field(const char *value)
{
	return value != NULL ? strdup(value) : NULL;
}

/* The function a job calls, for the log. */
static const char *
job_function(const struct db_job *job)
{
	return job->kind == DB_JOB_STRIPE ? "handle_stripe_event" : "handle_callback";
}

/*
 * The outcome of a successful call: the result text, the job id and the
 * duplicate flag from the columns of RESULT_COLUMNS.
 */
static void
result_outcome(struct db_job *job, const PGresult *res)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 0))
	{
		log_error("provision.%s returned no result", job_function(job));
		job->outcome.kind = OUTCOME_NO_RESULT;
		return;
	}
	if (!PQgetisnull(res, 0, 2) && strcmp(PQgetvalue(res, 0, 2), "true") == 0)
		metrics_duplicate();
	job->outcome.kind = OUTCOME_RESULT;
	job->outcome.text = copy_field(PQgetvalue(res, 0, 0));
	if (!PQgetisnull(res, 0, 1))
		job->outcome.job_id = copy_field(PQgetvalue(res, 0, 1));
}

/*
 * The outcome of a refused call, with the server's fields; false when it
 * is a serialization failure or deadlock worth another attempt, which
 * leaves the outcome unset.
 */
static bool
error_outcome(struct db_job *job, const PGresult *res, bool last_attempt)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (sqlstate_is_serialization_failure(sqlstate) && !last_attempt)
	{
		metrics_db_error();
		return false;
	}
	job->outcome.kind = OUTCOME_ERROR;
	snprintf(job->outcome.sqlstate, sizeof job->outcome.sqlstate, "%s", sqlstate ? sqlstate : "");
	job->outcome.message = copy_field(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	job->outcome.detail = copy_field(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
	job->outcome.hint = copy_field(PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
	return true;
}

static void
sleep_ms(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&t, &t) != 0 && errno == EINTR)
		;
}

/*
 * Calls handle_callback on the slot's connection: prepared when the
 * connection has the statement, else unnamed.  A prepared call that finds
 * the statement missing on the server connection (26000, as behind
 * PgBouncer in transaction pooling when the call lands on another server
 * connection than the PREPARE did) ran nothing, so it is sent again
 * unnamed, and the connection stays unnamed from then on.
 */
static enum exec_outcome
exec_callback(struct db_pool *pool, struct slot *s, const char *const *params, PGresult **res)
{
	long              timeout_ms = pool->statement_timeout_ms + CLIENT_GRACE_MS;
	enum exec_outcome out;
	const char       *sqlstate;

	if (!s->prepared)
		return exec_transaction(s->conn, NULL, CALLBACK_SQL, 2, params, timeout_ms, res);
	out = exec_transaction(s->conn, CALLBACK_STMT, NULL, 2, params, timeout_ms, res);
	if (out != EXEC_RESULT || PQresultStatus(*res) != PGRES_FATAL_ERROR)
		return out;
	sqlstate = PQresultErrorField(*res, PG_DIAG_SQLSTATE);
	if (sqlstate == NULL || (strcmp(sqlstate, "26000") != 0 && strcmp(sqlstate, "42P05") != 0))
		return out;
	log_info("prepared statement %s failed (SQLSTATE %s); this connection now uses unnamed "
			 "statements",
			 CALLBACK_STMT, sqlstate);
	PQclear(*res);
	s->prepared = false;
	if (!slot_usable(s))
		return EXEC_BROKEN;
	return exec_transaction(s->conn, NULL, CALLBACK_SQL, 2, params, timeout_ms, res);
}

/*
 * A job's one call, in its own READ COMMITTED transaction whose COMMIT is
 * read too: a callback through exec_callback; a Stripe event, a few per
 * paying customer, as an unnamed statement, not worth preparing.
 */
static enum exec_outcome
exec_job(struct db_pool *pool, struct slot *s, const struct db_job *job, const char *const *params,
		 PGresult **res)
{
	if (job->kind == DB_JOB_STRIPE)
		return exec_transaction(s->conn, NULL, STRIPE_SQL, 1, params,
								pool->statement_timeout_ms + CLIENT_GRACE_MS, res);
	return exec_callback(pool, s, params, res);
}

/* Runs a callback or a Stripe event, retrying serialization failures. */
static void
run_callback(struct db_pool *pool, struct db_job *job, unsigned int *seed)
{
	const char *params[2] = {job->payload, job->delivery_id};

	for (int attempt = 1; attempt <= SERIALIZATION_ATTEMPTS; attempt++)
	{
		struct slot *s = borrow_connected(pool, job);
		PGresult    *res;
		bool         retry = false;

		if (s == NULL)
			return;
		if (exec_job(pool, s, job, params, &res) != EXEC_RESULT)
		{
			/* the call may or may not have committed: let the sender retry */
			const char *msg = PQerrorMessage(s->conn);

			log_warn("%s failed: connection lost: %.*s", job_function(job), pq_first_line(msg),
					 msg);
			metrics_db_error();
			slot_fail(s);
			pool_release(pool, s);
			job->outcome.kind = OUTCOME_LOST;
			return;
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			result_outcome(job, res);
		else
			retry = !error_outcome(job, res, attempt == SERIALIZATION_ATTEMPTS);
		PQclear(res);
		if (!slot_usable(s))
			slot_fail(s);
		pool_release(pool, s);
		if (!retry)
			return;
		sleep_ms(10L * attempt + (long) (rand_r(seed) % 20));
	}
}

/*
 * Whether the Stripe route is configured, so that /readyz also requires
 * EXECUTE on provision.handle_stripe_event(jsonb).
 */
static bool
stripe_route_configured(const struct config *cfg)
{
	return cfg->stripe_enabled;
}

/*
 * Runs the readiness query on the prober's connection, reconnecting first
 * when it is gone; fills in 200 or 503 with the reason.  The reason goes
 * into /readyz bodies, so it names what is missing but no server message;
 * *detail gets what the log should add.
 */
static unsigned int
probe_database(struct db_pool *pool, char *reason, size_t len, char *detail, size_t detail_len)
{
	const char *params[3] = {READY_SCHEMA, READY_CALLBACK,
							 pool->probe_stripe ? READY_STRIPE : NULL};
	PGresult   *res;
	const char *role;

	detail[0] = '\0';
	metrics_readiness_probe();
	if (pool->probe_conn != NULL &&
		(PQstatus(pool->probe_conn) != CONNECTION_OK || !idle_connection_alive(pool->probe_conn)))
	{
		PQfinish(pool->probe_conn);
		pool->probe_conn = NULL;
	}
	if (pool->probe_conn == NULL)
	{
		pool->probe_conn = open_connection(pool, "provision-listener-readyz", detail, detail_len);
		if (pool->probe_conn == NULL)
		{
			metrics_db_error();
			snprintf(reason, len, "database unreachable");
			return 503;
		}
	}
	if (exec_params(pool->probe_conn, READY_SQL, 3, params, PROBE_TIMEOUT_MS, &res) != EXEC_RESULT)
	{
		const char *msg = PQerrorMessage(pool->probe_conn);

		snprintf(detail, detail_len, "%.*s", pq_first_line(msg), msg);
		metrics_db_error();
		PQfinish(pool->probe_conn);
		pool->probe_conn = NULL;
		snprintf(reason, len, "database unreachable or not answering within %dms",
				 PROBE_TIMEOUT_MS);
		return 503;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 7)
	{
		const char *msg = PQresultErrorMessage(res);

		snprintf(detail, detail_len, "%.*s", pq_first_line(msg), msg);
		metrics_db_error();
		PQclear(res);
		snprintf(reason, len, "database readiness query failed");
		return 503;
	}

	/* booleans come as "t" and "f"; a NULL privilege: no such function */
	role = PQgetvalue(res, 0, 0);
	snprintf(detail, detail_len, "role %s", role);
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		snprintf(reason, len, "extension provision is not installed in the database");
	else if (!PQgetisnull(res, 0, 6) && strcmp(PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6)) != 0)
		snprintf(reason, len,
				 "extension provision is at version %.32s in the database, but the server's "
				 "extension files are version %.32s; run ALTER EXTENSION provision UPDATE",
				 PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6));
	else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0)
		snprintf(reason, len, "the database role lacks USAGE on schema provision");
	else if (PQgetisnull(res, 0, 3))
		snprintf(reason, len, "function provision.handle_callback(jsonb, text) does not exist");
	else if (strcmp(PQgetvalue(res, 0, 3), "t") != 0)
		snprintf(reason, len,
				 "the database role lacks EXECUTE on provision.handle_callback(jsonb, text)");
	else if (pool->probe_stripe && PQgetisnull(res, 0, 4))
		snprintf(reason, len,
				 "function provision.handle_stripe_event(jsonb) does not exist; the Stripe route "
				 "needs extension version 1.1 (ALTER EXTENSION provision UPDATE)");
	else if (pool->probe_stripe && strcmp(PQgetvalue(res, 0, 4), "t") != 0)
		snprintf(reason, len,
				 "the database role lacks EXECUTE on provision.handle_stripe_event(jsonb)");
	else
		reason[0] = '\0';
	PQclear(res);
	return reason[0] == '\0' ? 200 : 503;
}

/* A /readyz outcome from a probe result. */
static void
ready_outcome(struct db_job *job, unsigned int status, const char *reason)
{
	job->outcome.kind = status == 200 ? OUTCOME_READY : OUTCOME_NOT_READY;
	if (status != 200)
		job->outcome.text = copy_field(reason);
}

/*
 * True while the cached probe result may answer /readyz: less than
 * READY_MAX_AGE_MS old, and nothing has arrived on the idle prober
 * connection since (a server that shuts down says so there).  Called with
 * the lock held and no probe running, so the connection is idle.
 */
static bool
probe_fresh(const struct db_pool *pool)
{
	struct pollfd pfd;

	if (!pool->probe_cached ||
		-deadline_ms_left(&pool->probe_started, CLOCK_MONOTONIC) >= READY_MAX_AGE_MS)
		return false;
	if (pool->probe_conn == NULL)
		return true;
	pfd.fd = PQsocket(pool->probe_conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) == 0;
}

/*
 * The prober: runs a probe whenever a /readyz request found no fresh
 * result, then answers every request that waited for it.  The readiness
 * reason is logged when it changes, not on every probe.
 */
static void *
prober_main(void *arg)
{
	struct db_pool *pool = arg;
	unsigned int    logged_status = 0;
	char            logged_reason[sizeof pool->probe_reason] = "";

	pthread_mutex_lock(&pool->lock);
	for (;;)
	{
		struct timespec started;
		char            reason[sizeof pool->probe_reason];
		char            detail[1024];
		unsigned int    status;
		struct db_job  *waiters;

		while (!pool->probe_running && !pool->stopping)
			pthread_cond_wait(&pool->probe_wanted, &pool->lock);
		if (pool->stopping)
			break;
		pthread_mutex_unlock(&pool->lock);

		clock_gettime(CLOCK_MONOTONIC, &started);
		status = probe_database(pool, reason, sizeof reason, detail, sizeof detail);
		if (status != logged_status || strcmp(reason, logged_reason) != 0)
		{
			if (status == 200)
				log_info("ready: database reachable, extension installed, privileges granted "
						 "(%s)",
						 detail);
			else
				log_warn("not ready: %s%s%s", reason, detail[0] ? ": " : "", detail);
			logged_status = status;
			snprintf(logged_reason, sizeof logged_reason, "%s", reason);
		}

		pthread_mutex_lock(&pool->lock);
		pool->probe_cached = true;
		pool->probe_started = started;
		pool->probe_status = status;
		snprintf(pool->probe_reason, sizeof pool->probe_reason, "%s", reason);
		pool->probe_running = false;
		waiters = pool->probe_waiters;
		pool->probe_waiters = NULL;
		pthread_mutex_unlock(&pool->lock);

		while (waiters != NULL)
		{
			struct db_job *job = waiters;

			waiters = job->next;
			ready_outcome(job, status, reason);
			job->done(job);
		}
		pthread_mutex_lock(&pool->lock);
	}

	/* requests that arrived while stopping get no probe */
	while (pool->probe_waiters != NULL)
	{
		struct db_job *job = pool->probe_waiters;

		pool->probe_waiters = job->next;
		pthread_mutex_unlock(&pool->lock);
		job->outcome.kind = OUTCOME_SHUTTING_DOWN;
		job->done(job);
		pthread_mutex_lock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void *
worker_main(void *arg)
{
	struct db_pool *pool = arg;
	unsigned int    seed = (unsigned int) (uintptr_t) &seed ^ (unsigned int) time(NULL);

	for (;;)
	{
		struct db_job *job;

		pthread_mutex_lock(&pool->lock);
		while (pool->head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->work, &pool->lock);
		job = pool->head;
		if (job == NULL)
		{
			pthread_mutex_unlock(&pool->lock);
			return NULL;
		}
		pool->head = job->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pool->queued--;
		pthread_mutex_unlock(&pool->lock);

		run_callback(pool, job, &seed);
		job->done(job);
	}
}

static void
expire_job(struct db_job *job)
{
	job->outcome.kind = OUTCOME_POOL_TIMEOUT;
	job->done(job);
}

/*
 * Answers queued jobs whose --pool-wait deadline passes before a worker
 * takes them, so a request waits no longer than that even when every
 * worker is stuck in a slow call.  The queue is in deadline order, so only
 * its head needs watching.  The expirer records what it waits for, so that
 * db_submit wakes it only when a job needs an earlier wake-up than the one
 * already set: with every job given the same --pool-wait, only when it
 * idles on an empty queue.  Left sleeping until the deadline of a job a
 * worker has since taken, it wakes then and moves on to the current head.
 */
static void *
expirer_main(void *arg)
{
	struct db_pool *pool = arg;

	pthread_mutex_lock(&pool->lock);
	while (!pool->stopping)
	{
		struct db_job *job = pool->head;

		if (job == NULL)
		{
			pool->expirer_idle = true;
			pthread_cond_wait(&pool->expiry, &pool->lock);
			pool->expirer_idle = false;
			continue;
		}
		if (deadline_ms_left(&job->deadline, CLOCK_MONOTONIC) > 0)
		{
			/* a copy: a worker may take and finish the job meanwhile */
			pool->expirer_until = job->deadline;
			pool->expirer_timed = true;
			pthread_cond_timedwait(&pool->expiry, &pool->lock, &pool->expirer_until);
			pool->expirer_timed = false;
			continue;
		}
		pool->head = job->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pool->queued--;
		pthread_mutex_unlock(&pool->lock);
		expire_job(job);
		pthread_mutex_lock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/*
 * A /readyz request, with the lock held (and released here): answered at
 * once from a fresh probe result, else queued on the probe, which is
 * started unless one is already running.
 */
static bool
submit_ready(struct db_pool *pool, struct db_job *job)
{
	unsigned int status;
	char         reason[sizeof pool->probe_reason];

	if (pool->stopping)
	{
		pthread_mutex_unlock(&pool->lock);
		return false;
	}
	if (!pool->probe_running && probe_fresh(pool))
	{
		status = pool->probe_status;
		memcpy(reason, pool->probe_reason, sizeof reason);
		pthread_mutex_unlock(&pool->lock);
		ready_outcome(job, status, reason);
		job->done(job);
		return true;
	}
	job->next = pool->probe_waiters;
	pool->probe_waiters = job;
	if (!pool->probe_running)
	{
		pool->probe_running = true;
		pthread_cond_signal(&pool->probe_wanted);
	}
	pthread_mutex_unlock(&pool->lock);
	return true;
}

bool
db_submit(struct db_pool *pool, struct db_job *job)
{
	bool ok = false;

	job->next = NULL;
	memset(&job->outcome, 0, sizeof job->outcome);
	deadline_after_ms(&job->deadline, CLOCK_MONOTONIC, pool->pool_wait_ms);
	pthread_mutex_lock(&pool->lock);
	if (job->kind == DB_JOB_READY)
		return submit_ready(pool, job);
	if (!pool->stopping && pool->queued < pool->queue_cap)
	{
		if (pool->tail != NULL)
			pool->tail->next = job;
		else
		{
			pool->head = job;
			if (pool->expirer_idle ||
				(pool->expirer_timed && deadline_before(&job->deadline, &pool->expirer_until)))
				pthread_cond_signal(&pool->expiry);
		}
		pool->tail = job;
		pool->queued++;
		ok = true;
	}
	pthread_mutex_unlock(&pool->lock);
	/*
	 * Signalled after the unlock: a worker woken while the polling thread
	 * still held the lock would at once sleep again waiting for it.
	 */
	if (ok)
		pthread_cond_signal(&pool->work);
	return ok;
}

struct db_pool *
db_pool_open(const struct config *cfg, char *err, size_t errlen)
{
	struct db_pool    *pool = calloc(1, sizeof *pool);
	pthread_condattr_t attr;

	if (pool == NULL)
		goto oom;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->work, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool->slot_free, &attr);
	pthread_cond_init(&pool->expiry, &attr);
	pthread_condattr_destroy(&attr);
	pthread_cond_init(&pool->probe_wanted, NULL);
	pool->nslots = (int) cfg->pool;
	pool->queue_cap = cfg->max_connections;
	pool->statement_timeout_ms = cfg->statement_timeout_ms;
	pool->pool_wait_ms = cfg->pool_wait_ms;
	pool->prepare = cfg->prepared_statements;
	pool->probe_stripe = stripe_route_configured(cfg);
	pool->conninfo = strdup(cfg->database ? cfg->database : "");
	pool->slots = calloc((size_t) pool->nslots, sizeof *pool->slots);
	pool->workers = calloc((size_t) cfg->threads, sizeof *pool->workers);
	if (pool->conninfo == NULL || pool->slots == NULL || pool->workers == NULL)
		goto oom;
	metrics_set_pool_size(pool->nslots);

	/*
	 * Connect now so configuration mistakes show up in the log at once; stop
	 * at the first failure, the rest connect on demand.
	 */
	for (int i = 0; i < pool->nslots; i++)
		if (!slot_connect(pool, &pool->slots[i]))
			break;

	for (int i = 0; i < cfg->threads; i++)
	{
		int rc = pthread_create(&pool->workers[i], NULL, worker_main, pool);

		if (rc != 0)
		{
			snprintf(err, errlen, "cannot start worker thread: pthread_create: %s", strerror(rc));
			db_pool_close(pool);
			return NULL;
		}
		pool->nworkers++;
	}
	{
		int rc = pthread_create(&pool->expirer, NULL, expirer_main, pool);

		if (rc != 0)
		{
			snprintf(err, errlen, "cannot start the queue expiry thread: pthread_create: %s",
					 strerror(rc));
			db_pool_close(pool);
			return NULL;
		}
		pool->expirer_started = true;
	}
	{
		int rc = pthread_create(&pool->prober, NULL, prober_main, pool);

		if (rc != 0)
		{
			snprintf(err, errlen, "cannot start the readiness probe thread: pthread_create: %s",
					 strerror(rc));
			db_pool_close(pool);
			return NULL;
		}
		pool->prober_started = true;
	}
	return pool;

oom:
	snprintf(err, errlen, "cannot create the database pool: out of memory");
	if (pool != NULL)
	{
		free(pool->conninfo);
		free(pool->slots);
		free(pool->workers);
		free(pool);
	}
	return NULL;
}

void
db_pool_stop(struct db_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->work);
	pthread_cond_signal(&pool->expiry);
	pthread_cond_signal(&pool->probe_wanted);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->nworkers; i++)
		pthread_join(pool->workers[i], NULL);
	pool->nworkers = 0;
	if (pool->expirer_started)
		pthread_join(pool->expirer, NULL);
	pool->expirer_started = false;
	if (pool->prober_started)
		pthread_join(pool->prober, NULL);
	pool->prober_started = false;
}

void
db_pool_close(struct db_pool *pool)
{
	db_pool_stop(pool);
	for (int i = 0; i < pool->nslots; i++)
		if (pool->slots[i].conn != NULL)
			PQfinish(pool->slots[i].conn);
	PQfinish(pool->probe_conn);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->work);
	pthread_cond_destroy(&pool->slot_free);
	pthread_cond_destroy(&pool->expiry);
	pthread_cond_destroy(&pool->probe_wanted);
	free(pool->conninfo);
	free(pool->slots);
	free(pool->workers);
	free(pool);
}
