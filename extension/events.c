/*
 * events.c
 *		Event kinds and the NOTIFY that announces each event.
 *
 * The event rows themselves are written by the same SQL statement that makes
 * the state change (see jobs.c), so a change and its event commit together.
 */
#include "provision.h"

#include "commands/async.h"
#include "lib/stringinfo.h"

#define PROVISION_CHANNEL "provision_events"

/* clang-format off */
static const char *const event_kind_names[] = {
	[EVENT_ENQUEUED] = "enqueued",
	[EVENT_DISPATCHED] = "dispatched",
	[EVENT_STATUS] = "status",
	[EVENT_COMPLETED] = "completed",
	[EVENT_FAILED] = "failed",
	[EVENT_EXPIRED] = "expired",
	[EVENT_RUN] = "run",
	[EVENT_RETRIED] = "retried",
};
/* clang-format on */

const char *
event_kind_name(EventKind kind)
{
	return event_kind_names[kind];
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
