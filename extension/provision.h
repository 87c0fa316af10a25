/*
 * provision.h
 *		Shared declarations of the provision extension: the job state machine,
 *		the locked job snapshot every mutating function works on, events,
 *		cached SPI plans and small JSON helpers.
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

/* jobs.c: the state machine and the steps every entry point shares */
extern const char      *job_status_name(JobStatus status);
extern JobStatus        job_status_from_enum(Datum value);
extern const char      *agent_status_name(AgentStatus status);
extern TransitionAction job_decide(const LockedJob *job, JobStatus to, bool with_metadata);
extern void             job_check_heartbeat(const LockedJob *job);
extern bool             job_lock(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job);
extern void      job_lock_or_error(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job);
extern EventKind job_event_kind(JobStatus to);
extern void  job_apply(const LockedJob *job, JobStatus to, TransitionAction action, EventKind kind,
					   const char *error, const InstanceMetadata *meta, CallbackAction cb_action,
					   const Delivery *delivery, bool want_rows, StepResult *out);
extern void  job_heartbeat(const LockedJob *job, const Delivery *delivery, StepResult *out);
extern void  job_noop(const LockedJob *job, CallbackAction cb_action, const Delivery *delivery,
					  StepResult *out);
extern void  check_error_text(const char *error, const char *field);
extern Datum interval_cutoff(Interval *older_than, int default_seconds, const char *field);

/* jobs.c: enqueueing, shared by enqueue_job and handle_stripe_event */
extern EnqueueOutcome job_enqueue(const pg_uuid_t *agent_id, const char *key, pg_uuid_t *job_id);

/* runs.c: run fencing */
extern void  run_check(const LockedJob *job, int64 run_id);
extern Datum run_record(const LockedJob *job, const WorkflowRun *run, const char *delivery_id);

/* instances.c */
extern void check_server_id(const char *server_id, const char *where);

/* events.c */
extern const char *event_kind_name(EventKind kind);
extern void        event_notify(const pg_uuid_t *job_id, const pg_uuid_t *agent_id, EventKind kind,
								JobStatus to);

/* rows.c: unique-key probes and row locks without the executor */
typedef struct RowProbe
{
	Relation        rel;
	Relation        index;
	TupleTableSlot *slot;     /* the row found */
	Snapshot        snapshot; /* registered */
} RowProbe;

extern void row_probe_begin(RowProbe *p, const char *table, const char *index, LOCKMODE lockmode);
extern bool row_probe_fetch(RowProbe *p, RegProcedure eqproc, Datum key);
extern bool row_probe_lock(RowProbe *p, LockTupleMode mode, bool *contended);
extern void row_probe_end(RowProbe *p);
extern void schema_outdated(const char *table, const char *column) pg_attribute_noreturn();

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
