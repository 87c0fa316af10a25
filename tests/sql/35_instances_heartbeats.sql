-- complete_provisioning_with_metadata: creates the instance, updates it in
-- place on a running job (re-created VM) and for a new job of the same
-- agent, activates the agent, one completed event each; bad arguments.
-- record_heartbeat: only last_heartbeat_at, on the instance only when this
-- job created it, refused for failed and cancelled jobs, no events.
SET client_min_messages = warning;
CALL regress.reset();

INSERT INTO provision.agents (id, name) VALUES
  ('3b000000-0000-4000-8000-000000000001', 'instance 1'),
  ('3b000000-0000-4000-8000-000000000002', 'instance 2');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, dispatched_at, started_at, attempts) VALUES
  ('35000000-0000-4000-8000-000000000001', '3b000000-0000-4000-8000-000000000001', 'provisioning',
   '2000-01-01', '2000-01-01', 1),
  ('35000000-0000-4000-8000-000000000002', '3b000000-0000-4000-8000-000000000002', 'dispatched',
   '2000-01-01', NULL, 0);

-- Create: the instance row is returned; job running, agent active.
BEGIN;
SELECT agent_id, job_id, server_id, server_ip, tailscale_ip, created_at = now() AS created_now,
       updated_at = now() AS updated_now, last_heartbeat_at
  FROM provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000001',
         'hz-1', '203.0.113.10', '100.64.0.10');
SELECT status, attempts, completed_at = now() AS completed_now, updated_at = now() AS updated_now
  FROM provision.provisioning_jobs WHERE id = '35000000-0000-4000-8000-000000000001';
COMMIT;
SELECT id AS instance_1 FROM provision.agent_instances
 WHERE agent_id = '3b000000-0000-4000-8000-000000000001' \gset
SELECT status FROM provision.agents WHERE id = '3b000000-0000-4000-8000-000000000001';

-- Running again with new metadata: the same instance row, updated in place;
-- completed_at stays, attempts stay.
UPDATE provision.provisioning_jobs SET completed_at = '2000-01-02'
 WHERE id = '35000000-0000-4000-8000-000000000001';
SELECT id = :'instance_1' AS same_instance, server_id, server_ip, tailscale_ip,
       updated_at > created_at AS updated
  FROM provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000001',
         'hz-2', '2001:db8::2', '100.64.0.11');
SELECT status, attempts, completed_at FROM provision.provisioning_jobs
 WHERE id = '35000000-0000-4000-8000-000000000001';
SELECT count(*) AS instances FROM provision.agent_instances;

-- One completed event per call, with the metadata and the instance.
SELECT kind, from_status, to_status,
       detail - 'instance_id' AS detail, detail->>'instance_id' = :'instance_1' AS instance
  FROM provision.events ORDER BY id;

-- A later job of the same agent takes the instance over (same row).
INSERT INTO provision.provisioning_jobs (id, agent_id, status, started_at) VALUES
  ('35000000-0000-4000-8000-000000000003', '3b000000-0000-4000-8000-000000000001', 'provisioning', '2000-01-01');
SELECT id = :'instance_1' AS same_instance, job_id, server_id
  FROM provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000003',
         'hz-3', '203.0.113.12', '100.64.0.12');

-- dispatched -> running directly counts an attempt.
SELECT server_id FROM provision.complete_provisioning_with_metadata(
         '35000000-0000-4000-8000-000000000002', '4711', '203.0.113.20', '100.64.0.20');
SELECT attempts, status FROM provision.provisioning_jobs WHERE id = '35000000-0000-4000-8000-000000000002';

-- Bad arguments: 22023 naming the argument; unknown job P0002; refused from cancelled.
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata(NULL, 'x', '1.2.3.4', '1.2.3.4')$$);
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000002', NULL, '1.2.3.4', '1.2.3.4')$$);
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000002', 'x', NULL, '1.2.3.4')$$);
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000002', 'x', '1.2.3.4', NULL)$$);
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000002', '', '1.2.3.4', '1.2.3.4')$$);
SELECT regress.try(format('SELECT provision.complete_provisioning_with_metadata(%L, %L, %L, %L)',
                          '35000000-0000-4000-8000-000000000002', repeat('x', 256), '1.2.3.4', '1.2.3.4'));
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-0000000000ff', 'x', '1.2.3.4', '1.2.3.4')$$);
INSERT INTO provision.agents (id, name) VALUES ('3b000000-0000-4000-8000-000000000004', 'cancelled');
INSERT INTO provision.provisioning_jobs (id, agent_id, status) VALUES
  ('35000000-0000-4000-8000-000000000004', '3b000000-0000-4000-8000-000000000004', 'cancelled');
SELECT regress.try($$SELECT provision.complete_provisioning_with_metadata('35000000-0000-4000-8000-000000000004', 'x', '1.2.3.4', '1.2.3.4')$$);
SELECT count(*) AS instances_of_cancelled FROM provision.agent_instances
 WHERE agent_id = '3b000000-0000-4000-8000-000000000004';

-- record_heartbeat. Job 3 created agent 1's instance; job 1 no longer owns it.
TRUNCATE provision.events;
UPDATE provision.provisioning_jobs SET updated_at = '2000-01-01';
UPDATE provision.agent_instances SET last_heartbeat_at = NULL;
BEGIN;
SELECT provision.record_heartbeat('35000000-0000-4000-8000-000000000003') = now() AS returns_now;
SELECT id, status, last_heartbeat_at = now() AS beat, updated_at
  FROM provision.provisioning_jobs WHERE id = '35000000-0000-4000-8000-000000000003';
SELECT job_id, last_heartbeat_at = now() AS beat FROM provision.agent_instances
 WHERE agent_id = '3b000000-0000-4000-8000-000000000001';
COMMIT;
UPDATE provision.agent_instances SET last_heartbeat_at = NULL;
SELECT provision.record_heartbeat('35000000-0000-4000-8000-000000000001') IS NOT NULL AS beat;
SELECT last_heartbeat_at IS NOT NULL AS job_beat FROM provision.provisioning_jobs
 WHERE id = '35000000-0000-4000-8000-000000000001';
SELECT last_heartbeat_at AS instance_beat FROM provision.agent_instances
 WHERE agent_id = '3b000000-0000-4000-8000-000000000001';
-- Heartbeats in every open status are accepted; failed and cancelled refuse.
INSERT INTO provision.agents (id, name) VALUES
  ('3b000000-0000-4000-8000-000000000005', 'hb pending'),
  ('3b000000-0000-4000-8000-000000000006', 'hb failed');
INSERT INTO provision.provisioning_jobs (id, agent_id, status, failed_at, updated_at) VALUES
  ('35000000-0000-4000-8000-000000000005', '3b000000-0000-4000-8000-000000000005', 'pending', NULL, '2000-01-01'),
  ('35000000-0000-4000-8000-000000000006', '3b000000-0000-4000-8000-000000000006', 'failed', '2000-01-01', '2000-01-01');
SELECT regress.try($$SELECT provision.record_heartbeat('35000000-0000-4000-8000-000000000005')$$);
SELECT regress.try($$SELECT provision.record_heartbeat('35000000-0000-4000-8000-000000000006')$$);
SELECT regress.try($$SELECT provision.record_heartbeat('35000000-0000-4000-8000-000000000004')$$);
SELECT regress.try($$SELECT provision.record_heartbeat('35000000-0000-4000-8000-0000000000ff')$$);
SELECT regress.try($$SELECT provision.record_heartbeat(NULL)$$);
SELECT id, status, last_heartbeat_at IS NOT NULL AS beat FROM provision.provisioning_jobs
 WHERE id IN ('35000000-0000-4000-8000-000000000005', '35000000-0000-4000-8000-000000000006',
              '35000000-0000-4000-8000-000000000004')
 ORDER BY id;
-- Heartbeats never change status or updated_at, and write no event.
SELECT count(*) AS changed FROM provision.provisioning_jobs WHERE updated_at <> '2000-01-01';
SELECT count(*) AS events FROM provision.events;

CALL regress.reset();
