-- A hostile schema placed before pg_catalog on search_path, holding
-- look-alikes of the tables, functions, operators and types the extension
-- uses, plus temporary tables shadowing the extension's tables, changes
-- nothing: every statement the extension runs is schema-qualified and the
-- mutating functions pin their search_path.  Each look-alike records that
-- it was used in regress_evil.called, which must stay empty.
SET client_min_messages = warning;

CREATE SCHEMA regress_evil;
CREATE TABLE regress_evil.called (what text);
GRANT ALL ON SCHEMA regress_evil TO PUBLIC;
GRANT ALL ON TABLE regress_evil.called TO PUBLIC;

-- Tables with the extension's names, in the hostile schema and in pg_temp.
CREATE TABLE regress_evil.agents (LIKE provision.agents INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE regress_evil.provisioning_jobs (LIKE provision.provisioning_jobs INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE regress_evil.agent_instances (LIKE provision.agent_instances INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE regress_evil.callback_deliveries (LIKE provision.callback_deliveries INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE regress_evil.events (LIKE provision.events INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TEMP TABLE agents (LIKE provision.agents INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TEMP TABLE provisioning_jobs (LIKE provision.provisioning_jobs INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TEMP TABLE agent_instances (LIKE provision.agent_instances INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TEMP TABLE callback_deliveries (LIKE provision.callback_deliveries INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TEMP TABLE events (LIKE provision.events INCLUDING DEFAULTS INCLUDING IDENTITY);
INSERT INTO pg_temp.provisioning_jobs (id, agent_id, status)
VALUES ('d8000000-0000-4000-8000-000000000001',
        'c8000000-0000-4000-8000-000000000001', 'cancelled');
INSERT INTO pg_temp.callback_deliveries (delivery_id, result)
VALUES ('sp-1', '{"forged": true}');
INSERT INTO regress_evil.provisioning_jobs (id, agent_id, status)
VALUES ('d8000000-0000-4000-8000-000000000001',
        'c8000000-0000-4000-8000-000000000001', 'cancelled');
INSERT INTO regress_evil.callback_deliveries (delivery_id, result)
VALUES ('sp-1', '{"forged": true}');

-- Functions with the names of built-ins and of the extension's functions.
CREATE FUNCTION regress_evil.now() RETURNS timestamptz
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('now');
                   SELECT timestamptz '1999-01-01 00:00:00+00' $$;
CREATE FUNCTION regress_evil.clock_timestamp() RETURNS timestamptz
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('clock_timestamp');
                   SELECT timestamptz '1999-01-01 00:00:00+00' $$;
CREATE FUNCTION regress_evil.transaction_timestamp() RETURNS timestamptz
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('transaction_timestamp');
                   SELECT timestamptz '1999-01-01 00:00:00+00' $$;
CREATE FUNCTION regress_evil.gen_random_uuid() RETURNS uuid
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('gen_random_uuid');
                   SELECT uuid '00000000-0000-0000-0000-000000000000' $$;
CREATE FUNCTION regress_evil.pg_notify(text, text) RETURNS void
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('pg_notify') $$;
CREATE FUNCTION regress_evil.to_jsonb(text) RETURNS jsonb
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('to_jsonb');
                   SELECT '{}'::pg_catalog.jsonb $$;
CREATE FUNCTION regress_evil.jsonb_build_object(VARIADIC text[]) RETURNS jsonb
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('jsonb_build_object');
                   SELECT '{}'::pg_catalog.jsonb $$;
CREATE FUNCTION regress_evil.length(text) RETURNS int
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('length'); SELECT 1 $$;
CREATE FUNCTION regress_evil.octet_length(text) RETURNS int
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('octet_length'); SELECT 1 $$;
CREATE FUNCTION regress_evil.host(inet) RETURNS text
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('host'); SELECT '0.0.0.0' $$;
CREATE FUNCTION regress_evil.update_job_status(uuid, provision.job_status, text)
RETURNS provision.provisioning_jobs
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('update_job_status');
                   SELECT * FROM provision.provisioning_jobs LIMIT 0 $$;
CREATE FUNCTION regress_evil.record_heartbeat(uuid) RETURNS timestamptz
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('record_heartbeat');
                   SELECT timestamptz '1999-01-01 00:00:00+00' $$;
CREATE FUNCTION regress_evil.complete_provisioning_with_metadata(uuid, text, inet, inet)
RETURNS provision.agent_instances
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('complete_provisioning_with_metadata');
                   SELECT * FROM provision.agent_instances LIMIT 0 $$;
CREATE FUNCTION regress_evil.enqueue_job(uuid, text) RETURNS uuid
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('enqueue_job');
                   SELECT uuid '00000000-0000-0000-0000-000000000000' $$;
-- A job holding the key of the Stripe event below, for another agent, where
-- an unqualified lookup of the key would find it.
INSERT INTO pg_temp.provisioning_jobs (id, agent_id, idempotency_key)
VALUES ('d8000000-0000-4000-8000-000000000009',
        'c8000000-0000-4000-8000-000000000001', 'stripe:evt_sp_1');
INSERT INTO regress_evil.provisioning_jobs (id, agent_id, idempotency_key)
VALUES ('d8000000-0000-4000-8000-000000000009',
        'c8000000-0000-4000-8000-000000000001', 'stripe:evt_sp_1');

-- Operators that would match every row, or compare the wrong way.
CREATE FUNCTION regress_evil.always_true(uuid, uuid) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('= uuid'); SELECT true $$;
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid,
                                FUNCTION = regress_evil.always_true);
CREATE FUNCTION regress_evil.text_always_true(text, text) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('= text'); SELECT true $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text,
                                FUNCTION = regress_evil.text_always_true);
CREATE FUNCTION regress_evil.status_always_true(provision.job_status, provision.job_status)
RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('= job_status'); SELECT true $$;
CREATE OPERATOR regress_evil.= (LEFTARG = provision.job_status,
                                RIGHTARG = provision.job_status,
                                FUNCTION = regress_evil.status_always_true);
CREATE FUNCTION regress_evil.ts_always_true(timestamptz, timestamptz) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('< timestamptz'); SELECT true $$;
CREATE OPERATOR regress_evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz,
                                FUNCTION = regress_evil.ts_always_true);
CREATE FUNCTION regress_evil.ts_minus(timestamptz, interval) RETURNS timestamptz
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('- interval');
                   SELECT timestamptz '2999-01-01 00:00:00+00' $$;
CREATE OPERATOR regress_evil.- (LEFTARG = timestamptz, RIGHTARG = interval,
                                FUNCTION = regress_evil.ts_minus);
CREATE FUNCTION regress_evil.int_plus(integer, integer) RETURNS integer
LANGUAGE sql AS $$ INSERT INTO regress_evil.called VALUES ('+ integer'); SELECT 1000 $$;
CREATE OPERATOR regress_evil.+ (LEFTARG = integer, RIGHTARG = integer,
                                FUNCTION = regress_evil.int_plus);

-- Type look-alikes: a cast written without a schema would pick these.
CREATE DOMAIN regress_evil.uuid AS pg_catalog.text;
CREATE DOMAIN regress_evil.inet AS pg_catalog.text;
CREATE DOMAIN regress_evil.job_status AS pg_catalog.text;
CREATE DOMAIN regress_evil.agent_status AS pg_catalog.text;

INSERT INTO provision.agents (id, name)
SELECT ('c8000000-0000-4000-8000-00000000000' || n)::uuid, 'search-path-' || n
  FROM generate_series(1, 6) AS n;
INSERT INTO provision.provisioning_jobs (id, agent_id)
SELECT ('d8000000-0000-4000-8000-00000000000' || n)::uuid,
       ('c8000000-0000-4000-8000-00000000000' || n)::uuid
  FROM generate_series(1, 5) AS n;
-- A dispatched job for record_dispatch.
INSERT INTO provision.agents (id, name)
VALUES ('c8000000-0000-4000-8000-000000000007', 'search-path-7');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, dispatched_at)
VALUES ('d8000000-0000-4000-8000-000000000007', 'c8000000-0000-4000-8000-000000000007',
        'dispatched', pg_catalog.now());
-- A stale job for expire_stale_jobs.
INSERT INTO provision.provisioning_jobs
       (id, agent_id, status, attempts, dispatched_at, started_at)
VALUES ('d8000000-0000-4000-8000-000000000006',
        'c8000000-0000-4000-8000-000000000006', 'provisioning', 1,
        pg_catalog.now() - interval '3 hours', pg_catalog.now() - interval '2 hours');

-- Everything below runs with the hostile schema first, pg_catalog after it
-- (only an explicit position lets a schema come before pg_catalog), and
-- names every type and function it uses itself.
SET search_path = regress_evil, pg_catalog, provision, public;

SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000001",
                            "status": "provisioning"}', 'sp-1')
       OPERATOR(pg_catalog.->>) 'job_status' AS provisioning;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000001",
                            "status": "heartbeat"}', 'sp-2')
       OPERATOR(pg_catalog.->>) 'action' AS heartbeat;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000001",
                            "status": "running", "server_id": "sp-srv",
                            "server_ip": "203.0.113.88",
                            "tailscale_ip": "100.64.8.8"}', 'sp-3')
       OPERATOR(pg_catalog.->>) 'job_status' AS running;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000001",
                            "status": "provisioning"}', 'sp-1')
       OPERATOR(pg_catalog.->>) 'duplicate' AS duplicate;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000002",
                            "status": "failed", "error": "e"}', 'sp-4')
       OPERATOR(pg_catalog.->>) 'job_status' AS failed;
SELECT (provision.update_job_status('d8000000-0000-4000-8000-000000000003'::pg_catalog.uuid,
                                    'cancelled'::provision.job_status)).status AS cancelled;
SELECT (provision.complete_provisioning_with_metadata(
          'd8000000-0000-4000-8000-000000000004'::pg_catalog.uuid, 'sp-direct',
          '203.0.113.89'::pg_catalog.inet, '100.64.8.9'::pg_catalog.inet)).server_id;
SELECT provision.record_heartbeat('d8000000-0000-4000-8000-000000000004'::pg_catalog.uuid)
       OPERATOR(pg_catalog.>) pg_catalog.timestamptz '2000-01-01' AS heartbeat_is_real_time;
SELECT provision.enqueue_job('c8000000-0000-4000-8000-000000000005'::pg_catalog.uuid)
       OPERATOR(pg_catalog.=) 'd8000000-0000-4000-8000-000000000005'::pg_catalog.uuid
       AS returns_open_job;
SELECT provision.expire_stale_jobs('1 hour'::pg_catalog.interval) AS expired;
-- A Stripe event for agent 3, whose job is cancelled by now: a new job
-- keyed by the event id, then its replay.
SELECT provision.handle_stripe_event(
         pg_catalog.jsonb '{"id": "evt_sp_1", "type": "checkout.session.completed",
                            "data": {"object": {"client_reference_id":
                                                  "c8000000-0000-4000-8000-000000000003",
                                                "payment_status": "paid"}}}')
       OPERATOR(pg_catalog.-) 'job_id' AS stripe_enqueued;
SELECT provision.handle_stripe_event(
         pg_catalog.jsonb '{"id": "evt_sp_1", "type": "checkout.session.completed",
                            "data": {"object": {"client_reference_id":
                                                  "c8000000-0000-4000-8000-000000000003",
                                                "payment_status": "paid"}}}')
       OPERATOR(pg_catalog.->>) 'duplicate' AS stripe_duplicate;
-- 1.1: a callback that records its workflow run, the dispatcher's record
-- of another job's run, a delivery id reused for another payload, a
-- retry of a failed job, and a re-run refused because of it.
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000005",
                            "status": "provisioning", "run_id": 5005}', 'sp-5')
       OPERATOR(pg_catalog.->>) 'job_status' AS run_recorded;
SELECT (provision.record_dispatch('d8000000-0000-4000-8000-000000000007'::pg_catalog.uuid,
                                  7007::pg_catalog.int8,
                                  'https://github.com/acme/infra/actions/runs/7007')).workflow_run_id
       AS dispatch_recorded;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000005",
                            "status": "heartbeat", "run_id": 5005}', 'sp-5');
UPDATE provision.provisioning_jobs SET failed_at = pg_catalog.timestamptz '2000-01-01 00:00:00+00'
 WHERE id OPERATOR(pg_catalog.=) 'd8000000-0000-4000-8000-000000000002'::pg_catalog.uuid;
SET provision.retry_delay = '1h';
SELECT provision.retry_failed_jobs() OPERATOR(pg_catalog.>=) 1 AS retried;
RESET provision.retry_delay;
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000002",
                            "status": "provisioning"}');
-- An error path, too.
SELECT provision.handle_callback(
         pg_catalog.jsonb '{"job_id": "d8000000-0000-4000-8000-000000000003",
                            "status": "provisioning"}');

RESET search_path;

-- No look-alike was used, the shadowing tables are as they were, and the
-- real rows carry real timestamps.
SELECT what, count(*) FROM regress_evil.called GROUP BY what ORDER BY what;
SELECT (SELECT count(*) FROM regress_evil.provisioning_jobs) AS evil_jobs,
       (SELECT count(*) FROM regress_evil.callback_deliveries) AS evil_deliveries,
       (SELECT count(*) FROM regress_evil.agents) AS evil_agents,
       (SELECT count(*) FROM regress_evil.agent_instances) AS evil_instances,
       (SELECT count(*) FROM regress_evil.events) AS evil_events,
       (SELECT count(*) FROM pg_temp.provisioning_jobs) AS temp_jobs,
       (SELECT count(*) FROM pg_temp.callback_deliveries) AS temp_deliveries,
       (SELECT count(*) FROM pg_temp.agent_instances) AS temp_instances,
       (SELECT count(*) FROM pg_temp.events) AS temp_events;
SELECT j.id, j.status, j.attempts, j.error, a.status AS agent_status,
       j.updated_at > now() - interval '1 hour' AS updated_now,
       j.last_heartbeat_at > now() - interval '1 hour' AS beat_now
  FROM provision.provisioning_jobs j
  JOIN provision.agents a ON a.id = j.agent_id
 WHERE j.id::text LIKE 'd8000000-%'
 ORDER BY j.id;
SELECT count(*) AS jobs_of_agent_5
  FROM provision.provisioning_jobs
 WHERE agent_id = 'c8000000-0000-4000-8000-000000000005';
SELECT idempotency_key, status, created_at > now() - interval '1 hour' AS created_now
  FROM provision.provisioning_jobs
 WHERE agent_id = 'c8000000-0000-4000-8000-000000000003' AND idempotency_key IS NOT NULL;
SELECT i.server_id, i.server_ip, i.tailscale_ip,
       i.created_at > now() - interval '1 hour' AS created_now
  FROM provision.agent_instances i
 WHERE i.agent_id::text LIKE 'c8000000-%'
 ORDER BY i.server_id;
SELECT delivery_id, result->>'job_status' AS job_status
  FROM provision.callback_deliveries
 WHERE delivery_id LIKE 'sp-%' ORDER BY delivery_id;
SELECT job_id, kind, from_status, to_status, at > now() - interval '1 hour' AS at_now
  FROM provision.events
 WHERE job_id::text LIKE 'd8000000-%'
 ORDER BY id;

SELECT e.kind, e.from_status, e.to_status, e.detail OPERATOR(pg_catalog.->>) 'failed_job_id' AS failed_job_id
  FROM provision.events e
 WHERE e.agent_id = 'c8000000-0000-4000-8000-000000000002' AND e.kind = 'retried';

DROP SCHEMA regress_evil CASCADE;
RESET client_min_messages;
