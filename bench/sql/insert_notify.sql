-- Ceiling with notifications: one statement, one transaction that inserts
-- one row and sends one NOTIFY with a payload the size of provision's.
-- PostgreSQL serializes the commits of notifying transactions, so with
-- provision.notify on this is the rate handle_callback cannot exceed.
\set k :k + 1
WITH i AS (INSERT INTO public.bench_ceiling (client, n) VALUES (:client_id, :k) RETURNING client, n)
SELECT pg_notify('bench_ceiling', '{"job_id": "00000000-0000-4000-8000-' || (100000000000 + n) || '", "agent_id": "aaaaaaaa-0000-4000-8000-' || (100000000000 + client) || '", "kind": "completed", "to_status": "running"}') FROM i;
