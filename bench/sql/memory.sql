-- One backend, one call per transaction (as the listener makes them):
-- :warmup calls so that every plan and cache is in place, a sample of
-- pg_backend_memory_contexts, :calls more calls of the benchmark mix, a
-- second sample.  psql variables: fn, hb, dup, new0, warmup, calls.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET provision.notify = off;
CREATE TEMP TABLE mem_sample (phase text, name text, contexts int, total bigint, used bigint);
CREATE TEMP TABLE mem_calls (n int, stmt text);
-- Call n of the mix: every 20th a duplicate, odd ones a new `running`
-- callback for job new0 + n, the rest heartbeats.
INSERT INTO mem_calls
SELECT n, format('SELECT %s(%L::jsonb, %L)', :'fn',
         CASE WHEN n % 20 = 0 THEN
                format('{"job_id": "00000000-0000-4000-8000-%s", "status": "running", "server_id": %s, "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10"}',
                       100000000000 + :hb + 1 + n % :dup, :hb + 1 + n % :dup)
              WHEN n % 2 = 1 THEN
                format('{"job_id": "00000000-0000-4000-8000-%s", "status": "running", "server_id": %s, "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10"}',
                       100000000000 + :new0 + n, :new0 + n)
              ELSE
                format('{"job_id": "00000000-0000-4000-8000-%s", "status": "heartbeat"}',
                       100000000000 + 1 + n % :hb)
         END,
         CASE WHEN n % 20 = 0 THEN 'dup-' || (:hb + 1 + n % :dup) ELSE 'mem-' || n END)
  FROM generate_series(1, :warmup + :calls) AS n;
\o /dev/null
SELECT stmt FROM mem_calls WHERE n <= :warmup ORDER BY n \gexec
\o
INSERT INTO mem_sample
SELECT 'before', name, count(*), sum(total_bytes), sum(used_bytes)
  FROM pg_backend_memory_contexts GROUP BY name;
\o /dev/null
SELECT stmt FROM mem_calls WHERE n > :warmup ORDER BY n \gexec
\o
INSERT INTO mem_sample
SELECT 'after', name, count(*), sum(total_bytes), sum(used_bytes)
  FROM pg_backend_memory_contexts GROUP BY name;
\pset footer off
SELECT phase, sum(contexts) AS contexts, sum(total) AS total_bytes, sum(used) AS used_bytes
  FROM mem_sample GROUP BY phase ORDER BY phase DESC;
SELECT coalesce(a.name, b.name) AS context, b.contexts AS contexts_before,
       a.contexts AS contexts_after, b.total AS bytes_before, a.total AS bytes_after,
       coalesce(a.total, 0) - coalesce(b.total, 0) AS growth
  FROM (SELECT * FROM mem_sample WHERE phase = 'after') AS a
  FULL JOIN (SELECT * FROM mem_sample WHERE phase = 'before') AS b USING (name)
 WHERE a.total IS DISTINCT FROM b.total OR a.contexts IS DISTINCT FROM b.contexts
 ORDER BY abs(coalesce(a.total, 0) - coalesce(b.total, 0)) DESC, 1;
SELECT count(*) FILTER (WHERE status = 'running') AS jobs_running,
       (SELECT count(*) FROM :"schema".callback_deliveries) AS deliveries
  FROM :"schema".provisioning_jobs;
