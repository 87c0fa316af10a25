/*
 * events.c
 *		What an event says: its detail object and the NOTIFY that announces
 *		it. The event row itself is a part of the statement that makes the
 *		change it records (steps.c, instances.c, runs.c, jobs.c, dispatch.c),
 *		so that a change and its event commit together or not at all.
 */
#include "provision.h"

#include "commands/async.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#define PROVISION_CHANNEL "provision_events"

/*
 * The detail of a status change event: the error, the VM metadata and the
 * delivery id, those given; NULL when none is.
 */
Jsonb *
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

/*
 * Queues NOTIFY provision_events for one event while provision.notify is on.
 * Called directly rather than through pg_notify() to save a statement per
 * event; PostgreSQL delivers it on commit and drops it on abort.
 */
void
event_notify(const pg_uuid_t *job_id, const pg_uuid_t *agent_id, EventKind kind, JobStatus to)
{
	StringInfoData payload;

	if (!provision_notify)
		return;

	/* Only uuids and fixed names go in, so nothing needs JSON escaping. */
	initStringInfo(&payload);
	appendStringInfo(
		&payload,
		"{\"job_id\": \"%s\", \"agent_id\": \"%s\", \"kind\": \"%s\", \"to_status\": \"%s\"}",
		uuid_to_cstring(job_id), uuid_to_cstring(agent_id), event_kind_name(kind),
		job_status_name(to));
	Async_Notify(PROVISION_CHANNEL, payload.data);
	pfree(payload.data);
}
