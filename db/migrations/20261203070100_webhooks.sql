-- migrate:up
-- Webhooks: users' endpoints, one delivery per (event, endpoint) written in
-- the transaction of the event, and every attempt to deliver it. Deliveries
-- are a queue like tasks: claimed with FOR UPDATE SKIP LOCKED under a lease,
-- finished by fenced updates.
CREATE TABLE webhook_endpoints (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                text        NOT NULL,
    event_types        text[]      NOT NULL DEFAULT '{}',
    secret             text        NOT NULL,
    previous_secret    text,
    previous_secret_expires_at timestamptz,
    failing_since      timestamptz,
    disabled_at        timestamptz,
    disabled_reason    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_secret_check CHECK (secret LIKE 'whsec\_%'),
    CONSTRAINT webhook_endpoints_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL)),
    CONSTRAINT webhook_endpoints_disabled_check
        CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL))
);

CREATE INDEX webhook_endpoints_user_idx ON webhook_endpoints (user_id, created_at, id);
-- Claims go through the enabled endpoints.
CREATE INDEX webhook_endpoints_enabled_idx ON webhook_endpoints (id) WHERE disabled_at IS NULL;

COMMENT ON TABLE webhook_endpoints IS 'Where a user wants task events POSTed (Standard Webhooks 1.0).';
COMMENT ON COLUMN webhook_endpoints.event_types IS 'Only these event types (task_events.type); empty for every type.';
COMMENT ON COLUMN webhook_endpoints.secret IS 'The signing key, whsec_ + base64; shown to its owner once, at creation or rotation.';
COMMENT ON COLUMN webhook_endpoints.previous_secret IS 'The key before the last rotation: deliveries are signed with both until previous_secret_expires_at.';
COMMENT ON COLUMN webhook_endpoints.failing_since IS 'The first failed attempt since the last success; past TASKGATE_WEBHOOK_DISABLE_AFTER the endpoint is disabled.';
COMMENT ON COLUMN webhook_endpoints.disabled_reason IS 'Why deliveries stopped (410 Gone, or failing since a time), for its owner to see.';

CREATE TABLE webhook_deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: an endpoint deleted while an event is written must not
    -- fail the task's state change. DeleteWebhookEndpoint deletes its deliveries;
    -- claims join the endpoints, so a straggler is never sent.
    endpoint_id      uuid        NOT NULL,
    event_id         bigint      NOT NULL REFERENCES task_events (id) ON DELETE CASCADE,
    task_id          uuid        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'running', 'delivered', 'failed')),
    CONSTRAINT webhook_deliveries_running_has_lease_check
        CHECK (status <> 'running'
               OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id)
);

-- Claim: an endpoint's due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due_idx
    ON webhook_deliveries (endpoint_id, run_after, event_id)
    WHERE status = 'pending';
-- Order per task and endpoint: a delivery waits for the earlier ones still open.
CREATE INDEX webhook_deliveries_open_idx
    ON webhook_deliveries (endpoint_id, task_id, event_id)
    WHERE status IN ('pending', 'running');
-- Rescue: running deliveries whose lease expired.
CREATE INDEX webhook_deliveries_lease_expiry_idx
    ON webhook_deliveries (lease_expires_at)
    WHERE status = 'running';

COMMENT ON TABLE webhook_deliveries IS 'One event to one endpoint: a queue entry claimed with FOR UPDATE SKIP LOCKED under a lease and finished by fenced updates, like tasks.';
COMMENT ON COLUMN webhook_deliveries.status IS 'pending (due at run_after), running (leased), delivered (a 2xx), failed (attempts used up, or the endpoint disabled).';

CREATE TABLE webhook_attempts (
    delivery_id  bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    endpoint_id  uuid        NOT NULL,
    event_id     bigint      NOT NULL,
    started_at   timestamptz NOT NULL,
    latency_ms   double precision,
    http_status  integer,
    error        text,
    PRIMARY KEY (delivery_id, attempt),
    CONSTRAINT webhook_attempts_attempt_check CHECK (attempt > 0)
);

CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, started_at DESC);

COMMENT ON TABLE webhook_attempts IS 'Every POST of a delivery: when, the HTTP status (none when no answer came), the latency (none when its dispatcher died during it) and the error.';

-- An event's deliveries are written with it: one per enabled endpoint of its
-- owner whose filter takes its type, in the same transaction.
CREATE FUNCTION taskgate_fan_out_webhooks() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event_id, task_id)
    SELECT endpoints.id, new_events.id, new_events.task_id
    FROM new_events
    JOIN webhook_endpoints AS endpoints
      ON endpoints.user_id = new_events.user_id
     AND endpoints.disabled_at IS NULL
     AND (endpoints.event_types = '{}' OR new_events.type = ANY (endpoints.event_types))
    ORDER BY new_events.id;
    IF FOUND THEN
        PERFORM pg_notify('taskgate_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_events_fan_out_webhooks
    AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskgate_fan_out_webhooks();

COMMENT ON FUNCTION taskgate_fan_out_webhooks() IS 'Writes the deliveries of new events to their owners'' enabled endpoints; pg_notify(''taskgate_webhooks'') for the dispatchers.';

-- migrate:down
DROP TRIGGER IF EXISTS task_events_fan_out_webhooks ON task_events;
DROP FUNCTION IF EXISTS taskgate_fan_out_webhooks();
DROP TABLE IF EXISTS webhook_attempts;
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS webhook_endpoints;
