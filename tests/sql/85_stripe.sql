-- handle_stripe_event: which events enqueue a job (provision.stripe_event_types,
-- payment_status), where the agent comes from (client_reference_id, else
-- metadata.agent_id), replays (stripe:<event id>), an agent with an open job
-- or already active, the errors the listener maps (22023, 22P02, P0002) and
-- events of the wrong shape, each with a message naming the field.
SET client_min_messages = warning;
CALL regress.reset();
INSERT INTO provision.agents (id, name) VALUES
  ('85000000-0000-4000-8000-000000000001', 'stripe 1'),
  ('85000000-0000-4000-8000-000000000002', 'stripe 2'),
  ('85000000-0000-4000-8000-000000000003', 'stripe 3'),
  ('85000000-0000-4000-8000-000000000004', 'stripe 4'),
  ('85000000-0000-4000-8000-000000000005', 'stripe 5'),
  ('85000000-0000-4000-8000-000000000006', 'stripe 6'),
  ('85000000-0000-4000-8000-000000000007', 'stripe 7'),
  ('85000000-0000-4000-8000-000000000008', 'stripe 8');

-- Runs one event and reports the result without its job_id, then the
-- idempotency key and status of the job it names (job ids are random), or
-- the error: SQLSTATE, message, DETAIL and HINT.  The event is passed as
-- text so that a table of cases reads as the JSON Stripe sends.
CREATE FUNCTION regress.stripe(event text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  job text;
  st text;
  msg text;
  det text;
  hint text;
BEGIN
  r := provision.handle_stripe_event(event::jsonb);
  IF r ? 'job_id' THEN
    SELECT format(' | job: %s %s', coalesce(j.idempotency_key, '(no key)'), j.status)
      INTO job
      FROM provision.provisioning_jobs j WHERE j.id = (r->>'job_id')::uuid;
  END IF;
  RETURN (r - 'job_id')::text || coalesce(job, '');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RETURN st || ' ' || msg
         || CASE WHEN det <> '' THEN ' | ' || det ELSE '' END
         || CASE WHEN hint <> '' THEN ' | ' || hint ELSE '' END;
END
$$;

SHOW provision.stripe_event_types;

-- A paid Checkout Session: one pending job keyed by the event id, one
-- enqueued event. Stripe sends "client_reference_id": null when the app set
-- none, and unknown keys are ignored.
SELECT regress.stripe('{"id": "evt_paid_1", "object": "event", "type": "checkout.session.completed",
  "livemode": false, "data": {"object": {"id": "cs_test_1", "object": "checkout.session",
  "client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid", "status": "complete", "metadata": {}}}}') AS paid;
SELECT j.status, j.idempotency_key, e.kind, e.to_status, e.detail
  FROM provision.provisioning_jobs j JOIN provision.events e ON e.job_id = j.id
 WHERE j.agent_id = '85000000-0000-4000-8000-000000000001';
-- The full result, job_id included.
SELECT provision.handle_stripe_event('{"id": "evt_paid_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}')
       = jsonb_build_object('event_id', 'evt_paid_1', 'type', 'checkout.session.completed',
                            'action', 'enqueued', 'duplicate', true,
                            'agent_id', '85000000-0000-4000-8000-000000000001',
                            'job_id', (SELECT id FROM provision.provisioning_jobs
                                        WHERE idempotency_key = 'stripe:evt_paid_1'))
       AS whole_result;

-- Replays of the event return the same job, duplicate; nothing new is written.
SELECT regress.stripe('{"id": "evt_paid_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}') AS replay;
SELECT count(*) AS jobs FROM provision.provisioning_jobs;
SELECT count(*) AS events FROM provision.events;

-- The agent from metadata.agent_id when there is no client_reference_id
-- (Payment Links, sessions created elsewhere), absent or null.
SELECT regress.stripe('{"id": "evt_meta_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": null, "payment_status": "paid",
  "metadata": {"agent_id": "85000000-0000-4000-8000-000000000002", "plan": "pro"}}}}')
       AS from_metadata;
SELECT regress.stripe('{"id": "evt_meta_2", "type": "checkout.session.async_payment_succeeded",
  "data": {"object": {"payment_status": "paid",
  "metadata": {"agent_id": "{85000000-0000-4000-8000-000000000008}"}}}}')
       AS from_metadata_braces;

-- client_reference_id wins over metadata.agent_id.
SELECT regress.stripe('{"id": "evt_both_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000003",
  "payment_status": "paid",
  "metadata": {"agent_id": "85000000-0000-4000-8000-000000000007"}}}}') AS both_places;
SELECT count(*) AS jobs_of_agent_7 FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000007';

-- A delayed payment method: the completed session is unpaid and ignored
-- (no job, no event, nothing recorded); the async event enqueues the job.
SELECT regress.stripe('{"id": "evt_unpaid_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000004",
  "payment_status": "unpaid"}}}') AS unpaid;
SELECT count(*) AS jobs_of_agent_4 FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000004';
SELECT regress.stripe('{"id": "evt_async_1", "type": "checkout.session.async_payment_succeeded",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000004",
  "payment_status": "paid"}}}') AS async_succeeded;
-- Its replay is a duplicate; so is a replay of the unpaid event ignored again.
SELECT regress.stripe('{"id": "evt_async_1", "type": "checkout.session.async_payment_succeeded",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000004",
  "payment_status": "paid"}}}') AS async_replay;
SELECT regress.stripe('{"id": "evt_unpaid_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000004",
  "payment_status": "unpaid"}}}') AS unpaid_replay;
-- A failed async payment is not a listed type.
SELECT regress.stripe('{"id": "evt_async_failed", "type": "checkout.session.async_payment_failed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000004",
  "payment_status": "unpaid"}}}') AS async_failed;

-- A free session (a 100% coupon, a trial) needs no payment.
SELECT regress.stripe('{"id": "evt_free_1", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000005",
  "payment_status": "no_payment_required"}}}') AS no_payment_required;

-- Other event types are acknowledged and ignored, whatever else they carry.
SELECT t AS type, regress.stripe(format('{"id": "evt_other_%s", "type": %s, "data": %s}',
                                        n, to_jsonb(t), d)) AS result
  FROM (VALUES (1, 'customer.created', '{"object": {"id": "cus_1"}}'),
               (2, 'checkout.session.expired',
                '{"object": {"client_reference_id": "85000000-0000-4000-8000-000000000006"}}'),
               (3, 'invoice.paid', '[]'),
               (4, 'Checkout.Session.Completed', 'null')) AS v(n, t, d)
 ORDER BY n;
SELECT count(*) AS jobs_of_agent_6 FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000006';

-- An agent with an open job: that job is returned (as enqueue_job does),
-- with a reason, and the new event id is not recorded, so a replay while
-- the job is open returns it again.
SELECT regress.stripe('{"id": "evt_paid_2", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}') AS open_job;
SELECT regress.stripe('{"id": "evt_paid_2", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}') AS open_job_replay;
SELECT count(*) FILTER (WHERE idempotency_key = 'stripe:evt_paid_2') AS evt_paid_2_recorded,
       count(*) AS jobs_of_agent_1
  FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000001';

-- An active agent: a new payment enqueues a new job, as enqueue_job would
-- (the workflow re-provisions; the agent keeps serving until then). So does
-- a replay of evt_paid_2 once the job it was answered with has ended.
SELECT server_id FROM provision.complete_provisioning_with_metadata(
         (SELECT id FROM provision.provisioning_jobs WHERE idempotency_key = 'stripe:evt_paid_1'),
         'srv-85-1', '203.0.113.85', '100.64.85.1');
SELECT status FROM provision.agents WHERE id = '85000000-0000-4000-8000-000000000001';
SELECT regress.stripe('{"id": "evt_paid_3", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}') AS active_agent;
SELECT status FROM provision.agents WHERE id = '85000000-0000-4000-8000-000000000001';
SELECT status FROM provision.update_job_status(
         (SELECT id FROM provision.provisioning_jobs WHERE idempotency_key = 'stripe:evt_paid_3'),
         'cancelled');
SELECT regress.stripe('{"id": "evt_paid_2", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000001",
  "payment_status": "paid"}}}') AS open_job_replay_later;
SELECT idempotency_key, status FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000001' ORDER BY created_at, idempotency_key;

-- The errors the listener maps: no agent reference (22023, 422), a reference
-- that is not a uuid (22P02, 400), an unknown agent (P0002, 404). An unpaid
-- session is checked the same way. Nothing is written.
SELECT label, regress.stripe(event) AS result
  FROM (VALUES
    ('no reference', '{"id": "evt_e1", "type": "checkout.session.completed",
       "data": {"object": {"payment_status": "paid"}}}'),
    ('both null', '{"id": "evt_e2", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": null, "payment_status": "paid",
                           "metadata": {"agent_id": null}}}}'),
    ('empty metadata', '{"id": "evt_e3", "type": "checkout.session.async_payment_succeeded",
       "data": {"object": {"metadata": {}}}}'),
    ('unpaid, no reference', '{"id": "evt_e4", "type": "checkout.session.completed",
       "data": {"object": {"payment_status": "unpaid"}}}'),
    ('reference not a uuid', '{"id": "evt_e5", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "cus_Q1w2e3", "payment_status": "paid"}}}'),
    ('empty reference', '{"id": "evt_e6", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "", "payment_status": "paid"}}}'),
    ('metadata not a uuid', '{"id": "evt_e7", "type": "checkout.session.completed",
       "data": {"object": {"payment_status": "paid", "metadata": {"agent_id": "agent-7"}}}}'),
    ('bad reference, good metadata', '{"id": "evt_e8", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-00000000000",
                           "payment_status": "paid",
                           "metadata": {"agent_id": "85000000-0000-4000-8000-000000000006"}}}}'),
    ('unknown agent', '{"id": "evt_e9", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-0000000000ff",
                           "payment_status": "paid"}}}'),
    ('unknown agent in metadata', '{"id": "evt_e10", "type": "checkout.session.async_payment_succeeded",
       "data": {"object": {"metadata": {"agent_id": "85000000-0000-4000-8000-0000000000fe"}}}}')
  ) AS t(label, event);

-- Events of the wrong shape: 22023 naming the field.
SELECT regress.try('SELECT provision.handle_stripe_event(NULL)') AS null_event;
SELECT label, regress.stripe(event) AS result
  FROM (VALUES
    ('array', '[{"id": "evt_s1"}]'),
    ('string', '"evt_s2"'),
    ('json null', 'null'),
    ('empty object', '{}'),
    ('id missing', '{"type": "checkout.session.completed"}'),
    ('id null', '{"id": null, "type": "checkout.session.completed"}'),
    ('id a number', '{"id": 42, "type": "checkout.session.completed"}'),
    ('id empty', '{"id": "", "type": "customer.created"}'),
    ('id an object', '{"id": {"evt": 1}, "type": "customer.created"}'),
    ('type missing', '{"id": "evt_s3", "data": {"object": {}}}'),
    ('type an array', '{"id": "evt_s4", "type": ["checkout.session.completed"]}'),
    ('type empty', '{"id": "evt_s5", "type": ""}'),
    ('data missing', '{"id": "evt_s6", "type": "checkout.session.completed"}'),
    ('data an array', '{"id": "evt_s7", "type": "checkout.session.completed", "data": []}'),
    ('data.object missing', '{"id": "evt_s8", "type": "checkout.session.completed",
       "data": {"previous_attributes": {}}}'),
    ('data.object null', '{"id": "evt_s9", "type": "checkout.session.completed",
       "data": {"object": null}}'),
    ('data.object a string', '{"id": "evt_s10", "type": "checkout.session.completed",
       "data": {"object": "cs_test_1"}}'),
    ('client_reference_id a number', '{"id": "evt_s11", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": 85, "payment_status": "paid"}}}'),
    ('metadata a string', '{"id": "evt_s12", "type": "checkout.session.completed",
       "data": {"object": {"payment_status": "paid", "metadata": "agent"}}}'),
    ('metadata.agent_id a boolean', '{"id": "evt_s13", "type": "checkout.session.completed",
       "data": {"object": {"payment_status": "paid", "metadata": {"agent_id": true}}}}'),
    ('payment_status missing', '{"id": "evt_s14", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000006"}}}'),
    ('payment_status a number', '{"id": "evt_s15", "type": "checkout.session.completed",
       "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000006",
                           "payment_status": 1}}}')
  ) AS t(label, event);
SELECT count(*) AS jobs_of_agent_6 FROM provision.provisioning_jobs
 WHERE agent_id = '85000000-0000-4000-8000-000000000006';

-- The event id makes the key stripe:<id>, at most 255 characters: an id of
-- 248 is taken, one of 249 is refused.
SELECT regress.stripe(format('{"id": "%s", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000006",
  "payment_status": "paid"}}}', repeat('e', 249))) AS id_249;
SELECT length(r->>'event_id') AS id_248, r->>'action' AS action
  FROM provision.handle_stripe_event(format('{"id": "%s", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000006",
  "payment_status": "paid"}}}', repeat('e', 248))::jsonb) AS r;
-- A long id of an ignored type needs no key.
SELECT regress.stripe(format('{"id": "%s", "type": "customer.created"}', repeat('e', 300)))
       ~ '"action": "ignored"' AS long_id_ignored;

-- The key of an event already used by another agent's job: 22023 from the
-- enqueue step, nothing written.
SELECT provision.enqueue_job('85000000-0000-4000-8000-000000000007', 'stripe:evt_taken') IS NOT NULL
       AS taken;
SELECT regexp_replace(regress.stripe('{"id": "evt_taken", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000008",
  "payment_status": "paid"}}}'), 'Job [0-9a-f-]+', 'Job <id>') AS key_of_another_agent;

-- provision.stripe_event_types: spaces around entries and empty entries
-- are dropped; only the listed types enqueue, and the payment_status check
-- is for checkout.session.completed only.
CALL regress.reset();
INSERT INTO provision.agents (id, name) VALUES
  ('85000000-0000-4000-8000-000000000001', 'stripe 1'),
  ('85000000-0000-4000-8000-000000000002', 'stripe 2'),
  ('85000000-0000-4000-8000-000000000003', 'stripe 3');
SET provision.stripe_event_types = ' payment_intent.succeeded ,, checkout.session.completed ,';
SHOW provision.stripe_event_types;
SELECT regress.stripe('{"id": "evt_pi_1", "type": "payment_intent.succeeded",
  "data": {"object": {"id": "pi_1", "status": "succeeded",
  "metadata": {"agent_id": "85000000-0000-4000-8000-000000000001"}}}}') AS listed_other_type;
SELECT regress.stripe('{"id": "evt_async_2", "type": "checkout.session.async_payment_succeeded",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000002",
  "payment_status": "paid"}}}') AS no_longer_listed;
SELECT regress.stripe('{"id": "evt_paid_4", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000002",
  "payment_status": "paid"}}}') AS still_listed;
-- Tabs and newlines count as spaces.
SET provision.stripe_event_types = E'\tcheckout.session.async_payment_succeeded\n';
SELECT regress.stripe('{"id": "evt_async_3", "type": "checkout.session.async_payment_succeeded",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000003"}}}')
       AS async_without_payment_status;
-- An empty list (or only commas and spaces) enqueues nothing.
SET provision.stripe_event_types = ' , ,';
SELECT regress.stripe('{"id": "evt_paid_5", "type": "checkout.session.completed",
  "data": {"object": {"client_reference_id": "85000000-0000-4000-8000-000000000003",
  "payment_status": "paid"}}}') AS empty_list;
SET provision.stripe_event_types = '';
SELECT regress.stripe('{"id": "evt_paid_5", "type": "checkout.session.completed",
  "data": {"object": {}}}') AS empty_string;
-- Entries that are not event types are refused; the setting keeps its value.
SELECT v AS value, regress.try(format('SET provision.stripe_event_types = %L', v)) AS outcome
  FROM (VALUES ('checkout.session.completed payment_intent.succeeded'),
               ('checkout.session.completed;invoice.paid'),
               ('Checkout.Session.Completed'),
               ('checkout.session.*'),
               ('checkout.session.completed, "invoice.paid"')) AS t(v);
SHOW provision.stripe_event_types;
RESET provision.stripe_event_types;
SHOW provision.stripe_event_types;
SELECT idempotency_key, agent_id FROM provision.provisioning_jobs ORDER BY idempotency_key;

-- Only a superuser may change it: the listener's role must not widen the
-- events that enqueue jobs.
CREATE ROLE regress_provision_stripe NOLOGIN;
SET ROLE regress_provision_stripe;
SELECT regress.try($$SET provision.stripe_event_types = 'customer.created'$$) AS not_superuser;
RESET ROLE;
DROP ROLE regress_provision_stripe;
SHOW provision.stripe_event_types;

DROP FUNCTION regress.stripe(text);
CALL regress.reset();
RESET client_min_messages;
