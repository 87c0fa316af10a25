-- Every cell of the job state machine through update_job_status: what is
-- applied, what is a no-op, what is refused (55000, with the job, both
-- statuses in the message and DETAIL "current status: <status>"), how
-- attempts count, which timestamps move, how the agent follows, and the one
-- event per applied change (none for no-ops and refusals).
SET client_min_messages = warning;
CALL regress.reset();

-- One draft agent and one job per (from, to) cell, inserted directly as a
-- DBA may do: job 20000000-0000-4000-8000-0000000000<from><to>, with every
-- timestamp in the year 2000 so that any change shows.
CREATE TEMP TABLE cells AS
SELECT f.s AS from_status, t.s AS to_status,
       format('20000000-0000-4000-8000-0000000000%s%s', f.o, t.o)::uuid AS job_id,
       format('2a000000-0000-4000-8000-0000000000%s%s', f.o, t.o)::uuid AS agent_id
  FROM unnest(enum_range(NULL::provision.job_status)) WITH ORDINALITY AS f(s, o),
       unnest(enum_range(NULL::provision.job_status)) WITH ORDINALITY AS t(s, o);

INSERT INTO provision.agents (id, name, created_at, updated_at)
SELECT agent_id, 'cell ' || from_status || ' to ' || to_status, '2000-01-01', '2000-01-01' FROM cells;

INSERT INTO provision.provisioning_jobs
       (id, agent_id, status, attempts, error, created_at, updated_at, dispatched_at,
        started_at, completed_at, failed_at, last_heartbeat_at)
SELECT job_id, agent_id, from_status, 1,
       CASE WHEN from_status = 'failed' THEN 'old error' END,
       '2000-01-01', '2000-01-01', '2000-01-01', '2000-01-01', '2000-01-01',
       '2000-01-01', '2000-01-01 00:00:05'
  FROM cells;

CREATE TEMP TABLE outcome AS
SELECT c.*, now() AS t0,
       regress.try(format('SELECT provision.update_job_status(%L, %L, %L)',
                          c.job_id, c.to_status, 'new error')) AS result
  FROM cells c;

SELECT o.from_status AS "from", o.to_status AS "to",
       CASE WHEN o.result <> 'ok' THEN 'refused'
            WHEN j.updated_at = o.t0 THEN 'applied'
            ELSE 'no-op' END AS outcome,
       j.status, j.attempts,
       j.error,
       j.dispatched_at = o.t0 AS dispatched,
       j.started_at = o.t0 AS started,
       j.completed_at = o.t0 AS completed,
       j.failed_at = o.t0 AS failed,
       j.last_heartbeat_at IS NULL AS hb_cleared,
       a.status AS agent,
       (SELECT string_agg(e.kind || ':' || e.from_status || '>' || e.to_status || ':' || coalesce(e.detail::text, '-'), ', ')
          FROM provision.events e WHERE e.job_id = o.job_id) AS events
  FROM outcome o
  JOIN provision.provisioning_jobs j ON j.id = o.job_id
  JOIN provision.agents a ON a.id = o.agent_id
 ORDER BY o.job_id;

-- The refusals verbatim: SQLSTATE, message naming the job and both statuses, DETAIL.
SELECT result FROM outcome WHERE result <> 'ok' ORDER BY job_id;

-- An applied change moves the agent's updated_at with its status; a job
-- change that leaves the agent alone does not touch it.
SELECT o.from_status AS "from", o.to_status AS "to", a.status, a.updated_at = o.t0 AS agent_updated
  FROM outcome o JOIN provision.agents a ON a.id = o.agent_id
 WHERE o.from_status IN ('pending', 'failed')
 ORDER BY o.job_id;

-- No-ops return the row unchanged; applied changes return the new row.
SELECT status, attempts, updated_at
  FROM provision.update_job_status('20000000-0000-4000-8000-000000000044', 'running');
SELECT status, attempts, error
  FROM provision.update_job_status('20000000-0000-4000-8000-000000000055', 'failed', 'another error');

-- Refused moves raise the error to the caller with the listener's DETAIL.
\set VERBOSITY default
SELECT provision.update_job_status('20000000-0000-4000-8000-000000000065', 'failed');
SELECT provision.update_job_status('20000000-0000-4000-8000-000000000061', 'pending');

-- Agent status rules, from every agent status: provisioning takes a draft or
-- failed agent along, running activates any agent, failed fails it unless
-- it is active.
CREATE TEMP TABLE agent_cells AS
SELECT a.s AS agent_status, t.s AS to_status,
       format('21000000-0000-4000-8000-0000000000%s%s', a.o, t.o)::uuid AS job_id,
       format('2b000000-0000-4000-8000-0000000000%s%s', a.o, t.o)::uuid AS agent_id
  FROM unnest(enum_range(NULL::provision.agent_status)) WITH ORDINALITY AS a(s, o),
       unnest(ARRAY['provisioning', 'running', 'failed', 'cancelled', 'dispatched']::provision.job_status[])
         WITH ORDINALITY AS t(s, o);
INSERT INTO provision.agents (id, name, status)
SELECT agent_id, 'agent rule', agent_status FROM agent_cells;
INSERT INTO provision.provisioning_jobs (id, agent_id, status)
SELECT job_id, agent_id, 'pending' FROM agent_cells;
SELECT count(provision.update_job_status(c.job_id, c.to_status)) FROM agent_cells c;
SELECT c.agent_status AS agent_before, c.to_status AS job_to, j.status AS job_now,
       a.status AS agent_after
  FROM agent_cells c
  JOIN provision.provisioning_jobs j ON j.id = c.job_id
  JOIN provision.agents a ON a.id = c.agent_id
 ORDER BY c.job_id;

-- attempts over a whole life: dispatched (0) -> provisioning (1) -> same
-- (1) -> failed (1) -> provisioning (re-run, 2) -> running (still 2) ->
-- same, stale (2); pending -> running directly (1); pending -> failed (0) ->
-- running (re-run, 1); provisioning (1) -> failed -> running (re-run, 2).
INSERT INTO provision.agents (id, name) VALUES
  ('2c000000-0000-4000-8000-000000000001', 'attempts 1'),
  ('2c000000-0000-4000-8000-000000000002', 'attempts 2'),
  ('2c000000-0000-4000-8000-000000000003', 'attempts 3'),
  ('2c000000-0000-4000-8000-000000000004', 'attempts 4');
INSERT INTO provision.provisioning_jobs (id, agent_id) VALUES
  ('22000000-0000-4000-8000-000000000001', '2c000000-0000-4000-8000-000000000001'),
  ('22000000-0000-4000-8000-000000000002', '2c000000-0000-4000-8000-000000000002'),
  ('22000000-0000-4000-8000-000000000003', '2c000000-0000-4000-8000-000000000003'),
  ('22000000-0000-4000-8000-000000000004', '2c000000-0000-4000-8000-000000000004');
SELECT step, (provision.update_job_status('22000000-0000-4000-8000-000000000001', s)).attempts
  FROM unnest(ARRAY['dispatched', 'provisioning', 'provisioning', 'failed', 'provisioning',
                    'running', 'running', 'provisioning']::provision.job_status[])
       WITH ORDINALITY AS u(s, step)
 ORDER BY step;
SELECT step, (provision.update_job_status('22000000-0000-4000-8000-000000000002', s)).attempts
  FROM unnest(ARRAY['running', 'running']::provision.job_status[]) WITH ORDINALITY AS u(s, step)
 ORDER BY step;
SELECT step, (provision.update_job_status('22000000-0000-4000-8000-000000000003', s)).attempts
  FROM unnest(ARRAY['failed', 'running']::provision.job_status[]) WITH ORDINALITY AS u(s, step)
 ORDER BY step;
SELECT step, (provision.update_job_status('22000000-0000-4000-8000-000000000004', s)).attempts
  FROM unnest(ARRAY['provisioning', 'failed', 'running']::provision.job_status[]) WITH ORDINALITY AS u(s, step)
 ORDER BY step;
SELECT kind, from_status, to_status, detail FROM provision.events
 WHERE job_id = '22000000-0000-4000-8000-000000000001' ORDER BY id;

-- Bad arguments.
SELECT regress.try($$SELECT provision.update_job_status(NULL, 'running')$$);
SELECT regress.try($$SELECT provision.update_job_status('22000000-0000-4000-8000-000000000001', NULL)$$);
SELECT regress.try($$SELECT provision.update_job_status('22000000-0000-4000-8000-0000000000ff', 'running')$$);
SELECT regress.try($$SELECT provision.update_job_status('22000000-0000-4000-8000-000000000001', 'bogus')$$);
-- error text: up to 4096 characters (not bytes) is accepted.
SELECT regress.try(format('SELECT provision.update_job_status(%L, %L, %L)',
                          '20000000-0000-4000-8000-000000000033', 'failed', repeat('é', 4097)));
SELECT regress.try(format('SELECT provision.update_job_status(%L, %L, %L)',
                          '20000000-0000-4000-8000-000000000033', 'failed', repeat('é', 4096)));
SELECT status, char_length(error) FROM provision.provisioning_jobs
 WHERE id = '20000000-0000-4000-8000-000000000033';

-- The function behind the CHECK constraint, for every status: running
-- needs completed_at, failed needs failed_at, the others need neither.
SELECT s AS status,
       provision.job_status_timestamp_set(s, NULL, NULL) AS neither,
       provision.job_status_timestamp_set(s, now(), NULL) AS completed_at,
       provision.job_status_timestamp_set(s, NULL, now()) AS failed_at,
       provision.job_status_timestamp_set(s, now(), now()) AS both
  FROM unnest(enum_range(NULL::provision.job_status)) AS s;
SELECT provision.job_status_timestamp_set(NULL, NULL, NULL) IS NULL AS null_status_is_null;

-- The CHECK constraint backs the state machine for rows written directly.
SELECT split_part(regress.try($$UPDATE provision.provisioning_jobs SET completed_at = NULL
                      WHERE id = '22000000-0000-4000-8000-000000000001'$$), ' | ', 1);
SELECT split_part(regress.try($$UPDATE provision.provisioning_jobs SET failed_at = NULL
                      WHERE id = '20000000-0000-4000-8000-000000000015'$$), ' | ', 1);
SELECT regress.try($$INSERT INTO provision.provisioning_jobs (agent_id, status)
                      VALUES ('2c000000-0000-4000-8000-000000000001', 'pending'),
                             ('2c000000-0000-4000-8000-000000000001', 'dispatched')$$);

CALL regress.reset();
