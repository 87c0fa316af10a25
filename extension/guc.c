/*
 * guc.c
 *		The settings of the provision extension (provision.*).
 */
#include "provision.h"

#include "utils/guc.h"

bool provision_notify = true;
int  provision_heartbeat_timeout = 15 * 60;
int  provision_history_retention = 30 * 24 * 60 * 60;
int  provision_max_attempts = 3;
int  provision_retry_delay = 60;

/* Defines the provision.* settings and reserves the prefix. */
void
guc_init(void)
{
	/*
	 * Superuser-only: a role allowed to run handle_callback must not be able to
	 * silence the notifications that consumers rely on.
	 */
	DefineCustomBoolVariable("provision.notify", "Sends NOTIFY provision_events for every event.",
							 "Notifying transactions serialize their commits; turn off "
							 "to trade prompt notification for throughput and read "
							 "provision.events by id instead.",
							 &provision_notify, true, PGC_SUSET, 0, NULL, NULL, NULL);

	/*
	 * User-settable: whoever may run expire_stale_jobs or prune_history can
	 * pass any interval anyway; these only supply the default.
	 */
	DefineCustomIntVariable(
		"provision.heartbeat_timeout",
		"Silence after which expire_stale_jobs fails a dispatched or provisioning job.",
		"Used when expire_stale_jobs is called without an interval.", &provision_heartbeat_timeout,
		15 * 60, 1, INT_MAX, PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("provision.history_retention",
							"Age after which prune_history deletes deliveries and events.",
							"Used when prune_history is called without an interval.",
							&provision_history_retention, 30 * 24 * 60 * 60, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);

	/*
	 * User-settable too: they shape only the retries of whoever may run
	 * retry_failed_jobs, which also takes max_attempts as an argument.
	 */
	DefineCustomIntVariable("provision.max_attempts",
							"Jobs an agent may have in all before retry_failed_jobs stops "
							"enqueueing new ones.",
							"Used when retry_failed_jobs is called without max_attempts.",
							&provision_max_attempts, 3, 1, INT_MAX, PGC_USERSET, 0, NULL, NULL,
							NULL);

	DefineCustomIntVariable("provision.retry_delay",
							"Wait after a job's first failure before retry_failed_jobs retries it.",
							"Doubles with every failed job the agent already has.",
							&provision_retry_delay, 60, 1, INT_MAX, PGC_USERSET, GUC_UNIT_S, NULL,
							NULL, NULL);

	/*
	 * A misspelt provision.* setting is an error rather than a silently
	 * ignored placeholder; servers before 15 can only warn about it.
	 */
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("provision");
#else
	EmitWarningsOnPlaceholders("provision");
#endif
}
