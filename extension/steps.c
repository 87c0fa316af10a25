/*
 * steps.c
 *		The write of one locked job step: a decided status change, a
 *		heartbeat, or a no-op callback. Each is one statement that makes the
 *		whole change, writes its event and, for a callback, records the
 *		delivery with its result, so that they commit together; the change
 *		that also records the agent's VM is in instances.c.
 *
 * Every statement returns (result, delivered): the handle_callback result
 * object with the agent's instance_id added, and whether it recorded the
 * delivery, so that a delivery recorded concurrently is detected. A plan is
 * set up whole whatever parts of it run, hence variants rather than parts
 * switched off by a parameter: the heartbeat that also marks the instance,
 * and the status change that returns the new job row (for the functions
 * that return it).
 */
#include "provision.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"

/*
 * A no-op: nothing changes, the delivery and its result are recorded.
 * $1 job id, $2 agent id, $3 now, $4 result, $5 delivery id, $6 payload SHA-256.
 */
static const char sql_noop[] =
	"WITH s AS (SELECT (SELECT v.id FROM provision.agent_instances v"
	"   WHERE v.agent_id OPERATOR(pg_catalog.=) $2) AS instance_id),"
	" r AS (SELECT CASE WHEN s.instance_id IS NULL THEN $4"
	"   ELSE $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', s.instance_id)"
	"   END AS result FROM s),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, r.result FROM r WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT r.result, EXISTS (SELECT FROM d) FROM r";

/*
 * A heartbeat, before the agent has an instance of this job.
 * $1 job id, $3 now, $4 result (with the instance's id, if any),
 * $5 delivery id, $6 payload SHA-256.
 */
static const char sql_heartbeat[] =
	"WITH j AS (UPDATE provision.provisioning_jobs SET last_heartbeat_at = $3"
	"   WHERE id OPERATOR(pg_catalog.=) $1),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, $4 WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT $4, EXISTS (SELECT FROM d)";

/* A heartbeat that also marks the instance this job created: as sql_heartbeat, $7 instance id. */
static const char sql_heartbeat_instance[] =
	"WITH j AS (UPDATE provision.provisioning_jobs SET last_heartbeat_at = $3"
	"   WHERE id OPERATOR(pg_catalog.=) $1),"
	" h AS (UPDATE provision.agent_instances SET last_heartbeat_at = $3"
	"   WHERE id OPERATOR(pg_catalog.=) $7 AND job_id OPERATOR(pg_catalog.=) $1),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, $4 WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT $4, EXISTS (SELECT FROM d)";

/*
 * A status change: the job, the agent (when $15 is not NULL), one event and
 * the delivery. Parameters as ChangeParams; the agent's existing instance,
 * if any, goes into the result.
 */
static const char sql_change[] =
	"WITH j AS (UPDATE provision.provisioning_jobs AS t SET"
	"   status = $7::provision.job_status,"
	"   attempts = t.attempts OPERATOR(pg_catalog.+) $8,"
	"   updated_at = $3,"
	"   dispatched_at = COALESCE($9, t.dispatched_at),"
	"   started_at = COALESCE($10, t.started_at),"
	"   completed_at = COALESCE($11, t.completed_at),"
	"   failed_at = COALESCE($12, t.failed_at),"
	"   error = $13,"
	"   last_heartbeat_at = CASE WHEN $14 THEN NULL ELSE t.last_heartbeat_at END"
	"   WHERE t.id OPERATOR(pg_catalog.=) $1),"
	" a AS (UPDATE provision.agents SET status = $15::provision.agent_status, updated_at = $3"
	"   WHERE id OPERATOR(pg_catalog.=) $2 AND $15 IS NOT NULL),"
	" s AS (SELECT (SELECT v.id FROM provision.agent_instances v"
	"   WHERE v.agent_id OPERATOR(pg_catalog.=) $2) AS instance_id),"
	" e AS (INSERT INTO provision.events"
	"   (at, job_id, agent_id, kind, from_status, to_status, detail)"
	"   SELECT $3, $1, $2, $16, $17, $7, $18 FROM s),"
	" r AS (SELECT CASE WHEN s.instance_id IS NULL THEN $4"
	"   ELSE $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', s.instance_id)"
	"   END AS result FROM s),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, r.result FROM r WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT r.result, EXISTS (SELECT FROM d) FROM r";

/* sql_change, also returning the new job row. */
static const char sql_change_rows[] =
	"WITH j AS (UPDATE provision.provisioning_jobs AS t SET"
	"   status = $7::provision.job_status,"
	"   attempts = t.attempts OPERATOR(pg_catalog.+) $8,"
	"   updated_at = $3,"
	"   dispatched_at = COALESCE($9, t.dispatched_at),"
	"   started_at = COALESCE($10, t.started_at),"
	"   completed_at = COALESCE($11, t.completed_at),"
	"   failed_at = COALESCE($12, t.failed_at),"
	"   error = $13,"
	"   last_heartbeat_at = CASE WHEN $14 THEN NULL ELSE t.last_heartbeat_at END"
	"   WHERE t.id OPERATOR(pg_catalog.=) $1 RETURNING t),"
	" a AS (UPDATE provision.agents SET status = $15::provision.agent_status, updated_at = $3"
	"   WHERE id OPERATOR(pg_catalog.=) $2 AND $15 IS NOT NULL),"
	" s AS (SELECT (SELECT v.id FROM provision.agent_instances v"
	"   WHERE v.agent_id OPERATOR(pg_catalog.=) $2) AS instance_id),"
	" e AS (INSERT INTO provision.events"
	"   (at, job_id, agent_id, kind, from_status, to_status, detail)"
	"   SELECT $3, $1, $2, $16, $17, $7, $18 FROM s),"
	" r AS (SELECT CASE WHEN s.instance_id IS NULL THEN $4"
	"   ELSE $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', s.instance_id)"
	"   END AS result FROM s),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, r.result FROM r WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT r.result, EXISTS (SELECT FROM d), (SELECT j.t FROM j), NULL FROM r";

/* The types of $1..$21 of the change statements, in ChangeParams order. */
const Oid change_argtypes[CHANGE_NARGS] = {
	UUIDOID, UUIDOID,        TIMESTAMPTZOID, JSONBOID,       TEXTOID,        BYTEAOID, TEXTOID,
	INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,  BOOLOID,
	TEXTOID, TEXTOID,        TEXTOID,        JSONBOID,       TEXTOID,        INETOID,  INETOID};

/* The first six parameters, which every step statement takes. */
#define STEP_BASE_NARGS 6
static const Oid step_argtypes[STEP_BASE_NARGS + 1] = {UUIDOID, UUIDOID,  TIMESTAMPTZOID, JSONBOID,
													   TEXTOID, BYTEAOID, UUIDOID};

static SPIPlanPtr plan_noop;
static SPIPlanPtr plan_heartbeat;
static SPIPlanPtr plan_heartbeat_instance;
static SPIPlanPtr plan_change;
static SPIPlanPtr plan_change_rows;

static Jsonb *build_result(const LockedJob *job, CallbackAction action, bool applied,
						   JobStatus job_status, AgentStatus agent_status,
						   const pg_uuid_t *instance_id);
static void   base_params(const LockedJob *job, Jsonb *result, const Delivery *delivery,
						  Datum *values, char *nulls);
static void   change_params(const ChangeParams *p, Datum *values, char *nulls);
static void   step_finish(int rc, const Delivery *delivery, StepResult *out);
static void   refuse_rerun(const LockedJob *job, JobStatus to) pg_attribute_noreturn();
static int    execute_rerun(SPIPlanPtr plan, Datum *values, const char *nulls, const LockedJob *job,
							JobStatus to);

/* The handle_callback result object, without instance_id unless given. */
static Jsonb *
build_result(const LockedJob *job, CallbackAction action, bool applied, JobStatus job_status,
			 AgentStatus agent_status, const pg_uuid_t *instance_id)
{
	JsonObjectBuilder b;

	json_begin(&b);
	json_add_uuid(&b, "job_id", &job->job_id);
	json_add_uuid(&b, "agent_id", &job->agent_id);
	json_add_text(&b, "action", callback_action_name(action));
	json_add_bool(&b, "applied", applied);
	json_add_bool(&b, "duplicate", false);
	json_add_text(&b, "job_status", job_status_name(job_status));
	json_add_text(&b, "agent_status", agent_status_name(agent_status));
	if (instance_id != NULL)
		json_add_uuid(&b, "instance_id", instance_id);
	return json_end(&b);
}

/* $1..$6 of every step statement. */
static void
base_params(const LockedJob *job, Jsonb *result, const Delivery *delivery, Datum *values,
			char *nulls)
{
	values[0] = UUIDPGetDatum(&job->job_id);
	values[1] = UUIDPGetDatum(&job->agent_id);
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[3] = JsonbPGetDatum(result);
	memset(nulls, ' ', STEP_BASE_NARGS);
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

/* $1..$21 of the change statements from their names; NULL pointers are SQL NULLs. */
static void
change_params(const ChangeParams *p, Datum *values, char *nulls)
{
	const JobChange *c = p->change;
	Datum            now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	base_params(p->job, p->result, p->delivery, values, nulls);
	memset(nulls + STEP_BASE_NARGS, 'n', CHANGE_NARGS - STEP_BASE_NARGS);
#define SET(n, datum) (values[(n) -1] = (datum), nulls[(n) -1] = ' ')
	SET(7, CStringGetTextDatum(job_status_name(c->to)));
	SET(8, Int32GetDatum(c->attempts_added));
	if (c->stamped == JOB_DISPATCHED)
		SET(9, now);
	if (c->stamped == JOB_PROVISIONING)
		SET(10, now);
	if (c->stamped == JOB_RUNNING)
		SET(11, now);
	if (c->stamped == JOB_FAILED)
		SET(12, now);
	if (c->error != NULL)
		SET(13, CStringGetTextDatum(c->error));
	SET(14, BoolGetDatum(c->clear_heartbeat));
	if (c->agent_to != c->agent_from)
		SET(15, CStringGetTextDatum(agent_status_name(c->agent_to)));
	SET(16, CStringGetTextDatum(event_kind_name(p->event)));
	SET(17, CStringGetTextDatum(job_status_name(c->from)));
	if (p->detail != NULL)
		SET(18, JsonbPGetDatum(p->detail));
	if (p->meta != NULL)
	{
		SET(19, CStringGetTextDatum(p->meta->server_id));
		SET(20, p->meta->server_ip);
		SET(21, p->meta->tailscale_ip);
	}
#undef SET
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
 * Applies a decided move of the locked job (job_decide said apply, rerun or
 * update the metadata) in one statement: the job row with its timestamps
 * and attempts, the instance when step->meta is given, the agent's status,
 * one event and the delivery. Then queues the NOTIFY. A re-run is refused
 * (55000) while the agent has another open job.
 */
void
job_apply(const LockedJob *job, const JobStep *step, StepResult *out)
{
	JobChange    change;
	ChangeParams params;
	Datum        values[CHANGE_NARGS];
	char         nulls[CHANGE_NARGS];
	SPIPlanPtr   plan;
	int          rc;

	if (step->action == TRANSITION_RERUN && agent_has_open_job(&job->agent_id))
		refuse_rerun(job, step->to);
	job_change(job, step->to, step->action, step->error, &change);

	params.job = job;
	params.change = &change;
	params.result = build_result(job, step->result_action, true, change.to, change.agent_to, NULL);
	params.delivery = step->delivery;
	params.event = step->event;
	params.detail =
		event_detail(change.error, step->meta, step->delivery != NULL ? step->delivery->id : NULL);
	params.meta = step->meta;
	change_params(&params, values, nulls);

	if (step->meta != NULL)
		plan = instance_change_plan(step->want_rows);
	else if (step->want_rows)
		plan = spi_plan(&plan_change_rows, sql_change_rows, CHANGE_NARGS, (Oid *) change_argtypes);
	else
		plan = spi_plan(&plan_change, sql_change, CHANGE_NARGS, (Oid *) change_argtypes);
	if (step->action == TRANSITION_RERUN)
		rc = execute_rerun(plan, values, nulls, job, step->to);
	else
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
	step_finish(rc, step->delivery, out);
	event_notify(&job->job_id, &job->agent_id, step->event, step->to);
}

/*
 * Records a heartbeat of the locked job: last_heartbeat_at on the job and on
 * the agent's instance if this job created it. No status change, no event.
 */
void
job_heartbeat(const LockedJob *job, const Delivery *delivery, StepResult *out)
{
	Datum     values[STEP_BASE_NARGS + 1];
	char      nulls[STEP_BASE_NARGS + 1];
	pg_uuid_t instance_id;
	pg_uuid_t instance_job;
	bool      has_instance = agent_instance(&job->agent_id, &instance_id, &instance_job);
	bool      mark = has_instance && memcmp(&instance_job, &job->job_id, sizeof(pg_uuid_t)) == 0;
	int       rc;

	base_params(job,
				build_result(job, ACTION_HEARTBEAT, true, job->status, job->agent_status,
							 has_instance ? &instance_id : NULL),
				delivery, values, nulls);
	values[STEP_BASE_NARGS] = UUIDPGetDatum(&instance_id);
	nulls[STEP_BASE_NARGS] = ' ';
	if (mark)
		rc = SPI_execute_plan(spi_plan(&plan_heartbeat_instance, sql_heartbeat_instance,
									   STEP_BASE_NARGS + 1, (Oid *) step_argtypes),
							  values, nulls, false, 0);
	else
		rc = SPI_execute_plan(
			spi_plan(&plan_heartbeat, sql_heartbeat, STEP_BASE_NARGS, (Oid *) step_argtypes),
			values, nulls, false, 0);
	step_finish(rc, delivery, out);
}

/* A no-op callback: nothing changes, but the delivery and its result are recorded. */
void
job_noop(const LockedJob *job, CallbackAction action, const Delivery *delivery, StepResult *out)
{
	Datum values[STEP_BASE_NARGS];
	char  nulls[STEP_BASE_NARGS];
	int   rc;

	base_params(job, build_result(job, action, false, job->status, job->agent_status, NULL),
				delivery, values, nulls);
	rc = SPI_execute_plan(spi_plan(&plan_noop, sql_noop, STEP_BASE_NARGS, (Oid *) step_argtypes),
						  values, nulls, false, 0);
	step_finish(rc, delivery, out);
}
