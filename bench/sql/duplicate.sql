-- A redelivery of a `running` callback already handled before the run
-- (recorded by reset.sql): answered from callback_deliveries.
\set d :dup0 + random(0, :dup_n - 1)
\set jid 100000000000 + :d
SELECT @FN@(('{"job_id": "00000000-0000-4000-8000-' || :jid || '", "status": "running", "server_id": ' || :d || ', "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10", "workflow_run": "bench"}')::jsonb, 'dup-' || :d);
