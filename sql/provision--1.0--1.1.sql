-- provision 1.0 -> 1.1 (ALTER EXTENSION provision UPDATE TO '1.1').
-- Every 1.1 change to the schema is here, in the order it was made; a
-- database updated through this script must end with the same objects as
-- one created by sql/provision.sql at 1.1, with every 1.0 row kept.
\echo Use "ALTER EXTENSION provision UPDATE TO '1.1'" to load this file. \quit

-- Delivery binding: a delivery id is bound to the job and the payload it
-- delivered. Rows recorded by 1.0 keep a null digest and match on their job.
ALTER TABLE provision.callback_deliveries ADD COLUMN payload_sha256 bytea;
COMMENT ON COLUMN provision.callback_deliveries.payload_sha256 IS
    'SHA-256 of the payload as jsonb text; the same id with another payload is refused (null: recorded before 1.1)';
