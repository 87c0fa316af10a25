-- provision 1.0 -> 1.1 (ALTER EXTENSION provision UPDATE TO '1.1').
-- Every 1.1 change to the schema is here, in the order it was made; a
-- database updated through this script must end with the same objects as
-- one created by sql/provision.sql at 1.1, with every 1.0 row kept.
\echo Use "ALTER EXTENSION provision UPDATE TO '1.1'" to load this file. \quit

-- Stripe payments: handle_stripe_event, what the listener calls for a
-- verified Stripe event (its settings: provision.stripe_event_types).
CREATE FUNCTION provision.handle_stripe_event(event jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'handle_stripe_event'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION provision.handle_stripe_event(jsonb) IS
    'Enqueues a job (key stripe:<event id>) for the agent a paid Checkout Session names; other events are ignored';
-- Like every function: EXECUTE only for the roles granted it.
REVOKE ALL ON FUNCTION provision.handle_stripe_event(jsonb) FROM PUBLIC;
