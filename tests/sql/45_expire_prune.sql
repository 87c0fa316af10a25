-- expire_stale_jobs: fails dispatched/provisioning jobs whose last sign of
-- life (last heartbeat, else start, else dispatch) is older than the given
-- interval or provision.heartbeat_timeout; error "heartbeat timeout", one
-- expired event each, agents follow. prune_history: deletes deliveries and
-- events older than the interval or provision.history_retention; a pruned
-- delivery id is no longer deduplicated.
SET client_min_messages = warning;
CALL regress.reset();

-- Jobs 1..9, one agent each. Ages in minutes of (heartbeat, started, dispatched).
INSERT INTO provision.agents (id, name, status)
SELECT format('4b000000-0000-4000-8000-00000000000%s', n)::uuid, 'expire ' || n,
       CASE n WHEN 8 THEN 'active' ELSE 'provisioning' END::provision.agent_status
  FROM generate_series(1, 9) n;
INSERT INTO provision.provisioning_jobs
       (id, agent_id, status, last_heartbeat_at, started_at, dispatched_at, completed_at, failed_at, updated_at)
SELECT format('45000000-0000-4000-8000-00000000000%s', n)::uuid,
       format('4b000000-0000-4000-8000-00000000000%s', n)::uuid,
       s::provision.job_status,
       now() - hb * interval '1 minute', now() - st * interval '1 minute', now() - di * interval '1 minute',
       CASE WHEN s = 'running' THEN now() - interval '1 day' END,
       CASE WHEN s = 'failed' THEN now() - interval '1 day' END,
       '2000-01-01'
  FROM (VALUES
    (1, 'provisioning', 30, 60, 90),      -- heartbeat 30 min ago
    (2, 'provisioning', 5, 60, 90),       -- heartbeat 5 min ago: alive
    (3, 'provisioning', NULL, 30, 90),    -- no heartbeat, started 30 min ago
    (4, 'provisioning', NULL, 5, 90),     -- started 5 min ago: alive
    (5, 'dispatched', NULL, NULL, 30),    -- dispatched 30 min ago
    (6, 'dispatched', NULL, NULL, 5),     -- dispatched 5 min ago: alive
    (7, 'running', 600, 600, 600),        -- running: never expires
    (8, 'provisioning', 30, 60, 90),      -- stale, but its agent is active
    (9, 'pending', NULL, NULL, NULL)      -- pending: never expires
  ) AS t(n, s, hb, st, di);

-- Explicit interval: 20 minutes.
BEGIN;
SELECT provision.expire_stale_jobs('20 minutes') AS expired;
SELECT j.id, j.status, j.error, j.failed_at = now() AS failed_now, j.attempts, a.status AS agent
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id ORDER BY j.id;
COMMIT;
SELECT job_id, kind, from_status, to_status, detail FROM provision.events ORDER BY job_id;
-- Nothing left to expire at that age.
SELECT provision.expire_stale_jobs('20 minutes') AS expired_again;

-- The GUC: the default is 15min; 1min catches the rest.
SELECT provision.expire_stale_jobs() AS expired_by_default;
SET provision.heartbeat_timeout = '1min';
SELECT provision.expire_stale_jobs() AS expired_by_guc;
RESET provision.heartbeat_timeout;
SELECT id, status FROM provision.provisioning_jobs WHERE status = 'failed' ORDER BY id;
SELECT count(*) AS expired_events FROM provision.events WHERE kind = 'expired';
-- An expired job can be re-run, starting without the old heartbeat.
SELECT status, attempts, error, last_heartbeat_at
  FROM provision.update_job_status('45000000-0000-4000-8000-000000000001', 'provisioning');
SELECT provision.expire_stale_jobs('20 minutes') AS rerun_not_expired;
-- Negative intervals are refused.
SELECT regress.try($$SELECT provision.expire_stale_jobs('-1 minute')$$);

-- prune_history.
TRUNCATE provision.events, provision.callback_deliveries;
INSERT INTO provision.callback_deliveries (delivery_id, job_id, received_at, result) VALUES
  ('old-1', '45000000-0000-4000-8000-000000000001', now() - interval '40 days', '{}'),
  ('old-2', '45000000-0000-4000-8000-000000000002', now() - interval '2 hours', '{}'),
  ('new-1', '45000000-0000-4000-8000-000000000002', now() - interval '1 minute', '{}');
INSERT INTO provision.events (at, job_id, kind) VALUES
  (now() - interval '40 days', '45000000-0000-4000-8000-000000000001', 'status'),
  (now() - interval '2 hours', '45000000-0000-4000-8000-000000000002', 'status'),
  (now(), '45000000-0000-4000-8000-000000000002', 'status');
SELECT provision.prune_history() AS pruned_by_default;
SELECT provision.prune_history('1 hour') AS pruned_1h;
SELECT delivery_id FROM provision.callback_deliveries ORDER BY 1;
SELECT count(*) AS events FROM provision.events;
SET provision.history_retention = '30s';
SELECT provision.prune_history() AS pruned_by_guc;
RESET provision.history_retention;
SELECT count(*) AS deliveries FROM provision.callback_deliveries;
SELECT count(*) AS events FROM provision.events;
SELECT regress.try($$SELECT provision.prune_history('-1 day')$$);

-- A pruned delivery id applies again.
SELECT provision.handle_callback('{"job_id": "45000000-0000-4000-8000-000000000007", "status": "heartbeat"}',
                                 'again')->>'duplicate' AS duplicate;
UPDATE provision.callback_deliveries SET received_at = now() - interval '1 day' WHERE delivery_id = 'again';
SELECT provision.handle_callback('{"job_id": "45000000-0000-4000-8000-000000000007", "status": "heartbeat"}',
                                 'again')->>'duplicate' AS duplicate;
SELECT provision.prune_history('1 hour') AS pruned;
SELECT provision.handle_callback('{"job_id": "45000000-0000-4000-8000-000000000007", "status": "heartbeat"}',
                                 'again')->>'duplicate' AS duplicate;

CALL regress.reset();
