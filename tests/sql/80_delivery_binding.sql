-- A delivery id is bound to the callback it delivered: the job and the
-- SHA-256 of the payload's jsonb text are recorded with it.  The same id
-- with the same payload, however formatted, is a duplicate; with another
-- job or another payload it is refused (23505) and changes nothing.
SET client_min_messages = warning;
CALL regress.reset();

INSERT INTO provision.agents (id, name) VALUES
  ('8a000000-0000-4000-8000-000000000001', 'binding A'),
  ('8a000000-0000-4000-8000-000000000002', 'binding B');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, dispatched_at) VALUES
  ('80000000-0000-4000-8000-00000000000a', '8a000000-0000-4000-8000-000000000001', 'dispatched', '2000-01-01'),
  ('80000000-0000-4000-8000-00000000000b', '8a000000-0000-4000-8000-000000000002', 'dispatched', '2000-01-01');

-- Everything a refused callback could have touched.
CREATE FUNCTION pg_temp.state()
RETURNS TABLE (job text, status provision.job_status, attempts int, agent_status provision.agent_status,
               instances bigint, deliveries bigint, events bigint)
LANGUAGE sql AS $$
  SELECT right(j.id::text, 1), j.status, j.attempts, a.status,
         (SELECT count(*) FROM provision.agent_instances i WHERE i.agent_id = j.agent_id),
         (SELECT count(*) FROM provision.callback_deliveries d WHERE d.job_id = j.id),
         (SELECT count(*) FROM provision.events e WHERE e.job_id = j.id)
    FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
   ORDER BY j.id
$$;

-- The first delivery is applied and recorded with the digest of its
-- payload's jsonb text.
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "provisioning"}', 'bind-1');
SELECT delivery_id, job_id, payload_sha256 = sha256(convert_to(
         '{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "provisioning"}'::jsonb::text,
         'UTF8')) AS digest_of_jsonb_text
  FROM provision.callback_deliveries;

-- The same callback with other whitespace, another key order or a key
-- given twice (jsonb keeps the last): the same jsonb text, so a duplicate.
SELECT regress.cb('{"status":"provisioning","job_id":"80000000-0000-4000-8000-00000000000a"}', 'bind-1');
SELECT regress.cb(E'{\n  "job_id" :  "80000000-0000-4000-8000-00000000000a",\n\t"status": "provisioning"\n}', 'bind-1');
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "heartbeat", "status": "provisioning"}', 'bind-1');

-- Another job, or the same job with another payload (another status; an
-- extra key or an explicit null, which the routing ignores but the digest
-- covers; the job id spelt otherwise): refused, naming the delivery id and
-- what differs.
SELECT label, regress.cb(payload, 'bind-1') AS outcome FROM (VALUES
  ('another job', '{"job_id": "80000000-0000-4000-8000-00000000000b", "status": "provisioning"}'),
  ('another status', '{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "heartbeat"}'),
  ('an extra key', '{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "provisioning", "run_attempt": "1"}'),
  ('an explicit null', '{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "provisioning", "error": null}'),
  ('uppercase job id', '{"job_id": "80000000-0000-4000-8000-00000000000A", "status": "provisioning"}')
) AS t(label, payload);
SELECT * FROM pg_temp.state();

-- The whole error, with its hint.
\set VERBOSITY default
SELECT provision.handle_callback(
  '{"job_id": "80000000-0000-4000-8000-00000000000b", "status": "provisioning"}', 'bind-1');
\set VERBOSITY terse

-- The attack the binding stops: a captured heartbeat of job A is sent with
-- the delivery id that job B's running callback is about to use.  Without
-- the binding, B's callback would be answered as a "duplicate" of A's
-- heartbeat and never applied; now it fails loudly (the listener answers
-- 422) and B is left as it was.
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "heartbeat"}', 'bind-2');
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000b", "status": "running",
                    "server_id": "hz-b", "server_ip": "203.0.113.80", "tailscale_ip": "100.64.8.0"}', 'bind-2');
SELECT * FROM pg_temp.state();
SELECT delivery_id, job_id, result->>'action' AS action FROM provision.callback_deliveries ORDER BY delivery_id;
-- B's callback with a fresh id is applied.
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000b", "status": "running",
                    "server_id": "hz-b", "server_ip": "203.0.113.80", "tailscale_ip": "100.64.8.0"}', 'bind-3');

-- Deliveries recorded before 1.1 have no digest: they match on the job
-- alone, so their redeliveries stay duplicates; another job is refused.
INSERT INTO provision.callback_deliveries (delivery_id, job_id, result)
VALUES ('bind-old', '80000000-0000-4000-8000-00000000000a',
        '{"job_id": "80000000-0000-4000-8000-00000000000a", "action": "status", "applied": true,
          "duplicate": false, "job_status": "provisioning", "agent_status": "provisioning"}');
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "provisioning"}', 'bind-old');
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "failed", "error": "x"}', 'bind-old');
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000b", "status": "provisioning"}', 'bind-old');
SELECT payload_sha256 IS NULL AS still_without_digest FROM provision.callback_deliveries
 WHERE delivery_id = 'bind-old';

-- Without a delivery id nothing is recorded, so nothing is bound.
SELECT count(*) AS deliveries_before FROM provision.callback_deliveries \gset
SELECT regress.cb('{"job_id": "80000000-0000-4000-8000-00000000000a", "status": "heartbeat"}');
SELECT count(*) = :deliveries_before AS nothing_recorded FROM provision.callback_deliveries;

-- Every digest is 32 bytes; the row recorded before 1.1 has none.
SELECT delivery_id, octet_length(payload_sha256) AS digest_bytes
  FROM provision.callback_deliveries ORDER BY delivery_id;

CALL regress.reset();
RESET client_min_messages;
