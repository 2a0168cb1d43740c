-- migrate:up
CREATE TABLE tasks (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status              text        NOT NULL DEFAULT 'pending',
    filters             jsonb       NOT NULL,
    output_format       text        NOT NULL,
    input_image         bytea       NOT NULL,
    input_content_type  text        NOT NULL,
    result_image        bytea,
    result_content_type text,
    result_width        integer,
    result_height       integer,
    error               text,
    attempts            integer     NOT NULL DEFAULT 0,
    max_attempts        integer     NOT NULL DEFAULT 3,
    idempotency_key     text,
    cancel_requested    boolean     NOT NULL DEFAULT false,
    run_after           timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    heartbeat_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    CONSTRAINT tasks_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT tasks_filters_array_check
        CHECK (jsonb_typeof(filters) = 'array'),
    CONSTRAINT tasks_output_format_check
        CHECK (output_format IN ('png', 'jpeg', 'webp')),
    CONSTRAINT tasks_attempts_check
        CHECK (attempts >= 0),
    CONSTRAINT tasks_max_attempts_check
        CHECK (max_attempts > 0),
    CONSTRAINT tasks_running_has_lease_check
        CHECK (status <> 'running'
               OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- At most one task per (user, idempotency key); NULL keys are unconstrained.
CREATE UNIQUE INDEX tasks_user_idempotency_key
    ON tasks (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Newest-first keyset (cursor) listing of a user's tasks.
CREATE INDEX tasks_user_created_idx
    ON tasks (user_id, created_at DESC, id DESC);

-- Claim query: pending tasks whose run_after has passed, oldest first.
CREATE INDEX tasks_claimable_idx
    ON tasks (run_after, created_at)
    WHERE status = 'pending';

-- Reaper query: running tasks whose lease has expired.
CREATE INDEX tasks_lease_expiry_idx
    ON tasks (lease_expires_at)
    WHERE status = 'running';

COMMENT ON TABLE tasks IS 'Image-processing tasks; claimed by processors with FOR UPDATE SKIP LOCKED and held under a lease.';
COMMENT ON COLUMN tasks.filters IS 'JSON array of filter operations, applied in order.';
COMMENT ON COLUMN tasks.attempts IS 'Number of times the task has been claimed; incremented on each claim. When a lease expires and attempts >= max_attempts the task becomes failed instead of pending.';
COMMENT ON COLUMN tasks.max_attempts IS 'Upper bound on attempts before an expired lease marks the task failed.';
COMMENT ON COLUMN tasks.idempotency_key IS 'Optional client-supplied key; a repeated submission with the same (user_id, idempotency_key) returns the existing task.';
COMMENT ON COLUMN tasks.cancel_requested IS 'Set when the user cancels a running task; the lease holder observes it and finishes the task as cancelled.';
COMMENT ON COLUMN tasks.run_after IS 'Earliest time a pending task may be claimed (used for retry backoff).';
COMMENT ON COLUMN tasks.lease_owner IS 'Identifier of the processor holding the lease; finishing updates are fenced on it. Required while running.';
COMMENT ON COLUMN tasks.lease_expires_at IS 'When the current lease lapses unless extended by a heartbeat; after that the task is reclaimable. Required while running.';
COMMENT ON COLUMN tasks.heartbeat_at IS 'Last time the lease holder extended the lease.';

-- migrate:down
DROP TABLE IF EXISTS tasks;
