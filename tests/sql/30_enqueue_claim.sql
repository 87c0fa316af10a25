-- enqueue_job: idempotency keys, one open job per agent, unknown agents,
-- argument limits, the enqueued event. claim_jobs: oldest first, max_jobs,
-- dispatched_at and the dispatched event, bad max_jobs.
SET client_min_messages = warning;
CALL regress.reset();

INSERT INTO provision.agents (id, name) VALUES
  ('3a000000-0000-4000-8000-000000000001', 'enqueue 1'),
  ('3a000000-0000-4000-8000-000000000002', 'enqueue 2'),
  ('3a000000-0000-4000-8000-000000000003', 'enqueue 3');

-- A new job: pending, attempts 0, no timestamps but created/updated, one event.
BEGIN;
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_1') AS j1 \gset
SELECT status, attempts, idempotency_key, created_at = now() AS created_now,
       updated_at = now() AS updated_now, dispatched_at, started_at, completed_at,
       failed_at, last_heartbeat_at, error
  FROM provision.provisioning_jobs WHERE id = :'j1';
COMMIT;
SELECT kind, from_status, to_status, detail, job_id = :'j1' AS this_job,
       agent_id = '3a000000-0000-4000-8000-000000000001' AS this_agent
  FROM provision.events ORDER BY id;

-- The same key returns the same job; so does any call while the job is open
-- (and the second key is not recorded); no new job, no new event.
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_1') = :'j1' AS same_key;
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_2') = :'j1' AS open_job_other_key;
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001') = :'j1' AS open_job_no_key;
SELECT count(*) AS jobs, count(*) FILTER (WHERE idempotency_key = 'pay_2') AS pay_2_recorded
  FROM provision.provisioning_jobs;
SELECT count(*) AS events FROM provision.events;

-- Still open while dispatched or provisioning.
SELECT count(*) FROM provision.update_job_status(:'j1', 'provisioning');
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001') = :'j1' AS open_while_provisioning;

-- Once the job is running, a new key makes a new job; the old key still
-- returns the old job, whatever its status.
SELECT count(*) FROM provision.update_job_status(:'j1', 'running');
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_3') AS j3 \gset
SELECT :'j3' <> :'j1' AS new_job;
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_1') = :'j1' AS old_key_old_job;
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001', 'pay_3') = :'j3' AS new_key_new_job;

-- After a cancelled job, no key: a new job.
SELECT count(*) FROM provision.update_job_status(:'j3', 'cancelled');
SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000001') NOT IN (:'j1', :'j3') AS fresh_job;

-- Another agent's key: 22023, naming the job and agent it belongs to.
SELECT replace(regress.try($$SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000002', 'pay_1')$$),
               :'j1', '<j1>');
-- Unknown agent: P0002 (even with a known key).
SELECT regress.try($$SELECT provision.enqueue_job('3a000000-0000-4000-8000-0000000000ff')$$);
SELECT regress.try($$SELECT provision.enqueue_job('3a000000-0000-4000-8000-0000000000ff', 'pay_1')$$);
-- NULL agent, empty and overlong keys: 22023.
SELECT regress.try($$SELECT provision.enqueue_job(NULL)$$);
SELECT regress.try($$SELECT provision.enqueue_job('3a000000-0000-4000-8000-000000000002', '')$$);
SELECT regress.try(format('SELECT provision.enqueue_job(%L, %L)',
                          '3a000000-0000-4000-8000-000000000002', repeat('k', 256)));
SELECT regress.try(format('SELECT provision.enqueue_job(%L, %L)',
                          '3a000000-0000-4000-8000-000000000002', repeat('ü', 255)));
SELECT count(*) AS jobs_of_agent_2 FROM provision.provisioning_jobs
 WHERE agent_id = '3a000000-0000-4000-8000-000000000002';
SELECT kind, count(*) FROM provision.events GROUP BY kind ORDER BY kind;

-- claim_jobs: bad max_jobs.
SELECT regress.try($$SELECT provision.claim_jobs(NULL)$$);
SELECT regress.try($$SELECT provision.claim_jobs(0)$$);
SELECT regress.try($$SELECT provision.claim_jobs(-5)$$);

-- Three pending jobs with known ages (the one of agent 2 from above is
-- newest); claim two, oldest first.
TRUNCATE provision.events, provision.provisioning_jobs CASCADE;
INSERT INTO provision.provisioning_jobs (id, agent_id, created_at) VALUES
  ('33000000-0000-4000-8000-000000000001', '3a000000-0000-4000-8000-000000000001', '2000-01-01 00:00:03'),
  ('33000000-0000-4000-8000-000000000002', '3a000000-0000-4000-8000-000000000002', '2000-01-01 00:00:01'),
  ('33000000-0000-4000-8000-000000000003', '3a000000-0000-4000-8000-000000000003', '2000-01-01 00:00:02');
SELECT id, status, attempts, dispatched_at = now() AS dispatched_now, updated_at = now() AS updated_now
  FROM provision.claim_jobs(2);
SELECT id, status FROM provision.provisioning_jobs ORDER BY id;
SELECT job_id, kind, from_status, to_status FROM provision.events ORDER BY id;
-- The default claims one; nothing left gives an empty set.
SELECT id, status FROM provision.claim_jobs();
SELECT count(*) FROM provision.claim_jobs(10);
-- Claiming does not change the agent.
SELECT id, status FROM provision.agents WHERE id <> '3a000000-0000-4000-8000-000000000001' ORDER BY id;

CALL regress.reset();
