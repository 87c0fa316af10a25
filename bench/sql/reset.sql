-- Puts a database in the state every measured run starts from (psql
-- variables: schema, hb, dup, pool):
--   jobs 1 .. hb            provisioning, targets of heartbeats;
--   jobs hb+1 .. hb+dup     completed before the run through handle_callback
--                           with delivery ids dup-<n>, targets of duplicates;
--   jobs hb+dup+1 .. pool   provisioning, each completed by one `running`
--                           callback during the run.
-- Job n is 00000000-0000-4000-8000-<100000000000 + n>, its agent
-- aaaaaaaa-0000-4000-8000-<100000000000 + n>.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET provision.notify = off;
TRUNCATE :"schema".callback_deliveries, :"schema".events, :"schema".agent_instances,
         :"schema".provisioning_jobs, :"schema".agents RESTART IDENTITY;
INSERT INTO :"schema".agents (id, name, status)
SELECT ('aaaaaaaa-0000-4000-8000-' || (100000000000 + i))::uuid, 'bench-' || i, 'provisioning'
  FROM generate_series(1, :pool) AS i;
INSERT INTO :"schema".provisioning_jobs (id, agent_id, status, attempts, dispatched_at, started_at)
SELECT ('00000000-0000-4000-8000-' || (100000000000 + i))::uuid,
       ('aaaaaaaa-0000-4000-8000-' || (100000000000 + i))::uuid,
       'provisioning', 1, now(), now()
  FROM generate_series(1, :pool) AS i;
SELECT count(*) AS duplicates_prepared
  FROM (SELECT :"schema".handle_callback(
                 ('{"job_id": "00000000-0000-4000-8000-' || (100000000000 + i)
                  || '", "status": "running", "server_id": ' || i
                  || ', "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10", "workflow_run": "bench"}')::jsonb,
                 'dup-' || i)
          FROM generate_series(:hb + 1, :hb + :dup) AS i) AS s;
VACUUM ANALYZE :"schema".agents, :"schema".provisioning_jobs, :"schema".agent_instances,
               :"schema".callback_deliveries, :"schema".events;
TRUNCATE public.bench_ceiling;
