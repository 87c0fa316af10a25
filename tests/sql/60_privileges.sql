-- Privileges: EXECUTE is revoked from PUBLIC on every function; the
-- mutating functions are SECURITY DEFINER with a pinned search_path; a role
-- granted only USAGE on the schema and EXECUTE on handle_callback can run
-- the listener's one call and nothing else (and, granted handle_stripe_event
-- too, the Stripe route's call).
SET client_min_messages = warning;

-- Every function of the schema: nobody but the owner may execute it by
-- default, and the mutating ones run as their owner with a fixed path.
SELECT p.oid::regprocedure AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
       p.prosecdef AS security_definer,
       p.proconfig AS settings
  FROM pg_proc p
 WHERE p.pronamespace = 'provision'::regnamespace
 ORDER BY p.proname, 1::text;

-- Nor may PUBLIC touch the tables.
SELECT c.relname,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select,
       has_table_privilege('public', c.oid, 'INSERT') AS public_insert,
       has_table_privilege('public', c.oid, 'UPDATE') AS public_update,
       has_table_privilege('public', c.oid, 'DELETE') AS public_delete
  FROM pg_class c
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname;

CREATE ROLE regress_provision_listener NOLOGIN;
CREATE ROLE regress_provision_nobody NOLOGIN;
GRANT USAGE ON SCHEMA provision TO regress_provision_listener;
GRANT EXECUTE ON FUNCTION provision.handle_callback(jsonb, text)
   TO regress_provision_listener;

INSERT INTO provision.agents (id, name)
VALUES ('c7000000-0000-4000-8000-000000000001', 'privileges-1'),
       ('c7000000-0000-4000-8000-000000000002', 'privileges-2');
INSERT INTO provision.provisioning_jobs (id, agent_id)
VALUES ('d7000000-0000-4000-8000-000000000001', 'c7000000-0000-4000-8000-000000000001'),
       ('d7000000-0000-4000-8000-000000000002', 'c7000000-0000-4000-8000-000000000002');

-- The least-privileged role runs every callback route.
SET ROLE regress_provision_listener;
SELECT r->>'action' AS action, r->>'applied' AS applied,
       r->>'duplicate' AS duplicate, r->>'job_status' AS job_status,
       r->>'agent_status' AS agent_status
  FROM provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000001",
           "status": "provisioning"}', 'priv-1') AS r;
SELECT r->>'action' AS action, r->>'applied' AS applied,
       r->>'duplicate' AS duplicate, r->>'job_status' AS job_status
  FROM provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000001",
           "status": "heartbeat"}', 'priv-2') AS r;
SELECT r->>'action' AS action, r->>'applied' AS applied,
       r->>'duplicate' AS duplicate, r->>'job_status' AS job_status,
       r->>'agent_status' AS agent_status, r ? 'instance_id' AS has_instance
  FROM provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000001", "status": "running",
           "server_id": 77, "server_ip": "203.0.113.77",
           "tailscale_ip": "100.64.7.7"}', 'priv-3') AS r;
SELECT r->>'action' AS action, r->>'applied' AS applied,
       r->>'duplicate' AS duplicate, r->>'job_status' AS job_status
  FROM provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000001",
           "status": "provisioning"}', 'priv-1') AS r;
SELECT r->>'action' AS action, r->>'applied' AS applied,
       r->>'job_status' AS job_status, r->>'agent_status' AS agent_status
  FROM provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000002", "status": "failed",
           "error": "no capacity"}') AS r;
-- Its errors are the same as anyone's.
SELECT regress.try($$SELECT provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000001", "status": "failed"}')$$)
       AS refused_transition;
SELECT regress.try($$SELECT provision.handle_callback(
         '{"job_id": "00000000-0000-4000-8000-000000000000", "status": "failed"}')$$)
       AS unknown_job;
SELECT regress.try($$SELECT provision.handle_callback('{"status": "failed"}')$$)
       AS missing_job_id;

-- It can neither read nor write any table, nor call any other function.
SELECT label, regress.try(stmt) AS outcome
  FROM (VALUES
    ('select agents', 'SELECT count(*) FROM provision.agents'),
    ('select jobs', 'SELECT count(*) FROM provision.provisioning_jobs'),
    ('select instances', 'SELECT count(*) FROM provision.agent_instances'),
    ('select deliveries', 'SELECT count(*) FROM provision.callback_deliveries'),
    ('select events', 'SELECT count(*) FROM provision.events'),
    ('insert agent', $$INSERT INTO provision.agents (name) VALUES ('x')$$),
    ('update job', $$UPDATE provision.provisioning_jobs SET status = 'running'$$),
    ('delete delivery', 'DELETE FROM provision.callback_deliveries'),
    ('insert event', $$INSERT INTO provision.events (kind) VALUES ('completed')$$),
    ('truncate events', 'TRUNCATE provision.events'),
    ('enqueue_job', $$SELECT provision.enqueue_job('c7000000-0000-4000-8000-000000000001')$$),
    ('claim_jobs', 'SELECT * FROM provision.claim_jobs(1)'),
    ('update_job_status', $$SELECT provision.update_job_status('d7000000-0000-4000-8000-000000000002', 'cancelled')$$),
    ('complete_provisioning_with_metadata', $$SELECT provision.complete_provisioning_with_metadata('d7000000-0000-4000-8000-000000000002', 's', '203.0.113.1', '100.64.0.1')$$),
    ('record_heartbeat', $$SELECT provision.record_heartbeat('d7000000-0000-4000-8000-000000000001')$$),
    ('handle_stripe_event', $$SELECT provision.handle_stripe_event('{"id": "evt_priv_0", "type": "customer.created"}')$$),
    ('expire_stale_jobs', $$SELECT provision.expire_stale_jobs('0 seconds')$$),
    ('prune_history', $$SELECT provision.prune_history('0 seconds')$$),
    ('record_dispatch', $$SELECT provision.record_dispatch('d7000000-0000-4000-8000-000000000001', 1)$$),
    ('retry_failed_jobs', 'SELECT provision.retry_failed_jobs()'),
    ('create in schema', 'CREATE TABLE provision.intruder (x int)')
  ) AS t(label, stmt);
RESET ROLE;

-- A role without the grants cannot call handle_callback at all.
GRANT USAGE ON SCHEMA provision TO regress_provision_nobody;
SET ROLE regress_provision_nobody;
SELECT regress.try($$SELECT provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000002", "status": "heartbeat"}')$$)
       AS without_execute;
RESET ROLE;
REVOKE USAGE ON SCHEMA provision FROM regress_provision_nobody;
SET ROLE regress_provision_nobody;
SELECT regress.try($$SELECT provision.handle_callback(
         '{"job_id": "d7000000-0000-4000-8000-000000000002", "status": "heartbeat"}')$$)
       AS without_usage;
RESET ROLE;

-- With the Stripe route configured, the listener's role is also granted
-- EXECUTE on handle_stripe_event: that grant alone lets it enqueue a job
-- for a paid session, and its errors are the same as anyone's.
GRANT EXECUTE ON FUNCTION provision.handle_stripe_event(jsonb) TO regress_provision_listener;
SET ROLE regress_provision_listener;
SELECT r->>'action' AS action, r->>'duplicate' AS duplicate, r->>'agent_id' AS agent_id
  FROM provision.handle_stripe_event(
         '{"id": "evt_priv_1", "type": "checkout.session.completed",
           "data": {"object": {"client_reference_id": "c7000000-0000-4000-8000-000000000002",
                               "payment_status": "paid"}}}') AS r;
SELECT r->>'action' AS action, r->>'duplicate' AS duplicate
  FROM provision.handle_stripe_event(
         '{"id": "evt_priv_1", "type": "checkout.session.completed",
           "data": {"object": {"client_reference_id": "c7000000-0000-4000-8000-000000000002",
                               "payment_status": "paid"}}}') AS r;
SELECT provision.handle_stripe_event('{"id": "evt_priv_2", "type": "customer.created"}')
       ->> 'action' AS other_type;
SELECT regress.try($$SELECT provision.handle_stripe_event(
         '{"id": "evt_priv_3", "type": "checkout.session.completed",
           "data": {"object": {"client_reference_id": "c7000000-0000-4000-8000-0000000000ff",
                               "payment_status": "paid"}}}')$$) AS unknown_agent;
RESET ROLE;
SELECT agent_id, status, idempotency_key
  FROM provision.provisioning_jobs WHERE idempotency_key LIKE 'stripe:evt_priv_%';
REVOKE EXECUTE ON FUNCTION provision.handle_stripe_event(jsonb)
  FROM regress_provision_listener;

-- What the listener role did is all there, attributed to no one else.
SELECT j.id, j.status, j.attempts, j.error, a.status AS agent_status
  FROM provision.provisioning_jobs j
  JOIN provision.agents a ON a.id = j.agent_id
 WHERE j.id::text LIKE 'd7000000-%'
 ORDER BY j.id;
SELECT server_id, server_ip, tailscale_ip
  FROM provision.agent_instances
 WHERE agent_id = 'c7000000-0000-4000-8000-000000000001';
SELECT delivery_id, result->>'action' AS action
  FROM provision.callback_deliveries
 WHERE delivery_id LIKE 'priv-%' ORDER BY delivery_id;
SELECT job_id, kind, from_status, to_status
  FROM provision.events
 WHERE job_id::text LIKE 'd7000000-%'
 ORDER BY id;

-- A role a DBA lets write agents directly needs only the table grants: the
-- name limit is a trigger, which fires without EXECUTE on its function. A
-- role that writes jobs directly also needs EXECUTE on the function of
-- their CHECK constraint.
CREATE ROLE regress_provision_writer NOLOGIN;
GRANT USAGE ON SCHEMA provision TO regress_provision_writer;
GRANT SELECT, INSERT, UPDATE ON provision.agents, provision.provisioning_jobs
   TO regress_provision_writer;
SET ROLE regress_provision_writer;
SELECT label, regress.try(stmt, false) AS outcome
  FROM (VALUES
    ('insert agent', $$INSERT INTO provision.agents (id, name)
                       VALUES ('c7000000-0000-4000-8000-000000000003', 'privileges-3')$$),
    ('rename agent', $$UPDATE provision.agents SET name = 'privileges-3b'
                       WHERE id = 'c7000000-0000-4000-8000-000000000003'$$),
    ('empty name', $$UPDATE provision.agents SET name = ''
                     WHERE id = 'c7000000-0000-4000-8000-000000000003'$$),
    ('insert job', $$INSERT INTO provision.provisioning_jobs (agent_id)
                     VALUES ('c7000000-0000-4000-8000-000000000003')$$)
  ) AS t(label, stmt);
RESET ROLE;
GRANT EXECUTE ON FUNCTION
    provision.job_status_timestamp_set(provision.job_status, timestamptz, timestamptz)
   TO regress_provision_writer;
SET ROLE regress_provision_writer;
SELECT regress.try($$INSERT INTO provision.provisioning_jobs (id, agent_id)
                     VALUES ('d7000000-0000-4000-8000-000000000003',
                             'c7000000-0000-4000-8000-000000000003')$$) AS insert_job_granted;
RESET ROLE;
SELECT a.name, j.status
  FROM provision.agents a JOIN provision.provisioning_jobs j ON j.agent_id = a.id
 WHERE a.id = 'c7000000-0000-4000-8000-000000000003';
REVOKE ALL ON provision.agents, provision.provisioning_jobs FROM regress_provision_writer;
REVOKE ALL ON FUNCTION
    provision.job_status_timestamp_set(provision.job_status, timestamptz, timestamptz)
  FROM regress_provision_writer;
REVOKE USAGE ON SCHEMA provision FROM regress_provision_writer;
DROP ROLE regress_provision_writer;

REVOKE EXECUTE ON FUNCTION provision.handle_callback(jsonb, text)
  FROM regress_provision_listener;
REVOKE USAGE ON SCHEMA provision FROM regress_provision_listener;
DROP ROLE regress_provision_listener;
DROP ROLE regress_provision_nobody;
RESET client_min_messages;
