-- A PL/pgSQL rendering of provision.handle_callback (SPEC section 2), used
-- only by bench/sql/run as the baseline the C implementation is measured
-- against.  It lives in its own schema, provision_plpgsql, is loaded into a
-- database of its own, and is never installed by the extension.
--
-- It is written the way a careful PL/pgSQL author would: one lock on the
-- job row, the delivery checked under that lock, one INSERT for the
-- delivery, no exception blocks (they cost a subtransaction per call), and
-- the same rows, events and NOTIFY as the extension.

CREATE SCHEMA provision_plpgsql;

CREATE TYPE provision_plpgsql.agent_status AS ENUM ('draft', 'provisioning', 'active', 'failed');
CREATE TYPE provision_plpgsql.job_status AS ENUM
    ('pending', 'dispatched', 'provisioning', 'running', 'failed', 'cancelled');

CREATE TABLE provision_plpgsql.agents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    status      provision_plpgsql.agent_status NOT NULL DEFAULT 'draft',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The name limit as the extension has it: a trigger on INSERT and UPDATE OF
-- name, so that status changes do not pay for it. The jobs keep plain CHECK
-- expressions, what PL/pgSQL has where the extension calls a C function.
CREATE FUNCTION provision_plpgsql.agent_name_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF char_length(NEW.name) NOT BETWEEN 1 AND 255 THEN
    RAISE check_violation USING
      MESSAGE = format('agent name must be 1 to 255 characters, not %s', char_length(NEW.name));
  END IF;
  RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER agents_name_length
    AFTER INSERT OR UPDATE OF name ON provision_plpgsql.agents
    FOR EACH ROW EXECUTE FUNCTION provision_plpgsql.agent_name_check();

CREATE TABLE provision_plpgsql.provisioning_jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id           uuid NOT NULL REFERENCES provision_plpgsql.agents (id),
    status             provision_plpgsql.job_status NOT NULL DEFAULT 'pending',
    idempotency_key    text COLLATE "C" UNIQUE,
    attempts           integer NOT NULL DEFAULT 0,
    error              text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    dispatched_at      timestamptz,
    started_at         timestamptz,
    completed_at       timestamptz,
    failed_at          timestamptz,
    last_heartbeat_at  timestamptz,
    CHECK (status <> 'running' OR completed_at IS NOT NULL),
    CHECK (status <> 'failed' OR failed_at IS NOT NULL)
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX ON provision_plpgsql.provisioning_jobs (agent_id)
    WHERE status IN ('pending', 'dispatched', 'provisioning');
CREATE INDEX ON provision_plpgsql.provisioning_jobs (created_at, id) WHERE status = 'pending';

CREATE TABLE provision_plpgsql.agent_instances (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id           uuid NOT NULL UNIQUE REFERENCES provision_plpgsql.agents (id),
    job_id             uuid NOT NULL REFERENCES provision_plpgsql.provisioning_jobs (id),
    server_id          text NOT NULL,
    server_ip          inet NOT NULL,
    tailscale_ip       inet NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz
) WITH (fillfactor = 80);
CREATE INDEX ON provision_plpgsql.agent_instances (job_id);

CREATE TABLE provision_plpgsql.callback_deliveries (
    delivery_id  text COLLATE "C" PRIMARY KEY,
    job_id       uuid,
    received_at  timestamptz NOT NULL DEFAULT now(),
    result       jsonb NOT NULL,
    payload_sha256 bytea
);
CREATE INDEX ON provision_plpgsql.callback_deliveries USING brin (received_at);

CREATE TABLE provision_plpgsql.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    job_id       uuid,
    agent_id     uuid,
    kind         text NOT NULL,
    from_status  text,
    to_status    text,
    detail       jsonb
);
CREATE INDEX ON provision_plpgsql.events USING brin (at);

-- One event row, and its notification while provision.notify is on.
CREATE FUNCTION provision_plpgsql.log_event(p_job uuid, p_agent uuid, p_kind text,
                                            p_from text, p_to text, p_detail jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO provision_plpgsql.events (job_id, agent_id, kind, from_status, to_status, detail)
  VALUES (p_job, p_agent, p_kind, p_from, p_to, p_detail);
  IF coalesce(current_setting('provision.notify', true), 'on')::boolean THEN
    PERFORM pg_notify('provision_events',
                      json_build_object('job_id', p_job, 'agent_id', p_agent,
                                        'kind', p_kind, 'to_status', p_to)::text);
  END IF;
END
$$;

-- Reads an optional string field; a JSON null is absent, another type an error.
CREATE FUNCTION provision_plpgsql.text_field(payload jsonb, field text, allow_number boolean)
RETURNS text LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v jsonb := payload -> field;
BEGIN
  IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
    RETURN NULL;
  ELSIF jsonb_typeof(v) = 'string' OR (allow_number AND jsonb_typeof(v) = 'number') THEN
    RETURN v #>> '{}';
  END IF;
  RAISE EXCEPTION 'invalid callback field "%": expected a string', field
        USING ERRCODE = '22023';
END
$$;

CREATE FUNCTION provision_plpgsql.handle_callback(payload jsonb, delivery_id text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_job         provision_plpgsql.provisioning_jobs;
  v_status      text;
  v_server_id   text;
  v_server_ip   inet;
  v_tailscale   inet;
  v_error       text;
  v_nmeta       int;
  v_from        provision_plpgsql.job_status;
  v_to          provision_plpgsql.job_status;
  v_action      text;
  v_applied     boolean := false;
  v_agent       provision_plpgsql.agent_status;
  v_instance    uuid;
  v_kind        text;
  v_result      jsonb;
  v_sha256      bytea;
  v_recorded    provision_plpgsql.callback_deliveries;
BEGIN
  IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
    RAISE EXCEPTION 'callback payload must be a JSON object' USING ERRCODE = '22023';
  END IF;
  IF delivery_id IS NOT NULL AND octet_length(delivery_id) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'delivery_id must be 1 to 255 bytes' USING ERRCODE = '22023';
  END IF;
  v_status := provision_plpgsql.text_field(payload, 'status', false);
  IF v_status IS NULL THEN
    RAISE EXCEPTION 'callback field "status" is required' USING ERRCODE = '22023';
  ELSIF v_status NOT IN ('running', 'provisioning', 'failed', 'heartbeat') THEN
    RAISE EXCEPTION 'callback field "status" has unknown value "%"', v_status USING ERRCODE = '22023';
  END IF;
  IF provision_plpgsql.text_field(payload, 'job_id', false) IS NULL THEN
    RAISE EXCEPTION 'callback field "job_id" is required' USING ERRCODE = '22023';
  END IF;

  SELECT * INTO v_job FROM provision_plpgsql.provisioning_jobs
   WHERE id = (payload ->> 'job_id')::uuid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'job % does not exist', payload ->> 'job_id' USING ERRCODE = 'P0002';
  END IF;

  -- Checked under the job lock: a concurrent twin has committed by now.
  IF delivery_id IS NOT NULL THEN
    -- 1.1 delivery binding: the id is bound to its job and payload digest.
    v_sha256 := sha256(convert_to(payload::text, 'UTF8'));
    SELECT * INTO v_recorded FROM provision_plpgsql.callback_deliveries d
     WHERE d.delivery_id = handle_callback.delivery_id;
    IF FOUND THEN
      IF v_recorded.job_id IS DISTINCT FROM v_job.id
         OR v_recorded.payload_sha256 IS DISTINCT FROM v_sha256 THEN
        RAISE EXCEPTION 'delivery id "%" was already used for another callback', delivery_id
          USING ERRCODE = '23505';
      END IF;
      RETURN v_recorded.result || '{"duplicate": true}';
    END IF;
  END IF;

  v_from := v_job.status;
  IF v_status = 'heartbeat' THEN
    v_action := 'heartbeat';
    IF v_from IN ('failed', 'cancelled') THEN
      RAISE EXCEPTION 'job % is %, heartbeat refused', v_job.id, v_from
            USING ERRCODE = '55000', DETAIL = 'current status: ' || v_from;
    END IF;
    UPDATE provision_plpgsql.provisioning_jobs SET last_heartbeat_at = now() WHERE id = v_job.id;
    UPDATE provision_plpgsql.agent_instances SET last_heartbeat_at = now()
     WHERE agent_id = v_job.agent_id AND job_id = v_job.id;
    v_applied := true;
    v_to := v_from;
  ELSE
    v_server_id := provision_plpgsql.text_field(payload, 'server_id', true);
    v_server_ip := provision_plpgsql.text_field(payload, 'server_ip', false)::inet;
    v_tailscale := provision_plpgsql.text_field(payload, 'tailscale_ip', false)::inet;
    v_error := provision_plpgsql.text_field(payload, 'error', false);
    v_nmeta := num_nonnulls(v_server_id, v_server_ip, v_tailscale);
    v_to := CASE v_status WHEN 'running' THEN 'running'::provision_plpgsql.job_status
                          WHEN 'failed' THEN 'failed' ELSE 'provisioning' END;
    v_action := CASE WHEN v_to = 'running' AND v_nmeta = 3 THEN 'completed'
                     WHEN v_to = 'failed' THEN 'failed' ELSE 'status' END;
    IF v_to = 'running' AND v_nmeta NOT IN (0, 3) THEN
      RAISE EXCEPTION 'running callback needs all of server_id, server_ip, tailscale_ip or none'
            USING ERRCODE = '22023';
    END IF;
    IF v_server_id = '' OR char_length(v_server_id) > 255 THEN
      RAISE EXCEPTION 'callback field "server_id" must be 1 to 255 characters' USING ERRCODE = '22023';
    END IF;

    IF v_from = v_to AND NOT (v_action = 'completed') THEN
      v_applied := false;
    ELSIF v_from = 'running' AND v_to = 'provisioning' THEN
      v_applied := false;
    ELSIF v_from = 'cancelled' OR (v_from = 'running' AND v_to <> 'running') THEN
      RAISE EXCEPTION 'job % is %, cannot move to %', v_job.id, v_from, v_to
            USING ERRCODE = '55000', DETAIL = 'current status: ' || v_from;
    ELSE
      v_applied := true;
      IF v_from <> v_to THEN
        UPDATE provision_plpgsql.provisioning_jobs
           SET status = v_to, updated_at = now(),
               attempts = attempts + CASE WHEN v_to = 'provisioning'
                                            OR (v_to = 'running' AND v_from NOT IN ('provisioning', 'running'))
                                          THEN 1 ELSE 0 END,
               started_at = CASE WHEN v_to = 'provisioning' THEN now() ELSE started_at END,
               completed_at = CASE WHEN v_to = 'running' THEN now() ELSE completed_at END,
               failed_at = CASE WHEN v_to = 'failed' THEN now() ELSE failed_at END,
               error = CASE WHEN v_to = 'failed' THEN v_error END
         WHERE id = v_job.id;
      END IF;
      IF v_action = 'completed' THEN
        INSERT INTO provision_plpgsql.agent_instances AS i
               (agent_id, job_id, server_id, server_ip, tailscale_ip)
        VALUES (v_job.agent_id, v_job.id, v_server_id, v_server_ip, v_tailscale)
        ON CONFLICT (agent_id) DO UPDATE
           SET job_id = excluded.job_id, server_id = excluded.server_id,
               server_ip = excluded.server_ip, tailscale_ip = excluded.tailscale_ip,
               updated_at = now()
        RETURNING i.id INTO v_instance;
      END IF;
      IF v_to = 'running' THEN
        UPDATE provision_plpgsql.agents SET status = 'active', updated_at = now()
         WHERE id = v_job.agent_id AND status <> 'active';
      ELSIF v_to = 'provisioning' THEN
        UPDATE provision_plpgsql.agents SET status = 'provisioning', updated_at = now()
         WHERE id = v_job.agent_id AND status IN ('draft', 'failed');
      ELSE
        UPDATE provision_plpgsql.agents SET status = 'failed', updated_at = now()
         WHERE id = v_job.agent_id AND status <> 'active';
      END IF;
      v_kind := CASE v_to WHEN 'running' THEN 'completed' WHEN 'failed' THEN 'failed'
                          ELSE 'status' END;
      PERFORM provision_plpgsql.log_event(
                v_job.id, v_job.agent_id, v_kind, v_from::text, v_to::text,
                CASE WHEN v_action = 'completed'
                     THEN jsonb_build_object('server_id', v_server_id,
                                             'server_ip', v_server_ip,
                                             'tailscale_ip', v_tailscale,
                                             'delivery_id', delivery_id)
                     WHEN v_to = 'failed'
                     THEN jsonb_build_object('error', v_error, 'delivery_id', delivery_id)
                     ELSE jsonb_build_object('delivery_id', delivery_id) END);
    END IF;
  END IF;

  SELECT a.status INTO v_agent FROM provision_plpgsql.agents a WHERE a.id = v_job.agent_id;
  IF v_instance IS NULL THEN
    SELECT i.id INTO v_instance FROM provision_plpgsql.agent_instances i
     WHERE i.agent_id = v_job.agent_id;
  END IF;
  v_result := jsonb_build_object('job_id', v_job.id, 'action', v_action,
                                 'applied', v_applied, 'duplicate', false,
                                 'job_status', CASE WHEN v_applied THEN v_to ELSE v_from END,
                                 'agent_status', v_agent);
  IF v_instance IS NOT NULL THEN
    v_result := v_result || jsonb_build_object('instance_id', v_instance);
  END IF;
  IF delivery_id IS NOT NULL THEN
    INSERT INTO provision_plpgsql.callback_deliveries (delivery_id, job_id, result, payload_sha256)
    VALUES (delivery_id, v_job.id, v_result, v_sha256);
  END IF;
  RETURN v_result;
END
$$;
