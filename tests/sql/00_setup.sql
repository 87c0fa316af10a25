CREATE EXTENSION provision;

-- Helpers shared by the test files.  They live in a schema of their own
-- (not pg_temp) so that each file need not define them again, and PUBLIC
-- may use them so that the least-privileged roles of 60_privileges can
-- report their errors the same way.  They run with the caller's rights.
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- Runs one statement and reports 'ok' or its error: SQLSTATE, message and
-- (unless with_detail is false, for details holding volatile values) the
-- DETAIL, so that a table of cases shows each SQLSTATE next to its message.
CREATE FUNCTION regress.try(stmt text, with_detail boolean DEFAULT true)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  det text;
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || msg
         || CASE WHEN with_detail AND det <> '' THEN ' | ' || det ELSE '' END;
END
$$;

-- Runs one callback and reports either the result or the error.  The
-- payload is passed as text and cast inside, so that JSON the server
-- refuses to parse is reported the same way.  Reports are cut at 200
-- characters so that a message quoting a huge value stays readable.
CREATE FUNCTION regress.cb(payload text, delivery text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  st text;
  msg text;
  det text;
BEGIN
  r := provision.handle_callback(payload::jsonb, delivery);
  RETURN format('ok %s applied=%s duplicate=%s job=%s agent=%s',
                r->>'action', r->>'applied', r->>'duplicate',
                r->>'job_status', r->>'agent_status');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL;
  RETURN left(st || ' ' || msg
              || CASE WHEN det <> '' THEN ' | ' || det ELSE '' END, 200);
END
$$;

-- Empties every table of the extension, for a file that starts from (or
-- leaves behind) a clean slate.
CREATE PROCEDURE regress.reset()
LANGUAGE sql AS $$
  TRUNCATE provision.events, provision.callback_deliveries, provision.agent_instances,
           provision.provisioning_jobs, provision.agents
$$;
