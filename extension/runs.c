/*
 * runs.c
 *		Run fencing: the GitHub Actions workflow run that owns a job.
 *
 * The dispatcher may trigger two runs for one job (a retried dispatch, a
 * crash between the dispatch and its record). The first run recorded for a
 * job owns it, whether the dispatcher records it (record_dispatch) or the
 * run's own first callback does (handle_callback with run_id); a callback
 * from any other run is refused before it changes anything, so the losing
 * run learns from its first callback that it must not create a VM.
 *
 * Both paths hold the job row lock (job_lock) when they decide, so two runs
 * racing for one job serialize, and the second sees the first one's record.
 */
#include "provision.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

/*
 * Records a job's run with its run event. The job keeps its status; the
 * event carries it as both from and to status. Returns the new job row.
 */
static const char sql_record_run[] =
	"WITH j AS (UPDATE provision.provisioning_jobs AS t "
	"SET workflow_run_id = $4, workflow_run_url = $5, updated_at = $3 "
	"WHERE t.id OPERATOR(pg_catalog.=) $1 RETURNING t), "
	"e AS (INSERT INTO provision.events "
	"(at, job_id, agent_id, kind, from_status, to_status, detail) "
	"SELECT $3, $1, $2, 'run', $6, $6, $7 FROM j) "
	"SELECT j.t FROM j";

/* The parameters of sql_record_run, by name. */
typedef struct RecordRunArgs
{
	const pg_uuid_t *job_id;   /* $1 */
	const pg_uuid_t *agent_id; /* $2 */
	TimestampTz      now;      /* $3 */
	int64            run_id;   /* $4 */
	const char      *run_url;  /* $5, NULL: none */
	const char      *status;   /* $6 */
	Jsonb           *detail;   /* $7 */
} RecordRunArgs;

#define RECORD_RUN_NARGS 7

static SPIPlanPtr plan_record_run;

static void record_run_params(const RecordRunArgs *a, Oid *types, Datum *values, char *nulls);

/*
 * Raises the fencing refusal (55000) when another run owns the job. The
 * DETAIL is the one of every refused move; the HINT carries the owner's run
 * id alone, for the listener to put in its 409 body.
 */
void
run_check(const LockedJob *job, int64 run_id)
{
	if (job->has_run && job->workflow_run_id != run_id)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("job %s belongs to workflow run " INT64_FORMAT ", not " INT64_FORMAT,
							   uuid_to_cstring(&job->job_id), job->workflow_run_id, run_id),
						errdetail("current status: %s", job_status_name(job->status)),
						errhint("workflow_run_id: " INT64_FORMAT, job->workflow_run_id)));
}

/* The statement's parameters from their names. */
static void
record_run_params(const RecordRunArgs *a, Oid *types, Datum *values, char *nulls)
{
	static const Oid argtypes[RECORD_RUN_NARGS] = {UUIDOID, UUIDOID, TIMESTAMPTZOID, INT8OID,
												   TEXTOID, TEXTOID, JSONBOID};

	memcpy(types, argtypes, sizeof(argtypes));
	memset(nulls, ' ', RECORD_RUN_NARGS);
	values[0] = UUIDPGetDatum(a->job_id);
	values[1] = UUIDPGetDatum(a->agent_id);
	values[2] = TimestampTzGetDatum(a->now);
	values[3] = Int64GetDatum(a->run_id);
	values[4] = a->run_url != NULL ? CStringGetTextDatum(a->run_url) : (Datum) 0;
	if (a->run_url == NULL)
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(a->status);
	values[6] = JsonbPGetDatum(a->detail);
}

/*
 * Records run as the owner of the locked job, which has none, with one run
 * event (run_id, run_attempt, run_url and delivery_id, as given) and its
 * NOTIFY. Returns the new job row, allocated in the memory context that was
 * current at SPI_connect.
 */
Datum
run_record(const LockedJob *job, const WorkflowRun *run, const char *delivery_id)
{
	Oid               types[RECORD_RUN_NARGS];
	Datum             values[RECORD_RUN_NARGS];
	char              nulls[RECORD_RUN_NARGS];
	JsonObjectBuilder b;
	bool              isnull;
	int               rc;

	Assert(!job->has_run);

	json_begin(&b);
	json_add_int64(&b, "run_id", run->run_id);
	if (run->run_attempt > 0)
		json_add_int64(&b, "run_attempt", run->run_attempt);
	json_add_text(&b, "run_url", run->run_url);
	json_add_text(&b, "delivery_id", delivery_id);
	record_run_params(&(RecordRunArgs){.job_id = &job->job_id,
									   .agent_id = &job->agent_id,
									   .now = GetCurrentTransactionStartTimestamp(),
									   .run_id = run->run_id,
									   .run_url = run->run_url,
									   .status = job_status_name(job->status),
									   .detail = json_end(&b)},
					  types, values, nulls);

	rc = SPI_execute_plan(spi_plan(&plan_record_run, sql_record_run, RECORD_RUN_NARGS, types),
						  values, nulls, false, 0);
	spi_check(rc, SPI_OK_SELECT, "recording the workflow run");
	if (SPI_processed != 1)
		elog(ERROR, "recording the workflow run updated " UINT64_FORMAT " jobs", SPI_processed);
	event_notify(&job->job_id, &job->agent_id, EVENT_RUN, job->status);
	return SPI_datumTransfer(
		SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull), false, -1);
}
