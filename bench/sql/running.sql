-- A new `running` callback with VM metadata: every transaction completes a
-- job no earlier transaction of this run touched.  Job numbers interleave
-- the clients (client c takes new0 + c, new0 + c + nclients, ...), so two
-- runs with the same settings send the same callbacks.
\set k :k + 1
\set j :new0 + (:k - 1) * :nclients + :client_id
\set jid 100000000000 + :j
SELECT @FN@(('{"job_id": "00000000-0000-4000-8000-' || :jid || '", "status": "running", "server_id": ' || :j || ', "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10", "workflow_run": "bench"}')::jsonb, 'run-' || :j);
