/*
 * instances.c
 *		The agent's VM: complete_provisioning_with_metadata, and the
 *		statement that records the VM as its job becomes running (for that
 *		function and for running callbacks with metadata).
 */
#include "provision.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/*
 * A status change that records the agent's VM: the job, the agent, the
 * instance (inserted, or updated in place when the agent already has one: a
 * retry or a re-created VM), one event and the delivery, with the
 * instance's id in the event detail and the result. Parameters as
 * ChangeParams (steps.c): $19 server id, $20 server ip, $21 tailscale ip.
 */
static const char sql_change_instance[] =
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
	" i AS (INSERT INTO provision.agent_instances AS x"
	"   (agent_id, job_id, server_id, server_ip, tailscale_ip, created_at, updated_at)"
	"   VALUES ($2, $1, $19, $20, $21, $3, $3)"
	"   ON CONFLICT (agent_id) DO UPDATE SET job_id = excluded.job_id,"
	"   server_id = excluded.server_id, server_ip = excluded.server_ip,"
	"   tailscale_ip = excluded.tailscale_ip, updated_at = excluded.updated_at"
	"   RETURNING x.id),"
	" e AS (INSERT INTO provision.events"
	"   (at, job_id, agent_id, kind, from_status, to_status, detail)"
	"   SELECT $3, $1, $2, $16, $17, $7,"
	"   $18 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', i.id) FROM i),"
	" r AS (SELECT"
	"   $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', i.id) AS result"
	"   FROM i),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, r.result FROM r WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT r.result, EXISTS (SELECT FROM d) FROM r";

/* sql_change_instance, also returning the new job and instance rows. */
static const char sql_change_instance_rows[] =
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
	" i AS (INSERT INTO provision.agent_instances AS x"
	"   (agent_id, job_id, server_id, server_ip, tailscale_ip, created_at, updated_at)"
	"   VALUES ($2, $1, $19, $20, $21, $3, $3)"
	"   ON CONFLICT (agent_id) DO UPDATE SET job_id = excluded.job_id,"
	"   server_id = excluded.server_id, server_ip = excluded.server_ip,"
	"   tailscale_ip = excluded.tailscale_ip, updated_at = excluded.updated_at"
	"   RETURNING x),"
	" e AS (INSERT INTO provision.events"
	"   (at, job_id, agent_id, kind, from_status, to_status, detail)"
	"   SELECT $3, $1, $2, $16, $17, $7,"
	"   $18 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', (i.x).id) FROM i),"
	" r AS (SELECT"
	"   $4 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('instance_id', (i.x).id) AS result"
	"   FROM i),"
	" d AS (INSERT INTO provision.callback_deliveries"
	"   (delivery_id, job_id, received_at, payload_sha256, result)"
	"   SELECT $5, $1, $3, $6, r.result FROM r WHERE $5 IS NOT NULL"
	"   ON CONFLICT (delivery_id) DO NOTHING RETURNING 1) "
	"SELECT r.result, EXISTS (SELECT FROM d), (SELECT j.t FROM j), (SELECT i.x FROM i) FROM r";

static SPIPlanPtr plan_change_instance;
static SPIPlanPtr plan_change_instance_rows;

/*
 * Raises 22023 unless server_id is 1 to 255 characters and not only
 * whitespace (which identifies no server); where names its origin.
 */
void
check_server_id(const char *server_id, const char *where)
{
	if (server_id[strspn(server_id, " \t\r\n")] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("empty \"server_id\"%s", where)));
	if (pg_mbstrlen_with_len(server_id, strlen(server_id)) > PROVISION_MAX_SERVER_ID_CHARS)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("\"server_id\"%s is longer than %d characters", where,
							   PROVISION_MAX_SERVER_ID_CHARS)));
}

/*
 * The plan of the change that records the VM, with the new job and instance
 * rows (want_rows) or without. The caller is connected to SPI.
 */
SPIPlanPtr
instance_change_plan(bool want_rows)
{
	if (want_rows)
		return spi_plan(&plan_change_instance_rows, sql_change_instance_rows, CHANGE_NARGS,
						(Oid *) change_argtypes);
	return spi_plan(&plan_change_instance, sql_change_instance, CHANGE_NARGS,
					(Oid *) change_argtypes);
}

/*
 * provision.complete_provisioning_with_metadata(job_id, server_id, server_ip,
 * tailscale_ip): in one transaction marks the job running, records the
 * agent's VM (or updates it in place when the agent already has one: a retry
 * or a re-created VM), activates the agent and writes one completed event.
 * Returns the instance row.
 */
PG_FUNCTION_INFO_V1(complete_provisioning_with_metadata);
Datum
complete_provisioning_with_metadata(PG_FUNCTION_ARGS)
{
	static const char *const arg_names[] = {"job_id", "server_id", "server_ip", "tailscale_ip"};
	InstanceMetadata         meta;
	LockedJob                job;
	StepResult               step;

	for (int i = 0; i < lengthof(arg_names); i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("%s must not be null", arg_names[i])));
	meta.server_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	check_server_id(meta.server_id, "");
	meta.server_ip = PG_GETARG_DATUM(2);
	meta.tailscale_ip = PG_GETARG_DATUM(3);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_lock_or_error(PG_GETARG_UUID_P(0), LOCK_JOB_AGENT, &job);
	job_apply(&job,
			  &(JobStep){.to = JOB_RUNNING,
						 .action = job_decide(&job, JOB_RUNNING, true),
						 .event = EVENT_COMPLETED,
						 .meta = &meta,
						 .result_action = ACTION_COMPLETED,
						 .want_rows = true},
			  &step);
	SPI_finish();
	PG_RETURN_DATUM(step.instance_row);
}
