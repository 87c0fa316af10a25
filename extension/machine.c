/*
 * machine.c
 *		The job state machine: the tables that say which moves a job may make
 *		and what each move changes, and the functions that read them. Pure
 *		data and decisions: nothing here reads or writes a table, so every
 *		rule of SPEC section 3 can be checked against this file alone.
 */
#include "provision.h"

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

/*
 * The timestamp column a job entering [to] stamps with the transaction
 * time; JOB_STATUS_COUNT: none (pending and cancelled keep their times).
 */
static const JobStatus stamped_on_entry[JOB_STATUS_COUNT] = {
	[JOB_PENDING] = JOB_STATUS_COUNT, [JOB_DISPATCHED] = JOB_DISPATCHED,
	[JOB_PROVISIONING] = JOB_PROVISIONING, [JOB_RUNNING] = JOB_RUNNING,
	[JOB_FAILED] = JOB_FAILED, [JOB_CANCELLED] = JOB_STATUS_COUNT,
};

/* The event kind of a move to [to]; expire_stale_jobs writes expired instead. */
static const EventKind event_on_entry[JOB_STATUS_COUNT] = {
	[JOB_PENDING] = EVENT_STATUS, [JOB_DISPATCHED] = EVENT_DISPATCHED,
	[JOB_PROVISIONING] = EVENT_STATUS, [JOB_RUNNING] = EVENT_COMPLETED,
	[JOB_FAILED] = EVENT_FAILED, [JOB_CANCELLED] = EVENT_STATUS,
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

/* The labels of provision.job_status and provision.agent_status, in enum order. */
static const char *const job_status_names[JOB_STATUS_COUNT] = {
	"pending", "dispatched", "provisioning", "running", "failed", "cancelled",
};

static const char *const agent_status_names[AGENT_STATUS_COUNT] = {
	"draft",
	"provisioning",
	"active",
	"failed",
};

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

static const char *const callback_action_names[] = {
	[ACTION_COMPLETED] = "completed",
	[ACTION_STATUS] = "status",
	[ACTION_HEARTBEAT] = "heartbeat",
	[ACTION_FAILED] = "failed",
};
/* clang-format on */

const char *
job_status_name(JobStatus status)
{
	return job_status_names[status];
}

JobStatus
job_status_from_name(const char *name)
{
	for (int i = 0; i < JOB_STATUS_COUNT; i++)
		if (strcmp(job_status_names[i], name) == 0)
			return (JobStatus) i;
	elog(ERROR, "unknown job status \"%s\"", name);
	pg_unreachable();
}

const char *
agent_status_name(AgentStatus status)
{
	return agent_status_names[status];
}

AgentStatus
agent_status_from_name(const char *name)
{
	for (int i = 0; i < AGENT_STATUS_COUNT; i++)
		if (strcmp(agent_status_names[i], name) == 0)
			return (AgentStatus) i;
	elog(ERROR, "unknown agent status \"%s\"", name);
	pg_unreachable();
}

const char *
event_kind_name(EventKind kind)
{
	return event_kind_names[kind];
}

const char *
callback_action_name(CallbackAction action)
{
	return callback_action_names[action];
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

/*
 * What a decided move of the locked job to [to] changes (see JobChange).
 * error is kept only for a move to failed.
 */
void
job_change(const LockedJob *job, JobStatus to, TransitionAction action, const char *error,
		   JobChange *change)
{
	Assert(action == TRANSITION_APPLY || action == TRANSITION_RERUN ||
		   action == TRANSITION_UPDATE_METADATA);
	change->from = job->status;
	change->to = to;
	change->attempts_added = transitions[job->status][to].attempts;
	change->stamped = to != job->status ? stamped_on_entry[to] : JOB_STATUS_COUNT;
	change->error = to == JOB_FAILED ? error : NULL;
	/* A new attempt must not inherit the silence of the one that failed. */
	change->clear_heartbeat = action == TRANSITION_RERUN;
	change->agent_from = job->agent_status;
	change->agent_to = agent_follows[to][job->agent_status];
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

EventKind
job_event_kind(JobStatus to)
{
	return event_on_entry[to];
}
