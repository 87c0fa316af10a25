-- retry_failed_jobs: for every agent that is not active and whose newest
-- job failed, with fewer than max_attempts jobs in all, once the failure is
-- provision.retry_delay * 2^(failed jobs - 1) old, a new pending job with
-- idempotency key retry:<failed job id> and one retried event.  And the
-- re-run of a failed job while its agent has another open job: refused
-- (55000), never a unique violation.
SET client_min_messages = warning;
CALL regress.reset();

-- The settings and the argument.
SHOW provision.max_attempts;
SHOW provision.retry_delay;
SET provision.retry_delay = '90s';
SHOW provision.retry_delay;
RESET provision.retry_delay;
SET provision.max_attempts = 0;
SET provision.retry_delay = 0;
SELECT regress.try('SELECT provision.retry_failed_jobs(0)') AS zero,
       regress.try('SELECT provision.retry_failed_jobs(-1)') AS negative;

-- Agent 82a0...0N, its jobs 8200...0NK (K in creation order), each case a
-- story of its own.
INSERT INTO provision.agents (id, name, status)
SELECT format('82a00000-0000-4000-8000-0000000000%s', lpad(n::text, 2, '0'))::uuid,
       'retry ' || n, s::provision.agent_status
  FROM (VALUES (1, 'failed'), (2, 'failed'), (3, 'failed'), (4, 'failed'), (5, 'failed'),
               (6, 'failed'), (7, 'active'), (8, 'provisioning'), (9, 'draft')) AS t(n, s);
CREATE TEMP TABLE story (agent int, job int, status text, created interval, failed interval);
INSERT INTO story VALUES
  -- 1: one failure two minutes ago (the delay is one minute): retried.
  (1, 1, 'failed', '10 min', '2 min'),
  -- 2: one failure 30 seconds ago: not yet.
  (2, 1, 'failed', '10 min', '30 s'),
  -- 3: a second failure 90 seconds ago (the delay doubles to two minutes): not yet.
  (3, 1, 'failed', '10 min', '9 min'), (3, 2, 'failed', '5 min', '90 s'),
  -- 4: a second failure three minutes ago: retried.
  (4, 1, 'failed', '10 min', '9 min'), (4, 2, 'failed', '5 min', '3 min'),
  -- 5: three jobs, all failed long ago: max_attempts (3) reached.
  (5, 1, 'failed', '3 h', '3 h'), (5, 2, 'failed', '2 h', '2 h'), (5, 3, 'failed', '1 h', '1 h'),
  -- 6: the newest job was cancelled: not retried.
  (6, 1, 'failed', '3 h', '3 h'), (6, 2, 'cancelled', '2 h', NULL),
  -- 7: the agent is active (it runs on its old VM): not retried.
  (7, 1, 'running', '3 h', NULL), (7, 2, 'failed', '2 h', '2 h'),
  -- 8: an older job is open again (a re-run): the retry would be a second
  -- open job, so there is none.
  (8, 1, 'provisioning', '3 h', NULL), (8, 2, 'failed', '2 h', '2 h'),
  -- 9: a draft agent (inserted with a failed job): not active, retried.
  (9, 1, 'failed', '3 h', '3 h');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, attempts, created_at, updated_at,
                                         dispatched_at, started_at, completed_at, failed_at, error)
SELECT format('82000000-0000-4000-8000-0000000000%s%s', agent, job)::uuid,
       format('82a00000-0000-4000-8000-0000000000%s', lpad(agent::text, 2, '0'))::uuid,
       status::provision.job_status, 1, now() - created, now() - created, now() - created,
       now() - created, CASE WHEN status = 'running' THEN now() - created END, now() - failed,
       CASE WHEN status = 'failed' THEN 'quota' END
  FROM story;

-- Each agent's jobs in creation order (status and key; a key naming a
-- job of the story shows its number), and the agent's status.
CREATE FUNCTION pg_temp.jobs()
RETURNS TABLE (agent int, agent_status provision.agent_status, jobs text)
LANGUAGE sql AS $$
  SELECT right(a.id::text, 1)::int, a.status,
         string_agg(j.status || coalesce(' ' || regexp_replace(regexp_replace(j.idempotency_key,
                      '82000000-0000-4000-8000-0000000000(..)', 'job \1'),
                      '[0-9a-f]{8}-[0-9a-f-]{27}', 'a retry'), ''),
                    ', ' ORDER BY j.created_at, j.id)
    FROM provision.agents a JOIN provision.provisioning_jobs j ON j.agent_id = a.id
   WHERE a.id::text LIKE '82a00000-%'
   GROUP BY a.id, a.status ORDER BY a.id
$$;

SELECT provision.retry_failed_jobs() AS retried;
SELECT * FROM pg_temp.jobs();
-- One retried event per new job, naming the failed job; no other event.
SELECT right(e.agent_id::text, 1) AS agent, e.kind, e.from_status, e.to_status,
       e.detail->>'failed_job_id' AS failed_job_id,
       e.detail->>'idempotency_key' = 'retry:' || (e.detail->>'failed_job_id') AS key_in_detail,
       e.job_id = j.id AS new_job
  FROM provision.events e
  LEFT JOIN provision.provisioning_jobs j ON j.idempotency_key = e.detail->>'idempotency_key'
 ORDER BY e.agent_id;
-- Calling it again enqueues nothing: the retries are the newest jobs now.
SELECT provision.retry_failed_jobs() AS retried_again;

-- A re-run of agent 1's failed job while its retry is open: refused like
-- any refused move, by every function that can re-run a job, and nothing
-- changes.
SELECT label, outcome FROM (VALUES
  ('callback', regress.cb('{"job_id": "82000000-0000-4000-8000-000000000011", "status": "provisioning"}', 'rerun-1')),
  ('callback running', regress.cb('{"job_id": "82000000-0000-4000-8000-000000000011", "status": "running",
     "server_id": 1, "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"}')),
  ('update_job_status', regress.try($$SELECT provision.update_job_status('82000000-0000-4000-8000-000000000011', 'running')$$)),
  ('complete_provisioning_with_metadata', regress.try($$SELECT provision.complete_provisioning_with_metadata(
     '82000000-0000-4000-8000-000000000011', 's', '203.0.113.1', '100.64.0.1')$$))
) AS t(label, outcome);
SELECT count(*) AS deliveries, (SELECT count(*) FROM provision.agent_instances) AS instances
  FROM provision.callback_deliveries;
SELECT * FROM pg_temp.jobs() WHERE agent = 1;
-- The failed job's own retries are still refused...
SELECT regress.try($$SELECT provision.update_job_status('82000000-0000-4000-8000-000000000011', 'provisioning')$$)
       AS still_refused;
-- ...and a re-run is allowed again once the agent has no open job.
SELECT status FROM provision.update_job_status('82000000-0000-4000-8000-000000000081', 'failed', 'gave up');
SELECT status, attempts FROM provision.update_job_status('82000000-0000-4000-8000-000000000081', 'provisioning');

-- max_attempts: the argument, else provision.max_attempts.  Agent 5 has
-- three jobs.
SET provision.max_attempts = 4;
SELECT provision.retry_failed_jobs(3) AS argument_three;
SELECT provision.retry_failed_jobs() AS setting_four;
RESET provision.max_attempts;
SELECT * FROM pg_temp.jobs() WHERE agent = 5;

-- provision.retry_delay: with 10 s, agent 2 (one failure, 30 s ago) and
-- agent 3 (two failures, 20 s needed, 90 s ago) are due.
SET provision.retry_delay = '10s';
SELECT provision.retry_failed_jobs() AS with_short_delay;
RESET provision.retry_delay;
SELECT * FROM pg_temp.jobs() WHERE agent IN (2, 3);

-- Backoff over a chain: agent 1's retry fails now, so its next retry waits
-- for twice the delay (two failed jobs); then its third job fails, and
-- with three jobs max_attempts is reached.
SELECT (provision.update_job_status(id, 'failed', 'again')).status AS failed_again
  FROM provision.provisioning_jobs WHERE idempotency_key = 'retry:82000000-0000-4000-8000-000000000011';
SELECT provision.retry_failed_jobs() AS just_failed;
UPDATE provision.provisioning_jobs SET failed_at = now() - interval '110 s'
 WHERE idempotency_key = 'retry:82000000-0000-4000-8000-000000000011';
SELECT provision.retry_failed_jobs() AS after_110s;
UPDATE provision.provisioning_jobs SET failed_at = now() - interval '121 s'
 WHERE idempotency_key = 'retry:82000000-0000-4000-8000-000000000011';
SELECT provision.retry_failed_jobs() AS after_121s;
SELECT (provision.update_job_status(id, 'failed', 'third time')).status AS failed_third
  FROM provision.provisioning_jobs WHERE idempotency_key LIKE 'retry:%' AND agent_id = '82a00000-0000-4000-8000-000000000001'
   AND status = 'pending';
UPDATE provision.provisioning_jobs SET failed_at = now() - interval '1 day'
 WHERE agent_id = '82a00000-0000-4000-8000-000000000001';
SELECT provision.retry_failed_jobs() AS at_max_attempts;
SELECT * FROM pg_temp.jobs() WHERE agent = 1;

-- Every new job came with exactly one retried event, and the agents kept
-- their status.
SELECT count(*) FILTER (WHERE kind = 'retried') AS retried_events,
       (SELECT count(*) FROM provision.provisioning_jobs WHERE idempotency_key LIKE 'retry:%') AS retry_jobs
  FROM provision.events;
SELECT agent, agent_status FROM pg_temp.jobs();

CALL regress.reset();
RESET client_min_messages;
