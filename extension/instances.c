/*
 * instances.c
 *		The agent's VM: complete_provisioning_with_metadata.
 */
#include "provision.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

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
	TransitionAction         action;

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
	action = job_decide(&job, JOB_RUNNING, true);
	job_apply(&job, JOB_RUNNING, action, EVENT_COMPLETED, NULL, &meta, ACTION_COMPLETED, NULL, true,
			  &step);
	SPI_finish();
	PG_RETURN_DATUM(step.instance_row);
}
