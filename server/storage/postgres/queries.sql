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
-- Deletes the user; their tasks go with them (ON DELETE CASCADE).
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

-- name: insert_task
-- A repeated idempotency key inserts nothing; a concurrent insert with the
-- same key waits for the first to commit. Neither does a user with
-- max_pending tasks pending (0: no limit; user_limits overrides the
-- setting): the user's queue row is locked first, so two submissions at the
-- edge cannot both pass. Always one row: the task's columns (NULL when
-- nothing was inserted), the pending count before it and the limit; no row
-- when the user is gone.
WITH gate AS (
    SELECT q.pending, q.claimed, coalesce(l.max_pending, %(max_pending)s) AS max_pending
    FROM user_queues AS q LEFT JOIN user_limits AS l ON l.user_id = q.user_id
    WHERE q.user_id = %(user_id)s
    FOR UPDATE OF q
), inserted AS (
    INSERT INTO tasks (
        user_id, filters, output_format, idempotency_key, request_hash, request_id,
        input_image, input_content_type, input_width, input_height, input_size_bytes,
        max_attempts, priority, claims_mark, user_claims_mark
    )
    SELECT
        %(user_id)s, %(filters)s, %(output_format)s, %(idempotency_key)s, %(request_hash)s,
        %(request_id)s, %(image)s, %(content_type)s, %(width)s, %(height)s, %(size_bytes)s,
        %(max_attempts)s, %(priority)s, (SELECT last_value FROM task_claims), gate.claimed
    FROM gate
    WHERE gate.max_pending = 0 OR gate.pending < gate.max_pending
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {task_columns}
)
SELECT inserted.*, gate.pending AS queued, gate.max_pending
FROM gate LEFT JOIN inserted ON true;

-- name: get_task_by_idempotency_key
SELECT {task_columns}, request_hash
FROM tasks
WHERE user_id = %(user_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_task
SELECT {task_columns}
FROM tasks
WHERE id = %(id)s AND user_id = %(user_id)s;

-- name: get_task_result
SELECT status, result_content_type, result_image, images_pruned_at
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

-- name: cancel_task
-- A pending task ends at once; a running one is asked to stop (its processor
-- hears of it through taskgate_task_cancel). Ended tasks are left alone.
UPDATE tasks
SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
    cancel_requested = cancel_requested OR status = 'running',
    finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,
    updated_at = now()
WHERE id = %(id)s AND user_id = %(user_id)s AND status IN ('pending', 'running')
RETURNING {task_columns};

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
-- is counted and recorded in the same statement. Cost: the users walked
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
              nextval('task_claims') AS claim_number
), recorded AS (
    INSERT INTO task_attempts (task_id, attempt, processor_id, started_at)
    SELECT id, attempts, %(owner)s, started_at FROM claimed
), noted AS (
    -- For claimed_inputs, later in the same transaction.
    SELECT set_config('taskgate.claimed', coalesce(array_agg(id)::text, '{}'), true)
    FROM claimed
)
SELECT id AS task_id, attempts AS attempt, filters, output_format, input_width, input_height,
       request_id, created_at, started_at, run_after, user_id,
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
-- and running limits are not applied.
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
              nextval('task_claims') AS claim_number
), recorded AS (
    INSERT INTO task_attempts (task_id, attempt, processor_id, started_at)
    SELECT id, attempts, %(owner)s, started_at FROM claimed
), noted AS (
    -- For claimed_inputs, later in the same transaction.
    SELECT set_config('taskgate.claimed', coalesce(array_agg(id)::text, '{}'), true)
    FROM claimed
)
SELECT id AS task_id, attempts AS attempt, filters, output_format, input_width, input_height,
       request_id, created_at, started_at, run_after, user_id,
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
-- between two filters); each attempt row is closed with the same outcome.
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
    RETURNING tasks.id, tasks.attempts, tasks.finished_at, e.status, e.error
), closed AS (
    UPDATE task_attempts
    SET ended_at = finished.finished_at, outcome = finished.status, error = finished.error
    FROM finished
    WHERE task_id = finished.id AND attempt = finished.attempts
)
SELECT id AS task_id FROM finished;

-- name: requeue_task
-- The attempt gives the task back: after a retryable error (outcome 'error',
-- with backoff, or FAILED once the attempts are used up) or at shutdown
-- (outcome 'released', due at once).
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
    RETURNING id, attempts, status
), closed AS (
    UPDATE task_attempts
    SET ended_at = now(), outcome = %(outcome)s, error = %(error)s
    FROM requeued
    WHERE task_id = requeued.id AND attempt = requeued.attempts
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
-- up. The lost attempt is recorded as such.
WITH expired AS (
    SELECT id AS expired_id
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
    RETURNING id, attempts, status, user_id, request_id
), closed AS (
    UPDATE task_attempts
    SET ended_at = now(), outcome = 'lost', error = 'the lease expired'
    FROM rescued
    WHERE task_id = rescued.id AND attempt = rescued.attempts AND outcome = 'running'
)
SELECT id AS task_id, status, user_id, request_id FROM rescued;

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

-- name: queue_position_fair
-- An estimate of how many tasks start before a pending one, if no more
-- arrive: its user's tasks ahead of it (r: higher priority, or as high and
-- older), and from every other user with pending work as many as the turns
-- before this one's: r, one more when that user's turn comes first (ties
-- by user id, as the claim breaks them), never more than they have pending.
-- Exact for one processor and no new arrivals; running limits, retry
-- backoffs and the tasks a claim holds are left out. Cost: the user's own
-- pending tasks and the users with pending work.
WITH me AS (
    SELECT t.user_id, t.priority, t.created_at, t.id, q.turn
    FROM tasks AS t JOIN user_queues AS q ON q.user_id = t.user_id
    WHERE t.id = %(id)s AND t.user_id = %(user_id)s AND t.status = 'pending'
), own AS (
    SELECT count(*) AS ahead
    FROM tasks AS t, me
    WHERE t.user_id = me.user_id AND t.status = 'pending'
      AND (t.priority > me.priority
           OR (t.priority = me.priority AND (t.created_at, t.id) < (me.created_at, me.id)))
)
SELECT (own.ahead + coalesce((
           SELECT sum(least(q.pending,
                            own.ahead + ((q.turn, q.user_id) < (me.turn, me.user_id))::int))
           FROM user_queues AS q
           WHERE q.active AND q.user_id <> me.user_id), 0))::bigint AS position
FROM me, own;

-- name: queue_position_fifo
-- Fairness off: the pending tasks older than this one, everyone's.
SELECT count(*) AS position
FROM tasks AS t,
     (SELECT created_at, id FROM tasks
      WHERE id = %(id)s AND user_id = %(user_id)s AND status = 'pending') AS me
WHERE t.status = 'pending' AND (t.created_at, t.id) < (me.created_at, me.id);
