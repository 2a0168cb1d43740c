-- migrate:up
-- Wake processors (LISTEN taskgate_tasks) when a task becomes claimable:
-- inserted as pending, or put back to pending (retry / expired lease).
CREATE FUNCTION taskgate_notify_pending_task() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('taskgate_tasks', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_pending_insert
    AFTER INSERT ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION taskgate_notify_pending_task();

CREATE TRIGGER tasks_notify_pending_update
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
    EXECUTE FUNCTION taskgate_notify_pending_task();

COMMENT ON FUNCTION taskgate_notify_pending_task() IS 'pg_notify(''taskgate_tasks'', task id) for tasks that became pending.';

-- migrate:down
DROP TRIGGER IF EXISTS tasks_notify_pending_update ON tasks;
DROP TRIGGER IF EXISTS tasks_notify_pending_insert ON tasks;
DROP FUNCTION IF EXISTS taskgate_notify_pending_task();
