-- Length limits on what a sender controls: delivery_id (1..255 bytes),
-- server_id (1..255 characters), error text (up to 4096 characters), and
-- agent names (1..255 characters).  The boundaries are accepted, one past
-- them is refused with 22023 naming the field (or, for the tables, a check
-- constraint), and a refusal leaves nothing behind.
SET client_min_messages = warning;

INSERT INTO provision.agents (id, name)
SELECT ('c6000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid,
       'hostile-limits-' || n
  FROM generate_series(1, 20) AS n;
INSERT INTO provision.provisioning_jobs (id, agent_id)
SELECT ('d6000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid,
       ('c6000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid
  FROM generate_series(1, 20) AS n;

-- delivery_id: empty and over-long ids are refused before any effect;
-- the limit counts bytes (a 3-byte character counts three).
SELECT label, octet_length(d) AS bytes,
       regress.cb('{"job_id": "d6000000-0000-4000-8000-000000000001",
                    "status": "heartbeat"}', d) AS outcome
  FROM (VALUES ('empty', ''),
               ('256-ascii', repeat('d', 256)),
               ('86-euro-signs', repeat('€', 86)),
               ('1-megabyte', repeat('d', 1024 * 1024))
       ) AS t(label, d);
SELECT count(*) AS deliveries_recorded
  FROM provision.callback_deliveries
 WHERE job_id = 'd6000000-0000-4000-8000-000000000001';
SELECT last_heartbeat_at IS NULL AS no_heartbeat_recorded
  FROM provision.provisioning_jobs
 WHERE id = 'd6000000-0000-4000-8000-000000000001';

SELECT label, octet_length(d) AS bytes,
       regress.cb('{"job_id": "d6000000-0000-4000-8000-000000000001",
                    "status": "heartbeat"}', d) AS outcome
  FROM (VALUES ('1-ascii', 'd'),
               ('255-ascii', repeat('d', 255)),
               ('85-euro-signs', repeat('€', 85)),
               ('whitespace', ' '),
               ('control-chars', E'id\twith\nnewline')
       ) AS t(label, d);
-- Each accepted id is now deduplicated, exactly as given.
SELECT label, regress.cb('{"job_id": "d6000000-0000-4000-8000-000000000001",
                           "status": "heartbeat"}', d) AS outcome
  FROM (VALUES ('255-ascii', repeat('d', 255)),
               ('85-euro-signs', repeat('€', 85)),
               ('control-chars', E'id\twith\nnewline')
       ) AS t(label, d);
SELECT octet_length(delivery_id) AS bytes, result->>'action' AS action
  FROM provision.callback_deliveries
 WHERE job_id = 'd6000000-0000-4000-8000-000000000001'
 ORDER BY delivery_id;

-- server_id: at most 255 characters, whatever their byte length.
SELECT label, regress.cb(format(
         '{"job_id": "d6000000-0000-4000-8000-0000000000%s", "status": "running",
           "server_id": %s, "server_ip": "203.0.113.20", "tailscale_ip": "100.64.0.20"}',
         job, to_jsonb(sid)), 'hl-sid-' || label) AS outcome
  FROM (VALUES ('02', '256-ascii', repeat('s', 256)),
               ('02', '256-euro-signs', repeat('€', 256)),
               ('02', '1-megabyte', repeat('s', 1024 * 1024))
       ) AS t(job, label, sid);
SELECT regress.cb('{"job_id": "d6000000-0000-4000-8000-000000000002", "status": "running",
                    "server_id": 1' || repeat('0', 255) || ', "server_ip": "203.0.113.20",
                    "tailscale_ip": "100.64.0.20"}') AS number_with_256_digits;
SELECT count(*) AS instances
  FROM provision.agent_instances
 WHERE agent_id = 'c6000000-0000-4000-8000-000000000002';
SELECT count(*) AS deliveries_recorded
  FROM provision.callback_deliveries WHERE delivery_id LIKE 'hl-sid-%';

SELECT label, regress.cb(format(
         '{"job_id": "d6000000-0000-4000-8000-0000000000%s", "status": "running",
           "server_id": %s, "server_ip": "203.0.113.21", "tailscale_ip": "100.64.0.21"}',
         job, to_jsonb(sid))) AS outcome
  FROM (VALUES ('03', '1-ascii', 's'),
               ('04', '255-ascii', repeat('s', 255)),
               ('05', '255-euro-signs', repeat('€', 255))
       ) AS t(job, label, sid);
-- Only emptiness is refused: a server id of blanks is stored as sent.
SELECT regress.cb('{"job_id": "d6000000-0000-4000-8000-000000000009", "status": "running",
                    "server_id": "   ", "server_ip": "203.0.113.21",
                    "tailscale_ip": "100.64.0.21"}') AS blank_server_id;
SELECT a.name, length(i.server_id) AS chars, octet_length(i.server_id) AS bytes
  FROM provision.agent_instances i
  JOIN provision.agents a ON a.id = i.agent_id
 WHERE i.agent_id::text LIKE 'c6000000-%'
 ORDER BY a.name;

-- The same limit holds when complete_provisioning_with_metadata is called
-- directly, and NULL arguments are refused naming the argument.
SELECT label, regress.try(format(
         'SELECT provision.complete_provisioning_with_metadata(%s, %s, %s, %s)',
         job, sid, sip, tip)) AS outcome
  FROM (VALUES
    ('server_id-256', '''d6000000-0000-4000-8000-000000000006''', 'repeat(''s'', 256)', '''203.0.113.22''', '''100.64.0.22'''),
    ('server_id-empty', '''d6000000-0000-4000-8000-000000000006''', '''''', '''203.0.113.22''', '''100.64.0.22'''),
    ('server_id-null', '''d6000000-0000-4000-8000-000000000006''', 'NULL', '''203.0.113.22''', '''100.64.0.22'''),
    ('server_ip-null', '''d6000000-0000-4000-8000-000000000006''', '''s''', 'NULL', '''100.64.0.22'''),
    ('tailscale_ip-null', '''d6000000-0000-4000-8000-000000000006''', '''s''', '''203.0.113.22''', 'NULL'),
    ('job_id-null', 'NULL', '''s''', '''203.0.113.22''', '''100.64.0.22''')
  ) AS t(label, job, sid, sip, tip);
SELECT status FROM provision.provisioning_jobs
 WHERE id = 'd6000000-0000-4000-8000-000000000006';

-- error text: up to 4096 characters are kept; more is refused.
SELECT regress.cb(format('{"job_id": "d6000000-0000-4000-8000-000000000007",
                           "status": "failed", "error": %s}',
                         to_jsonb(repeat('€', 4096)))) AS error_4096_chars;
SELECT status, length(error) AS chars FROM provision.provisioning_jobs
 WHERE id = 'd6000000-0000-4000-8000-000000000007';
SELECT regress.cb(format('{"job_id": "d6000000-0000-4000-8000-000000000008",
                           "status": "failed", "error": %s}',
                         to_jsonb(repeat('e', 4097)))) AS error_4097_chars;
SELECT regress.cb(format('{"job_id": "d6000000-0000-4000-8000-000000000008",
                           "status": "failed", "error": %s}',
                         to_jsonb(repeat('e', 1024 * 1024)))) AS error_1_megabyte;
SELECT status, error IS NULL AS no_error FROM provision.provisioning_jobs
 WHERE id = 'd6000000-0000-4000-8000-000000000008';
SELECT regress.try($$SELECT provision.update_job_status(
         'd6000000-0000-4000-8000-000000000008', 'failed', repeat('e', 4097))$$)
       AS update_4097_chars;
SELECT regress.try($$SELECT provision.update_job_status(
         'd6000000-0000-4000-8000-000000000008', 'failed', repeat('e', 4096))$$)
       AS update_4096_chars;
SELECT status, length(error) AS chars FROM provision.provisioning_jobs
 WHERE id = 'd6000000-0000-4000-8000-000000000008';

-- Agent names: 1..255 characters (the failing row's detail holds
-- timestamps, so only the SQLSTATE and message are shown).
SELECT label, regress.try(format(
         'INSERT INTO provision.agents (id, name) VALUES (%L, %L)', id, name),
         false) AS outcome
  FROM (VALUES ('empty', 'c6000000-0000-4000-8000-000000000101', ''),
               ('256-chars', 'c6000000-0000-4000-8000-000000000102', repeat('n', 256)),
               ('null', 'c6000000-0000-4000-8000-000000000106', NULL),
               ('255-chars', 'c6000000-0000-4000-8000-000000000103', repeat('n', 255)),
               ('255-euro-signs', 'c6000000-0000-4000-8000-000000000104', repeat('€', 255)),
               ('1-char', 'c6000000-0000-4000-8000-000000000105', 'n')
       ) AS t(label, id, name);
SELECT length(name) AS chars, octet_length(name) AS bytes
  FROM provision.agents
 WHERE id BETWEEN 'c6000000-0000-4000-8000-000000000101'
              AND 'c6000000-0000-4000-8000-000000000105'
 ORDER BY id;

-- The limit holds for a renamed agent too (also in a multi-row UPDATE,
-- which leaves every row as it was), and an update that leaves the name
-- alone does not check it.
SELECT label, regress.try(sql, false) AS outcome
  FROM (VALUES
    ('rename-empty', $$UPDATE provision.agents SET name = ''
                       WHERE id = 'c6000000-0000-4000-8000-000000000105'$$),
    ('rename-256', $$UPDATE provision.agents SET name = repeat('m', 256)
                     WHERE id = 'c6000000-0000-4000-8000-000000000105'$$),
    ('rename-two-one-bad', $$UPDATE provision.agents
                              SET name = CASE id WHEN 'c6000000-0000-4000-8000-000000000103'
                                                 THEN 'renamed' ELSE '' END
                             WHERE id IN ('c6000000-0000-4000-8000-000000000103',
                                          'c6000000-0000-4000-8000-000000000105')$$),
    ('rename-255', $$UPDATE provision.agents SET name = repeat('m', 255)
                     WHERE id = 'c6000000-0000-4000-8000-000000000105'$$)
  ) AS t(label, sql);
SELECT id, length(name) AS chars FROM provision.agents
 WHERE id IN ('c6000000-0000-4000-8000-000000000103', 'c6000000-0000-4000-8000-000000000105')
 ORDER BY id;
-- A name that predates the trigger (written with it disabled) does not stop
-- a status change; naming the column in SET checks it, even unchanged.
ALTER TABLE provision.agents DISABLE TRIGGER agents_name_length;
UPDATE provision.agents SET name = '' WHERE id = 'c6000000-0000-4000-8000-000000000105';
ALTER TABLE provision.agents ENABLE TRIGGER agents_name_length;
SELECT regress.try($$UPDATE provision.agents SET status = 'active'
                      WHERE id = 'c6000000-0000-4000-8000-000000000105'$$, false) AS status_update;
SELECT regress.try($$UPDATE provision.agents SET name = name
                      WHERE id = 'c6000000-0000-4000-8000-000000000105'$$, false) AS same_name;
UPDATE provision.agents SET name = 'n' WHERE id = 'c6000000-0000-4000-8000-000000000105';

RESET client_min_messages;
