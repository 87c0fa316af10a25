-- Hostile and malformed callback payloads: wrong JSON types for every
-- field, payloads that are not objects, huge and deeply nested documents,
-- Unicode and NUL escapes, IPv6 and malformed addresses.  Every refusal is
-- pinned by SQLSTATE and message and leaves nothing behind: no state
-- change, no event, no delivery record.
SET client_min_messages = warning;

INSERT INTO provision.agents (id, name)
SELECT ('c5000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid,
       'hostile-json-' || n
  FROM generate_series(1, 20) AS n;
INSERT INTO provision.provisioning_jobs (id, agent_id)
SELECT ('d5000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid,
       ('c5000000-0000-4000-8000-0000000000' || lpad(n::text, 2, '0'))::uuid
  FROM generate_series(1, 20) AS n;

-- The payload itself: not an object, or no payload at all.
SELECT label, regress.cb(payload, 'hj-' || label) AS outcome
  FROM (VALUES ('sql-null', NULL),
               ('json-null', 'null'),
               ('array', '[{"job_id": "d5000000-0000-4000-8000-000000000001", "status": "running"}]'),
               ('string', '"running"'),
               ('number', '42'),
               ('boolean', 'true'),
               ('empty-object', '{}'),
               ('not-json', '{"job_id": '),
               ('trailing-garbage', '{"status": "running"} x')
       ) AS t(label, payload);

-- job_id: every wrong JSON type, absent, and malformed uuids.
SELECT label, regress.cb('{"status": "provisioning", "job_id": ' || v || '}',
                         'hj-job-' || label) AS outcome
  FROM (VALUES ('number', '12345'),
               ('float', '1.5e3'),
               ('array', '["d5000000-0000-4000-8000-000000000001"]'),
               ('object', '{"id": "d5000000-0000-4000-8000-000000000001"}'),
               ('boolean', 'false'),
               ('null', 'null'),
               ('empty', '""'),
               ('not-uuid', '"job-1"'),
               ('too-long-uuid', '"d5000000-0000-4000-8000-0000000000011"'),
               ('sql-injection', '"''; DROP TABLE provision.agents; --"'),
               ('nul-escape', '"d5000000-0000-4000-8000-000000000001\u0000"'),
               ('unknown-job', '"00000000-0000-4000-8000-000000000000"')
       ) AS t(label, v);
SELECT regress.cb('{"status": "provisioning"}') AS job_id_absent;

-- Forms of the uuid that the uuid type itself accepts are the same job.
SELECT regress.cb('{"status": "heartbeat",
                    "job_id": "D5000000-0000-4000-8000-000000000020"}') AS upper_case;
SELECT regress.cb('{"status": "heartbeat",
                    "job_id": "{d5000000-0000-4000-8000-000000000020}"}') AS braces;
SELECT regress.cb('{"status": "heartbeat",
                    "job_id": "d5000000000040008000000000000020"}') AS no_hyphens;

-- status: every wrong JSON type, absent, and unknown values.
SELECT label, regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000001", "status": '
                         || v || '}', 'hj-status-' || label) AS outcome
  FROM (VALUES ('number', '1'),
               ('array', '["running"]'),
               ('object', '{"value": "running"}'),
               ('boolean', 'true'),
               ('null', 'null'),
               ('empty', '""'),
               ('upper-case', '"RUNNING"'),
               ('padded', '" running"'),
               ('cyrillic-lookalike', '"runn\u0456ng"'),
               ('pending', '"pending"'),
               ('dispatched', '"dispatched"'),
               ('cancelled', '"cancelled"'),
               ('nul-escape', '"running\u0000"'),
               ('long', '"' || repeat('running', 10000) || '"')
       ) AS t(label, v);
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000001"}') AS status_absent;

-- The metadata fields with wrong JSON types.  server_id may be a string or
-- a number; anything else names the field.
SELECT label, regress.cb(
         '{"job_id": "d5000000-0000-4000-8000-000000000001", "status": "running", '
         || fields || '}', 'hj-meta-' || label) AS outcome
  FROM (VALUES
    ('server_id-array', '"server_id": ["1"], "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"'),
    ('server_id-object', '"server_id": {"id": 1}, "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"'),
    ('server_id-boolean', '"server_id": true, "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"'),
    ('server_id-empty', '"server_id": "", "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"'),
    ('server_id-nested', '"server_id": ' || repeat('[', 500) || '1' || repeat(']', 500) || ', "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"'),
    ('server_ip-number', '"server_id": "s", "server_ip": 3405803777, "tailscale_ip": "100.64.0.1"'),
    ('server_ip-array', '"server_id": "s", "server_ip": ["203.0.113.1"], "tailscale_ip": "100.64.0.1"'),
    ('server_ip-object', '"server_id": "s", "server_ip": {"v4": "203.0.113.1"}, "tailscale_ip": "100.64.0.1"'),
    ('server_ip-boolean', '"server_id": "s", "server_ip": false, "tailscale_ip": "100.64.0.1"'),
    ('tailscale_ip-number', '"server_id": "s", "server_ip": "203.0.113.1", "tailscale_ip": 1681915905'),
    ('tailscale_ip-array', '"server_id": "s", "server_ip": "203.0.113.1", "tailscale_ip": []'),
    ('tailscale_ip-object', '"server_id": "s", "server_ip": "203.0.113.1", "tailscale_ip": {}'),
    ('tailscale_ip-boolean', '"server_id": "s", "server_ip": "203.0.113.1", "tailscale_ip": true')
  ) AS t(label, fields);

-- Partial metadata (JSON null counts as absent).
SELECT label, regress.cb(
         '{"job_id": "d5000000-0000-4000-8000-000000000001", "status": "running", '
         || fields || '}', 'hj-partial-' || label) AS outcome
  FROM (VALUES
    ('server_id-only', '"server_id": "s"'),
    ('server_ip-only', '"server_ip": "203.0.113.1"'),
    ('tailscale_ip-only', '"tailscale_ip": "100.64.0.1"'),
    ('no-tailscale_ip', '"server_id": "s", "server_ip": "203.0.113.1"'),
    ('tailscale_ip-null', '"server_id": "s", "server_ip": "203.0.113.1", "tailscale_ip": null'),
    ('server_id-null', '"server_id": null, "server_ip": "203.0.113.1", "tailscale_ip": "100.64.0.1"')
  ) AS t(label, fields);

-- Malformed addresses: refused as 22P02 (or 22023) naming the field.
SELECT label, regress.cb(
         '{"job_id": "d5000000-0000-4000-8000-000000000001", "status": "running", '
         || '"server_id": "s", "server_ip": ' || ip || ', "tailscale_ip": "100.64.0.1"}',
         'hj-ip-' || label) AS outcome
  FROM (VALUES ('empty', '""'),
               ('octet-overflow', '"256.1.1.1"'),
               ('too-few-octets', '"10.1.1"'),
               ('hostname', '"vm-1.example.com"'),
               ('ipv6-two-gaps', '"2001:db8::1::2"'),
               ('ipv6-zone', '"fe80::1%eth0"'),
               ('ipv6-brackets', '"[2001:db8::1]"'),
               ('with-port', '"203.0.113.1:22"'),
               ('spaces-inside', '"203.0. 113.1"'),
               ('nul-escape', '"203.0.113.1\u0000"'),
               ('long', '"' || repeat('1', 5000) || '"')
       ) AS t(label, ip);
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000001", "status": "running",
                    "server_id": "s", "server_ip": "203.0.113.1",
                    "tailscale_ip": "100.64.0.999"}') AS bad_tailscale_ip;

-- Not one of the refused payloads above left a trace.
SELECT j.status, j.attempts, j.updated_at = j.created_at AS untouched
  FROM provision.provisioning_jobs j
 WHERE j.id = 'd5000000-0000-4000-8000-000000000001';
SELECT count(*) AS events
  FROM provision.events WHERE job_id = 'd5000000-0000-4000-8000-000000000001';
SELECT count(*) AS deliveries
  FROM provision.callback_deliveries WHERE delivery_id LIKE 'hj-%';
SELECT count(*) AS instances
  FROM provision.agent_instances WHERE agent_id::text LIKE 'c5000000-%';

-- Valid IPv6 and other forms the inet type accepts are stored as given.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000002", "status": "running",
                    "server_id": "v6", "server_ip": "2001:DB8:0:0:0:0:0:1",
                    "tailscale_ip": "fd7a:115c:a1e0:ab12:4843:cd96:6258:b240"}') AS ipv6;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000003", "status": "running",
                    "server_id": "v4mapped", "server_ip": "::ffff:203.0.113.7",
                    "tailscale_ip": "100.64.0.7"}') AS ipv4_mapped;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000004", "status": "running",
                    "server_id": "padded", "server_ip": " 203.0.113.8 ",
                    "tailscale_ip": "100.64.0.8"}') AS padded_ip;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000005", "status": "running",
                    "server_id": "netmask", "server_ip": "203.0.113.9/24",
                    "tailscale_ip": "100.64.0.9/32"}') AS with_netmask;
SELECT a.name, i.server_id, i.server_ip, i.tailscale_ip, family(i.server_ip)
  FROM provision.agent_instances i
  JOIN provision.agents a ON a.id = i.agent_id
 WHERE i.agent_id::text LIKE 'c5000000-%'
 ORDER BY a.name;

-- server_id as a JSON number (Hetzner ids are numbers) is stored as text,
-- exactly as the number is written by jsonb.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000006", "status": "running",
                    "server_id": 58124392, "server_ip": "203.0.113.10",
                    "tailscale_ip": "100.64.0.10"}') AS numeric_server_id;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000007", "status": "running",
                    "server_id": 0, "server_ip": "203.0.113.11",
                    "tailscale_ip": "100.64.0.11"}') AS zero_server_id;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000008", "status": "running",
                    "server_id": 1.50, "server_ip": "203.0.113.12",
                    "tailscale_ip": "100.64.0.12"}') AS fractional_server_id;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000009", "status": "running",
                    "server_id": 1e400, "server_ip": "203.0.113.13",
                    "tailscale_ip": "100.64.0.13"}') AS huge_server_id;
SELECT a.name, i.server_id
  FROM provision.agent_instances i
  JOIN provision.agents a ON a.id = i.agent_id
 WHERE i.agent_id IN ('c5000000-0000-4000-8000-000000000006',
                      'c5000000-0000-4000-8000-000000000007',
                      'c5000000-0000-4000-8000-000000000008',
                      'c5000000-0000-4000-8000-000000000009')
 ORDER BY a.name;

-- Unicode is stored verbatim; escapes are decoded by jsonb; the NUL
-- escape cannot enter jsonb at all.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000010", "status": "running",
                    "server_id": "srv-\u00fc-漢字-😀-\ud83d\ude80", "server_ip": "203.0.113.14",
                    "tailscale_ip": "100.64.0.14"}') AS unicode_server_id;
SELECT i.server_id, length(i.server_id) AS chars, octet_length(i.server_id) AS bytes
  FROM provision.agent_instances i
 WHERE i.agent_id = 'c5000000-0000-4000-8000-000000000010';
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000011", "status": "running",
                    "server_id": "srv\u0000evil", "server_ip": "203.0.113.15",
                    "tailscale_ip": "100.64.0.15"}') AS nul_in_server_id;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000011", "status": "running",
                    "server_id": "srv\ud800", "server_ip": "203.0.113.15",
                    "tailscale_ip": "100.64.0.15"}') AS lone_surrogate;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000011", "status": "failed",
                    "error": "line one\nline two\t\u001b[31mred\u001b[0m \u2028 ünïcödé"}') AS control_chars_in_error;
SELECT error, length(error) FROM provision.provisioning_jobs
 WHERE id = 'd5000000-0000-4000-8000-000000000011';
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000012", "status": "failed",
                    "error": "a\u0000b"}') AS nul_in_error;

-- error with wrong JSON types; null counts as absent.
SELECT label, regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000012", "status": "failed", "error": '
                         || v || '}', 'hj-error-' || label) AS outcome
  FROM (VALUES ('number', '500'),
               ('array', '["boom"]'),
               ('object', '{"message": "boom"}'),
               ('boolean', 'true')
       ) AS t(label, v);
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000012", "status": "failed",
                    "error": null}') AS error_null;
SELECT status, error FROM provision.provisioning_jobs
 WHERE id = 'd5000000-0000-4000-8000-000000000012';

-- Duplicate keys: jsonb keeps the last one, so the payload means what
-- every JSON consumer that keeps the last key reads.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000013",
                    "status": "failed", "status": "provisioning"}') AS duplicate_keys;

-- Huge payloads: a multi-megabyte unknown key, a 100,000-element array and
-- a deeply nested unknown key are ignored; the known fields still route.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000014", "status": "provisioning", "junk": "'
                  || repeat('x', 4 * 1024 * 1024) || '"}') AS huge_string;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000015", "status": "provisioning", "junk": ['
                  || (SELECT string_agg(n::text, ',') FROM generate_series(1, 100000) AS n)
                  || ']}') AS huge_array;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000016", "status": "provisioning", "junk": '
                  || repeat('{"a": ', 2000) || '1' || repeat('}', 2000) || '}') AS deep_object;
SELECT regress.cb('{"junk": ' || repeat('[', 5000) || repeat(']', 5000)
                  || ', "job_id": "d5000000-0000-4000-8000-000000000017", "status": "provisioning"}') AS deep_array;
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000018", "status": "provisioning", '
                  || (SELECT string_agg(format('"k%s": %s', n, n), ', ') FROM generate_series(1, 20000) AS n)
                  || '}') AS many_keys;
SELECT id, status FROM provision.provisioning_jobs
 WHERE id BETWEEN 'd5000000-0000-4000-8000-000000000013'
              AND 'd5000000-0000-4000-8000-000000000018'
 ORDER BY id;

-- The stored delivery result holds the result object, never the payload.
SELECT regress.cb('{"job_id": "d5000000-0000-4000-8000-000000000019", "status": "provisioning", "junk": "'
                  || repeat('y', 100000) || '"}', 'hj-big-delivery') AS big_delivery;
SELECT pg_column_size(result) < 1000 AS small_result,
       result ? 'junk' AS has_payload
  FROM provision.callback_deliveries WHERE delivery_id = 'hj-big-delivery';

RESET client_min_messages;
