/*
 * provision.h
 *		Shared declarations of the provision extension: the job state machine,
 *		the locked job snapshot every mutating function works on, the steps
 *		that change it, events, cached SPI plans and small JSON helpers.
 */
#ifndef PROVISION_H
#define PROVISION_H

#include "postgres.h"

#include "common/sha2.h"
#include "executor/spi.h"
#include "nodes/lockoptions.h"
#include "storage/lockdefs.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Length limits. The functions enforce them; agents, which DBAs also write directly, by a trigger. */
#define PROVISION_MAX_AGENT_NAME_CHARS      255
#define PROVISION_MAX_DELIVERY_ID_BYTES     255
#define PROVISION_MAX_SERVER_ID_CHARS       255
#define PROVISION_MAX_ERROR_CHARS           4096
#define PROVISION_MAX_IDEMPOTENCY_KEY_CHARS 255
#define PROVISION_MAX_RUN_URL_CHARS         2048

/* provision.job_status, in enum order. */
typedef enum JobStatus
{
	JOB_PENDING,
	JOB_DISPATCHED,
	JOB_PROVISIONING,
	JOB_RUNNING,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_STATUS_COUNT
} JobStatus;

/* provision.agent_status, in enum order. */
typedef enum AgentStatus
{
	AGENT_DRAFT,
	AGENT_PROVISIONING,
	AGENT_ACTIVE,
	AGENT_FAILED,
	AGENT_STATUS_COUNT
} AgentStatus;

/* What the state machine says about moving a job from one status to another. */
typedef enum TransitionAction
{
	TRANSITION_REFUSE,         /* 55000 */
	TRANSITION_APPLY,          /* change the status */
	TRANSITION_RERUN,          /* leave failed for a new attempt */
	TRANSITION_SAME,           /* no-op: already there */
	TRANSITION_STALE,          /* no-op: a late callback of an earlier step */
	TRANSITION_UPDATE_METADATA /* running again with VM metadata: update it */
} TransitionAction;

/* provision.events.kind */
typedef enum EventKind
{
	EVENT_ENQUEUED,
	EVENT_DISPATCHED,
	EVENT_STATUS,
	EVENT_COMPLETED,
	EVENT_FAILED,
	EVENT_EXPIRED,
	EVENT_RUN,
	EVENT_RETRIED
} EventKind;

/* The "action" of a handle_callback result. */
typedef enum CallbackAction
{
	ACTION_COMPLETED,
	ACTION_STATUS,
	ACTION_HEARTBEAT,
	ACTION_FAILED
} CallbackAction;

/* What job_enqueue did: the job it returns stands for the request in one of three ways. */
typedef enum EnqueueOutcome
{
	ENQUEUE_CREATED,   /* a new pending job (and an enqueued event) */
	ENQUEUE_KEY_KNOWN, /* the job first created with this idempotency key */
	ENQUEUE_OPEN_JOB   /* the agent's open job; the key was not recorded */
} EnqueueOutcome;

/* What job_lock locks and fetches. */
typedef enum JobLockMode
{
	LOCK_JOB,          /* the job row only (heartbeats) */
	LOCK_JOB_ROW,      /* the same, and LockedJob.row (record_dispatch) */
	LOCK_JOB_AGENT,    /* the job and its agent (status changes) */
	LOCK_JOB_AGENT_ROW /* the same, and LockedJob.row */
} JobLockMode;

/*
 * A job row locked FOR UPDATE, with what the state machine and run fencing
 * need to decide. row is the whole provision.provisioning_jobs row
 * (LOCK_JOB_ROW and LOCK_JOB_AGENT_ROW only, else (Datum) 0), allocated in
 * the memory context that was current at SPI_connect (it outlives
 * SPI_finish). The run is read by job_lock only; the jobs claim_jobs and
 * expire_stale_jobs lock have has_run false.
 */
typedef struct LockedJob
{
	pg_uuid_t   job_id;
	pg_uuid_t   agent_id;
	JobStatus   status;
	AgentStatus agent_status;
	bool        has_run; /* workflow_run_id is set */
	int64       workflow_run_id;
	Datum       row;
	bool        contended; /* job_lock waited, or the row changed since its snapshot */
} LockedJob;

/*
 * A GitHub Actions workflow run acting on a job: from a callback (run_id,
 * run_attempt) or from the dispatcher (run_id, run_url).
 */
typedef struct WorkflowRun
{
	int64       run_id;      /* positive */
	int64       run_attempt; /* 0: not given */
	const char *run_url;     /* NULL: not given */
} WorkflowRun;

/* VM metadata of a running callback. */
typedef struct InstanceMetadata
{
	const char *server_id;
	Datum       server_ip;    /* inet */
	Datum       tailscale_ip; /* inet */
} InstanceMetadata;

/*
 * A callback delivery: the sender's id and the SHA-256 of the payload's
 * jsonb text (jsonb_out), which binds the id to what it delivered.
 */
typedef struct Delivery
{
	const char *id;
	uint8       payload_sha256[PG_SHA256_DIGEST_LENGTH];
} Delivery;

/* A row of provision.callback_deliveries, as delivery_fetch reads it. */
typedef struct RecordedDelivery
{
	bool      has_job; /* job_id is not NULL */
	pg_uuid_t job_id;
	bytea    *payload_sha256; /* NULL: recorded before 1.1 */
	Jsonb    *result;
} RecordedDelivery;

/*
 * What a decided move changes, from the state tables alone (job_change):
 * the job's status, attempts, the timestamp it stamps, its error and
 * heartbeat, and the agent's status.
 */
typedef struct JobChange
{
	JobStatus   from;
	JobStatus   to;
	int         attempts_added;
	JobStatus   stamped; /* the status whose timestamp column is set; JOB_STATUS_COUNT: none */
	const char *error;   /* kept for failed only */
	bool        clear_heartbeat;
	AgentStatus agent_from;
	AgentStatus agent_to;
} JobChange;

/* A decided move for job_apply to make. Fields left zero are absent. */
typedef struct JobStep
{
	JobStatus               to;
	TransitionAction        action; /* what job_decide said: apply, rerun or update metadata */
	EventKind               event;  /* job_event_kind(to), or expired */
	const char             *error;  /* recorded with failed */
	const InstanceMetadata *meta;   /* record the agent's VM */
	CallbackAction          result_action;
	const Delivery         *delivery;
	bool                    want_rows; /* also return the new job and instance rows */
} JobStep;

/*
 * The parameters of the statements that apply a change (steps.c and
 * instances.c), by name, with the $n each one fills.
 */
typedef struct ChangeParams
{
	const LockedJob        *job;      /* $1 job id, $2 agent id ($3: the transaction time) */
	Jsonb                  *result;   /* $4 the result object, without instance_id */
	const Delivery         *delivery; /* $5 delivery id, $6 payload SHA-256; NULL: none */
	const JobChange        *change;   /* $7 to, $8 attempts added, $9..$12 dispatched_at,
									   * started_at, completed_at, failed_at (NULL keeps),
									   * $13 error, $14 clear last_heartbeat_at, $15 new agent
									   * status (NULL keeps), $17 from */
	EventKind               event;    /* $16 */
	Jsonb                  *detail;   /* $18 event detail, NULL: none */
	const InstanceMetadata *meta;     /* $19 server id, $20 server ip, $21 tailscale ip */
} ChangeParams;

#define CHANGE_NARGS 21

/*
 * The outcome of one mutating step: the handle_callback result object (with
 * instance_id) and, when the step wrote them, the new rows. All allocated in
 * the memory context that was current at SPI_connect.
 */
typedef struct StepResult
{
	Jsonb *result;
	Datum  job_row;      /* provisioning_jobs, (Datum) 0 if unchanged */
	Datum  instance_row; /* agent_instances, (Datum) 0 if none written */
} StepResult;

/* guc.c: the provision.* settings */
extern bool provision_notify;
extern int  provision_heartbeat_timeout;
extern int  provision_history_retention;
extern int  provision_max_attempts;
extern int  provision_retry_delay;
extern void guc_init(void);
extern bool stripe_event_type_listed(const char *type);

/* machine.c: the state machine, pure data and decisions */
extern const char      *job_status_name(JobStatus status);
extern JobStatus        job_status_from_name(const char *name);
extern const char      *agent_status_name(AgentStatus status);
extern AgentStatus      agent_status_from_name(const char *name);
extern const char      *event_kind_name(EventKind kind);
extern const char      *callback_action_name(CallbackAction action);
extern TransitionAction job_decide(const LockedJob *job, JobStatus to, bool with_metadata);
extern void             job_change(const LockedJob *job, JobStatus to, TransitionAction action,
								   const char *error, JobChange *change);
extern void             job_check_heartbeat(const LockedJob *job);
extern EventKind        job_event_kind(JobStatus to);

/* locks.c: locking a job and its agent, and the other probes of a callback */
extern void        locks_init(void);
extern JobStatus   job_status_from_enum(Datum value);
extern AgentStatus agent_status_from_enum(Datum value);
extern bool        job_lock(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job);
extern void        job_lock_or_error(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job);
extern bool        agent_instance(const pg_uuid_t *agent_id, pg_uuid_t *instance_id,
								  pg_uuid_t *instance_job);
extern bool        agent_has_open_job(const pg_uuid_t *agent_id);
extern bool        delivery_fetch(const char *delivery_id, RecordedDelivery *out);
extern void        schema_outdated(const char *table, const char *column) pg_attribute_noreturn();

/* steps.c: the statement of one locked step */
extern const Oid change_argtypes[CHANGE_NARGS];
extern void      job_apply(const LockedJob *job, const JobStep *step, StepResult *out);
extern void      job_heartbeat(const LockedJob *job, const Delivery *delivery, StepResult *out);
extern void      job_noop(const LockedJob *job, CallbackAction action, const Delivery *delivery,
						  StepResult *out);

/* jobs.c: the job functions, and enqueueing, shared by enqueue_job and handle_stripe_event */
extern EnqueueOutcome job_enqueue(const pg_uuid_t *agent_id, const char *key, pg_uuid_t *job_id);
extern void           check_error_text(const char *error, const char *field);
extern Datum          interval_cutoff(Interval *older_than, int default_seconds, const char *field);

/* runs.c: run fencing */
extern void  run_check(const LockedJob *job, int64 run_id);
extern Datum run_record(const LockedJob *job, const WorkflowRun *run, const char *delivery_id);

/* instances.c: the agent's VM */
extern void       check_server_id(const char *server_id, const char *where);
extern SPIPlanPtr instance_change_plan(bool want_rows);

/* events.c: event details and NOTIFY */
extern Jsonb *event_detail(const char *error, const InstanceMetadata *meta,
						   const char *delivery_id);
extern void   event_notify(const pg_uuid_t *job_id, const pg_uuid_t *agent_id, EventKind kind,
						   JobStatus to);

/* spi.c: plans prepared once per backend and kept */
extern SPIPlanPtr spi_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes);
extern void       spi_check(int rc, int expected, const char *what);

/* json.c: building result objects and event details */
typedef struct JsonObjectBuilder
{
	JsonbParseState *state;
	bool             empty;
} JsonObjectBuilder;

extern void   json_begin(JsonObjectBuilder *b);
extern void   json_add_text(JsonObjectBuilder *b, const char *key, const char *value);
extern void   json_add_bool(JsonObjectBuilder *b, const char *key, bool value);
extern void   json_add_int64(JsonObjectBuilder *b, const char *key, int64 value);
extern void   json_add_uuid(JsonObjectBuilder *b, const char *key, const pg_uuid_t *value);
extern Jsonb *json_end(JsonObjectBuilder *b);
extern char  *uuid_to_cstring(const pg_uuid_t *uuid);

/* json.c: reading the objects the extension is given */
extern JsonbValue     *json_object_get(JsonbContainer *object, const char *key);
extern const char     *json_value_type(const JsonbValue *v);
extern JsonbContainer *json_value_object(const JsonbValue *v);
extern bool            uuid_from_cstring(const char *src, pg_uuid_t *uuid);

#endif /* PROVISION_H */
