/*
 * jobs.c
 *		The SQL functions that move jobs through the state machine:
 *		enqueue_job, claim_jobs, update_job_status, record_heartbeat and
 *		expire_stale_jobs, and the enqueue step that handle_stripe_event
 *		shares.
 *
 * Each locks its job (locks.c), asks the state machine (machine.c) and runs
 * the one statement of the step (steps.c), as handle_callback does.
 */
#include "provision.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/tuplestore.h"

/* Whether the agent exists. $1 agent id. */
static const char sql_agent_exists[] =
	"SELECT 1 FROM provision.agents WHERE id OPERATOR(pg_catalog.=) $1";

/* The job created with an idempotency key, and its agent. $1 key. */
static const char sql_job_by_key[] = "SELECT id, agent_id FROM provision.provisioning_jobs"
									 " WHERE idempotency_key OPERATOR(pg_catalog.=) $1";

/* The agent's open job. $1 agent id. */
static const char sql_open_job[] = "SELECT id FROM provision.provisioning_jobs"
								   " WHERE agent_id OPERATOR(pg_catalog.=) $1"
								   " AND status OPERATOR(pg_catalog.=) ANY"
								   " ('{pending,dispatched,provisioning}'::provision.job_status[])";

/*
 * A new pending job with its enqueued event, unless a conflicting job (the
 * same key, or the agent's open job) exists. $1 agent id, $2 idempotency
 * key, $3 now, $4 event detail.
 */
static const char sql_insert_job[] =
	"WITH n AS (INSERT INTO provision.provisioning_jobs"
	"   (agent_id, idempotency_key, created_at, updated_at)"
	"   VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING RETURNING id),"
	" e AS (INSERT INTO provision.events"
	"   (at, job_id, agent_id, kind, from_status, to_status, detail)"
	"   SELECT $3, n.id, $1, 'enqueued', NULL, 'pending', $4 FROM n) "
	"SELECT n.id FROM n";

/*
 * Up to $1 pending jobs, oldest first, locked; those another claimer holds
 * are skipped. The select list is the one job_from_tuple reads.
 */
static const char sql_claim[] =
	"SELECT j.id, j.status::pg_catalog.text, j.agent_id, a.status::pg_catalog.text"
	" FROM provision.provisioning_jobs j"
	" JOIN provision.agents a ON a.id OPERATOR(pg_catalog.=) j.agent_id"
	" WHERE j.status OPERATOR(pg_catalog.=) 'pending'::provision.job_status"
	" ORDER BY j.created_at, j.id LIMIT $1"
	" FOR UPDATE OF j SKIP LOCKED";

/*
 * The dispatched and provisioning jobs whose last sign of life is before $1,
 * locked with their agents; those a concurrent callback holds are skipped.
 * The select list is the one job_from_tuple reads.
 */
static const char sql_stale[] =
	"SELECT j.id, j.status::pg_catalog.text, j.agent_id, a.status::pg_catalog.text"
	" FROM provision.provisioning_jobs j"
	" JOIN provision.agents a ON a.id OPERATOR(pg_catalog.=) j.agent_id"
	" WHERE j.status OPERATOR(pg_catalog.=) ANY"
	" ('{dispatched,provisioning}'::provision.job_status[])"
	" AND COALESCE(j.last_heartbeat_at, j.started_at, j.dispatched_at) OPERATOR(pg_catalog.<) $1"
	" ORDER BY j.id"
	" FOR UPDATE OF j SKIP LOCKED FOR NO KEY UPDATE OF a SKIP LOCKED";

/* The select list of sql_claim and sql_stale, by position. */
#define LOCKED_JOB_ID           1
#define LOCKED_JOB_STATUS       2
#define LOCKED_JOB_AGENT_ID     3
#define LOCKED_JOB_AGENT_STATUS 4

static SPIPlanPtr plan_agent_exists;
static SPIPlanPtr plan_job_by_key;
static SPIPlanPtr plan_open_job;
static SPIPlanPtr plan_insert_job;
static SPIPlanPtr plan_claim;
static SPIPlanPtr plan_stale;

static void       job_from_tuple(HeapTuple tuple, TupleDesc desc, LockedJob *job);
static LockedJob *locked_jobs(uint64 *count);
static void       check_agent_exists(const pg_uuid_t *agent_id);
static bool       job_by_key(const pg_uuid_t *agent_id, Datum key, pg_uuid_t *job_id);
static bool       open_job(const pg_uuid_t *agent_id, pg_uuid_t *job_id);
static bool       insert_job(const pg_uuid_t *agent_id, const char *key, Datum key_datum,
							 pg_uuid_t *job_id);
static void       init_materialized_srf(FunctionCallInfo fcinfo);

/* Raises 22023 for error text over the limit. */
void
check_error_text(const char *error, const char *field)
{
	if (error != NULL && pg_mbstrlen_with_len(error, strlen(error)) > PROVISION_MAX_ERROR_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is longer than %d characters", field, PROVISION_MAX_ERROR_CHARS)));
}

/* A row of sql_claim or sql_stale. */
static void
job_from_tuple(HeapTuple tuple, TupleDesc desc, LockedJob *job)
{
	bool isnull;

	job->job_id = *DatumGetUUIDP(SPI_getbinval(tuple, desc, LOCKED_JOB_ID, &isnull));
	job->status = job_status_from_name(
		TextDatumGetCString(SPI_getbinval(tuple, desc, LOCKED_JOB_STATUS, &isnull)));
	job->agent_id = *DatumGetUUIDP(SPI_getbinval(tuple, desc, LOCKED_JOB_AGENT_ID, &isnull));
	job->agent_status = agent_status_from_name(
		TextDatumGetCString(SPI_getbinval(tuple, desc, LOCKED_JOB_AGENT_STATUS, &isnull)));
	job->has_run = false;
	job->workflow_run_id = 0;
	job->row = (Datum) 0;
	job->contended = true;
}

/* The jobs sql_claim or sql_stale just locked, read before the next statement replaces them. */
static LockedJob *
locked_jobs(uint64 *count)
{
	LockedJob *jobs;

	*count = SPI_processed;
	jobs = palloc(sizeof(LockedJob) * Max(*count, 1));
	for (uint64 i = 0; i < *count; i++)
		job_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &jobs[i]);
	return jobs;
}

/* Raises P0002 unless the agent exists. */
static void
check_agent_exists(const pg_uuid_t *agent_id)
{
	Oid argtypes[1] = {UUIDOID};
	int rc;

	rc = SPI_execute_plan(spi_plan(&plan_agent_exists, sql_agent_exists, 1, argtypes),
						  (Datum[]){UUIDPGetDatum(agent_id)}, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "looking up the agent");
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("agent %s does not exist", uuid_to_cstring(agent_id))));
}

/*
 * The job first created with the key, in *job_id; false when there is none.
 * A key already used by another agent's job: 22023.
 */
static bool
job_by_key(const pg_uuid_t *agent_id, Datum key, pg_uuid_t *job_id)
{
	Oid        argtypes[1] = {TEXTOID};
	bool       isnull;
	HeapTuple  tuple;
	pg_uuid_t *owner;
	int        rc;

	rc = SPI_execute_plan(spi_plan(&plan_job_by_key, sql_job_by_key, 1, argtypes), (Datum[]){key},
						  NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "looking up the idempotency key");
	if (SPI_processed == 0)
		return false;
	tuple = SPI_tuptable->vals[0];
	*job_id = *DatumGetUUIDP(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
	owner = DatumGetUUIDP(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));
	if (memcmp(owner, agent_id, sizeof(pg_uuid_t)) != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("idempotency_key is already used by a job of another agent"),
						errdetail("Job %s belongs to agent %s.", uuid_to_cstring(job_id),
								  uuid_to_cstring(owner))));
	return true;
}

/* The agent's open job, in *job_id; false when it has none. */
static bool
open_job(const pg_uuid_t *agent_id, pg_uuid_t *job_id)
{
	Oid  argtypes[1] = {UUIDOID};
	bool isnull;
	int  rc;

	rc = SPI_execute_plan(spi_plan(&plan_open_job, sql_open_job, 1, argtypes),
						  (Datum[]){UUIDPGetDatum(agent_id)}, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "looking up the open job");
	if (SPI_processed == 0)
		return false;
	*job_id =
		*DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}

/*
 * Inserts a pending job with its enqueued event and queues the NOTIFY;
 * false when a conflicting job committed first (ON CONFLICT waited for it).
 */
static bool
insert_job(const pg_uuid_t *agent_id, const char *key, Datum key_datum, pg_uuid_t *job_id)
{
	Oid               argtypes[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};
	Datum             values[4];
	char              nulls[4] = {' ', ' ', ' ', ' '};
	JsonObjectBuilder b;
	Jsonb            *detail;
	bool              isnull;
	int               rc;

	json_begin(&b);
	json_add_text(&b, "idempotency_key", key);
	detail = json_end(&b);

	values[0] = UUIDPGetDatum(agent_id);
	values[1] = key_datum;
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[3] = detail ? JsonbPGetDatum(detail) : (Datum) 0;
	if (key == NULL)
		nulls[1] = 'n';
	if (detail == NULL)
		nulls[3] = 'n';
	rc = SPI_execute_plan(spi_plan(&plan_insert_job, sql_insert_job, 4, argtypes), values, nulls,
						  false, 0);
	spi_check(rc, SPI_OK_SELECT, "inserting the job");
	if (SPI_processed == 0)
		return false;
	*job_id =
		*DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	event_notify(job_id, agent_id, EVENT_ENQUEUED, JOB_PENDING);
	return true;
}

/*
 * Creates a pending job for the agent, or finds the job that stands for it,
 * and says which (see EnqueueOutcome). The caller is connected to SPI and
 * has checked the key's length. Unknown agent: P0002; a key already used by
 * another agent's job: 22023.
 */
EnqueueOutcome
job_enqueue(const pg_uuid_t *agent_id, const char *key, pg_uuid_t *job_id)
{
	Datum key_datum = key != NULL ? CStringGetTextDatum(key) : (Datum) 0;

	check_agent_exists(agent_id);

	/*
	 * A concurrent enqueue can win the insert between the lookups and ours;
	 * ON CONFLICT waits for it to commit, and the next round of lookups (a
	 * new snapshot) finds its job.
	 */
	for (int round = 0; round < 3; round++)
	{
		if (key != NULL && job_by_key(agent_id, key_datum, job_id))
			return ENQUEUE_KEY_KNOWN;
		if (open_job(agent_id, job_id))
			return ENQUEUE_OPEN_JOB;
		if (insert_job(agent_id, key, key_datum, job_id))
			return ENQUEUE_CREATED;
	}
	ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					errmsg("could not enqueue a job for agent %s: concurrent changes",
						   uuid_to_cstring(agent_id)),
					errhint("Retry the call.")));
	pg_unreachable();
}

/*
 * provision.enqueue_job(agent_id, idempotency_key): creates a pending job for
 * the agent and returns its id. A known idempotency key returns the job first
 * created with it; an agent with an open job gets that job back (and the new
 * key is not recorded).
 */
PG_FUNCTION_INFO_V1(enqueue_job);
Datum
enqueue_job(PG_FUNCTION_ARGS)
{
	char      *key = NULL;
	pg_uuid_t *job_id = palloc(sizeof(pg_uuid_t));

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("agent_id must not be null")));
	if (!PG_ARGISNULL(1))
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (key[0] == '\0' ||
			pg_mbstrlen_with_len(key, strlen(key)) > PROVISION_MAX_IDEMPOTENCY_KEY_CHARS)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("idempotency_key must be 1 to %d characters long",
								   PROVISION_MAX_IDEMPOTENCY_KEY_CHARS)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_enqueue(PG_GETARG_UUID_P(0), key, job_id);
	SPI_finish();
	PG_RETURN_UUID_P(job_id);
}

/*
 * provision.claim_jobs(max_jobs): moves up to max_jobs pending jobs, oldest
 * first, to dispatched and returns them. Jobs another claimer holds are
 * skipped, so concurrent claimers never get the same job.
 */
PG_FUNCTION_INFO_V1(claim_jobs);
Datum
claim_jobs(PG_FUNCTION_ARGS)
{
	Oid            argtypes[1] = {INT4OID};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LockedJob     *jobs;
	uint64         count;
	int            rc;

	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("max_jobs must be at least 1")));

	init_materialized_srf(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	rc = SPI_execute_plan(spi_plan(&plan_claim, sql_claim, 1, argtypes),
						  (Datum[]){PG_GETARG_DATUM(0)}, NULL, false, 0);
	spi_check(rc, SPI_OK_SELECT, "selecting pending jobs");
	jobs = locked_jobs(&count);

	for (uint64 i = 0; i < count; i++)
	{
		StepResult      step;
		HeapTupleData   tuple;
		HeapTupleHeader row;

		job_apply(&jobs[i],
				  &(JobStep){.to = JOB_DISPATCHED,
							 .action = job_decide(&jobs[i], JOB_DISPATCHED, false),
							 .event = EVENT_DISPATCHED,
							 .result_action = ACTION_STATUS,
							 .want_rows = true},
				  &step);
		row = DatumGetHeapTupleHeader(step.job_row);
		tuple.t_len = HeapTupleHeaderGetDatumLength(row);
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = InvalidOid;
		tuple.t_data = row;
		tuplestore_puttuple(rsinfo->setResult, &tuple);
	}

	SPI_finish();
	return (Datum) 0;
}

/*
 * provision.update_job_status(job_id, status, error): moves the job as the
 * state machine allows and returns the job row. No-ops return the row
 * unchanged; refused moves raise 55000. error is recorded with failed.
 */
PG_FUNCTION_INFO_V1(update_job_status);
Datum
update_job_status(PG_FUNCTION_ARGS)
{
	LockedJob        job;
	JobStatus        to;
	char            *error = NULL;
	TransitionAction action;
	Datum            row;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("job_id must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("status must not be null")));
	to = job_status_from_enum(PG_GETARG_DATUM(1));
	if (!PG_ARGISNULL(2))
	{
		error = text_to_cstring(PG_GETARG_TEXT_PP(2));
		check_error_text(error, "error");
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_lock_or_error(PG_GETARG_UUID_P(0), LOCK_JOB_AGENT_ROW, &job);
	action = job_decide(&job, to, false);
	if (action == TRANSITION_SAME || action == TRANSITION_STALE)
		row = job.row;
	else
	{
		StepResult step;

		job_apply(&job,
				  &(JobStep){.to = to,
							 .action = action,
							 .event = job_event_kind(to),
							 .error = error,
							 .result_action = ACTION_STATUS,
							 .want_rows = true},
				  &step);
		row = step.job_row;
	}
	SPI_finish();
	PG_RETURN_DATUM(row);
}

/*
 * provision.record_heartbeat(job_id): records a sign of life of the job and
 * returns its time. Refused (55000) for failed and cancelled jobs.
 */
PG_FUNCTION_INFO_V1(record_heartbeat);
Datum
record_heartbeat(PG_FUNCTION_ARGS)
{
	LockedJob  job;
	StepResult step;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("job_id must not be null")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_lock_or_error(PG_GETARG_UUID_P(0), LOCK_JOB, &job);
	job_check_heartbeat(&job);
	job_heartbeat(&job, NULL, &step);
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(GetCurrentTransactionStartTimestamp());
}

/*
 * now() minus older_than, or minus default_seconds when older_than is NULL.
 * A negative interval would reach into the future and is refused.
 */
Datum
interval_cutoff(Interval *older_than, int default_seconds, const char *field)
{
	Interval *span = older_than;

	if (span == NULL)
	{
		span = palloc0(sizeof(Interval));
		span->time = (int64) default_seconds * USECS_PER_SEC;
	}
	else if (span->month < 0 || span->day < 0 || span->time < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("%s must not be negative", field)));
	return DirectFunctionCall2(timestamptz_mi_interval,
							   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
							   IntervalPGetDatum(span));
}

/*
 * provision.expire_stale_jobs(older_than): fails every dispatched or
 * provisioning job whose last sign of life (last heartbeat, else start, else
 * dispatch) is older than older_than, or provision.heartbeat_timeout when
 * NULL, and returns how many. Jobs locked by a concurrent callback are alive
 * and skipped.
 */
PG_FUNCTION_INFO_V1(expire_stale_jobs);
Datum
expire_stale_jobs(PG_FUNCTION_ARGS)
{
	Oid        argtypes[1] = {TIMESTAMPTZOID};
	Datum      cutoff;
	LockedJob *jobs;
	uint64     count;
	int        rc;

	cutoff = interval_cutoff(PG_ARGISNULL(0) ? NULL : PG_GETARG_INTERVAL_P(0),
							 provision_heartbeat_timeout, "older_than");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	rc = SPI_execute_plan(spi_plan(&plan_stale, sql_stale, 1, argtypes), (Datum[]){cutoff}, NULL,
						  false, 0);
	spi_check(rc, SPI_OK_SELECT, "selecting stale jobs");
	jobs = locked_jobs(&count);

	for (uint64 i = 0; i < count; i++)
	{
		StepResult step;

		job_apply(&jobs[i],
				  &(JobStep){.to = JOB_FAILED,
							 .action = job_decide(&jobs[i], JOB_FAILED, false),
							 .event = EVENT_EXPIRED,
							 .error = "heartbeat timeout",
							 .result_action = ACTION_FAILED},
				  &step);
	}

	SPI_finish();
	PG_RETURN_INT32((int32) count);
}

/*
 * Sets up a materialized set result. PostgreSQL 15 added InitMaterializedSRF
 * for this; 13 and 14 lack it, so the few lines live here and every server
 * version runs the same code.
 */
static void
init_materialized_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext  oldcontext;
	TupleDesc      tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult =
		tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);
}
