/*
 * guc.c
 *		The settings of the provision extension (provision.*).
 */
#include "provision.h"

#include "parser/scansup.h"
#include "utils/guc.h"

#define STRIPE_EVENT_TYPES_DEFAULT                                                                 \
	"checkout.session.completed,checkout.session.async_payment_succeeded"

/*
 * A parsed provision.stripe_event_types: count names stored one after the
 * other, each NUL-terminated. One malloc'd block, as GUC "extra" data must
 * be, so that the GUC machinery frees it when the value changes.
 */
typedef struct EventTypeList
{
	int  count;
	char names[FLEXIBLE_ARRAY_MEMBER];
} EventTypeList;

bool provision_notify = true;
int  provision_heartbeat_timeout = 15 * 60;
int  provision_history_retention = 30 * 24 * 60 * 60;
int  provision_max_attempts = 3;
int  provision_retry_delay = 60;

static char          *provision_stripe_event_types = NULL;
static EventTypeList *stripe_event_types = NULL;

static bool check_stripe_event_types(char **newval, void **extra, GucSource source);
static void assign_stripe_event_types(const char *newval, void *extra);
static bool event_type_char(char c);

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
	 * Superuser-only: the listener's role, which may run
	 * handle_stripe_event, must not be able to widen the events that
	 * enqueue jobs.
	 */
	DefineCustomStringVariable(
		"provision.stripe_event_types",
		"Stripe event types for which handle_stripe_event enqueues a job.",
		"A comma-separated list; other event types are acknowledged and ignored.",
		&provision_stripe_event_types, STRIPE_EVENT_TYPES_DEFAULT, PGC_SUSET, 0,
		check_stripe_event_types, assign_stripe_event_types, NULL);

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

/*
 * True when type is listed in provision.stripe_event_types. Byte for byte:
 * Stripe's event types are lowercase ASCII.
 */
bool
stripe_event_type_listed(const char *type)
{
	const char *name;

	if (stripe_event_types == NULL)
		return false;
	name = stripe_event_types->names;
	for (int i = 0; i < stripe_event_types->count; i++)
	{
		if (strcmp(name, type) == 0)
			return true;
		name += strlen(name) + 1;
	}
	return false;
}

/* The characters of Stripe's event type names: checkout.session.completed. */
static bool
event_type_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_';
}

/*
 * Parses the comma-separated list: spaces around an entry and empty entries
 * ("a,,b", a trailing comma) are dropped, so an empty setting lists nothing.
 * An entry with any other character (a space inside, an uppercase letter)
 * is refused rather than kept as a type that never matches.
 */
static bool
check_stripe_event_types(char **newval, void **extra, GucSource source)
{
	const char    *p = *newval != NULL ? *newval : "";
	EventTypeList *list;
	char          *out;

	/* The names and their NULs take no more room than the text and its NUL. */
	list = malloc(offsetof(EventTypeList, names) + strlen(p) + 1);
	if (list == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	list->count = 0;
	out = list->names;
	while (*p != '\0')
	{
		const char *start;
		const char *end;

		while (scanner_isspace(*p))
			p++;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		if (*p == ',')
			p++;
		while (end > start && scanner_isspace(end[-1]))
			end--;
		if (end == start)
			continue;
		for (const char *c = start; c < end; c++)
			if (!event_type_char(*c))
			{
				GUC_check_errdetail(
					"Entry \"%.*s\" is not a Stripe event type: expected lowercase "
					"letters, digits, \".\" and \"_\", entries separated by commas.",
					(int) (end - start), start);
				free(list);
				return false;
			}
		memcpy(out, start, end - start);
		out += end - start;
		*out++ = '\0';
		list->count++;
	}
	*extra = list;
	return true;
}

static void
assign_stripe_event_types(const char *newval, void *extra)
{
	stripe_event_types = (EventTypeList *) extra;
}
