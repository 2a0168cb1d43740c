-- migrate:up
-- A fair queue: processors take tasks in turns across users (round-robin),
-- each user's own tasks by priority, then oldest first; per-user limits on
-- pending and running tasks, with overrides in user_limits.

ALTER TABLE tasks
    ADD COLUMN priority         smallint NOT NULL DEFAULT 0,
    ADD COLUMN claims_mark      bigint   NOT NULL DEFAULT 0,
    ADD COLUMN user_claims_mark bigint   NOT NULL DEFAULT 0,
    ADD CONSTRAINT tasks_priority_check CHECK (priority BETWEEN -10 AND 10);

COMMENT ON COLUMN tasks.priority IS 'Orders the user''s own pending tasks: higher first (-10..10, default 0); never other users'' tasks.';
COMMENT ON COLUMN tasks.claims_mark IS 'Claims made (task_claims) when the task was created: with user_claims_mark, how many other users'' tasks started while it waited.';
COMMENT ON COLUMN tasks.user_claims_mark IS 'user_queues.claimed of its user when the task was created.';

-- The head of each user's queue: the fair claim takes a user's tasks by
-- priority, then creation time (a rescued task keeps its place).
CREATE INDEX tasks_user_queue_idx
    ON tasks (user_id, priority DESC, created_at, id)
    WHERE status = 'pending';

-- The first-in-first-out claim (fairness off) and the oldest pending age.
CREATE INDEX tasks_pending_created_idx
    ON tasks (created_at, id)
    WHERE status = 'pending';

CREATE SEQUENCE task_queue_turns;
CREATE SEQUENCE task_claims;
-- Called once: last_value (what a new task notes) is then the last claim's number.
SELECT setval('task_claims', 1);

COMMENT ON SEQUENCE task_queue_turns IS 'One value per claim that rotates users: user_queues.turn is 1000 times it plus the order served.';
COMMENT ON SEQUENCE task_claims IS 'One value per claimed task: the global count of claims.';

CREATE TABLE user_queues (
    user_id uuid    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    pending integer NOT NULL DEFAULT 0,
    running integer NOT NULL DEFAULT 0,
    claimed bigint  NOT NULL DEFAULT 0,
    turn    bigint  NOT NULL DEFAULT 0,
    active  boolean NOT NULL DEFAULT false,
    CONSTRAINT user_queues_pending_check CHECK (pending >= 0),
    CONSTRAINT user_queues_running_check CHECK (running >= 0),
    CONSTRAINT user_queues_active_check CHECK (active = (pending > 0))
);

-- The claim walks the users with pending work, the one served longest ago
-- first (ties by user id).
CREATE INDEX user_queues_turn_idx
    ON user_queues (turn, user_id)
    WHERE active;

COMMENT ON TABLE user_queues IS 'One row per user: their pending and running tasks (kept by triggers on tasks) and their turn in the fair claim. Claims lock the rows of the users they serve.';
COMMENT ON COLUMN user_queues.claimed IS 'Tasks of the user ever claimed (pending -> running).';
COMMENT ON COLUMN user_queues.active IS 'pending > 0, as a column of its own: the turn index covers only active users, and a count that changes without crossing zero is a HOT update (no index touched).';
COMMENT ON COLUMN user_queues.turn IS 'When the user was last served (task_queue_turns): the smallest goes next; 0 for a user never served.';

CREATE TABLE user_limits (
    user_id     uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    max_pending integer,
    max_running integer,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_limits_max_pending_check CHECK (max_pending >= 0),
    CONSTRAINT user_limits_max_running_check CHECK (max_running >= 0)
);

COMMENT ON TABLE user_limits IS 'Per-user overrides of TASKGATE_USER_MAX_PENDING and TASKGATE_USER_MAX_RUNNING; NULL keeps the setting, 0 means no limit.';

CREATE FUNCTION taskgate_create_user_queue() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO user_queues (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_create_queue
    AFTER INSERT ON users
    FOR EACH ROW
    EXECUTE FUNCTION taskgate_create_user_queue();

COMMENT ON FUNCTION taskgate_create_user_queue() IS 'Every user gets a user_queues row.';

-- Keeps user_queues.pending, running and claimed, and gives the users a
-- claim served new turns: once per statement, the users' rows updated in
-- user_id order (so that two statements never wait for each other's rows in
-- opposite orders).
CREATE FUNCTION taskgate_count_queue() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    change record;
    base bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR change IN
            SELECT user_id, count(*) FILTER (WHERE status = 'pending') AS pending,
                   count(*) FILTER (WHERE status = 'running') AS running
            FROM new_rows GROUP BY user_id ORDER BY user_id
        LOOP
            PERFORM taskgate_add_to_queue(change.user_id, change.pending, change.running, 0, NULL);
        END LOOP;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A claim: its users go to the back, in the order it served them (the
        -- fewest tasks first, then the older turn, then the user id: the order
        -- of their last tasks in the batch). A user alone keeps their turn.
        IF EXISTS (SELECT FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
                   WHERE o.status = 'pending' AND n.status = 'running')
           AND (SELECT count(*) FROM (SELECT FROM user_queues WHERE active
                                      ORDER BY turn, user_id LIMIT 2) AS two) > 1 THEN
            base := nextval('task_queue_turns') * 1000;
        END IF;
        FOR change IN
            SELECT d.*, CASE WHEN d.claimed > 0 THEN
                   base + row_number() OVER (PARTITION BY d.claimed > 0
                                             ORDER BY d.claimed, q.turn, d.user_id) END AS turn
            FROM (SELECT n.user_id,
                         sum((n.status = 'pending')::int - (o.status = 'pending')::int) AS pending,
                         sum((n.status = 'running')::int - (o.status = 'running')::int) AS running,
                         count(*) FILTER (WHERE o.status = 'pending' AND n.status = 'running')
                             AS claimed
                  FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
                  WHERE n.status IS DISTINCT FROM o.status
                  GROUP BY n.user_id) AS d
            JOIN user_queues AS q ON q.user_id = d.user_id
            ORDER BY d.user_id
        LOOP
            PERFORM taskgate_add_to_queue(change.user_id, change.pending, change.running,
                                          change.claimed, change.turn);
        END LOOP;
    ELSE
        FOR change IN
            SELECT user_id, count(*) FILTER (WHERE status = 'pending') AS pending,
                   count(*) FILTER (WHERE status = 'running') AS running
            FROM old_rows GROUP BY user_id ORDER BY user_id
        LOOP
            PERFORM taskgate_add_to_queue(change.user_id, -change.pending, -change.running, 0,
                                          NULL);
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION taskgate_add_to_queue(
    queue_user uuid, pending_delta bigint, running_delta bigint, claimed_delta bigint,
    new_turn bigint
) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    -- plpgsql: its plan is cached for the session (a SQL function's is not).
    IF pending_delta <> 0 OR running_delta <> 0 OR claimed_delta <> 0 OR new_turn IS NOT NULL THEN
        UPDATE user_queues
        SET pending = pending + pending_delta,
            running = running + running_delta,
            claimed = claimed + claimed_delta,
            active = pending + pending_delta > 0,
            turn = coalesce(new_turn, turn)
        WHERE user_id = queue_user;
    END IF;
END;
$$;

CREATE TRIGGER tasks_count_queue_insert
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskgate_count_queue();

CREATE TRIGGER tasks_count_queue_update
    AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskgate_count_queue();

CREATE TRIGGER tasks_count_queue_delete
    AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskgate_count_queue();

COMMENT ON FUNCTION taskgate_count_queue() IS 'Keeps user_queues.pending, running and claimed in step with tasks and moves the users a claim served to the back (turn), once per statement, rows locked in user_id order.';

INSERT INTO user_queues (user_id, pending, running, active)
SELECT users.id,
       count(tasks.id) FILTER (WHERE tasks.status = 'pending'),
       count(tasks.id) FILTER (WHERE tasks.status = 'running'),
       count(tasks.id) FILTER (WHERE tasks.status = 'pending') > 0
FROM users LEFT JOIN tasks ON tasks.user_id = users.id
GROUP BY users.id;

-- migrate:down
DROP TRIGGER IF EXISTS tasks_count_queue_delete ON tasks;
DROP TRIGGER IF EXISTS tasks_count_queue_update ON tasks;
DROP TRIGGER IF EXISTS tasks_count_queue_insert ON tasks;
DROP FUNCTION IF EXISTS taskgate_count_queue();
DROP FUNCTION IF EXISTS taskgate_add_to_queue(uuid, bigint, bigint, bigint, bigint);
DROP TRIGGER IF EXISTS users_create_queue ON users;
DROP FUNCTION IF EXISTS taskgate_create_user_queue();
DROP TABLE IF EXISTS user_limits;
DROP TABLE IF EXISTS user_queues;
DROP SEQUENCE IF EXISTS task_claims;
DROP SEQUENCE IF EXISTS task_queue_turns;
DROP INDEX IF EXISTS tasks_pending_created_idx;
DROP INDEX IF EXISTS tasks_user_queue_idx;
ALTER TABLE tasks
    DROP CONSTRAINT IF EXISTS tasks_priority_check,
    DROP COLUMN IF EXISTS user_claims_mark,
    DROP COLUMN IF EXISTS claims_mark,
    DROP COLUMN IF EXISTS priority;
