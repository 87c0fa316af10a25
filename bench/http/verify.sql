-- Checks, after one HTTP run, that the database holds exactly what the 200
-- answers say (psql variables: answered_completed, answered_heartbeat,
-- in_flight_max, hb, dup0, dup_n, new0 and http_last (the jobs of the
-- corpus's `running` requests; pgbench completes others); tables filled by the
-- runner: bench_http_sent (the delivery ids wrk sent) and
-- bench_http_answered (the job numbers of 200 answers that completed a
-- job)).  Requests still in flight when wrk stopped may have committed
-- without an answer being counted; at most one per connection.
-- Prints one line per check; the runner fails on any line not ending "ok".
\set ON_ERROR_STOP on
-- hash joins over a few hundred thousand delivery ids
SET work_mem = '256MB';
\pset format unaligned
\pset tuples_only on
WITH rec AS (
    SELECT d.delivery_id, d.result,
           CASE WHEN d.delivery_id LIKE 'run-%' THEN 'run' ELSE 'hb' END AS kind
      FROM provision.callback_deliveries AS d
     WHERE (d.delivery_id LIKE 'run-%'
            AND substr(d.delivery_id, 5)::bigint BETWEEN :new0 AND :http_last)
        OR d.delivery_id LIKE 'hb-http-%'
), counts AS (
    SELECT count(*) FILTER (WHERE kind = 'run') AS run_recorded,
           count(*) FILTER (WHERE kind = 'hb') AS hb_recorded
      FROM rec
), answered AS (
    SELECT a.j, j.status, i.server_id, g.status AS agent_status, d.result
      FROM bench_http_answered AS a
      LEFT JOIN provision.provisioning_jobs AS j
             ON j.id = ('00000000-0000-4000-8000-' || (100000000000 + a.j))::uuid
      LEFT JOIN provision.agent_instances AS i ON i.job_id = j.id
      LEFT JOIN provision.agents AS g ON g.id = j.agent_id
      LEFT JOIN provision.callback_deliveries AS d ON d.delivery_id = 'run-' || a.j
)
SELECT format('%-58s %s', c.name, CASE WHEN c.ok THEN 'ok' ELSE 'FAILED (' || c.detail || ')' END)
  FROM (
    SELECT 'every recorded delivery was sent' AS name,
           count(*) = 0 AS ok, count(*) || ' recorded but never sent' AS detail
      FROM rec
     WHERE NOT EXISTS (SELECT 1 FROM bench_http_sent AS s WHERE s.delivery_id = rec.delivery_id)
    UNION ALL
    SELECT 'each completing 200 answer names a distinct job',
           count(*) = count(DISTINCT j) AND count(*) = :answered_completed,
           count(*) || ' answers, ' || count(DISTINCT j) || ' distinct, wrk counted '
               || :answered_completed
      FROM bench_http_answered
    UNION ALL
    SELECT 'answered "completed": job running, instance, agent active',
           count(*) FILTER (WHERE status IS DISTINCT FROM 'running'
                               OR server_id IS DISTINCT FROM j::text
                               OR agent_status IS DISTINCT FROM 'active'
                               OR result->>'action' IS DISTINCT FROM 'completed') = 0,
           count(*) FILTER (WHERE status IS DISTINCT FROM 'running'
                               OR server_id IS DISTINCT FROM j::text
                               OR agent_status IS DISTINCT FROM 'active'
                               OR result->>'action' IS DISTINCT FROM 'completed')
               || ' of ' || count(*) || ' do not match'
      FROM answered
    UNION ALL
    SELECT 'recorded = answered (+ in flight at the end)',
           run_recorded >= :answered_completed AND hb_recorded >= :answered_heartbeat
           AND (run_recorded - :answered_completed) + (hb_recorded - :answered_heartbeat)
               <= :in_flight_max,
           format('running %s recorded / %s answered, heartbeat %s / %s',
                  run_recorded, :answered_completed, hb_recorded, :answered_heartbeat)
      FROM counts
    UNION ALL
    SELECT 'one completed event and one running job per delivery',
           e.n = c.run_recorded AND r.n = c.run_recorded,
           format('%s events, %s jobs running, %s deliveries', e.n, r.n, c.run_recorded)
      FROM counts AS c,
           (SELECT count(*) AS n FROM provision.events AS ev
             WHERE ev.kind = 'completed'
               AND ev.job_id BETWEEN ('00000000-0000-4000-8000-' || (100000000000 + :new0))::uuid
                                 AND ('00000000-0000-4000-8000-' || (100000000000 + :http_last))::uuid) AS e,
           (SELECT count(*) AS n FROM provision.provisioning_jobs AS pj
             WHERE pj.status = 'running'
               AND pj.id BETWEEN ('00000000-0000-4000-8000-' || (100000000000 + :new0))::uuid
                             AND ('00000000-0000-4000-8000-' || (100000000000 + :http_last))::uuid) AS r
    UNION ALL
    SELECT 'duplicate deliveries changed nothing',
           (SELECT count(*) FROM provision.callback_deliveries WHERE delivery_id LIKE 'dup-%') = :dup_n
           AND (SELECT count(*) FROM provision.events AS ev
                 WHERE ev.job_id IN (SELECT ('00000000-0000-4000-8000-' || (100000000000 + x))::uuid
                                       FROM generate_series(:dup0, :dup0 + :dup_n - 1) AS x)) = :dup_n,
           'extra rows for redelivered jobs'
    UNION ALL
    SELECT 'heartbeat targets still provisioning, no events',
           count(*) FILTER (WHERE j.status <> 'provisioning') = 0
           AND (:answered_heartbeat = 0 OR count(j.last_heartbeat_at) > 0)
           AND NOT EXISTS (SELECT 1 FROM provision.events AS ev
                            WHERE ev.job_id IN (SELECT ('00000000-0000-4000-8000-' || (100000000000 + x))::uuid
                                                  FROM generate_series(1, :hb) AS x)),
           count(*) FILTER (WHERE j.status <> 'provisioning') || ' changed status'
      FROM provision.provisioning_jobs AS j
     WHERE j.id IN (SELECT ('00000000-0000-4000-8000-' || (100000000000 + x))::uuid
                      FROM generate_series(1, :hb) AS x)
  ) AS c;
