/*
 * jobs.c
 *		The job state machine and the functions that move jobs through it:
 *		enqueue_job, claim_jobs, update_job_status, record_heartbeat and
 *		expire_stale_jobs, plus the locked steps that complete_provisioning_
 *		with_metadata and handle_callback share, and the enqueue step that
 *		handle_stripe_event shares.
 *
 * Every mutating path is: lock the job row (job_lock), ask the state table
 * (job_decide), then run one statement that makes the whole change, writes
 * its event and, for callbacks, records the delivery with its result
 * (job_apply, job_heartbeat, job_noop).
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
#include "utils/fmgroids.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

/* One cell of the state table. */
typedef struct Transition
{
	TransitionAction action;
	int              attempts; /* added to provisioning_jobs.attempts */
} Transition;

/* clang-format off */
#define REFUSE	{TRANSITION_REFUSE, 0}
#define APPLY	{TRANSITION_APPLY, 0}
#define ATTEMPT {TRANSITION_APPLY, 1}
#define RERUN	{TRANSITION_RERUN, 1}
#define SAME	{TRANSITION_SAME, 0}
#define STALE	{TRANSITION_STALE, 0}

/*
 * The job state machine, indexed [from][to]. A new attempt (attempts + 1) is
 * every move into provisioning, and every move into running that does not
 * come from provisioning or running. Nothing ever moves back to pending.
 */
static const Transition transitions[JOB_STATUS_COUNT][JOB_STATUS_COUNT] = {
	[JOB_PENDING] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = APPLY, [JOB_PROVISIONING] = ATTEMPT,
		[JOB_RUNNING] = ATTEMPT, [JOB_FAILED] = APPLY, [JOB_CANCELLED] = APPLY,
	},
	[JOB_DISPATCHED] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = SAME, [JOB_PROVISIONING] = ATTEMPT,
		[JOB_RUNNING] = ATTEMPT, [JOB_FAILED] = APPLY, [JOB_CANCELLED] = APPLY,
	},
	[JOB_PROVISIONING] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = REFUSE, [JOB_PROVISIONING] = SAME,
		[JOB_RUNNING] = APPLY, [JOB_FAILED] = APPLY, [JOB_CANCELLED] = APPLY,
	},
	[JOB_RUNNING] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = REFUSE, [JOB_PROVISIONING] = STALE,
		[JOB_RUNNING] = SAME, [JOB_FAILED] = REFUSE, [JOB_CANCELLED] = REFUSE,
	},
	[JOB_FAILED] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = REFUSE, [JOB_PROVISIONING] = RERUN,
		[JOB_RUNNING] = RERUN, [JOB_FAILED] = SAME, [JOB_CANCELLED] = REFUSE,
	},
	[JOB_CANCELLED] = {
		[JOB_PENDING] = REFUSE, [JOB_DISPATCHED] = REFUSE, [JOB_PROVISIONING] = REFUSE,
		[JOB_RUNNING] = REFUSE, [JOB_FAILED] = REFUSE, [JOB_CANCELLED] = SAME,
	},
};

/* Heartbeats are accepted in every status but the two that ended the job for good or for now. */
static const bool heartbeat_allowed[JOB_STATUS_COUNT] = {
	[JOB_PENDING] = true, [JOB_DISPATCHED] = true, [JOB_PROVISIONING] = true,
	[JOB_RUNNING] = true, [JOB_FAILED] = false, [JOB_CANCELLED] = false,
};
/* clang-format on */

/*
 * The agent's status after its job moves to [to] from agent status [current]:
 * provisioning takes a draft or failed agent along, running activates it, and
 * failed fails it unless it is active (it keeps serving on its old VM).
 */
static const AgentStatus agent_follows[JOB_STATUS_COUNT][AGENT_STATUS_COUNT] = {
	[JOB_PENDING] = {AGENT_DRAFT, AGENT_PROVISIONING, AGENT_ACTIVE, AGENT_FAILED},
	[JOB_DISPATCHED] = {AGENT_DRAFT, AGENT_PROVISIONING, AGENT_ACTIVE, AGENT_FAILED},
	[JOB_PROVISIONING] = {AGENT_PROVISIONING, AGENT_PROVISIONING, AGENT_ACTIVE, AGENT_PROVISIONING},
	[JOB_RUNNING] = {AGENT_ACTIVE, AGENT_ACTIVE, AGENT_ACTIVE, AGENT_ACTIVE},
	[JOB_FAILED] = {AGENT_FAILED, AGENT_FAILED, AGENT_ACTIVE, AGENT_FAILED},
	[JOB_CANCELLED] = {AGENT_DRAFT, AGENT_PROVISIONING, AGENT_ACTIVE, AGENT_FAILED},
};

static const char *const job_status_names[JOB_STATUS_COUNT] = {
	"pending", "dispatched", "provisioning", "running", "failed", "cancelled",
};

static const char *const agent_status_names[AGENT_STATUS_COUNT] = {
	"draft",
	"provisioning",
	"active",
	"failed",
};

static const char *const callback_action_names[] = {
	[ACTION_COMPLETED] = "completed",
	[ACTION_STATUS] = "status",
	[ACTION_HEARTBEAT] = "heartbeat",
	[ACTION_FAILED] = "failed",
};

/*
 * SQL. Every step statement takes the same first six parameters:
 * $1 job id, $2 agent id, $3 transaction time, $4 the result object without
 * instance_id, $5 the delivery id or NULL, $6 the SHA-256 of the delivered
 * payload (NULL without a delivery id). It returns (result, delivered):
 * the result with the agent's instance_id added, and whether it recorded the
 * delivery, so that a delivery recorded concurrently is detected.
 */
/* clang-format off */
#define JOB_LOCK_COLUMNS \
	"SELECT j.id, j.status::pg_catalog.text, j.agent_id, a.status::pg_catalog.text "

#define JOB_LOCK_FROM \
	"FROM provision.provisioning_jobs j " \
	"JOIN provision.agents a ON a.id OPERATOR(pg_catalog.=) j.agent_id "

#define SQL_AGENT_INSTANCE \
	"(SELECT v.id FROM provision.agent_instances v " \
	"WHERE v.agent_id OPERATOR(pg_catalog.=) $2)"

#define SQL_RECORD_DELIVERY(RESULT) \
	"d AS (INSERT INTO provision.callback_deliveries " \
	"(delivery_id, job_id, received_at, payload_sha256, result) " \
	"SELECT $5, $1, $3, $6, " RESULT " WHERE $5 IS NOT NULL " \
	"ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "

#define SQL_RESULT_AND_DELIVERY \
	"r AS (SELECT CASE WHEN s.instance_id IS NULL THEN $4 " \
	"ELSE $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', s.instance_id) " \
	"END AS result FROM s), " \
	SQL_RECORD_DELIVERY("r.result FROM r")

#define SQL_STEP_OUTPUT \
	"SELECT r.result, EXISTS (SELECT FROM d)"

static const char sql_noop[] =
	"WITH s AS (SELECT " SQL_AGENT_INSTANCE " AS instance_id), "
	SQL_RESULT_AND_DELIVERY
	SQL_STEP_OUTPUT " FROM r";

/*
 * Heartbeats: $4 already carries the instance's id, and the instance is
 * marked too ($7, its id) when this job created it, a variant of its own so
 * that the common heartbeat, before the VM exists, does not set up an
 * update of agent_instances.
 */
#define SQL_HEARTBEAT(INSTANCE) \
	"WITH j AS (UPDATE provision.provisioning_jobs SET last_heartbeat_at = $3 " \
	"WHERE id OPERATOR(pg_catalog.=) $1), " \
	INSTANCE \
	SQL_RECORD_DELIVERY("$4") \
	"SELECT $4, EXISTS (SELECT FROM d)"

static const char sql_heartbeat[] = SQL_HEARTBEAT("");
static const char sql_heartbeat_instance[] = SQL_HEARTBEAT(
	"h AS (UPDATE provision.agent_instances SET last_heartbeat_at = $3 "
	"WHERE id OPERATOR(pg_catalog.=) $7 AND job_id OPERATOR(pg_catalog.=) $1), ");

/*
 * $7 to status, $8 attempts added, $9..$12 dispatched_at, started_at,
 * completed_at, failed_at (NULL keeps), $13 error, $14 clear last_heartbeat_at,
 * $15 new agent status (NULL keeps), $16 event kind, $17 from status,
 * $18 event detail, $19..$21 VM metadata.
 *
 * Four variants, because the executor sets up every part of a statement
 * whether it runs or not: with VM metadata (the instance upsert, whose id
 * goes into the event and the result) or without (the agent's existing
 * instance, if any, in the result); and with or without the new job and
 * instance rows, which only the functions returning them need.
 */
#define SQL_APPLY_JOB(JOB_RETURNING) \
	"WITH j AS (UPDATE provision.provisioning_jobs AS t SET " \
	"status = $7::provision.job_status, " \
	"attempts = t.attempts OPERATOR(pg_catalog.+) $8, " \
	"updated_at = $3, " \
	"dispatched_at = COALESCE($9, t.dispatched_at), " \
	"started_at = COALESCE($10, t.started_at), " \
	"completed_at = COALESCE($11, t.completed_at), " \
	"failed_at = COALESCE($12, t.failed_at), " \
	"error = $13, " \
	"last_heartbeat_at = CASE WHEN $14 THEN NULL ELSE t.last_heartbeat_at END " \
	"WHERE t.id OPERATOR(pg_catalog.=) $1" JOB_RETURNING "), " \
	"a AS (UPDATE provision.agents SET status = $15::provision.agent_status, updated_at = $3 " \
	"WHERE id OPERATOR(pg_catalog.=) $2 AND $15 IS NOT NULL), "

#define SQL_APPLY_INSTANCE(INSTANCE_RETURNING) \
	"i AS (INSERT INTO provision.agent_instances AS x " \
	"(agent_id, job_id, server_id, server_ip, tailscale_ip, created_at, updated_at) " \
	"VALUES ($2, $1, $19, $20, $21, $3, $3) " \
	"ON CONFLICT (agent_id) DO UPDATE SET job_id = excluded.job_id, " \
	"server_id = excluded.server_id, server_ip = excluded.server_ip, " \
	"tailscale_ip = excluded.tailscale_ip, updated_at = excluded.updated_at " \
	"RETURNING " INSTANCE_RETURNING "), "

#define SQL_APPLY_EVENT(DETAIL) \
	"e AS (INSERT INTO provision.events (at, job_id, agent_id, kind, from_status, to_status, detail) " \
	"SELECT $3, $1, $2, $16, $17, $7, " DETAIL " FROM s), " \
	SQL_RESULT_AND_DELIVERY

#define SQL_APPLY_META(JOB_RETURNING, INSTANCE_RETURNING, INSTANCE_ID, ROWS) \
	SQL_APPLY_JOB(JOB_RETURNING) \
	SQL_APPLY_INSTANCE(INSTANCE_RETURNING) \
	"s AS (SELECT " INSTANCE_ID " AS instance_id FROM i), " \
	SQL_APPLY_EVENT("$18 OPERATOR(pg_catalog.||) " \
					"pg_catalog.jsonb_build_object('instance_id', s.instance_id)") \
	SQL_STEP_OUTPUT ROWS " FROM r"

#define SQL_APPLY_STATUS(JOB_RETURNING, ROWS) \
	SQL_APPLY_JOB(JOB_RETURNING) \
	"s AS (SELECT " SQL_AGENT_INSTANCE " AS instance_id), " \
	SQL_APPLY_EVENT("$18") \
	SQL_STEP_OUTPUT ROWS " FROM r"

static const char sql_apply_meta[] = SQL_APPLY_META("", "x.id", "i.id", "");
static const char sql_apply_meta_rows[] =
	SQL_APPLY_META(" RETURNING t", "x", "(i.x).id", ", (SELECT j.t FROM j), (SELECT i.x FROM i)");
static const char sql_apply_status[] = SQL_APPLY_STATUS("", "");
static const char sql_apply_status_rows[] =
	SQL_APPLY_STATUS(" RETURNING t", ", (SELECT j.t FROM j), NULL");
/* clang-format on */

static SPIPlanPtr plan_noop;
static SPIPlanPtr plan_heartbeat;
static SPIPlanPtr plan_heartbeat_instance;
/* Indexed [with metadata][with rows], as sql_apply_variants. */
static SPIPlanPtr        plan_apply[2][2];
static const char *const sql_apply_variants[2][2] = {
	{sql_apply_status, sql_apply_status_rows},
	{sql_apply_meta, sql_apply_meta_rows},
};
static SPIPlanPtr plan_agent_exists;
static SPIPlanPtr plan_job_by_key;
static SPIPlanPtr plan_open_job;
static SPIPlanPtr plan_insert_job;
static SPIPlanPtr plan_claim;
static SPIPlanPtr plan_stale;

#define STEP_BASE_ARGS 6

static JobStatus   job_status_from_name(const char *name);
static AgentStatus agent_status_from_name(const char *name);
static AgentStatus agent_status_from_enum(Datum value);
static void        job_from_tuple(HeapTuple tuple, TupleDesc desc, LockedJob *job);
static Jsonb      *build_result(const LockedJob *job, CallbackAction action, bool applied,
								JobStatus job_status, AgentStatus agent_status,
								const pg_uuid_t *instance_id);
static void        step_base_args(const LockedJob *job, Jsonb *result, const Delivery *delivery,
								  Datum *values, char *nulls);
static void        step_finish(int rc, const Delivery *delivery, StepResult *out);
static Jsonb      *event_detail(const char *error, const InstanceMetadata *meta,
								const char *delivery_id);

static bool agent_has_open_job(const pg_uuid_t *agent_id);
static void refuse_rerun(const LockedJob *job, JobStatus to) pg_attribute_noreturn();
static int  execute_rerun(SPIPlanPtr plan, Datum *values, const char *nulls, const LockedJob *job,
						  JobStatus to);

static void init_materialized_srf(FunctionCallInfo fcinfo);

const char *
job_status_name(JobStatus status)
{
	return job_status_names[status];
}

static JobStatus
job_status_from_name(const char *name)
{
	for (int i = 0; i < JOB_STATUS_COUNT; i++)
		if (strcmp(job_status_names[i], name) == 0)
			return (JobStatus) i;
	elog(ERROR, "unknown job status \"%s\"", name);
	pg_unreachable();
}

/* A provision.job_status value, as the state machine's JobStatus. */
JobStatus
job_status_from_enum(Datum value)
{
	return job_status_from_name(DatumGetCString(DirectFunctionCall1(enum_out, value)));
}

const char *
agent_status_name(AgentStatus status)
{
	return agent_status_names[status];
}

static AgentStatus
agent_status_from_name(const char *name)
{
	for (int i = 0; i < AGENT_STATUS_COUNT; i++)
		if (strcmp(agent_status_names[i], name) == 0)
			return (AgentStatus) i;
	elog(ERROR, "unknown agent status \"%s\"", name);
	pg_unreachable();
}

static AgentStatus
agent_status_from_enum(Datum value)
{
	return agent_status_from_name(DatumGetCString(DirectFunctionCall1(enum_out, value)));
}

/*
 * What moving the locked job to [to] means; raises 55000 when the state
 * machine refuses it. A running job asked to be running with VM metadata
 * updates that metadata (a re-created VM) instead of doing nothing.
 */
TransitionAction
job_decide(const LockedJob *job, JobStatus to, bool with_metadata)
{
	TransitionAction action = transitions[job->status][to].action;

	if (action == TRANSITION_SAME && to == JOB_RUNNING && with_metadata)
		return TRANSITION_UPDATE_METADATA;
	if (action == TRANSITION_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot move job %s from status %s to %s", uuid_to_cstring(&job->job_id),
						job_status_name(job->status), job_status_name(to)),
				 errdetail("current status: %s", job_status_name(job->status))));
	return action;
}

/* Raises 55000 when the locked job accepts no heartbeat. */
void
job_check_heartbeat(const LockedJob *job)
{
	if (!heartbeat_allowed[job->status])
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("cannot record a heartbeat for job %s in status %s",
							   uuid_to_cstring(&job->job_id), job_status_name(job->status)),
						errdetail("current status: %s", job_status_name(job->status))));
}

/* Raises 22023 for error text over the limit. */
void
check_error_text(const char *error, const char *field)
{
	if (error != NULL && pg_mbstrlen_with_len(error, strlen(error)) > PROVISION_MAX_ERROR_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is longer than %d characters", field, PROVISION_MAX_ERROR_CHARS)));
}

static void
job_from_tuple(HeapTuple tuple, TupleDesc desc, LockedJob *job)
{
	bool isnull;

	job->job_id = *DatumGetUUIDP(SPI_getbinval(tuple, desc, 1, &isnull));
	job->status = job_status_from_name(TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull)));
	job->agent_id = *DatumGetUUIDP(SPI_getbinval(tuple, desc, 3, &isnull));
	job->agent_status =
		agent_status_from_name(TextDatumGetCString(SPI_getbinval(tuple, desc, 4, &isnull)));
	job->has_run = false;
	job->workflow_run_id = 0;
	job->row = (Datum) 0;
	job->contended = true;
}

/* The value of a NOT NULL column of the row a probe found. */
static Datum
probe_column(const RowProbe *p, const char *column)
{
	bool  isnull;
	Datum d = slot_getattr(p->slot, SPI_fnumber(p->slot->tts_tupleDescriptor, column), &isnull);

	if (isnull)
		elog(ERROR, "column %s is null", column);
	return d;
}

/*
 * Locks the job row FOR UPDATE and, for LOCK_JOB_AGENT and
 * LOCK_JOB_AGENT_ROW, its agent's row FOR NO KEY UPDATE (status changes
 * derive the agent's status from its current one), and fills *job, with
 * job->row only for the *_ROW modes (update_job_status and record_dispatch
 * return the row of a job they leave alone); false when there is no such
 * job.
 *
 * The agent is read with a snapshot taken once the job lock is granted, so
 * under READ COMMITTED it is the agent as the transaction that held the job
 * lock left it. Likewise every statement after this one sees whatever
 * committed before the lock was granted, which is what makes the delivery
 * check that follows it exact.
 */
bool
job_lock(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job)
{
	RowProbe probe;
	bool     found;
	bool     lock_agent = (mode == LOCK_JOB_AGENT || mode == LOCK_JOB_AGENT_ROW);

	row_probe_begin(&probe, "provisioning_jobs", NULL, RowShareLock);
	found = row_probe_fetch(&probe, F_UUID_EQ, UUIDPGetDatum(job_id)) &&
			row_probe_lock(&probe, LockTupleExclusive, &job->contended);
	if (found)
	{
		int   run_attnum = SPI_fnumber(probe.slot->tts_tupleDescriptor, "workflow_run_id");
		bool  isnull;
		Datum run;

		if (run_attnum <= 0)
			schema_outdated("provisioning_jobs", "workflow_run_id");
		job->job_id = *DatumGetUUIDP(probe_column(&probe, "id"));
		job->agent_id = *DatumGetUUIDP(probe_column(&probe, "agent_id"));
		job->status = job_status_from_enum(probe_column(&probe, "status"));
		run = slot_getattr(probe.slot, run_attnum, &isnull);
		job->has_run = !isnull;
		job->workflow_run_id = isnull ? 0 : DatumGetInt64(run);
		job->row = (Datum) 0;
		if (mode == LOCK_JOB_ROW || mode == LOCK_JOB_AGENT_ROW)
			job->row = SPI_datumTransfer(ExecFetchSlotHeapTupleDatum(probe.slot), false, -1);
	}
	row_probe_end(&probe);
	if (!found)
		return false;

	row_probe_begin(&probe, "agents", NULL, lock_agent ? RowShareLock : AccessShareLock);
	found = row_probe_fetch(&probe, F_UUID_EQ, UUIDPGetDatum(&job->agent_id)) &&
			(!lock_agent || row_probe_lock(&probe, LockTupleNoKeyExclusive, NULL));
	/* the foreign key, checked under the job lock, keeps the agent */
	if (!found)
		elog(ERROR, "agent %s of job %s does not exist", uuid_to_cstring(&job->agent_id),
			 uuid_to_cstring(job_id));
	job->agent_status = agent_status_from_enum(probe_column(&probe, "status"));
	row_probe_end(&probe);
	return true;
}

/*
 * The agent's instance as a new statement would see it: its id and the job
 * that created it; false when the agent has none.
 */
static bool
agent_instance(const pg_uuid_t *agent_id, pg_uuid_t *instance_id, pg_uuid_t *instance_job)
{
	RowProbe probe;
	bool     found;

	row_probe_begin(&probe, "agent_instances", "agent_instances_agent_id_key", AccessShareLock);
	found = row_probe_fetch(&probe, F_UUID_EQ, UUIDPGetDatum(agent_id));
	if (found)
	{
		*instance_id = *DatumGetUUIDP(probe_column(&probe, "id"));
		*instance_job = *DatumGetUUIDP(probe_column(&probe, "job_id"));
	}
	row_probe_end(&probe);
	return found;
}

void
job_lock_or_error(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job)
{
	if (!job_lock(job_id, mode, job))
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("job %s does not exist", uuid_to_cstring(job_id))));
}

static Jsonb *
build_result(const LockedJob *job, CallbackAction action, bool applied, JobStatus job_status,
			 AgentStatus agent_status, const pg_uuid_t *instance_id)
{
	JsonObjectBuilder b;

	json_begin(&b);
	json_add_uuid(&b, "job_id", &job->job_id);
	json_add_uuid(&b, "agent_id", &job->agent_id);
	json_add_text(&b, "action", callback_action_names[action]);
	json_add_bool(&b, "applied", applied);
	json_add_bool(&b, "duplicate", false);
	json_add_text(&b, "job_status", job_status_name(job_status));
	json_add_text(&b, "agent_status", agent_status_name(agent_status));
	if (instance_id != NULL)
		json_add_uuid(&b, "instance_id", instance_id);
	return json_end(&b);
}

static void
step_base_args(const LockedJob *job, Jsonb *result, const Delivery *delivery, Datum *values,
			   char *nulls)
{
	values[0] = UUIDPGetDatum(&job->job_id);
	values[1] = UUIDPGetDatum(&job->agent_id);
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[3] = JsonbPGetDatum(result);
	memset(nulls, ' ', STEP_BASE_ARGS);
	if (delivery != NULL)
	{
		bytea *sha256 = palloc(VARHDRSZ + sizeof(delivery->payload_sha256));

		SET_VARSIZE(sha256, VARHDRSZ + sizeof(delivery->payload_sha256));
		memcpy(VARDATA(sha256), delivery->payload_sha256, sizeof(delivery->payload_sha256));
		values[4] = CStringGetTextDatum(delivery->id);
		values[5] = PointerGetDatum(sha256);
	}
	else
	{
		values[4] = values[5] = (Datum) 0;
		nulls[4] = nulls[5] = 'n';
	}
}

/*
 * Collects what a step statement returned. A delivery id that was not
 * recorded means another transaction recorded it after this one looked: the
 * effect just made must not commit, and the sender's retry will find the
 * recorded result.
 */
static void
step_finish(int rc, const Delivery *delivery, StepResult *out)
{
	HeapTuple tuple;
	TupleDesc desc;
	bool      isnull;

	spi_check(rc, SPI_OK_SELECT, "applying a job step");
	if (SPI_processed != 1)
		elog(ERROR, "job step returned " UINT64_FORMAT " rows", SPI_processed);
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	if (delivery != NULL && !DatumGetBool(SPI_getbinval(tuple, desc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("delivery %s was recorded by a concurrent transaction", delivery->id),
				 errhint("Retry the callback; the retry returns the recorded result.")));

	out->result =
		DatumGetJsonbP(SPI_datumTransfer(SPI_getbinval(tuple, desc, 1, &isnull), false, -1));
	out->job_row = (Datum) 0;
	out->instance_row = (Datum) 0;
	if (desc->natts >= 4)
	{
		Datum row = SPI_getbinval(tuple, desc, 3, &isnull);

		if (!isnull)
			out->job_row = SPI_datumTransfer(row, false, -1);
		row = SPI_getbinval(tuple, desc, 4, &isnull);
		if (!isnull)
			out->instance_row = SPI_datumTransfer(row, false, -1);
	}
}

/* The event kind of a move to [to]; expire_stale_jobs uses expired instead. */
EventKind
job_event_kind(JobStatus to)
{
	switch (to)
	{
		case JOB_DISPATCHED:
			return EVENT_DISPATCHED;
		case JOB_RUNNING:
			return EVENT_COMPLETED;
		case JOB_FAILED:
			return EVENT_FAILED;
		default:
			return EVENT_STATUS;
	}
}

static Jsonb *
event_detail(const char *error, const InstanceMetadata *meta, const char *delivery_id)
{
	JsonObjectBuilder b;

	json_begin(&b);
	json_add_text(&b, "error", error);
	if (meta != NULL)
	{
		json_add_text(&b, "server_id", meta->server_id);
		json_add_text(&b, "server_ip",
					  DatumGetCString(DirectFunctionCall1(inet_out, meta->server_ip)));
		json_add_text(&b, "tailscale_ip",
					  DatumGetCString(DirectFunctionCall1(inet_out, meta->tailscale_ip)));
	}
	json_add_text(&b, "delivery_id", delivery_id);
	return json_end(&b);
}

/* Whether the agent has an open job, as a new statement would see it. */
static bool
agent_has_open_job(const pg_uuid_t *agent_id)
{
	RowProbe probe;
	bool     found;

	row_probe_begin(&probe, "provisioning_jobs", "provisioning_jobs_one_open_per_agent",
					AccessShareLock);
	found = row_probe_fetch(&probe, F_UUID_EQ, UUIDPGetDatum(agent_id));
	row_probe_end(&probe);
	return found;
}

/*
 * The refusal of a re-run of a failed job while its agent has another open
 * job (one that retry_failed_jobs or enqueue_job created meanwhile): an
 * agent has one open job at a time, and the newer one is it.
 */
static void
refuse_rerun(const LockedJob *job, JobStatus to)
{
	ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("cannot move job %s from status %s to %s: agent %s has another open job",
						   uuid_to_cstring(&job->job_id), job_status_name(job->status),
						   job_status_name(to), uuid_to_cstring(&job->agent_id)),
					errdetail("current status: %s", job_status_name(job->status))));
}

/*
 * Runs the statement of a re-run in a subtransaction. The open job checked
 * for just before may be in flight in another transaction (enqueue_job does
 * not lock the agent); when it commits, the re-run's entry in the
 * one-open-job index is a unique violation, which is the refusal the check
 * would have made, and is raised as such.
 */
static int
execute_rerun(SPIPlanPtr plan, Datum *values, const char *nulls, const LockedJob *job, JobStatus to)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int           rc;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION && edata->constraint_name != NULL &&
			strcmp(edata->constraint_name, "provisioning_jobs_one_open_per_agent") == 0)
			refuse_rerun(job, to);
		ReThrowError(edata);
	}
	PG_END_TRY();
	return rc;
}

/*
 * Applies a decided change to the locked job in one statement: the job row
 * with its timestamps and attempts, the instance when meta is given, the
 * agent's status, one event, and the delivery. Then queues the NOTIFY.
 * A re-run is refused (55000) while the agent has another open job.
 * want_rows: also return the new job and instance rows in *out.
 * kind is the event kind when not the one the target status implies
 * (expired).
 */
void
job_apply(const LockedJob *job, JobStatus to, TransitionAction action, EventKind kind,
		  const char *error, const InstanceMetadata *meta, CallbackAction cb_action,
		  const Delivery *delivery, bool want_rows, StepResult *out)
{
	Oid argtypes[21] = {
		UUIDOID, UUIDOID,        TIMESTAMPTZOID, JSONBOID,       TEXTOID,        BYTEAOID, TEXTOID,
		INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,  BOOLOID,
		TEXTOID, TEXTOID,        TEXTOID,        JSONBOID,       TEXTOID,        INETOID,  INETOID};
	Datum       values[21];
	char        nulls[21];
	Datum       now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	bool        entering = (to != job->status);
	AgentStatus agent_after = agent_follows[to][job->agent_status];
	Jsonb      *detail;
	SPIPlanPtr  plan;
	int         rc;

	Assert(action == TRANSITION_APPLY || action == TRANSITION_RERUN ||
		   action == TRANSITION_UPDATE_METADATA);
	if (action == TRANSITION_RERUN && agent_has_open_job(&job->agent_id))
		refuse_rerun(job, to);
	if (to != JOB_FAILED)
		error = NULL;

	step_base_args(job, build_result(job, cb_action, true, to, agent_after, NULL), delivery, values,
				   nulls);
	memset(nulls + STEP_BASE_ARGS, 'n', lengthof(nulls) - STEP_BASE_ARGS);

	/* clang-format off */
#define SET_ARG(n, datum) (values[(n) - 1] = (datum), nulls[(n) - 1] = ' ')
	/* clang-format on */
	SET_ARG(7, CStringGetTextDatum(job_status_name(to)));
	SET_ARG(8, Int32GetDatum(transitions[job->status][to].attempts));
	if (entering && to == JOB_DISPATCHED)
		SET_ARG(9, now);
	if (entering && to == JOB_PROVISIONING)
		SET_ARG(10, now);
	if (entering && to == JOB_RUNNING)
		SET_ARG(11, now);
	if (entering && to == JOB_FAILED)
		SET_ARG(12, now);
	if (error != NULL)
		SET_ARG(13, CStringGetTextDatum(error));
	/* A new attempt must not inherit the silence of the one that failed. */
	SET_ARG(14, BoolGetDatum(action == TRANSITION_RERUN));
	if (agent_after != job->agent_status)
		SET_ARG(15, CStringGetTextDatum(agent_status_name(agent_after)));
	SET_ARG(16, CStringGetTextDatum(event_kind_name(kind)));
	SET_ARG(17, CStringGetTextDatum(job_status_name(job->status)));
	detail = event_detail(error, meta, delivery ? delivery->id : NULL);
	if (detail != NULL)
		SET_ARG(18, JsonbPGetDatum(detail));
	if (meta != NULL)
	{
		SET_ARG(19, CStringGetTextDatum(meta->server_id));
		SET_ARG(20, meta->server_ip);
		SET_ARG(21, meta->tailscale_ip);
	}
#undef SET_ARG

	plan = spi_plan(&plan_apply[meta != NULL][want_rows],
					sql_apply_variants[meta != NULL][want_rows], lengthof(argtypes), argtypes);
	if (action == TRANSITION_RERUN)
		rc = execute_rerun(plan, values, nulls, job, to);
	else
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
	step_finish(rc, delivery, out);
	event_notify(&job->job_id, &job->agent_id, kind, to);
}

/*
 * Records a heartbeat of the locked job: last_heartbeat_at on the job and on
 * the agent's instance if this job created it. No status change, no event.
 */
void
job_heartbeat(const LockedJob *job, const Delivery *delivery, StepResult *out)
{
	Oid       argtypes[STEP_BASE_ARGS + 1] = {UUIDOID, UUIDOID,  TIMESTAMPTZOID, JSONBOID,
											  TEXTOID, BYTEAOID, UUIDOID};
	Datum     values[STEP_BASE_ARGS + 1];
	char      nulls[STEP_BASE_ARGS + 1];
	pg_uuid_t instance_id;
	pg_uuid_t instance_job;
	bool      has_instance = agent_instance(&job->agent_id, &instance_id, &instance_job);
	bool      mark = has_instance && memcmp(&instance_job, &job->job_id, sizeof(pg_uuid_t)) == 0;
	int       rc;

	step_base_args(job,
				   build_result(job, ACTION_HEARTBEAT, true, job->status, job->agent_status,
								has_instance ? &instance_id : NULL),
				   delivery, values, nulls);
	values[STEP_BASE_ARGS] = UUIDPGetDatum(&instance_id);
	nulls[STEP_BASE_ARGS] = ' ';
	if (mark)
		rc = SPI_execute_plan(spi_plan(&plan_heartbeat_instance, sql_heartbeat_instance,
									   STEP_BASE_ARGS + 1, argtypes),
							  values, nulls, false, 0);
	else
		rc = SPI_execute_plan(spi_plan(&plan_heartbeat, sql_heartbeat, STEP_BASE_ARGS, argtypes),
							  values, nulls, false, 0);
	step_finish(rc, delivery, out);
}

/* A no-op callback: nothing changes, but the delivery and its result are recorded. */
void
job_noop(const LockedJob *job, CallbackAction cb_action, const Delivery *delivery, StepResult *out)
{
	Oid argtypes[STEP_BASE_ARGS] = {UUIDOID, UUIDOID, TIMESTAMPTZOID, JSONBOID, TEXTOID, BYTEAOID};
	Datum values[STEP_BASE_ARGS];
	char  nulls[STEP_BASE_ARGS];
	int   rc;

	step_base_args(job, build_result(job, cb_action, false, job->status, job->agent_status, NULL),
				   delivery, values, nulls);
	rc = SPI_execute_plan(spi_plan(&plan_noop, sql_noop, STEP_BASE_ARGS, argtypes), values, nulls,
						  false, 0);
	step_finish(rc, delivery, out);
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
	Oid   uuid_type[1] = {UUIDOID};
	Oid   text_type[1] = {TEXTOID};
	Oid   insert_types[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};
	Datum key_datum = key != NULL ? CStringGetTextDatum(key) : (Datum) 0;
	int   rc;

	rc = SPI_execute_plan(
		spi_plan(&plan_agent_exists,
				 "SELECT 1 FROM provision.agents WHERE id OPERATOR(pg_catalog.=) $1", 1, uuid_type),
		(Datum[]){UUIDPGetDatum(agent_id)}, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "looking up the agent");
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("agent %s does not exist", uuid_to_cstring(agent_id))));

	/*
	 * A concurrent enqueue can win the insert between the lookups and our
	 * INSERT; ON CONFLICT waits for it to commit, and the next round of
	 * lookups (a new snapshot) finds its job.
	 */
	for (int round = 0;; round++)
	{
		if (round == 3)
			ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							errmsg("could not enqueue a job for agent %s: concurrent changes",
								   uuid_to_cstring(agent_id)),
							errhint("Retry the call.")));

		if (key != NULL)
		{
			rc = SPI_execute_plan(spi_plan(&plan_job_by_key,
										   "SELECT id, agent_id FROM provision.provisioning_jobs "
										   "WHERE idempotency_key OPERATOR(pg_catalog.=) $1",
										   1, text_type),
								  (Datum[]){key_datum}, NULL, false, 1);
			spi_check(rc, SPI_OK_SELECT, "looking up the idempotency key");
			if (SPI_processed == 1)
			{
				bool       isnull;
				HeapTuple  tuple = SPI_tuptable->vals[0];
				pg_uuid_t *owner =
					DatumGetUUIDP(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));

				*job_id = *DatumGetUUIDP(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
				if (memcmp(owner, agent_id, sizeof(pg_uuid_t)) != 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("idempotency_key is already used by a job of another agent"),
							 errdetail("Job %s belongs to agent %s.", uuid_to_cstring(job_id),
									   uuid_to_cstring(owner))));
				return ENQUEUE_KEY_KNOWN;
			}
		}

		rc = SPI_execute_plan(
			spi_plan(&plan_open_job,
					 "SELECT id FROM provision.provisioning_jobs "
					 "WHERE agent_id OPERATOR(pg_catalog.=) $1 "
					 "AND status OPERATOR(pg_catalog.=) ANY "
					 "('{pending,dispatched,provisioning}'::provision.job_status[])",
					 1, uuid_type),
			(Datum[]){UUIDPGetDatum(agent_id)}, NULL, false, 1);
		spi_check(rc, SPI_OK_SELECT, "looking up the open job");
		if (SPI_processed == 1)
		{
			bool isnull;

			*job_id = *DatumGetUUIDP(
				SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			return ENQUEUE_OPEN_JOB;
		}

		{
			JsonObjectBuilder b;
			Jsonb            *detail;
			Datum             values[4];
			char              nulls[4] = {' ', ' ', ' ', ' '};

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
			rc = SPI_execute_plan(
				spi_plan(&plan_insert_job,
						 "WITH n AS (INSERT INTO provision.provisioning_jobs "
						 "(agent_id, idempotency_key, created_at, updated_at) "
						 "VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING RETURNING id), "
						 "e AS (INSERT INTO provision.events "
						 "(at, job_id, agent_id, kind, from_status, to_status, detail) "
						 "SELECT $3, n.id, $1, 'enqueued', NULL, 'pending', $4 FROM n) "
						 "SELECT n.id FROM n",
						 4, insert_types),
				values, nulls, false, 0);
			spi_check(rc, SPI_OK_SELECT, "inserting the job");
			if (SPI_processed == 1)
			{
				bool isnull;

				*job_id = *DatumGetUUIDP(
					SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
				event_notify(job_id, agent_id, EVENT_ENQUEUED, JOB_PENDING);
				return ENQUEUE_CREATED;
			}
		}
	}
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

	rc = SPI_execute_plan(
		spi_plan(&plan_claim,
				 JOB_LOCK_COLUMNS JOB_LOCK_FROM
				 "WHERE j.status OPERATOR(pg_catalog.=) 'pending'::provision.job_status "
				 "ORDER BY j.created_at, j.id LIMIT $1 "
				 "FOR UPDATE OF j SKIP LOCKED",
				 1, argtypes),
		(Datum[]){PG_GETARG_DATUM(0)}, NULL, false, 0);
	spi_check(rc, SPI_OK_SELECT, "selecting pending jobs");

	/* The rows are read before the next statement replaces SPI_tuptable. */
	count = SPI_processed;
	jobs = palloc(sizeof(LockedJob) * Max(count, 1));
	for (uint64 i = 0; i < count; i++)
		job_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &jobs[i]);

	for (uint64 i = 0; i < count; i++)
	{
		StepResult       step;
		HeapTupleData    tuple;
		HeapTupleHeader  row;
		TransitionAction action = job_decide(&jobs[i], JOB_DISPATCHED, false);

		job_apply(&jobs[i], JOB_DISPATCHED, action, EVENT_DISPATCHED, NULL, NULL, ACTION_STATUS,
				  NULL, true, &step);
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

		job_apply(&job, to, action, job_event_kind(to), error, NULL, ACTION_STATUS, NULL, true,
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

	rc = SPI_execute_plan(
		spi_plan(&plan_stale,
				 JOB_LOCK_COLUMNS JOB_LOCK_FROM
				 "WHERE j.status OPERATOR(pg_catalog.=) ANY "
				 "('{dispatched,provisioning}'::provision.job_status[]) "
				 "AND COALESCE(j.last_heartbeat_at, j.started_at, j.dispatched_at) "
				 "OPERATOR(pg_catalog.<) $1 "
				 "ORDER BY j.id "
				 "FOR UPDATE OF j SKIP LOCKED FOR NO KEY UPDATE OF a SKIP LOCKED",
				 1, argtypes),
		(Datum[]){cutoff}, NULL, false, 0);
	spi_check(rc, SPI_OK_SELECT, "selecting stale jobs");

	count = SPI_processed;
	jobs = palloc(sizeof(LockedJob) * Max(count, 1));
	for (uint64 i = 0; i < count; i++)
		job_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &jobs[i]);

	for (uint64 i = 0; i < count; i++)
	{
		StepResult       step;
		TransitionAction action = job_decide(&jobs[i], JOB_FAILED, false);

		job_apply(&jobs[i], JOB_FAILED, action, EVENT_EXPIRED, "heartbeat timeout", NULL,
				  ACTION_FAILED, NULL, false, &step);
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
