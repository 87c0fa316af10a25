-- Run fencing: the workflow run that owns a job.  A callback may carry
-- run_id (and run_attempt); the first accepted one records its run with a
-- run event, another run's callbacks are refused (55000, DETAIL "current
-- status: <status>", HINT "workflow_run_id: <owner>") and change nothing,
-- callbacks without run_id work as before.  record_dispatch records the
-- run the dispatcher started, or agrees with the one a callback recorded.
SET client_min_messages = warning;
CALL regress.reset();

INSERT INTO provision.agents (id, name)
SELECT format('81a00000-0000-4000-8000-0000000000%s', n)::uuid, 'fencing ' || n
  FROM generate_series(10, 19) AS n;
-- Job 8100...0N belongs to agent 81a0...1N.
INSERT INTO provision.provisioning_jobs (id, agent_id, status, attempts, dispatched_at, started_at,
                                         completed_at, failed_at, created_at, updated_at)
SELECT format('81000000-0000-4000-8000-00000000000%s', n)::uuid,
       format('81a00000-0000-4000-8000-0000000000%s', n + 10)::uuid,
       s::provision.job_status,
       CASE WHEN s IN ('provisioning', 'running', 'failed') THEN 1 ELSE 0 END,
       CASE WHEN s <> 'pending' THEN timestamptz '2000-01-01' END,
       CASE WHEN s IN ('provisioning', 'running', 'failed') THEN timestamptz '2000-01-01' END,
       CASE WHEN s = 'running' THEN timestamptz '2000-01-01' END,
       CASE WHEN s = 'failed' THEN timestamptz '2000-01-01' END,
       '2000-01-01', '2000-01-01'
  FROM (VALUES (0, 'dispatched'), (1, 'dispatched'), (2, 'dispatched'), (3, 'dispatched'),
               (4, 'provisioning'), (5, 'pending'), (6, 'running'), (7, 'failed'),
               (8, 'cancelled'), (9, 'dispatched')) AS t(n, s);

-- A job's run, status and run events, one line.
CREATE FUNCTION pg_temp.job(n int)
RETURNS text LANGUAGE sql AS $$
  SELECT format('%s run=%s url=%s updated=%s events=%s', j.status,
                coalesce(j.workflow_run_id::text, '-'), coalesce(j.workflow_run_url, '-'),
                CASE WHEN j.updated_at = '2000-01-01' THEN 'no' ELSE 'yes' END,
                coalesce((SELECT string_agg(e.kind || ':' || e.from_status || '>' || e.to_status
                                            || coalesce(' ' || (e.detail - 'instance_id')::text, ''), ', ' ORDER BY e.id)
                            FROM provision.events e WHERE e.job_id = j.id), '-'))
    FROM provision.provisioning_jobs j
   WHERE j.id = format('81000000-0000-4000-8000-00000000000%s', n)::uuid
$$;

-- A callback for job n with extra keys (JSON text after a comma).
CREATE FUNCTION pg_temp.cb(n int, status text, extra text DEFAULT '', delivery text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
  SELECT regress.cb(format('{"job_id": "81000000-0000-4000-8000-00000000000%s", "status": "%s"%s}',
                           n, status, extra), delivery)
$$;

-- run_id and run_attempt: a JSON number or a string of digits, positive,
-- at most 64 bits; anything else is 22023 naming the field.  (The job does
-- not exist, so an accepted value shows as P0002.)
SELECT field, value, regress.cb(format(
         '{"job_id": "81000000-0000-4000-8000-0000000000ff", "status": "heartbeat", "%s": %s}',
         field, value)) AS outcome
  FROM (VALUES ('run_id'), ('run_attempt')) AS f(field),
       (VALUES ('1'), ('"1"'), ('9223372036854775807'), ('"9223372036854775807"'), ('"007"'),
               ('1e3'), ('null'),
               ('0'), ('"0"'), ('-1'), ('"-1"'), ('1.5'), ('"1.5"'), ('"12a"'), ('" 12"'),
               ('""'), ('"+5"'), ('9223372036854775808'), ('"9223372036854775808"'),
               ('true'), ('[1]'), ('{"id": 1}')) AS v(value)
 ORDER BY field DESC, value;

-- The first callback carrying run_id records its run, with one run event
-- before the status change, in the same transaction.
SELECT pg_temp.cb(0, 'provisioning', ', "run_id": 101, "run_attempt": 1', 'fence-1');
SELECT pg_temp.job(0);
-- The owner's later callbacks, with run_id as a string or without it, and
-- a new attempt of the same run: accepted, nothing more recorded.
SELECT pg_temp.cb(0, 'heartbeat', ', "run_id": "101", "run_attempt": 2', 'fence-2');
SELECT pg_temp.cb(0, 'heartbeat', '', 'fence-3');
-- Another run: refused whatever it says, and nothing is recorded.
SELECT status, pg_temp.cb(0, status, extra || ', "run_id": 202', 'fence-x-' || status) AS outcome
  FROM (VALUES ('heartbeat', ''), ('provisioning', ''), ('failed', ', "error": "quota"'),
               ('running', ', "server_id": 9, "server_ip": "203.0.113.9", "tailscale_ip": "100.64.0.9"')
       ) AS t(status, extra);
SELECT count(*) AS refused_deliveries FROM provision.callback_deliveries WHERE delivery_id LIKE 'fence-x-%';
-- The whole refusal, with the HINT the listener reads.
\set VERBOSITY default
SELECT provision.handle_callback(
  '{"job_id": "81000000-0000-4000-8000-000000000000", "status": "running", "run_id": 202}');
\set VERBOSITY terse
-- The owner completes the job; another run is still refused, with the
-- fencing refusal rather than the state machine's.
SELECT pg_temp.cb(0, 'running', ', "run_id": 101, "server_id": 1, "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"', 'fence-4');
SELECT pg_temp.cb(0, 'provisioning', ', "run_id": 202');
SELECT pg_temp.job(0);

-- Without run_id nothing is fenced or recorded (1.0 senders).
SELECT pg_temp.cb(1, 'provisioning');
SELECT pg_temp.cb(1, 'running');
-- A later accepted callback with run_id records it, even a no-op.
SELECT pg_temp.cb(1, 'running', ', "run_id": 303');
SELECT pg_temp.cb(1, 'provisioning', ', "run_id": 304');
SELECT pg_temp.job(1);

-- A refused callback records no run.
SELECT pg_temp.cb(6, 'failed', ', "run_id": 606');
SELECT pg_temp.cb(8, 'provisioning', ', "run_id": 808');
SELECT pg_temp.cb(8, 'heartbeat', ', "run_id": 808');
SELECT pg_temp.job(6), pg_temp.job(8);
-- A heartbeat records its run (one run event and no other).
SELECT pg_temp.cb(2, 'heartbeat', ', "run_id": 222, "run_attempt": 3');
SELECT pg_temp.job(2);
-- run_attempt alone is no run.
SELECT pg_temp.cb(3, 'provisioning', ', "run_attempt": 1');
SELECT pg_temp.job(3);
-- A failed job keeps its run; the same run's re-run attempt is accepted.
SELECT pg_temp.cb(7, 'failed', ', "run_id": 707, "run_attempt": 1');
SELECT pg_temp.cb(7, 'provisioning', ', "run_id": 707, "run_attempt": 2');
SELECT pg_temp.cb(7, 'provisioning', ', "run_id": 708, "run_attempt": 1');
SELECT pg_temp.job(7);

-- record_dispatch: invalid arguments (22023) and an unknown job (P0002).
SELECT label, regress.try(stmt) AS outcome FROM (VALUES
  ('null job', $$SELECT provision.record_dispatch(NULL, 1)$$),
  ('zero run', $$SELECT provision.record_dispatch('81000000-0000-4000-8000-000000000009', 0)$$),
  ('negative run', $$SELECT provision.record_dispatch('81000000-0000-4000-8000-000000000009', -5)$$),
  ('empty url', $$SELECT provision.record_dispatch('81000000-0000-4000-8000-000000000009', 1, '')$$),
  ('long url', format($$SELECT provision.record_dispatch('81000000-0000-4000-8000-000000000009', 1, %L)$$,
                      'https://github.com/' || repeat('x', 2030))),
  ('unknown job', $$SELECT provision.record_dispatch('81000000-0000-4000-8000-0000000000ff', 1)$$)
) AS t(label, stmt);
-- A dispatched job: the run and its address are recorded, one run event.
SELECT status, workflow_run_id, workflow_run_url
  FROM provision.record_dispatch('81000000-0000-4000-8000-000000000009', 901,
                                 'https://github.com/acme/infra/actions/runs/901');
SELECT pg_temp.job(9);
-- The same run again, or no run: the row as it is, nothing written.
SELECT status, workflow_run_id FROM provision.record_dispatch('81000000-0000-4000-8000-000000000009', 901);
SELECT status, workflow_run_id FROM provision.record_dispatch('81000000-0000-4000-8000-000000000009');
SELECT status, workflow_run_id FROM provision.record_dispatch('81000000-0000-4000-8000-000000000008', NULL, 'https://x');
-- Another run: the fencing refusal.
\set VERBOSITY default
SELECT provision.record_dispatch('81000000-0000-4000-8000-000000000009', 902);
\set VERBOSITY terse
-- The dispatcher's run owns the job: its callbacks pass, others do not.
SELECT pg_temp.cb(9, 'provisioning', ', "run_id": 901');
SELECT pg_temp.cb(9, 'heartbeat', ', "run_id": 902');
SELECT pg_temp.job(9);
-- A provisioning job without a run: recorded.  The run's callback came
-- first on job 0 (run 101): the same run is a no-op in any status, another
-- is refused.  Without a run and not dispatched or provisioning: refused.
SELECT status, workflow_run_id FROM provision.record_dispatch('81000000-0000-4000-8000-000000000004', 404);
SELECT status, workflow_run_id FROM provision.record_dispatch('81000000-0000-4000-8000-000000000000', 101);
SELECT n, regress.try(format('SELECT provision.record_dispatch(%L, 999)',
                             format('81000000-0000-4000-8000-00000000000%s', n))) AS outcome
  FROM (VALUES (0), (5), (6), (8)) AS t(n);
SELECT pg_temp.job(4), pg_temp.job(5);

-- No refusal left a delivery or an event behind.
SELECT delivery_id FROM provision.callback_deliveries ORDER BY delivery_id;
SELECT kind, count(*) FROM provision.events GROUP BY kind ORDER BY kind;

CALL regress.reset();
RESET client_min_messages;
