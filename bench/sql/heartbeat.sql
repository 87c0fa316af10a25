-- A heartbeat from one of the hb_jobs VMs still provisioning, each with a
-- delivery id of its own (the listener always passes one).
\set hk :hk + 1
\set h random(1, :hb_jobs)
\set jid 100000000000 + :h
SELECT @FN@(('{"job_id": "00000000-0000-4000-8000-' || :jid || '", "status": "heartbeat"}')::jsonb, 'hb-' || :client_id || '-' || :hk);
