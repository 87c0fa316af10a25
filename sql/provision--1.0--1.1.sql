-- provision 1.0 -> 1.1 (ALTER EXTENSION provision UPDATE TO '1.1').
-- Every 1.1 change to the schema is here, in the order it was made; a
-- database updated through this script must end with the same objects as
-- one created by sql/provision.sql at 1.1, with every 1.0 row kept.
\echo Use "ALTER EXTENSION provision UPDATE TO '1.1'" to load this file. \quit

-- Stripe payments: handle_stripe_event, what the listener calls for a
-- verified Stripe event (its settings: provision.stripe_event_types).
CREATE FUNCTION provision.handle_stripe_event(event jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'handle_stripe_event'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.handle_stripe_event(jsonb) IS
    'Enqueues a job (key stripe:<event id>) for the agent a paid Checkout Session names; other events are ignored';
-- Like every function: EXECUTE only for the roles granted it.
REVOKE ALL ON FUNCTION provision.handle_stripe_event(jsonb) FROM PUBLIC;

-- Delivery binding: a delivery id is bound to the job and the payload it
-- delivered. Rows recorded by 1.0 keep a null digest and match on their job.
ALTER TABLE provision.callback_deliveries ADD COLUMN payload_sha256 bytea;
COMMENT ON COLUMN provision.callback_deliveries.payload_sha256 IS
    'SHA-256 of the payload as jsonb text; the same id with another payload is refused (null: recorded before 1.1)';

-- Run fencing and dispatch records: the workflow run that owns a job, the
-- dispatcher's record of it, retries of failed jobs, and their event kinds.
ALTER TABLE provision.provisioning_jobs
    ADD COLUMN workflow_run_id bigint,
    ADD COLUMN workflow_run_url text;
COMMENT ON COLUMN provision.provisioning_jobs.workflow_run_id IS
    'The GitHub Actions run that owns the job; callbacks of other runs are refused (null until known)';
COMMENT ON COLUMN provision.provisioning_jobs.workflow_run_url IS
    'Web address of that run, as record_dispatch got it from GitHub (null if not given)';
COMMENT ON COLUMN provision.events.kind IS
    'enqueued, dispatched, status, completed, failed, expired, run or retried';
COMMENT ON COLUMN provision.events.detail IS
    'Error text, VM metadata, delivery id, workflow run, retried job, as applicable';

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

-- SECURITY DEFINER: EXECUTE is the only gate, granted to the dispatcher.
REVOKE ALL ON FUNCTION
    provision.record_dispatch(uuid, bigint, text),
    provision.retry_failed_jobs(integer)
FROM PUBLIC;
