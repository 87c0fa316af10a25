/*
 * dispatch.c
 *		What the dispatcher calls around claim_jobs: record_dispatch, which
 *		records the workflow run a dispatch started, and retry_failed_jobs,
 *		which enqueues a new attempt for agents whose last job failed.
 */
#include "provision.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/* The statuses in which the dispatcher may record a job's first run. */
/* clang-format off */
static const bool dispatch_recordable[JOB_STATUS_COUNT] = {
	[JOB_DISPATCHED] = true, [JOB_PROVISIONING] = true,
};
/* clang-format on */

/*
 * The failed jobs to retry, locked, oldest failure first: the newest job
 * (by created_at, then id) of each agent that is not active, when it is
 * failed, the agent has fewer than max_attempts jobs in all, and the
 * failure is at least retry_delay * 2^(failed jobs of the agent - 1) old.
 * A job a concurrent caller (or callback) holds is skipped; the job's
 * status is checked again on its latest version once locked.
 *
 * The window functions read the jobs of every agent that is not active in
 * one pass. There is no index over all the jobs of an agent to do better
 * with: every index of provisioning_jobs is opened by every callback's
 * write, heartbeats included, and this runs once per dispatcher poll.
 */
static const char sql_retry_candidates[] =
	"WITH c AS ("
	" SELECT j.id, j.status, j.failed_at,"
	"  pg_catalog.row_number() OVER (PARTITION BY j.agent_id"
	"   ORDER BY j.created_at DESC, j.id DESC) AS newest,"
	"  pg_catalog.count(*) OVER (PARTITION BY j.agent_id) AS jobs,"
	"  pg_catalog.count(*) FILTER ("
	"   WHERE j.status OPERATOR(pg_catalog.=) 'failed'::provision.job_status)"
	"   OVER (PARTITION BY j.agent_id) AS failed"
	" FROM provision.provisioning_jobs j"
	" JOIN provision.agents a ON a.id OPERATOR(pg_catalog.=) j.agent_id"
	" WHERE a.status OPERATOR(pg_catalog.<>) 'active'::provision.agent_status) "
	"SELECT j.id, j.agent_id "
	"FROM c JOIN provision.provisioning_jobs j ON j.id OPERATOR(pg_catalog.=) c.id "
	"WHERE c.newest OPERATOR(pg_catalog.=) 1"
	" AND c.status OPERATOR(pg_catalog.=) 'failed'::provision.job_status"
	" AND c.jobs OPERATOR(pg_catalog.<) $1"
	" AND pg_catalog.date_part('epoch', $3 OPERATOR(pg_catalog.-) c.failed_at)"
	"  OPERATOR(pg_catalog.>=) ($2 OPERATOR(pg_catalog.*)"
	"  pg_catalog.power(2::pg_catalog.float8,"
	"   (c.failed OPERATOR(pg_catalog.-) 1)::pg_catalog.float8))"
	" AND j.status OPERATOR(pg_catalog.=) 'failed'::provision.job_status "
	"ORDER BY c.failed_at, c.id "
	"FOR UPDATE OF j SKIP LOCKED";

/* The parameters of sql_retry_candidates, by name. */
typedef struct RetryCandidatesArgs
{
	int32       max_attempts;  /* $1 */
	double      delay_seconds; /* $2 */
	TimestampTz now;           /* $3 */
} RetryCandidatesArgs;

#define RETRY_CANDIDATES_NARGS 3

/*
 * A new pending job for the agent with its retried event, unless the key
 * names a job already (another caller retried it) or the agent has an
 * open job again (both unique indexes: ON CONFLICT DO NOTHING). Returns
 * the new job's id, or no row.
 */
static const char sql_retry_enqueue[] =
	"WITH n AS (INSERT INTO provision.provisioning_jobs"
	" (agent_id, idempotency_key, created_at, updated_at)"
	" VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING RETURNING id), "
	"e AS (INSERT INTO provision.events"
	" (at, job_id, agent_id, kind, from_status, to_status, detail)"
	" SELECT $3, n.id, $1, 'retried', NULL, 'pending', $4 FROM n) "
	"SELECT n.id FROM n";

/* The parameters of sql_retry_enqueue, by name. */
typedef struct RetryEnqueueArgs
{
	const pg_uuid_t *agent_id;        /* $1 */
	const char      *idempotency_key; /* $2 */
	TimestampTz      now;             /* $3 */
	Jsonb           *detail;          /* $4 */
} RetryEnqueueArgs;

#define RETRY_ENQUEUE_NARGS 4

/* A failed job retry_failed_jobs locked. */
typedef struct RetryCandidate
{
	pg_uuid_t job_id;
	pg_uuid_t agent_id;
} RetryCandidate;

static SPIPlanPtr plan_retry_candidates;
static SPIPlanPtr plan_retry_enqueue;

static void retry_candidates_params(const RetryCandidatesArgs *a, Oid *types, Datum *values,
									char *nulls);
static void retry_enqueue_params(const RetryEnqueueArgs *a, Oid *types, Datum *values, char *nulls);
static bool retry_enqueue(const RetryCandidate *failed, TimestampTz now);

/*
 * provision.record_dispatch(job_id, run_id, run_url): records the workflow
 * run the dispatcher started for a dispatched or provisioning job (one run
 * event) and returns the job row. A no-op when run_id is NULL or that run
 * is recorded already, whatever the job's status (the run's first callback
 * may have come first); 55000 when another run is recorded, or when none
 * is and the job is in another status.
 */
PG_FUNCTION_INFO_V1(record_dispatch);
Datum
record_dispatch(PG_FUNCTION_ARGS)
{
	WorkflowRun run = {0};
	LockedJob   job;
	Datum       row;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("job_id must not be null")));
	if (!PG_ARGISNULL(1))
	{
		run.run_id = PG_GETARG_INT64(1);
		if (run.run_id < 1)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("run_id must be positive, not " INT64_FORMAT, run.run_id)));
	}
	if (!PG_ARGISNULL(2))
	{
		char *url = text_to_cstring(PG_GETARG_TEXT_PP(2));

		if (url[0] == '\0' || pg_mbstrlen_with_len(url, strlen(url)) > PROVISION_MAX_RUN_URL_CHARS)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("run_url must be 1 to %d characters long",
								   PROVISION_MAX_RUN_URL_CHARS)));
		run.run_url = url;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_lock_or_error(PG_GETARG_UUID_P(0), LOCK_JOB_ROW, &job);
	if (PG_ARGISNULL(1) || (job.has_run && job.workflow_run_id == run.run_id))
		row = job.row;
	else
	{
		run_check(&job, run.run_id);
		if (!dispatch_recordable[job.status])
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot record workflow run " INT64_FORMAT " for job %s in status %s",
							run.run_id, uuid_to_cstring(&job.job_id), job_status_name(job.status)),
					 errdetail("current status: %s", job_status_name(job.status))));
		row = run_record(&job, &run, NULL);
	}
	SPI_finish();
	PG_RETURN_DATUM(row);
}

/*
 * provision.retry_failed_jobs(max_attempts): for every agent that is not
 * active and whose newest job failed, with fewer than max_attempts
 * (provision.max_attempts when NULL) jobs in all, once the failure is
 * provision.retry_delay * 2^(failed jobs - 1) old, enqueues a new job with
 * idempotency key retry:<failed job id> and a retried event. Returns how
 * many it enqueued; calling it again, or concurrently, enqueues nothing
 * twice.
 */
PG_FUNCTION_INFO_V1(retry_failed_jobs);
Datum
retry_failed_jobs(PG_FUNCTION_ARGS)
{
	int32           max_attempts = PG_ARGISNULL(0) ? provision_max_attempts : PG_GETARG_INT32(0);
	TimestampTz     now = GetCurrentTransactionStartTimestamp();
	Oid             types[RETRY_CANDIDATES_NARGS];
	Datum           values[RETRY_CANDIDATES_NARGS];
	char            nulls[RETRY_CANDIDATES_NARGS];
	RetryCandidate *failed;
	uint64          count;
	int32           enqueued = 0;
	int             rc;

	if (max_attempts < 1)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("max_attempts must be at least 1")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	retry_candidates_params(&(RetryCandidatesArgs){.max_attempts = max_attempts,
												   .delay_seconds = provision_retry_delay,
												   .now = now},
							types, values, nulls);
	rc = SPI_execute_plan(
		spi_plan(&plan_retry_candidates, sql_retry_candidates, RETRY_CANDIDATES_NARGS, types),
		values, nulls, false, 0);
	spi_check(rc, SPI_OK_SELECT, "selecting failed jobs to retry");

	/* The rows are read before the next statement replaces SPI_tuptable. */
	count = SPI_processed;
	failed = palloc(sizeof(RetryCandidate) * Max(count, 1));
	for (uint64 i = 0; i < count; i++)
	{
		bool isnull;

		failed[i].job_id =
			*DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		failed[i].agent_id =
			*DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}

	for (uint64 i = 0; i < count; i++)
		if (retry_enqueue(&failed[i], now))
			enqueued++;

	SPI_finish();
	PG_RETURN_INT32(enqueued);
}

/* Enqueues the retry of one failed job; false when there was nothing to enqueue. */
static bool
retry_enqueue(const RetryCandidate *failed, TimestampTz now)
{
	char             *failed_id = uuid_to_cstring(&failed->job_id);
	char             *key = psprintf("retry:%s", failed_id);
	Oid               types[RETRY_ENQUEUE_NARGS];
	Datum             values[RETRY_ENQUEUE_NARGS];
	char              nulls[RETRY_ENQUEUE_NARGS];
	JsonObjectBuilder b;
	pg_uuid_t         job_id;
	bool              isnull;
	int               rc;

	json_begin(&b);
	json_add_text(&b, "failed_job_id", failed_id);
	json_add_text(&b, "idempotency_key", key);
	retry_enqueue_params(&(RetryEnqueueArgs){.agent_id = &failed->agent_id,
											 .idempotency_key = key,
											 .now = now,
											 .detail = json_end(&b)},
						 types, values, nulls);
	rc = SPI_execute_plan(
		spi_plan(&plan_retry_enqueue, sql_retry_enqueue, RETRY_ENQUEUE_NARGS, types), values, nulls,
		false, 0);
	spi_check(rc, SPI_OK_SELECT, "enqueueing a retry");
	if (SPI_processed == 0)
		return false;
	job_id =
		*DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	event_notify(&job_id, &failed->agent_id, EVENT_RETRIED, JOB_PENDING);
	return true;
}

/* The statement's parameters from their names. */
static void
retry_candidates_params(const RetryCandidatesArgs *a, Oid *types, Datum *values, char *nulls)
{
	static const Oid argtypes[RETRY_CANDIDATES_NARGS] = {INT4OID, FLOAT8OID, TIMESTAMPTZOID};

	memcpy(types, argtypes, sizeof(argtypes));
	memset(nulls, ' ', RETRY_CANDIDATES_NARGS);
	values[0] = Int32GetDatum(a->max_attempts);
	values[1] = Float8GetDatum(a->delay_seconds);
	values[2] = TimestampTzGetDatum(a->now);
}

/* The statement's parameters from their names. */
static void
retry_enqueue_params(const RetryEnqueueArgs *a, Oid *types, Datum *values, char *nulls)
{
	static const Oid argtypes[RETRY_ENQUEUE_NARGS] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};

	memcpy(types, argtypes, sizeof(argtypes));
	memset(nulls, ' ', RETRY_ENQUEUE_NARGS);
	values[0] = UUIDPGetDatum(a->agent_id);
	values[1] = CStringGetTextDatum(a->idempotency_key);
	values[2] = TimestampTzGetDatum(a->now);
	values[3] = JsonbPGetDatum(a->detail);
}
