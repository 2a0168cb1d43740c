-- Every SQL statement of the Postgres repositories, by name.
-- A statement starts at its "-- name: ..." line and runs to the next one.

-- name: insert_user
-- Registers a user; a taken username violates users_username_key.
INSERT INTO users (username, password_hash)
VALUES (%(username)s, %(password_hash)s)
RETURNING id, username, created_at;

-- name: get_user
SELECT id, username, created_at
FROM users
WHERE id = %(id)s;

-- name: get_credentials
SELECT id, password_hash
FROM users
WHERE username = %(username)s;

-- name: delete_user
-- Deletes the user; their tasks, attempts and webhook endpoints go with them
-- (ON DELETE CASCADE), and their task events (and so their deliveries) here.
WITH events AS (
    DELETE FROM task_events
    WHERE user_id = %(id)s
)
DELETE FROM users
WHERE id = %(id)s;

-- name: ping
SELECT 1;

-- ---------------------------------------------------------------------------
-- Tasks, as the API sees them. None of these reads the image bytes but
-- get_task_result.

-- fragment: task_columns
id, user_id, status, filters, output_format, idempotency_key,
input_content_type, input_width, input_height, input_size_bytes,
result_content_type, result_width, result_height, result_size_bytes,
error, attempts, max_attempts, progress, cancel_requested, priority,
created_at, updated_at, started_at, finished_at, images_pruned_at

-- fragment: task_snapshot
-- The task as the API shows it (task_columns, qualified), for its events.
jsonb_build_object(
    'id', tasks.id, 'user_id', tasks.user_id, 'status', tasks.status,
    'filters', tasks.filters, 'output_format', tasks.output_format,
    'idempotency_key', tasks.idempotency_key,
    'input_content_type', tasks.input_content_type, 'input_width', tasks.input_width,
    'input_height', tasks.input_height, 'input_size_bytes', tasks.input_size_bytes,
    'result_content_type', tasks.result_content_type, 'result_width', tasks.result_width,
    'result_height', tasks.result_height, 'result_size_bytes', tasks.result_size_bytes,
    'error', tasks.error, 'attempts', tasks.attempts, 'max_attempts', tasks.max_attempts,
    'progress', tasks.progress, 'cancel_requested', tasks.cancel_requested,
    'priority', tasks.priority, 'created_at', tasks.created_at, 'updated_at', tasks.updated_at,
    'started_at', tasks.started_at, 'finished_at', tasks.finished_at,
    'images_pruned_at', tasks.images_pruned_at
)

-- name: insert_task
-- A repeated idempotency key inserts nothing; a concurrent insert with the
-- same key waits for the first to commit. Neither does a user with
-- max_pending tasks pending (0: no limit; user_limits overrides the
-- setting): the user's queue row is locked first, so two submissions at the
-- edge cannot both pass. Always one row: the task's columns (NULL when
-- nothing was inserted), the pending count before it and the limit; no row
-- when the user is gone. The new task's task.created event is written by the
-- same statement.
WITH gate AS (
    SELECT q.pending, q.claimed, coalesce(l.max_pending, %(max_pending)s) AS max_pending
    FROM user_queues AS q LEFT JOIN user_limits AS l ON l.user_id = q.user_id
    WHERE q.user_id = %(user_id)s
    FOR UPDATE OF q
), inserted AS (
    INSERT INTO tasks (
        user_id, filters, output_format, idempotency_key, request_hash, request_id,
        input_image, input_content_type, input_width, input_height, input_size_bytes,
        max_attempts, priority, claims_mark, user_claims_mark, trace_context
    )
    SELECT
        %(user_id)s, %(filters)s, %(output_format)s, %(idempotency_key)s, %(request_hash)s,
        %(request_id)s, %(image)s, %(content_type)s, %(width)s, %(height)s, %(size_bytes)s,
        %(max_attempts)s, %(priority)s, (SELECT last_value FROM task_claims), gate.claimed,
        %(trace_context)s
    FROM gate
    WHERE gate.max_pending = 0 OR gate.pending < gate.max_pending
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {task_columns}, {task_snapshot} AS snapshot
), events AS (
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, 'task.created', snapshot FROM inserted
), shown AS (
    SELECT {task_columns} FROM inserted
)
SELECT shown.*, gate.pending AS queued, gate.max_pending
FROM gate LEFT JOIN shown ON true;

-- name: get_task_by_idempotency_key
SELECT {task_columns}, request_hash
FROM tasks
WHERE user_id = %(user_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_task
SELECT {task_columns}
FROM tasks
WHERE id = %(id)s AND user_id = %(user_id)s;

-- name: get_task_result
-- What a result download needs before its bytes: IS NOT NULL reads the
-- column's null bit, not the value.
SELECT status, result_content_type, result_size_bytes, images_pruned_at,
       result_image IS NOT NULL AS stored
FROM tasks
WHERE id = %(id)s AND user_id = %(user_id)s;

-- name: get_task_result_chunk
-- One slice of the result, %(start)s bytes in (0-based); Postgres reads only
-- the TOAST chunks of that slice (result_image is stored uncompressed, see
-- the migration that set STORAGE EXTERNAL). NULL once the result is pruned.
SELECT substring(result_image FROM %(start)s + 1 FOR %(length)s) AS data
FROM tasks
WHERE id = %(id)s AND user_id = %(user_id)s;

-- name: list_tasks
-- Newest first, after the cursor (created_at, id) when there is one; served
-- by tasks_user_created_idx.
SELECT {task_columns}
FROM tasks
WHERE user_id = %(user_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- Lock order: a statement that writes events locks the task rows it changes,
-- then the queue rows (user_queues, in user order) its counting trigger will
-- update, and only then takes its owners' events locks (one per user, in user
-- order: the events are inserted by owner); the trigger runs at the end of
-- the statement, and waiting for a queue row while holding an events lock
-- would deadlock with a submission holding that row (insert_task's gate).
-- Holding the owner's queue row first, a statement never waits for the
-- owner's events lock: whoever holds it holds the row too.

-- name: cancel_task
-- A pending task ends at once (and gets its task.cancelled event); a running
-- one is asked to stop (its processor hears of it through
-- taskgate_task_cancel, and the ending writes the event). Ended tasks are
-- left alone.
WITH cancelled AS (
    UPDATE tasks
    SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
        cancel_requested = cancel_requested OR status = 'running',
        finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,
        updated_at = now()
    WHERE id = %(id)s AND user_id = %(user_id)s AND status IN ('pending', 'running')
    RETURNING {task_columns}, {task_snapshot} AS snapshot
), queues AS (
    SELECT q.user_id FROM user_queues AS q
    WHERE q.user_id IN (SELECT user_id FROM cancelled)
    ORDER BY q.user_id
    FOR UPDATE OF q
), events AS (
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, 'task.cancelled', snapshot
    FROM cancelled CROSS JOIN (SELECT count(*) FROM queues) AS held
    WHERE status = 'cancelled'
)
SELECT {task_columns} FROM cancelled;

-- ---------------------------------------------------------------------------
-- The queue, as processors see it. Every change to a claimed task is fenced
-- on (lease_owner, attempts, status = 'running'): only the holder of the
-- current attempt's lease can record progress or finish it.

-- name: claim_tasks_fair
-- Claims up to %(limit)s due tasks in turns across users (round-robin): the
-- users with pending work are walked by turn, the one served longest ago
-- first (user_queues_turn_idx), skipping those at their running limit and
-- those whose queue row another claim holds; each gives the head of its
-- queue (tasks_user_queue_idx: priority, then oldest first), up to what could
-- fill the batch. Everyone's first task comes before anyone's second.
-- The users served get new turns in the order they were served (unless one
-- user alone has pending work), by the trigger that counts the claim: an
-- UPDATE of user_queues in this statement made it much slower. The attempt
-- is counted and recorded (with its task.started event) in the same statement. Cost: the users walked
-- (at most %(limit)s with due work) and their heads, whatever the backlog.
WITH turns AS (
    SELECT q.user_id, q.turn, q.claimed,
           CASE WHEN coalesce(l.max_running, %(max_running)s) = 0 THEN %(limit)s
                ELSE least(%(limit)s, coalesce(l.max_running, %(max_running)s) - q.running)
           END AS room
    FROM user_queues AS q LEFT JOIN user_limits AS l ON l.user_id = q.user_id
    WHERE q.active
      AND (coalesce(l.max_running, %(max_running)s) = 0
           OR q.running < coalesce(l.max_running, %(max_running)s))
      -- A due task, looked up per user in tasks_user_queue_idx (a scalar
      -- subquery with LIMIT: never turned into a join over the whole backlog).
      AND (SELECT true FROM tasks AS t
           WHERE t.user_id = q.user_id AND t.status = 'pending' AND t.run_after <= now()
           ORDER BY t.priority DESC, t.created_at, t.id
           LIMIT 1)
    ORDER BY q.turn, q.user_id
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
), share AS (
    -- Enough from each user to fill the batch when the others have one task
    -- each; the picks below keep the rounds.
    SELECT %(limit)s - greatest(count(*), 1) + 1 AS per_user FROM turns
), heads AS (
    SELECT turns.user_id, turns.turn, turns.claimed, head.id, head.priority, head.created_at
    FROM turns CROSS JOIN share CROSS JOIN LATERAL (
        SELECT t.id, t.priority, t.created_at
        FROM tasks AS t
        WHERE t.user_id = turns.user_id AND t.status = 'pending' AND t.run_after <= now()
        ORDER BY t.priority DESC, t.created_at, t.id
        LIMIT least(turns.room, share.per_user)
        FOR UPDATE OF t SKIP LOCKED
    ) AS head
), ranked AS (
    SELECT heads.*,
           row_number() OVER (PARTITION BY user_id ORDER BY priority DESC, created_at, id) AS rank
    FROM heads
), picked AS (
    SELECT ranked.*, row_number() OVER (ORDER BY rank, turn, user_id) AS position
    FROM ranked
    ORDER BY rank, turn, user_id
    LIMIT %(limit)s
), claimed AS (
    UPDATE tasks
    SET status = 'running',
        attempts = attempts + 1,
        progress = 0,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s),
        heartbeat_at = now(),
        started_at = now(),
        updated_at = now()
    -- = ANY(ARRAY(...)): primary key lookups, whatever the plan guesses of the
    -- batch's size (a join could hash the whole table in a generic plan).
    WHERE tasks.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING tasks.id, tasks.attempts, tasks.filters, tasks.output_format, tasks.input_width,
              tasks.input_height, tasks.request_id, tasks.created_at, tasks.started_at,
              tasks.run_after, tasks.user_id, tasks.claims_mark, tasks.user_claims_mark,
              tasks.trace_context, nextval('task_claims') AS claim_number,
              {task_snapshot} AS snapshot
), recorded AS (
    INSERT INTO task_attempts (task_id, attempt, processor_id, started_at)
    SELECT id, attempts, %(owner)s, started_at FROM claimed
), events AS (
    -- ORDER BY: every row is locked before the first event takes its owner's
    -- events lock, and the owners' locks are taken in user order.
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, 'task.started', snapshot FROM claimed ORDER BY user_id, id
), noted AS (
    -- For claimed_inputs, later in the same transaction.
    SELECT set_config('taskgate.claimed', coalesce(array_agg(id)::text, '{}'), true)
    FROM claimed
)
SELECT id AS task_id, attempts AS attempt, filters, output_format, input_width, input_height,
       request_id, created_at, started_at, run_after, user_id, trace_context,
       -- Other users' tasks claimed since it was created: every claim since
       -- then, less its own user's (approximate within one batch).
       CASE WHEN attempts = 1
            THEN greatest(0, claim_number - claims_mark - 1 - (own_claims - user_claims_mark))
       END AS overtaken
FROM claimed CROSS JOIN noted
     JOIN (SELECT id AS picked_id, position, claimed + rank - 1 AS own_claims FROM picked) AS p
       ON p.picked_id = claimed.id
ORDER BY position;

-- name: claim_tasks_fifo
-- Fairness off: up to %(limit)s due tasks, oldest first across everyone
-- (tasks_pending_created_idx; a rescued task keeps its place); priorities
-- and running limits are not applied. The attempt and its task.started event
-- are recorded in the same statement.
WITH due AS (
    SELECT id AS due_id
    FROM tasks
    WHERE status = 'pending' AND run_after <= now()
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE tasks
    SET status = 'running',
        attempts = attempts + 1,
        progress = 0,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s),
        heartbeat_at = now(),
        started_at = now(),
        updated_at = now()
    WHERE id = ANY(ARRAY(SELECT due_id FROM due))
    RETURNING tasks.id, tasks.attempts, tasks.filters, tasks.output_format, tasks.input_width,
              tasks.input_height, tasks.request_id, tasks.created_at, tasks.started_at,
              tasks.run_after, tasks.user_id, tasks.claims_mark, tasks.user_claims_mark,
              tasks.trace_context, nextval('task_claims') AS claim_number,
              {task_snapshot} AS snapshot
), recorded AS (
    INSERT INTO task_attempts (task_id, attempt, processor_id, started_at)
    SELECT id, attempts, %(owner)s, started_at FROM claimed
), queues AS (
    SELECT q.user_id FROM user_queues AS q
    WHERE q.user_id IN (SELECT user_id FROM claimed)
    ORDER BY q.user_id
    FOR UPDATE OF q
), events AS (
    -- ORDER BY, and the queue rows first: every row is locked before the first
    -- event takes its owner's events lock, and the owners' in user order.
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, 'task.started', snapshot
    FROM claimed CROSS JOIN (SELECT count(*) FROM queues) AS held
    ORDER BY user_id, id
), noted AS (
    -- For claimed_inputs, later in the same transaction.
    SELECT set_config('taskgate.claimed', coalesce(array_agg(id)::text, '{}'), true)
    FROM claimed
)
SELECT id AS task_id, attempts AS attempt, filters, output_format, input_width, input_height,
       request_id, created_at, started_at, run_after, user_id, trace_context,
       -- Other users' tasks claimed since it was created: every claim since
       -- then, less its own user's (approximate within one batch).
       CASE WHEN attempts = 1
            THEN greatest(0, claim_number - claims_mark - 1 - (queue.claimed - user_claims_mark))
       END AS overtaken
FROM claimed CROSS JOIN noted
     CROSS JOIN LATERAL (SELECT q.claimed FROM user_queues AS q
                         WHERE q.user_id = claimed.user_id) AS queue
ORDER BY created_at, id;

-- name: next_run_after
-- When the next pending task that is not due yet becomes due (a retry waiting
-- out its backoff).
SELECT min(run_after) AS run_after
FROM tasks
WHERE status = 'pending' AND run_after > now();

-- name: get_job_input
SELECT input_image
FROM tasks
WHERE id = %(id)s AND lease_owner = %(owner)s AND attempts = %(attempt)s
  AND status = 'running';

-- name: record_progress
UPDATE tasks
SET progress = %(progress)s, updated_at = now()
WHERE id = %(id)s AND lease_owner = %(owner)s AND attempts = %(attempt)s
  AND status = 'running'
RETURNING cancel_requested;

-- name: claimed_inputs
-- The inputs of the tasks claim_tasks claimed earlier in this transaction
-- (it notes their ids in the transaction-local setting taskgate.claimed): run
-- in the same pipeline as the claim, it saves a round trip per task without
-- the claim itself reading image bytes. The claim's row locks fence them
-- until the commit.
SELECT id AS task_id, input_image AS image
FROM tasks
WHERE id = ANY(nullif(current_setting('taskgate.claimed', true), '')::uuid[]);

-- name: finish_tasks
-- Attempts end their tasks, many in one statement (the unnest arrays run in
-- parallel, one element per task): COMPLETED with the result, FAILED (the
-- input cannot be processed) or CANCELLED (its owner asked, and it stopped
-- between two filters); each attempt row is closed with the same outcome, and
-- each task gets its task.completed, task.failed or task.cancelled event.
-- Returns the tasks whose fence held. The images go in binary (%(images)b): a
-- list of bytes would otherwise travel as hex text, twice the size.
WITH ending AS (
    SELECT *
    FROM unnest(
        %(ids)s::uuid[], %(attempts)s::int[], %(statuses)s::text[], %(errors)s::text[],
        %(images)b::bytea[], %(content_types)s::text[], %(widths)s::int[], %(heights)s::int[]
    ) AS e(id, attempt, status, error, image, content_type, width, height)
), finished AS (
    UPDATE tasks
    SET status = e.status,
        progress = CASE WHEN e.status = 'completed'
                        THEN jsonb_array_length(tasks.filters) ELSE tasks.progress END,
        result_image = e.image,
        result_content_type = e.content_type,
        result_width = e.width,
        result_height = e.height,
        result_size_bytes = length(e.image),
        error = e.error,
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = now(),
        updated_at = now()
    FROM ending AS e
    -- %(running)s is 'running', as a parameter: a literal would let the cached
    -- plan of this prepared statement scan tasks_lease_expiry_idx, whose dead
    -- entries (every task that ever ran, until a vacuum) make it slower with
    -- every task, instead of looking each id up in the primary key.
    WHERE tasks.id = e.id AND tasks.lease_owner = %(owner)s AND tasks.attempts = e.attempt
      AND tasks.status = %(running)s::text
    RETURNING tasks.id, tasks.attempts, tasks.finished_at, e.status, e.error, tasks.user_id,
              {task_snapshot} AS snapshot
), closed AS (
    UPDATE task_attempts
    SET ended_at = finished.finished_at, outcome = finished.status, error = finished.error
    FROM finished
    WHERE task_id = finished.id AND attempt = finished.attempts
), queues AS (
    SELECT q.user_id FROM user_queues AS q
    WHERE q.user_id IN (SELECT user_id FROM finished)
    ORDER BY q.user_id
    FOR UPDATE OF q
), events AS (
    -- ORDER BY, and the queue rows first: every row is locked before the first
    -- event takes its owner's events lock, and the owners' in user order.
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, 'task.' || status, snapshot
    FROM finished CROSS JOIN (SELECT count(*) FROM queues) AS held
    ORDER BY user_id, id
)
SELECT id AS task_id FROM finished;

-- name: requeue_task
-- The attempt gives the task back: after a retryable error (outcome 'error',
-- with backoff, or FAILED once the attempts are used up) or at shutdown
-- (outcome 'released', due at once); task.retried (or task.failed) records it.
WITH requeued AS (
    UPDATE tasks
    SET status = CASE WHEN %(outcome)s::text = 'error' AND attempts >= max_attempts
                      THEN 'failed' ELSE 'pending' END,
        error = CASE WHEN %(outcome)s::text = 'error' AND attempts >= max_attempts
                     THEN %(error)s::text || ' (after ' || attempts || ' attempts)' END,
        finished_at = CASE WHEN %(outcome)s::text = 'error' AND attempts >= max_attempts
                           THEN now() END,
        run_after = now() + make_interval(secs => %(delay)s),
        progress = 0,
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE id = %(id)s AND lease_owner = %(owner)s AND attempts = %(attempt)s
      AND status = 'running'
    RETURNING id, attempts, status, user_id, {task_snapshot} AS snapshot
), closed AS (
    UPDATE task_attempts
    SET ended_at = now(), outcome = %(outcome)s, error = %(error)s
    FROM requeued
    WHERE task_id = requeued.id AND attempt = requeued.attempts
), queues AS (
    SELECT q.user_id FROM user_queues AS q
    WHERE q.user_id IN (SELECT user_id FROM requeued)
    ORDER BY q.user_id
    FOR UPDATE OF q
), events AS (
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, CASE WHEN status = 'failed' THEN 'task.failed' ELSE 'task.retried' END,
           snapshot
    FROM requeued CROSS JOIN (SELECT count(*) FROM queues) AS held
)
SELECT status FROM requeued;

-- name: extend_leases
-- The heartbeat: one statement for every task this processor runs; returns
-- the ones it still holds, and whether their owners asked to cancel them.
UPDATE tasks
SET lease_expires_at = now() + make_interval(secs => %(lease)s), heartbeat_at = now()
WHERE id = ANY(%(ids)s) AND lease_owner = %(owner)s AND status = 'running'
RETURNING id, cancel_requested;

-- name: rescue_expired
-- Tasks whose processor stopped extending the lease: back to pending after a
-- backoff that doubles with each attempt, or FAILED once the attempts are used
-- up. The lost attempt is recorded as such, and the change as task.retried or
-- task.failed.
WITH expired AS (
    SELECT id AS expired_id, lease_owner AS lost_owner
    FROM tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE tasks
    SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,
        error = CASE WHEN attempts >= max_attempts
                     THEN 'the processor running it stopped (lease expired) on each of '
                          || attempts || ' attempts' END,
        finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
        run_after = now() + make_interval(
            secs => least(%(backoff_max)s, %(backoff)s * power(2, attempts - 1))
                    * (1 + random() / 4)),
        progress = 0,
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE id = expired_id
    RETURNING id, attempts, status, user_id, request_id, trace_context, started_at, lost_owner,
              {task_snapshot} AS snapshot
), closed AS (
    UPDATE task_attempts
    SET ended_at = now(), outcome = 'lost', error = 'the lease expired'
    FROM rescued
    WHERE task_id = rescued.id AND attempt = rescued.attempts AND outcome = 'running'
), queues AS (
    SELECT q.user_id FROM user_queues AS q
    WHERE q.user_id IN (SELECT user_id FROM rescued)
    ORDER BY q.user_id
    FOR UPDATE OF q
), events AS (
    -- ORDER BY, and the queue rows first: every row is locked before the first
    -- event takes its owner's events lock, and the owners' in user order.
    INSERT INTO task_events (task_id, user_id, type, payload)
    SELECT id, user_id, CASE WHEN status = 'failed' THEN 'task.failed' ELSE 'task.retried' END,
           snapshot
    FROM rescued CROSS JOIN (SELECT count(*) FROM queues) AS held
    ORDER BY user_id, id
)
SELECT id AS task_id, status, user_id, request_id, attempts AS attempt, trace_context,
       started_at, lost_owner
FROM rescued;

-- name: prune_images
-- Deletes the image bytes of tasks that ended more than the retention ago.
WITH old AS (
    SELECT id AS old_id
    FROM tasks
    WHERE images_pruned_at IS NULL
      AND status IN ('completed', 'failed', 'cancelled')
      AND finished_at < now() - make_interval(secs => %(retention)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks
SET input_image = NULL, result_image = NULL, images_pruned_at = now()
FROM old
WHERE id = old_id;

-- name: queue_stats
-- Served by tasks_claimable_idx (pending), tasks_lease_expiry_idx (running),
-- tasks_pending_created_idx (oldest) and user_queues_turn_idx (users).
SELECT
    (SELECT count(*) FROM tasks WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM tasks WHERE status = 'running') AS running,
    coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM tasks
                                         WHERE status = 'pending')), 0)::float8
        AS oldest_pending_seconds,
    (SELECT count(*) FROM user_queues WHERE active) AS users_pending,
    (SELECT coalesce(max(pending), 0) FROM user_queues WHERE active) AS largest_backlog;

-- name: get_task_positioned_fair
-- The task (get_task), and while it is pending its queue_position: an
-- estimate of how many tasks start before it, if no more arrive: its user's
-- tasks ahead of it (r: higher priority, or as high and older), and from
-- every other user with pending work as many as the turns before this one's:
-- r, one more when that user's turn comes first (ties by user id, as the
-- claim breaks them), never more than they have pending. Exact for one
-- processor and no new arrivals; running limits, retry backoffs and the tasks
-- a claim holds are left out. One statement (one snapshot, one round trip);
-- the CASE runs the estimate only for a pending task. Cost: the user's own
-- pending tasks and the users with pending work.
SELECT t.*,
       CASE WHEN t.status = 'pending' THEN (
           SELECT (own.ahead + coalesce((
                      SELECT sum(least(q.pending,
                                       own.ahead + ((q.turn, q.user_id) < (me.turn, me.user_id))::int))
                      FROM user_queues AS q
                      WHERE q.active AND q.user_id <> me.user_id), 0))::bigint
           FROM user_queues AS me,
                LATERAL (SELECT count(*) AS ahead
                         FROM tasks AS o
                         WHERE o.user_id = t.user_id AND o.status = 'pending'
                           AND (o.priority > t.priority
                                OR (o.priority = t.priority
                                    AND (o.created_at, o.id) < (t.created_at, t.id)))) AS own
           WHERE me.user_id = t.user_id)
       END AS queue_position
FROM (SELECT {task_columns}
      FROM tasks
      WHERE id = %(id)s AND user_id = %(user_id)s) AS t;

-- name: get_task_positioned_fifo
-- Fairness off: the task, and while it is pending the pending tasks older
-- than it, everyone's.
SELECT t.*,
       CASE WHEN t.status = 'pending' THEN (
           SELECT count(*)
           FROM tasks AS o
           WHERE o.status = 'pending' AND (o.created_at, o.id) < (t.created_at, t.id))
       END AS queue_position
FROM (SELECT {task_columns}
      FROM tasks
      WHERE id = %(id)s AND user_id = %(user_id)s) AS t;

-- ---------------------------------------------------------------------------
-- Replicas: WAL positions as byte offsets (pg_lsn - '0/0'), for read-your-writes.

-- name: wal_position
-- On the primary: where the next WAL record goes, so at or past every commit so far.
SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS position;

-- name: replay_position
-- On a replica: how far it has replayed (0 on a server that is not replaying).
SELECT COALESCE((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, 0) AS position;

-- name: wal_written_position
-- On the primary: the end of the WAL written so far (what an idle replica replays up to).
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS position;

-- name: replica_status
SELECT pg_is_in_recovery() AS in_recovery,
       COALESCE((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, 0) AS replayed;

-- ---------------------------------------------------------------------------
-- The outbox. Events are written by the statements above that change tasks;
-- a user's event ids increase in commit order (see taskgate_sequence_task_event),
-- so a reader of a user's events that saw id N will never see a smaller one of
-- theirs appear.

-- name: list_task_events
-- A user's events after an id, in order; served by task_events_user_idx.
SELECT id, task_id, user_id, type, created_at, payload
FROM task_events
WHERE user_id = %(user_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: prune_task_events
-- Deletes events older than the retention whose deliveries have all finished
-- or wait for an endpoint that is disabled or gone (their deliveries and
-- attempts go with them). Walks the primary key from the oldest id (ids
-- increase with time) and stops at the first event younger than the
-- retention: once pruning has caught up, nearly every event is young, and a
-- walk to the end read them all (a quarter of a second per 500,000 events,
-- every maintenance round). An old event just past that first young one (ids
-- follow commit order, created_at the transaction's start) waits for the next
-- round.
WITH cutoff AS (
    SELECT now() - make_interval(secs => %(retention)s) AS at
), horizon AS (
    SELECT coalesce(
        (SELECT e.id FROM task_events AS e, cutoff
         WHERE e.created_at >= cutoff.at ORDER BY e.id LIMIT 1),
        9223372036854775807) AS first_young
), old AS (
    SELECT e.id AS old_id
    FROM task_events AS e, cutoff, horizon
    WHERE e.id < horizon.first_young AND e.created_at < cutoff.at
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d
                      JOIN webhook_endpoints AS ep
                        ON ep.id = d.endpoint_id AND ep.disabled_at IS NULL
                      WHERE d.event_id = e.id AND d.status IN ('pending', 'running'))
    ORDER BY e.id
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
)
-- = ANY(ARRAY(...)): primary key lookups, whatever the plan guesses of the batch.
DELETE FROM task_events
WHERE id = ANY(ARRAY(SELECT old_id FROM old));

-- ---------------------------------------------------------------------------
-- Webhook endpoints, as the API sees them (never the secrets but at creation
-- and rotation).

-- fragment: endpoint_columns
id, user_id, url, event_types, failing_since, disabled_at, disabled_reason,
previous_secret_expires_at, created_at

-- name: insert_webhook_endpoint
-- Registers an endpoint unless the user already has %(max_endpoints)s (then
-- no row).
INSERT INTO webhook_endpoints (user_id, url, event_types, secret)
SELECT %(user_id)s, %(url)s, %(event_types)s, %(secret)s
WHERE (SELECT count(*) FROM webhook_endpoints WHERE user_id = %(user_id)s) < %(max_endpoints)s
RETURNING {endpoint_columns};

-- name: get_webhook_endpoint
SELECT {endpoint_columns}
FROM webhook_endpoints
WHERE id = %(id)s AND user_id = %(user_id)s;

-- name: list_webhook_endpoints
SELECT {endpoint_columns}
FROM webhook_endpoints
WHERE user_id = %(user_id)s
ORDER BY created_at, id;

-- name: delete_webhook_endpoint
-- The endpoint and its deliveries (their attempts go with them).
WITH gone AS (
    DELETE FROM webhook_endpoints
    WHERE id = %(id)s AND user_id = %(user_id)s
    RETURNING id
), deliveries AS (
    DELETE FROM webhook_deliveries
    WHERE endpoint_id IN (SELECT id FROM gone)
)
SELECT id FROM gone;

-- name: rotate_webhook_secret
-- The current key becomes the previous one, still signing until the rotation
-- period ends.
UPDATE webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => %(period)s),
    secret = %(secret)s,
    updated_at = now()
WHERE id = %(id)s AND user_id = %(user_id)s
RETURNING {endpoint_columns};

-- name: list_webhook_attempts
-- An endpoint's latest attempts; served by webhook_attempts_endpoint_idx.
SELECT a.event_id, a.attempt, a.started_at, a.latency_ms, a.http_status, a.error
FROM webhook_attempts AS a
JOIN webhook_endpoints AS ep ON ep.id = a.endpoint_id
WHERE a.endpoint_id = %(id)s AND ep.user_id = %(user_id)s
ORDER BY a.started_at DESC, a.delivery_id DESC, a.attempt DESC
LIMIT %(limit)s;

-- ---------------------------------------------------------------------------
-- Webhook deliveries, as dispatchers see them: the same queue machinery as
-- tasks. Claimed with FOR UPDATE SKIP LOCKED under a lease (the attempt
-- counted in the claim); every ending fenced on (lease_owner, attempts,
-- status = 'running'); expired leases rescued.

-- name: claim_webhook_deliveries
-- Up to %(limit)s due deliveries: for each enabled endpoint its oldest due
-- ones, at most %(per_endpoint)s running per endpoint (counting those already
-- running), and for each task and endpoint only the earliest open one, so a
-- task's events reach an endpoint in order. Each endpoint is looked at on its
-- own (webhook_deliveries_due_idx), so deliveries piling up for one endpoint
-- never hide another's. Returns what a POST needs: the event, the URL and the
-- keys to sign with.
WITH running AS (
    SELECT endpoint_id, count(*) AS n
    FROM webhook_deliveries
    WHERE status = 'running'
    GROUP BY endpoint_id
), candidates AS (
    SELECT d.id AS candidate_id, d.run_after, d.event_id
    FROM webhook_endpoints AS ep
    LEFT JOIN running ON running.endpoint_id = ep.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.run_after, d.event_id
        FROM webhook_deliveries AS d
        WHERE d.endpoint_id = ep.id AND d.status = 'pending' AND d.run_after <= now()
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries AS earlier
              WHERE earlier.endpoint_id = d.endpoint_id AND earlier.task_id = d.task_id
                AND earlier.event_id < d.event_id AND earlier.status IN ('pending', 'running'))
        ORDER BY d.run_after, d.event_id
        LIMIT greatest(0, %(per_endpoint)s - coalesce(running.n, 0))
    ) AS d
    WHERE ep.disabled_at IS NULL
), due AS (
    SELECT id AS due_id
    FROM webhook_deliveries
    WHERE id IN (SELECT candidate_id FROM candidates)
      AND status = 'pending'
    ORDER BY run_after, event_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries
    SET status = 'running',
        attempts = attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM due
    WHERE id = due_id
    RETURNING id, attempts, endpoint_id, event_id
)
SELECT c.id AS delivery_id, c.attempts AS attempt, c.endpoint_id, ep.url, ep.secret,
       CASE WHEN ep.previous_secret_expires_at > now() THEN ep.previous_secret END
           AS previous_secret,
       e.id, e.task_id, e.user_id, e.type, e.created_at, e.payload
FROM claimed AS c
JOIN webhook_endpoints AS ep ON ep.id = c.endpoint_id
JOIN task_events AS e ON e.id = c.event_id
ORDER BY e.id;

-- name: finish_webhook_deliveries
-- Attempts end, many in one statement (one element of each array per
-- delivery), fenced on the lease: a 2xx delivers; another answer or none
-- retries after %(delays)s, or fails the delivery once %(max_attempts)s are
-- used up; 410 Gone fails it and disables its endpoint. Each attempt is
-- recorded. An endpoint's failing_since is cleared by a success and set by
-- the first failure after one; an endpoint failing for longer than
-- %(disable_after)s is disabled with the reason, and its open deliveries are
-- given up. Returns the deliveries whose fence held.
WITH result AS (
    SELECT *
    FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::int[], %(errors)s::text[],
        %(latencies)s::float8[], %(started)s::timestamptz[], %(delays)s::float8[]
    ) AS r(id, attempt, http_status, error, latency_ms, started_at, delay)
), finished AS (
    UPDATE webhook_deliveries AS d
    SET status = CASE WHEN r.http_status BETWEEN 200 AND 299 THEN 'delivered'
                      WHEN r.http_status = 410 OR d.attempts >= %(max_attempts)s THEN 'failed'
                      ELSE 'pending' END,
        run_after = now() + make_interval(secs => r.delay),
        finished_at = CASE WHEN r.http_status BETWEEN 200 AND 299 OR r.http_status = 410
                                OR d.attempts >= %(max_attempts)s THEN now() END,
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM result AS r
    WHERE d.id = r.id AND d.lease_owner = %(owner)s AND d.attempts = r.attempt
      AND d.status = %(running)s::text
    RETURNING d.id, d.endpoint_id, d.event_id, d.attempts, d.status, r.http_status, r.error,
              r.latency_ms, r.started_at
), recorded AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, endpoint_id, event_id, started_at,
                                  latency_ms, http_status, error)
    SELECT id, attempts, endpoint_id, event_id, started_at, latency_ms, http_status, error
    FROM finished
), outcome AS (
    SELECT endpoint_id,
           bool_or(status = 'delivered') AS delivered,
           bool_or(http_status = 410) AS gone,
           min(started_at) AS first_failure,
           (array_agg(error ORDER BY started_at DESC) FILTER (WHERE error IS NOT NULL))[1]
               AS last_error
    FROM finished
    GROUP BY endpoint_id
), endpoints AS (
    UPDATE webhook_endpoints AS ep
    SET failing_since = CASE WHEN o.delivered THEN NULL
                             ELSE coalesce(ep.failing_since, o.first_failure) END,
        disabled_at = CASE
            WHEN o.gone OR (NOT o.delivered AND coalesce(ep.failing_since, o.first_failure)
                            < now() - make_interval(secs => %(disable_after)s))
            THEN now() END,
        disabled_reason = CASE
            WHEN o.gone THEN 'the endpoint answered 410 Gone'
            WHEN NOT o.delivered AND coalesce(ep.failing_since, o.first_failure)
                     < now() - make_interval(secs => %(disable_after)s)
            THEN 'every delivery failed since '
                 || to_char(coalesce(ep.failing_since, o.first_failure) AT TIME ZONE 'UTC',
                            'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                 || '; the last error: ' || coalesce(o.last_error, 'unknown') END,
        updated_at = now()
    FROM outcome AS o
    WHERE ep.id = o.endpoint_id AND ep.disabled_at IS NULL
    RETURNING ep.id, ep.disabled_at
), abandoned AS (
    UPDATE webhook_deliveries
    SET status = 'failed', finished_at = now()
    WHERE endpoint_id IN (SELECT id FROM endpoints WHERE disabled_at IS NOT NULL)
      AND status = 'pending'
)
SELECT id AS delivery_id FROM finished;

-- name: rescue_webhook_deliveries
-- Deliveries whose dispatcher stopped (the lease expired): back to pending,
-- due after %(delay)s, or failed once the attempts are used up; the lost
-- attempt is recorded.
WITH expired AS (
    SELECT id AS expired_id
    FROM webhook_deliveries
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE webhook_deliveries
    SET status = CASE WHEN attempts >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
        finished_at = CASE WHEN attempts >= %(max_attempts)s THEN now() END,
        run_after = now() + make_interval(secs => %(delay)s),
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM expired
    WHERE id = expired_id
    RETURNING id, attempts, endpoint_id, event_id
), recorded AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, endpoint_id, event_id, started_at, error)
    SELECT id, attempts, endpoint_id, event_id, now(),
           'the dispatcher stopped during the attempt (its lease expired)'
    FROM rescued
    ON CONFLICT DO NOTHING
)
SELECT count(*) AS rescued FROM rescued;

-- name: webhook_stats
-- The outbox's lag: the oldest delivery not yet finished (to an enabled
-- endpoint), and how many endpoints are disabled.
SELECT
    coalesce(extract(epoch FROM now() - (
        SELECT min(d.created_at)
        FROM webhook_deliveries AS d
        JOIN webhook_endpoints AS ep ON ep.id = d.endpoint_id AND ep.disabled_at IS NULL
        WHERE d.status IN ('pending', 'running'))), 0)::float8 AS oldest_undelivered_seconds,
    (SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NOT NULL) AS disabled_endpoints;
