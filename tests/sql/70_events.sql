-- The events log through a whole callback lifecycle: exactly one row per
-- state change, in order, with from/to statuses and the agent; none for
-- heartbeats, no-ops, duplicates or refused callbacks; ids only grow, and
-- the identity cannot be forged by a DBA insert.
SET client_min_messages = warning;

INSERT INTO provision.agents (id, name)
VALUES ('c9000000-0000-4000-8000-000000000001', 'events-1');

SELECT provision.enqueue_job('c9000000-0000-4000-8000-000000000001', 'events-key-1')
       IS NOT NULL AS enqueued;
CREATE TEMP TABLE ev_job AS
SELECT id FROM provision.provisioning_jobs
 WHERE agent_id = 'c9000000-0000-4000-8000-000000000001';

-- Drive the job through handle_callback with every kind of no-op around
-- the real transitions.
CREATE FUNCTION pg_temp.cb(status text, extra text DEFAULT '', delivery text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  st text;
  msg text;
BEGIN
  r := provision.handle_callback(
         format('{"job_id": "%s", "status": "%s"%s}',
                (SELECT id FROM ev_job), status, extra)::jsonb, delivery);
  RETURN format('%s applied=%s duplicate=%s job=%s agent=%s',
                r->>'action', r->>'applied', r->>'duplicate',
                r->>'job_status', r->>'agent_status');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
  RETURN st || ' ' || regexp_replace(msg, '[0-9a-f-]{36}', '<job>');
END
$$;

SELECT step, pg_temp.cb(status, extra, delivery) AS outcome
  FROM (VALUES
    (1, 'heartbeat', '', NULL),
    (2, 'provisioning', '', 'ev-1'),
    (3, 'provisioning', '', 'ev-2'),
    (4, 'provisioning', '', 'ev-1'),
    (5, 'heartbeat', '', 'ev-3'),
    (6, 'failed', ', "error": "vm create failed"', 'ev-4'),
    (7, 'failed', ', "error": "again"', 'ev-5'),
    (8, 'provisioning', '', 'ev-6'),
    (9, 'running', ', "server_id": 1, "server_ip": "203.0.113.91", "tailscale_ip": "100.64.9.1"', 'ev-7'),
    (10, 'running', '', 'ev-8'),
    (11, 'running', ', "server_id": 2, "server_ip": "203.0.113.92", "tailscale_ip": "100.64.9.2"', 'ev-9'),
    (12, 'running', ', "server_id": 2, "server_ip": "203.0.113.92", "tailscale_ip": "100.64.9.2"', 'ev-9'),
    (13, 'provisioning', '', 'ev-10'),
    (14, 'failed', '', 'ev-11'),
    (15, 'heartbeat', '', 'ev-12'),
    (16, 'running', ', "server_id": 3', 'ev-13')
  ) AS t(step, status, extra, delivery)
 ORDER BY step;

-- One row per state change, in order; the agent is on every row, and the
-- completed events name the agent's one instance.
SELECT row_number() OVER (ORDER BY e.id) AS n, e.kind, e.from_status,
       e.to_status, e.agent_id, e.detail - 'instance_id' AS detail,
       e.detail->>'instance_id' = (SELECT i.id::text FROM provision.agent_instances i
                                    WHERE i.agent_id = e.agent_id) AS instance
  FROM provision.events e
 WHERE e.job_id = (SELECT id FROM ev_job)
 ORDER BY e.id;
SELECT count(DISTINCT e.id) = count(*) AS ids_unique,
       bool_and(e.at IS NOT NULL) AS all_timed,
       bool_and(e.at <= now()) AS none_in_future
  FROM provision.events e
 WHERE e.job_id = (SELECT id FROM ev_job);
SELECT j.status, j.attempts, j.error, a.status AS agent_status
  FROM provision.provisioning_jobs j
  JOIN provision.agents a ON a.id = j.agent_id
 WHERE j.id = (SELECT id FROM ev_job);

-- The identity is generated always: a DBA cannot pick an id.
INSERT INTO provision.events (id, kind) VALUES (1, 'forged');
RESET client_min_messages;
