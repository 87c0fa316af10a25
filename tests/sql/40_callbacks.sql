-- handle_callback: every route, every invalid input with its SQLSTATE and
-- message, delivery dedup and the result object, and the events (or their
-- absence) behind each.
SET client_min_messages = warning;
CALL regress.reset();

-- The result object with the (random) instance id masked; the deliveries
-- check below compares it with the instance row.
CREATE FUNCTION pg_temp.cb(payload jsonb, delivery text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN r ? 'instance_id'
              THEN jsonb_set(r, '{instance_id}',
                             to_jsonb(CASE WHEN (r->>'instance_id')::uuid IS NOT NULL THEN 'uuid' END))
              ELSE r END
    FROM provision.handle_callback(payload, delivery) AS r
$$;

-- Errors of a payload (as text, so the cases read as written).
CREATE FUNCTION pg_temp.bad(payload text, delivery text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
  SELECT regress.try(format('SELECT provision.handle_callback(%L::jsonb, %L)', payload, delivery))
$$;

INSERT INTO provision.agents (id, name) VALUES
  ('4a000000-0000-4000-8000-000000000001', 'callbacks 1'),
  ('4a000000-0000-4000-8000-000000000002', 'callbacks 2'),
  ('4a000000-0000-4000-8000-000000000003', 'callbacks 3');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, dispatched_at) VALUES
  ('40000000-0000-4000-8000-000000000001', '4a000000-0000-4000-8000-000000000001', 'dispatched', '2000-01-01'),
  ('40000000-0000-4000-8000-000000000002', '4a000000-0000-4000-8000-000000000002', 'dispatched', '2000-01-01'),
  ('40000000-0000-4000-8000-000000000003', '4a000000-0000-4000-8000-000000000003', 'dispatched', '2000-01-01');

-- provisioning -> status update; a second one is a no-op (applied false).
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "provisioning"}', 'gh-1');
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "provisioning"}', 'gh-2');
-- heartbeat -> record_heartbeat (no instance yet).
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "heartbeat"}', 'gh-3');
-- running with all metadata (server_id a number) -> complete, instance created.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running",
                    "server_id": 12345678, "server_ip": "203.0.113.5", "tailscale_ip": "100.64.1.5",
                    "extra": {"ignored": true}}', 'gh-4');
SELECT server_id, server_ip, tailscale_ip FROM provision.agent_instances
 WHERE agent_id = '4a000000-0000-4000-8000-000000000001';
-- heartbeat of the running job now reports and beats the instance.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "heartbeat"}', 'gh-5');
SELECT last_heartbeat_at IS NOT NULL AS instance_beat FROM provision.agent_instances
 WHERE agent_id = '4a000000-0000-4000-8000-000000000001';
-- running without metadata on a running job: no-op; stale provisioning: no-op.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running"}', 'gh-6');
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "provisioning"}', 'gh-7');
-- running with metadata on a running job: the instance is updated in place.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running",
                    "server_id": "hz-2", "server_ip": "203.0.113.6", "tailscale_ip": "100.64.1.6"}', 'gh-8');
SELECT server_id, server_ip, tailscale_ip FROM provision.agent_instances
 WHERE agent_id = '4a000000-0000-4000-8000-000000000001';
-- failed on a running job: 55000, nothing recorded for the delivery.
SELECT pg_temp.bad('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "failed"}', 'gh-9');
SELECT count(*) AS recorded FROM provision.callback_deliveries WHERE delivery_id = 'gh-9';

-- running without metadata (backward compatible path) on job 2; JSON nulls
-- count as absent.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running",
                    "server_id": null, "server_ip": null, "tailscale_ip": null}');
SELECT count(*) AS instances FROM provision.agent_instances WHERE agent_id = '4a000000-0000-4000-8000-000000000002';

-- failed with an error text on job 3, then a re-run via provisioning, then
-- failed without error text, then heartbeat refused.
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed", "error": "hetzner: quota"}');
SELECT status, error, attempts FROM provision.provisioning_jobs WHERE id = '40000000-0000-4000-8000-000000000003';
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "provisioning"}');
SELECT status, error, attempts FROM provision.provisioning_jobs WHERE id = '40000000-0000-4000-8000-000000000003';
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed"}');
SELECT status, error FROM provision.provisioning_jobs WHERE id = '40000000-0000-4000-8000-000000000003';
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed", "error": "again"}');
SELECT pg_temp.bad('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "heartbeat"}');

-- Events: one per state change, none for heartbeats and no-ops.
SELECT job_id, kind, from_status, to_status, detail - 'instance_id' AS detail
  FROM provision.events ORDER BY id;

-- Dedup: a known delivery id with its payload returns the recorded result
-- with duplicate true and changes nothing, whatever the job's state now
-- (the same id with another payload: 80_delivery_binding).
SELECT count(*) AS events_before FROM provision.events \gset
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "provisioning"}', 'gh-1');
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running",
                    "server_id": 12345678, "server_ip": "203.0.113.5", "tailscale_ip": "100.64.1.5",
                    "extra": {"ignored": true}}', 'gh-4');
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running"}', 'gh-6');
SELECT count(*) = :events_before AS no_new_events FROM provision.events;
SELECT server_id FROM provision.agent_instances WHERE agent_id = '4a000000-0000-4000-8000-000000000001';
-- A redelivery is answered before the job is locked: no transaction id,
-- no row lock, nothing written.
BEGIN;
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000001", "status": "running"}', 'gh-6')->>'duplicate' AS duplicate;
SELECT pg_current_xact_id_if_assigned() IS NULL AS read_only;
COMMIT;
-- Every delivery is recorded once with its result (duplicate false) and job.
SELECT delivery_id, job_id, result->>'action' AS action, result->>'applied' AS applied,
       result->>'duplicate' AS duplicate, result->>'job_status' AS job_status
  FROM provision.callback_deliveries ORDER BY delivery_id;
-- The instance_id of each result is the agent's instance.
SELECT d.delivery_id, (d.result->>'instance_id')::uuid = i.id AS instance_matches
  FROM provision.callback_deliveries d
  LEFT JOIN provision.agent_instances i ON i.agent_id = '4a000000-0000-4000-8000-000000000001'
 WHERE d.result ? 'instance_id' ORDER BY d.delivery_id;
-- Without a delivery id nothing is recorded and nothing deduplicated.
SELECT count(*) FROM provision.callback_deliveries WHERE job_id = '40000000-0000-4000-8000-000000000003';

-- Invalid payloads: 22023 for missing or mistyped fields and non-objects,
-- 22P02 for malformed uuids and addresses; each names the field.
SELECT payload, pg_temp.bad(payload) AS error FROM (VALUES
  ('[]'), ('"running"'), ('42'), ('null'), ('{}'),
  ('{"status": "running"}'),
  ('{"job_id": null, "status": "running"}'),
  ('{"job_id": 42, "status": "running"}'),
  ('{"job_id": "not-a-uuid", "status": "running"}'),
  ('{"job_id": "40000000-0000-4000-8000-00000000000", "status": "running"}'),
  ('{"job_id": "40000000-0000-4000-8000-0000000000011", "status": "running"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": 1}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "RUNNING"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "cancelled"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": "1.2.3.999", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": "1.2.3.4", "tailscale_ip": "fd7a::zz"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": 16909060, "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": true, "server_ip": "1.2.3.4", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "", "server_ip": "1.2.3.4", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": ["x"], "server_ip": "1.2.3.4", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": " \t", "server_ip": "1.2.3.4", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": "203.0.113.9/24", "tailscale_ip": "1.2.3.4"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "x", "server_ip": "1.2.3.4", "tailscale_ip": "fd7a::1/64"}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed", "error": 5}'),
  ('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed", "error": {"m": 1}}'),
  ('{"job_id": "40000000-0000-4000-8000-0000000000ff", "status": "running"}'),
  ('{"job_id": "40000000-0000-4000-8000-0000000000ff", "status": "heartbeat"}')
) AS t(payload);
-- Accepted uuid spellings, as uuid_in accepts them.
SELECT pg_temp.cb('{"job_id": "{40000000-0000-4000-8000-000000000002}", "status": "provisioning"}')->>'job_id';
SELECT pg_temp.cb('{"job_id": "40000000000040008000000000000002", "status": "provisioning"}')->>'job_id';
SELECT pg_temp.cb('{"job_id": "4000-0000-0000-4000-8000-0000-0000-0002", "status": "provisioning"}')->>'job_id';
SELECT pg_temp.bad('{"job_id": "400000000000400080000000000000 02", "status": "provisioning"}');
SELECT pg_temp.bad('{"job_id": "{40000000-0000-4000-8000-000000000002", "status": "provisioning"}');
SELECT pg_temp.bad('{"job_id": "-40000000-0000-4000-8000-000000000002", "status": "provisioning"}');
-- NULL payload; limits on server_id, error and delivery_id.
SELECT regress.try($$SELECT provision.handle_callback(NULL)$$);
SELECT regress.try($$SELECT provision.handle_callback(NULL, 'gh-null')$$);
SELECT pg_temp.bad(format('{"job_id": "40000000-0000-4000-8000-000000000002", "status": "running", "server_id": "%s", "server_ip": "1.2.3.4", "tailscale_ip": "1.2.3.4"}', repeat('x', 256)));
SELECT pg_temp.bad(format('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed", "error": "%s"}', repeat('e', 4097)));
SELECT pg_temp.bad('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed"}', '');
SELECT pg_temp.bad('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed"}', repeat('d', 256));
SELECT pg_temp.cb('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed"}', repeat('d', 255))->>'job_status';
SELECT pg_temp.bad('{"job_id": "40000000-0000-4000-8000-000000000003", "status": "failed"}', repeat('é', 128));
-- None of the refused calls left a delivery or an event.
SELECT count(*) AS deliveries FROM provision.callback_deliveries;
SELECT count(*) = :events_before AS no_new_events FROM provision.events;

CALL regress.reset();
