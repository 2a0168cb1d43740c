-- migrate:up
-- What processing needs beyond the first tasks table: progress, image metadata,
-- the request fingerprint behind an idempotency key, pruning of image bytes,
-- the request id for the logs, an append-only record of attempts, and change
-- notifications for watchers and for processors running a cancelled task.
ALTER TABLE tasks
    ADD COLUMN progress          integer     NOT NULL DEFAULT 0,
    ADD COLUMN input_width       integer     NOT NULL DEFAULT 0,
    ADD COLUMN input_height      integer     NOT NULL DEFAULT 0,
    ADD COLUMN input_size_bytes  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN result_size_bytes bigint,
    ADD COLUMN request_hash      bytea,
    ADD COLUMN request_id        text,
    ADD COLUMN images_pruned_at  timestamptz,
    ALTER COLUMN input_image DROP NOT NULL,
    ADD CONSTRAINT tasks_progress_check
        CHECK (progress >= 0 AND progress <= jsonb_array_length(filters)),
    ADD CONSTRAINT tasks_input_kept_while_open_check
        CHECK (status NOT IN ('pending', 'running') OR input_image IS NOT NULL),
    ADD CONSTRAINT tasks_idempotency_key_hash_check
        CHECK (idempotency_key IS NULL OR request_hash IS NOT NULL);

ALTER TABLE tasks
    ALTER COLUMN input_width DROP DEFAULT,
    ALTER COLUMN input_height DROP DEFAULT,
    ALTER COLUMN input_size_bytes DROP DEFAULT;

-- Pruner query: ended tasks that still hold their image bytes, oldest first.
CREATE INDEX tasks_prunable_idx
    ON tasks (finished_at)
    WHERE images_pruned_at IS NULL AND status IN ('completed', 'failed', 'cancelled');

COMMENT ON COLUMN tasks.progress IS 'How many filters of the pipeline are done in the current attempt.';
COMMENT ON COLUMN tasks.request_hash IS 'sha256 of the submission (image, filters, format), to tell a retried submission from a different one reusing its idempotency key.';
COMMENT ON COLUMN tasks.request_id IS 'The x-request-id of the CreateTask call, carried into the processor''s logs.';
COMMENT ON COLUMN tasks.images_pruned_at IS 'When input_image and result_image were deleted after the retention period.';

CREATE TABLE task_attempts (
    task_id      uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    processor_id text        NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    outcome      text        NOT NULL DEFAULT 'running',
    error        text,
    PRIMARY KEY (task_id, attempt),
    CONSTRAINT task_attempts_attempt_check CHECK (attempt > 0),
    CONSTRAINT task_attempts_outcome_check
        CHECK (outcome IN ('running', 'completed', 'failed', 'cancelled', 'error', 'lost', 'released')),
    CONSTRAINT task_attempts_ended_check
        CHECK ((outcome = 'running') = (ended_at IS NULL))
);

COMMENT ON TABLE task_attempts IS 'One row per claim of a task: written when a processor claims it, closed once with its outcome; never deleted but with its task.';
COMMENT ON COLUMN task_attempts.outcome IS 'running; completed, failed or cancelled (the task ended); error (retryable failure); lost (the lease expired: the processor died or stalled); released (handed back at shutdown).';

-- Watchers (LISTEN taskgate_task_events) hear of every status or progress
-- change; processors (LISTEN taskgate_task_cancel) of a cancellation asked
-- for a task they may be running.
CREATE FUNCTION taskgate_notify_task_change() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('taskgate_task_events', NEW.id::text);
    IF NEW.cancel_requested AND NOT OLD.cancel_requested AND NEW.status = 'running' THEN
        PERFORM pg_notify('taskgate_task_cancel', NEW.id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_change
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          OR NEW.progress IS DISTINCT FROM OLD.progress
          OR NEW.cancel_requested IS DISTINCT FROM OLD.cancel_requested)
    EXECUTE FUNCTION taskgate_notify_task_change();

COMMENT ON FUNCTION taskgate_notify_task_change() IS 'pg_notify(''taskgate_task_events'', task id) on a status, progress or cancellation change; also ''taskgate_task_cancel'' when a running task is asked to stop.';

-- migrate:down
DROP TRIGGER IF EXISTS tasks_notify_change ON tasks;
DROP FUNCTION IF EXISTS taskgate_notify_task_change();
DROP TABLE IF EXISTS task_attempts;
DROP INDEX IF EXISTS tasks_prunable_idx;
-- Pruned tasks keep their rows, with an empty image.
UPDATE tasks SET input_image = ''::bytea WHERE input_image IS NULL;
ALTER TABLE tasks
    DROP CONSTRAINT IF EXISTS tasks_idempotency_key_hash_check,
    DROP CONSTRAINT IF EXISTS tasks_input_kept_while_open_check,
    DROP CONSTRAINT IF EXISTS tasks_progress_check,
    ALTER COLUMN input_image SET NOT NULL,
    DROP COLUMN IF EXISTS images_pruned_at,
    DROP COLUMN IF EXISTS request_id,
    DROP COLUMN IF EXISTS request_hash,
    DROP COLUMN IF EXISTS result_size_bytes,
    DROP COLUMN IF EXISTS input_size_bytes,
    DROP COLUMN IF EXISTS input_height,
    DROP COLUMN IF EXISTS input_width,
    DROP COLUMN IF EXISTS progress;
