-- migrate:up
-- The outbox: every task state change writes its event in the same statement
-- (and so the same transaction) as the change. The events are the feed that
-- ListTaskEvents and WatchTaskEvents serve and that webhooks deliver.
CREATE SEQUENCE task_events_id_seq AS bigint;

CREATE TABLE task_events (
    id         bigint      PRIMARY KEY,
    -- No foreign keys: each would cost a lookup per event on the hot path. The
    -- writers insert events only for rows they have just changed, and
    -- delete_user deletes the user's events with the user.
    task_id    uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    type       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload    jsonb       NOT NULL,
    CONSTRAINT task_events_type_check
        CHECK (type IN ('task.created', 'task.started', 'task.retried',
                        'task.completed', 'task.failed', 'task.cancelled')),
    CONSTRAINT task_events_payload_object_check
        CHECK (jsonb_typeof(payload) = 'object')
);

ALTER SEQUENCE task_events_id_seq OWNED BY task_events.id;

-- The feed: a user's events in order, after a given id (and delete_user).
-- Pruning walks the primary key: ids increase with time.
CREATE INDEX task_events_user_idx ON task_events (user_id, id);

COMMENT ON TABLE task_events IS 'The outbox: one row per task state change (created, started, retried, completed, failed, cancelled), written in the transaction of the change.';
COMMENT ON COLUMN task_events.id IS 'Increases in commit order: taken from task_events_id_seq under a transaction-level advisory lock (taskgate_sequence_task_event), so a reader that has seen id N will never see a smaller id appear later.';
COMMENT ON COLUMN task_events.payload IS 'The task as the API shows it right after the change (never the image bytes).';

-- The id is taken under a transaction-level lock held until commit: events
-- get their ids in the order their transactions commit, so "after N" never
-- skips an event that committed late. Every statement that writes events
-- takes its row locks before inserting them (so it never waits for a row
-- while holding this lock).
CREATE FUNCTION taskgate_sequence_task_event() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7306086815950189923);
    NEW.id := nextval('task_events_id_seq');
    RETURN NEW;
END;
$$;

CREATE TRIGGER task_events_sequence
    BEFORE INSERT ON task_events
    FOR EACH ROW
    EXECUTE FUNCTION taskgate_sequence_task_event();

-- Feed watchers and the webhook dispatcher (LISTEN taskgate_task_feed) hear
-- of new events, one notification per user per statement.
CREATE FUNCTION taskgate_notify_task_feed() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('taskgate_task_feed', user_id::text)
    FROM (SELECT DISTINCT user_id FROM new_events) AS users;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_events_notify
    AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskgate_notify_task_feed();

COMMENT ON FUNCTION taskgate_sequence_task_event() IS 'Gives a new event its id under an advisory lock held until commit: ids increase in commit order.';
COMMENT ON FUNCTION taskgate_notify_task_feed() IS 'pg_notify(''taskgate_task_feed'', user id) for the users who got new events.';

-- migrate:down
DROP TRIGGER IF EXISTS task_events_notify ON task_events;
DROP TRIGGER IF EXISTS task_events_sequence ON task_events;
DROP FUNCTION IF EXISTS taskgate_notify_task_feed();
DROP FUNCTION IF EXISTS taskgate_sequence_task_event();
DROP TABLE IF EXISTS task_events;
DROP SEQUENCE IF EXISTS task_events_id_seq;
