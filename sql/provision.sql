\echo Use "CREATE EXTENSION provision" to load this file. \quit

-- provision: provisioning jobs, VM instances and signed callbacks for
-- hosted agents. Every state change goes through the C functions below; the
-- tables stay plain so that DBAs can read them and insert agents directly.

CREATE TYPE provision.agent_status AS ENUM ('draft', 'provisioning', 'active', 'failed');
COMMENT ON TYPE provision.agent_status IS
    'Lifecycle of a hosted agent: draft until paid and provisioned, active once its VM runs';

CREATE TYPE provision.job_status AS ENUM
    ('pending', 'dispatched', 'provisioning', 'running', 'failed', 'cancelled');
COMMENT ON TYPE provision.job_status IS
    'Lifecycle of a provisioning job; pending, dispatched and provisioning are the open states';

CREATE TABLE provision.agents (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name        text NOT NULL,
    status      provision.agent_status NOT NULL DEFAULT 'draft',
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE provision.agents IS 'Hosted agents, one VM each once provisioned';
COMMENT ON COLUMN provision.agents.id IS 'Agent identifier';
COMMENT ON COLUMN provision.agents.name IS 'Display name, 1 to 255 characters';
COMMENT ON COLUMN provision.agents.status IS 'Follows its jobs: provisioning, active once running, failed';
COMMENT ON COLUMN provision.agents.created_at IS 'When the agent was created';
COMMENT ON COLUMN provision.agents.updated_at IS 'When the agent last changed status';

-- Agents are written directly by DBAs, so the length of a name is checked
-- in the table itself: by a constraint trigger on INSERT and UPDATE OF name
-- rather than a CHECK, which would run on every status change too.
CREATE FUNCTION provision.agent_name_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'agent_name_check'
LANGUAGE C;
COMMENT ON FUNCTION provision.agent_name_check() IS
    'Trigger of constraint agents_name_length: an agent name is 1 to 255 characters (23514)';

CREATE CONSTRAINT TRIGGER agents_name_length
    AFTER INSERT OR UPDATE OF name ON provision.agents
    FOR EACH ROW EXECUTE FUNCTION provision.agent_name_check();

-- CHECK constraints cost on every row change: PostgreSQL parses and plans
-- each expression anew for every statement that writes the table, so the
-- cost grows with the size of the expression. The tables written only by the
-- functions therefore carry one CHECK, backing the state machine, that calls
-- one C function; the functions enforce the length limits (idempotency_key,
-- error, server_id, delivery_id) and write only known event kinds, each with
-- an error naming the argument.
CREATE FUNCTION provision.job_status_timestamp_set(status provision.job_status,
    completed_at timestamptz, failed_at timestamptz)
RETURNS boolean
AS 'MODULE_PATHNAME', 'job_status_timestamp_set'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION provision.job_status_timestamp_set(provision.job_status, timestamptz, timestamptz) IS
    'Whether a job in status has the timestamp it requires: completed_at when running, failed_at when failed';

-- fillfactor leaves room on each page so that heartbeats, which change only
-- unindexed columns, stay HOT updates.
CREATE TABLE provision.provisioning_jobs (
    id                 uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    agent_id           uuid NOT NULL REFERENCES provision.agents (id),
    status             provision.job_status NOT NULL DEFAULT 'pending',
    idempotency_key    text COLLATE "C" UNIQUE,
    attempts           integer NOT NULL DEFAULT 0,
    error              text,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    dispatched_at      timestamptz,
    started_at         timestamptz,
    completed_at       timestamptz,
    failed_at          timestamptz,
    last_heartbeat_at  timestamptz,
    workflow_run_id    bigint,
    workflow_run_url   text,
    CONSTRAINT provisioning_jobs_status_timestamp
        CHECK (provision.job_status_timestamp_set(status, completed_at, failed_at))
) WITH (fillfactor = 80);
COMMENT ON TABLE provision.provisioning_jobs IS
    'One provisioning run of an agent VM; changed only through the provision functions';
COMMENT ON COLUMN provision.provisioning_jobs.id IS 'Job identifier, sent in every callback';
COMMENT ON COLUMN provision.provisioning_jobs.agent_id IS 'The agent this job provisions';
COMMENT ON COLUMN provision.provisioning_jobs.status IS 'State machine position';
COMMENT ON COLUMN provision.provisioning_jobs.idempotency_key IS
    'Caller key (e.g. the payment event id); enqueue_job returns the same job for the same key';
COMMENT ON COLUMN provision.provisioning_jobs.attempts IS
    'Provisioning attempts: moves into provisioning, and into running from other than provisioning';
COMMENT ON COLUMN provision.provisioning_jobs.error IS 'Why the job failed; cleared when it leaves failed';
COMMENT ON COLUMN provision.provisioning_jobs.created_at IS 'When the job was enqueued';
COMMENT ON COLUMN provision.provisioning_jobs.updated_at IS 'When the job last changed status';
COMMENT ON COLUMN provision.provisioning_jobs.dispatched_at IS 'When the job last entered dispatched';
COMMENT ON COLUMN provision.provisioning_jobs.started_at IS 'When the job last entered provisioning';
COMMENT ON COLUMN provision.provisioning_jobs.completed_at IS 'When the job last entered running';
COMMENT ON COLUMN provision.provisioning_jobs.failed_at IS 'When the job last entered failed';
COMMENT ON COLUMN provision.provisioning_jobs.last_heartbeat_at IS 'Last heartbeat of the current attempt';
COMMENT ON COLUMN provision.provisioning_jobs.workflow_run_id IS
    'The GitHub Actions run that owns the job; callbacks of other runs are refused (null until known)';
COMMENT ON COLUMN provision.provisioning_jobs.workflow_run_url IS
    'Web address of that run, as record_dispatch got it from GitHub (null if not given)';

CREATE UNIQUE INDEX provisioning_jobs_one_open_per_agent
    ON provision.provisioning_jobs (agent_id)
    WHERE status IN ('pending', 'dispatched', 'provisioning');
COMMENT ON INDEX provision.provisioning_jobs_one_open_per_agent IS
    'At most one open (pending, dispatched, provisioning) job per agent; expire_stale_jobs reads the open jobs through it';

CREATE INDEX provisioning_jobs_pending
    ON provision.provisioning_jobs (created_at, id)
    WHERE status = 'pending';
COMMENT ON INDEX provision.provisioning_jobs_pending IS 'claim_jobs: pending jobs, oldest first';

-- expire_stale_jobs needs no index of its own: the open jobs it looks at
-- (dispatched, provisioning) are a subset of those one_open_per_agent
-- indexes, and every index more is opened and checked by every write of a
-- job, heartbeats included. The heartbeat timestamps are deliberately not
-- indexed: an index on them would turn every heartbeat into a non-HOT
-- update of every index.

CREATE TABLE provision.agent_instances (
    id                 uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    agent_id           uuid NOT NULL UNIQUE REFERENCES provision.agents (id),
    job_id             uuid NOT NULL REFERENCES provision.provisioning_jobs (id),
    server_id          text NOT NULL,
    server_ip          inet NOT NULL,
    tailscale_ip       inet NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_heartbeat_at  timestamptz
) WITH (fillfactor = 80);
COMMENT ON TABLE provision.agent_instances IS 'The VM of each agent (one per agent), updated in place when re-created';
COMMENT ON COLUMN provision.agent_instances.id IS 'Instance identifier';
COMMENT ON COLUMN provision.agent_instances.agent_id IS 'The agent this VM serves';
COMMENT ON COLUMN provision.agent_instances.job_id IS 'The job that last created or re-created this VM';
COMMENT ON COLUMN provision.agent_instances.server_id IS 'Cloud provider server id, 1 to 255 characters';
COMMENT ON COLUMN provision.agent_instances.server_ip IS 'Public address of the VM';
COMMENT ON COLUMN provision.agent_instances.tailscale_ip IS 'Tailnet address of the VM';
COMMENT ON COLUMN provision.agent_instances.created_at IS 'When the instance was first recorded';
COMMENT ON COLUMN provision.agent_instances.updated_at IS 'When its metadata last changed';
COMMENT ON COLUMN provision.agent_instances.last_heartbeat_at IS 'Last heartbeat from the job that created it';

CREATE INDEX agent_instances_job_id ON provision.agent_instances (job_id);
COMMENT ON INDEX provision.agent_instances_job_id IS 'Instances by job (foreign key checks)';

-- Delivery ids and idempotency keys are opaque: they are compared byte for
-- byte (COLLATE "C"), which needs no linguistic order and makes each
-- comparison in their unique indexes a memcmp.
CREATE TABLE provision.callback_deliveries (
    delivery_id     text COLLATE "C" PRIMARY KEY,
    job_id          uuid,
    received_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    result          jsonb NOT NULL,
    payload_sha256  bytea
);
COMMENT ON TABLE provision.callback_deliveries IS
    'Callback deliveries already handled, with their result, so that a redelivery changes nothing';
COMMENT ON COLUMN provision.callback_deliveries.delivery_id IS 'Sender delivery id (X-GitHub-Delivery or webhook-id), 1 to 255 bytes';
COMMENT ON COLUMN provision.callback_deliveries.job_id IS 'The job the delivery was about';
COMMENT ON COLUMN provision.callback_deliveries.received_at IS 'When the delivery was handled; prune_history deletes by it';
COMMENT ON COLUMN provision.callback_deliveries.result IS 'The handle_callback result returned for it';
COMMENT ON COLUMN provision.callback_deliveries.payload_sha256 IS
    'SHA-256 of the payload as jsonb text; the same id with another payload is refused (null: recorded before 1.1)';

-- BRIN: rows arrive in time order, and prune_history is the only reader by time.
CREATE INDEX callback_deliveries_received_at
    ON provision.callback_deliveries USING brin (received_at);
COMMENT ON INDEX provision.callback_deliveries_received_at IS 'prune_history: deliveries by age';

CREATE TABLE provision.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    job_id       uuid,
    agent_id     uuid,
    kind         text NOT NULL,
    from_status  text,
    to_status    text,
    detail       jsonb
);
COMMENT ON TABLE provision.events IS
    'Append-only history: one row per state change, written in the same transaction';
COMMENT ON COLUMN provision.events.id IS 'Increasing id; consumers read new events by it';
COMMENT ON COLUMN provision.events.at IS 'Transaction time of the change';
COMMENT ON COLUMN provision.events.job_id IS 'The job that changed';
COMMENT ON COLUMN provision.events.agent_id IS 'The agent of that job';
COMMENT ON COLUMN provision.events.kind IS
    'enqueued, dispatched, status, completed, failed, expired, run or retried';
COMMENT ON COLUMN provision.events.from_status IS 'Job status before the change (null for enqueued)';
COMMENT ON COLUMN provision.events.to_status IS 'Job status after the change';
COMMENT ON COLUMN provision.events.detail IS
    'Error text, VM metadata, delivery id, workflow run, retried job, as applicable';

CREATE INDEX events_at ON provision.events USING brin (at);
COMMENT ON INDEX provision.events_at IS 'prune_history: events by age';

COMMENT ON INDEX provision.agents_pkey IS 'Agents by id';
COMMENT ON INDEX provision.provisioning_jobs_pkey IS 'Jobs by id; callbacks lock jobs through it';
COMMENT ON INDEX provision.provisioning_jobs_idempotency_key_key IS 'One job per idempotency key';
COMMENT ON INDEX provision.agent_instances_pkey IS 'Instances by id';
COMMENT ON INDEX provision.agent_instances_agent_id_key IS 'One instance per agent';
COMMENT ON INDEX provision.callback_deliveries_pkey IS 'Each delivery id is recorded once';
COMMENT ON INDEX provision.events_pkey IS 'Events by id, the order consumers read them in';

COMMENT ON SCHEMA provision IS 'Provisioning of hosted agents: jobs, VM instances, callbacks, history';
COMMENT ON SEQUENCE provision.events_id_seq IS 'Identity of provision.events.id';

COMMENT ON CONSTRAINT agents_pkey ON provision.agents IS 'Agents are identified by id';
COMMENT ON CONSTRAINT agents_name_length ON provision.agents IS
    'Names are 1 to 255 characters, also for agents inserted directly';
COMMENT ON CONSTRAINT provisioning_jobs_pkey ON provision.provisioning_jobs IS 'Jobs are identified by id';
COMMENT ON CONSTRAINT provisioning_jobs_agent_id_fkey ON provision.provisioning_jobs IS
    'Every job provisions an existing agent';
COMMENT ON CONSTRAINT provisioning_jobs_idempotency_key_key ON provision.provisioning_jobs IS
    'An idempotency key names one job';
COMMENT ON CONSTRAINT provisioning_jobs_status_timestamp ON provision.provisioning_jobs IS
    'A running job records when it entered running (completed_at), a failed job when it failed (failed_at)';
COMMENT ON CONSTRAINT agent_instances_pkey ON provision.agent_instances IS 'Instances are identified by id';
COMMENT ON CONSTRAINT agent_instances_agent_id_key ON provision.agent_instances IS
    'One instance per agent, updated in place when the VM is re-created';
COMMENT ON CONSTRAINT agent_instances_agent_id_fkey ON provision.agent_instances IS
    'Every instance serves an existing agent';
COMMENT ON CONSTRAINT agent_instances_job_id_fkey ON provision.agent_instances IS
    'Every instance was created by an existing job';
COMMENT ON CONSTRAINT callback_deliveries_pkey ON provision.callback_deliveries IS
    'A delivery id is recorded once, which makes redeliveries no-ops';
COMMENT ON CONSTRAINT events_pkey ON provision.events IS 'Events are identified by their increasing id';

-- Without these, pg_dump would dump the schema but none of the rows.
SELECT pg_catalog.pg_extension_config_dump('provision.agents', '');
SELECT pg_catalog.pg_extension_config_dump('provision.provisioning_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('provision.agent_instances', '');
SELECT pg_catalog.pg_extension_config_dump('provision.callback_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('provision.events', '');
SELECT pg_catalog.pg_extension_config_dump('provision.events_id_seq', '');

-- Tables are changed only through the functions; no role but the owner needs
-- direct access (DBAs grant SELECT where they want it).
REVOKE ALL ON provision.agents, provision.provisioning_jobs, provision.agent_instances,
    provision.callback_deliveries, provision.events FROM PUBLIC;

CREATE FUNCTION provision.enqueue_job(agent_id uuid, idempotency_key text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'enqueue_job'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.enqueue_job(uuid, text) IS
    'Creates a pending job for the agent; the same idempotency key, or an open job, returns the existing job';

CREATE FUNCTION provision.claim_jobs(max_jobs integer DEFAULT 1)
RETURNS SETOF provision.provisioning_jobs
AS 'MODULE_PATHNAME', 'claim_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 1;
COMMENT ON FUNCTION provision.claim_jobs(integer) IS
    'Moves up to max_jobs pending jobs, oldest first, to dispatched; concurrent claimers skip each other''s jobs';

CREATE FUNCTION provision.update_job_status(job_id uuid, status provision.job_status, error text DEFAULT NULL)
RETURNS provision.provisioning_jobs
AS 'MODULE_PATHNAME', 'update_job_status'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.update_job_status(uuid, provision.job_status, text) IS
    'Moves a job through the state machine (error text with failed) and returns the job row';

CREATE FUNCTION provision.complete_provisioning_with_metadata(job_id uuid, server_id text,
    server_ip inet, tailscale_ip inet)
RETURNS provision.agent_instances
AS 'MODULE_PATHNAME', 'complete_provisioning_with_metadata'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.complete_provisioning_with_metadata(uuid, text, inet, inet) IS
    'Marks the job running, records or updates the agent''s VM and activates the agent';

CREATE FUNCTION provision.record_heartbeat(job_id uuid)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'record_heartbeat'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.record_heartbeat(uuid) IS
    'Records a sign of life of the job (and of the VM it created); no status change';

CREATE FUNCTION provision.handle_callback(payload jsonb, delivery_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'handle_callback'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.handle_callback(jsonb, text) IS
    'Applies one workflow callback exactly once per delivery id and returns the result object';

CREATE FUNCTION provision.handle_stripe_event(event jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'handle_stripe_event'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.handle_stripe_event(jsonb) IS
    'Enqueues a job (key stripe:<event id>) for the agent a paid Checkout Session names; other events are ignored';

CREATE FUNCTION provision.expire_stale_jobs(older_than interval DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'expire_stale_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.expire_stale_jobs(interval) IS
    'Fails dispatched and provisioning jobs silent for longer than older_than (default provision.heartbeat_timeout)';

CREATE FUNCTION provision.prune_history(older_than interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'prune_history'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.prune_history(interval) IS
    'Deletes deliveries and events older than older_than (default provision.history_retention)';

CREATE FUNCTION provision.record_dispatch(job_id uuid, run_id bigint DEFAULT NULL,
    run_url text DEFAULT NULL)
RETURNS provision.provisioning_jobs
AS 'MODULE_PATHNAME', 'record_dispatch'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.record_dispatch(uuid, bigint, text) IS
    'Records the workflow run a dispatch started as the owner of the job; other runs'' callbacks are then refused';

CREATE FUNCTION provision.retry_failed_jobs(max_attempts integer DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'retry_failed_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.retry_failed_jobs(integer) IS
    'Enqueues a new job for agents whose newest job failed, with backoff, up to max_attempts jobs (default provision.max_attempts)';

-- The functions run as their owner (SECURITY DEFINER), so EXECUTE is the only
-- gate: PUBLIC must not get it by default. Grant each function to the role
-- that needs it (the listener: handle_callback, and handle_stripe_event
-- when it serves Stripe; the dispatcher: claim_jobs, record_dispatch,
-- retry_failed_jobs, update_job_status). The two behind the
-- constraints need no grant for the provision functions, which run as the
-- owner, nor for a trigger to fire; only a role other than the owner that
-- writes provisioning_jobs directly needs EXECUTE on job_status_timestamp_set.
REVOKE ALL ON FUNCTION
    provision.agent_name_check(),
    provision.job_status_timestamp_set(provision.job_status, timestamptz, timestamptz),
    provision.enqueue_job(uuid, text),
    provision.claim_jobs(integer),
    provision.update_job_status(uuid, provision.job_status, text),
    provision.complete_provisioning_with_metadata(uuid, text, inet, inet),
    provision.record_heartbeat(uuid),
    provision.handle_callback(jsonb, text),
    provision.handle_stripe_event(jsonb),
    provision.expire_stale_jobs(interval),
    provision.prune_history(interval),
    provision.record_dispatch(uuid, bigint, text),
    provision.retry_failed_jobs(integer)
FROM PUBLIC;
