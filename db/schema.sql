

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: taskgate_add_to_queue(uuid, bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_add_to_queue(queue_user uuid, pending_delta bigint, running_delta bigint, claimed_delta bigint, new_turn bigint) RETURNS void
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


--
-- Name: taskgate_count_queue(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_count_queue() RETURNS trigger
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


--
-- Name: FUNCTION taskgate_count_queue(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_count_queue() IS 'Keeps user_queues.pending, running and claimed in step with tasks and moves the users a claim served to the back (turn), once per statement, rows locked in user_id order.';


--
-- Name: taskgate_create_user_queue(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_create_user_queue() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO user_queues (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;


--
-- Name: FUNCTION taskgate_create_user_queue(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_create_user_queue() IS 'Every user gets a user_queues row.';


--
-- Name: taskgate_fan_out_webhooks(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_fan_out_webhooks() RETURNS trigger
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


--
-- Name: FUNCTION taskgate_fan_out_webhooks(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_fan_out_webhooks() IS 'Writes the deliveries of new events to their owners'' enabled endpoints; pg_notify(''taskgate_webhooks'') for the dispatchers.';


--
-- Name: taskgate_notify_pending_task(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_notify_pending_task() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('taskgate_tasks', NEW.id::text);
    RETURN NULL;
END;
$$;


--
-- Name: FUNCTION taskgate_notify_pending_task(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_notify_pending_task() IS 'pg_notify(''taskgate_tasks'', task id) for tasks that became pending.';


--
-- Name: taskgate_notify_task_change(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_notify_task_change() RETURNS trigger
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


--
-- Name: FUNCTION taskgate_notify_task_change(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_notify_task_change() IS 'pg_notify(''taskgate_task_events'', task id) on a status, progress or cancellation change; also ''taskgate_task_cancel'' when a running task is asked to stop.';


--
-- Name: taskgate_notify_task_feed(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_notify_task_feed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('taskgate_task_feed', user_id::text)
    FROM (SELECT DISTINCT user_id FROM new_events) AS users;
    RETURN NULL;
END;
$$;


--
-- Name: FUNCTION taskgate_notify_task_feed(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_notify_task_feed() IS 'pg_notify(''taskgate_task_feed'', user id) for the users who got new events.';


--
-- Name: taskgate_sequence_task_event(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.taskgate_sequence_task_event() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- The owner's lock, held until commit: their events get ids in the order
    -- their transactions commit. The statements take it after the owner's
    -- queue row (see "Lock order" in queries.sql), so it is never waited for
    -- there; it holds for any other writer too.
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.user_id::text, 7306086815950189923));
    NEW.id := nextval('task_events_id_seq');
    RETURN NEW;
END;
$$;


--
-- Name: FUNCTION taskgate_sequence_task_event(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.taskgate_sequence_task_event() IS 'Gives a new event its id under its owner''s advisory lock, held until commit: a user''s event ids increase in commit order.';


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version character varying NOT NULL
);


--
-- Name: task_attempts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.task_attempts (
    task_id uuid NOT NULL,
    attempt integer NOT NULL,
    processor_id text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    outcome text DEFAULT 'running'::text NOT NULL,
    error text,
    CONSTRAINT task_attempts_attempt_check CHECK ((attempt > 0)),
    CONSTRAINT task_attempts_ended_check CHECK (((outcome = 'running'::text) = (ended_at IS NULL))),
    CONSTRAINT task_attempts_outcome_check CHECK ((outcome = ANY (ARRAY['running'::text, 'completed'::text, 'failed'::text, 'cancelled'::text, 'error'::text, 'lost'::text, 'released'::text])))
);


--
-- Name: TABLE task_attempts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.task_attempts IS 'One row per claim of a task: written when a processor claims it, closed once with its outcome; never deleted but with its task.';


--
-- Name: COLUMN task_attempts.outcome; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.task_attempts.outcome IS 'running; completed, failed or cancelled (the task ended); error (retryable failure); lost (the lease expired: the processor died or stalled); released (handed back at shutdown).';


--
-- Name: task_claims; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.task_claims
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: SEQUENCE task_claims; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON SEQUENCE public.task_claims IS 'One value per claimed task: the global count of claims.';


--
-- Name: task_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.task_events (
    id bigint NOT NULL,
    task_id uuid NOT NULL,
    user_id uuid NOT NULL,
    type text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    payload jsonb NOT NULL,
    CONSTRAINT task_events_payload_object_check CHECK ((jsonb_typeof(payload) = 'object'::text)),
    CONSTRAINT task_events_type_check CHECK ((type = ANY (ARRAY['task.created'::text, 'task.started'::text, 'task.retried'::text, 'task.completed'::text, 'task.failed'::text, 'task.cancelled'::text])))
);


--
-- Name: TABLE task_events; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.task_events IS 'The outbox: one row per task state change (created, started, retried, completed, failed, cancelled), written in the transaction of the change.';


--
-- Name: COLUMN task_events.id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.task_events.id IS 'Unique and increasing (task_events_id_seq); one user''s events get theirs in commit order, under a transaction-level advisory lock on the owner (taskgate_sequence_task_event), so a reader of a user''s events that has seen id N will never see a smaller one of theirs appear later.';


--
-- Name: COLUMN task_events.payload; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.task_events.payload IS 'The task as the API shows it right after the change (never the image bytes).';


--
-- Name: task_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.task_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: task_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.task_events_id_seq OWNED BY public.task_events.id;


--
-- Name: task_queue_turns; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.task_queue_turns
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: SEQUENCE task_queue_turns; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON SEQUENCE public.task_queue_turns IS 'One value per claim that rotates users: user_queues.turn is 1000 times it plus the order served.';


--
-- Name: tasks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tasks (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    filters jsonb NOT NULL,
    output_format text NOT NULL,
    input_image bytea,
    input_content_type text NOT NULL,
    result_image bytea,
    result_content_type text,
    result_width integer,
    result_height integer,
    error text,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    idempotency_key text,
    cancel_requested boolean DEFAULT false NOT NULL,
    run_after timestamp with time zone DEFAULT now() NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    heartbeat_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    progress integer DEFAULT 0 NOT NULL,
    input_width integer NOT NULL,
    input_height integer NOT NULL,
    input_size_bytes bigint NOT NULL,
    result_size_bytes bigint,
    request_hash bytea,
    request_id text,
    images_pruned_at timestamp with time zone,
    trace_context jsonb,
    priority smallint DEFAULT 0 NOT NULL,
    claims_mark bigint DEFAULT 0 NOT NULL,
    user_claims_mark bigint DEFAULT 0 NOT NULL,
    CONSTRAINT tasks_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT tasks_filters_array_check CHECK ((jsonb_typeof(filters) = 'array'::text)),
    CONSTRAINT tasks_idempotency_key_hash_check CHECK (((idempotency_key IS NULL) OR (request_hash IS NOT NULL))),
    CONSTRAINT tasks_input_kept_while_open_check CHECK (((status <> ALL (ARRAY['pending'::text, 'running'::text])) OR (input_image IS NOT NULL))),
    CONSTRAINT tasks_max_attempts_check CHECK ((max_attempts > 0)),
    CONSTRAINT tasks_output_format_check CHECK ((output_format = ANY (ARRAY['png'::text, 'jpeg'::text, 'webp'::text]))),
    CONSTRAINT tasks_priority_check CHECK (((priority >= '-10'::integer) AND (priority <= 10))),
    CONSTRAINT tasks_progress_check CHECK (((progress >= 0) AND (progress <= jsonb_array_length(filters)))),
    CONSTRAINT tasks_running_has_lease_check CHECK (((status <> 'running'::text) OR ((lease_owner IS NOT NULL) AND (lease_expires_at IS NOT NULL)))),
    CONSTRAINT tasks_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'completed'::text, 'failed'::text, 'cancelled'::text])))
);
ALTER TABLE ONLY public.tasks ALTER COLUMN result_image SET STORAGE EXTERNAL;


--
-- Name: TABLE tasks; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.tasks IS 'Image-processing tasks; claimed by processors with FOR UPDATE SKIP LOCKED and held under a lease.';


--
-- Name: COLUMN tasks.filters; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.filters IS 'JSON array of filter operations, applied in order.';


--
-- Name: COLUMN tasks.attempts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.attempts IS 'Number of times the task has been claimed; incremented on each claim. When a lease expires and attempts >= max_attempts the task becomes failed instead of pending.';


--
-- Name: COLUMN tasks.max_attempts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.max_attempts IS 'Upper bound on attempts before an expired lease marks the task failed.';


--
-- Name: COLUMN tasks.idempotency_key; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.idempotency_key IS 'Optional client-supplied key; a repeated submission with the same (user_id, idempotency_key) returns the existing task.';


--
-- Name: COLUMN tasks.cancel_requested; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.cancel_requested IS 'Set when the user cancels a running task; the lease holder observes it and finishes the task as cancelled.';


--
-- Name: COLUMN tasks.run_after; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.run_after IS 'Earliest time a pending task may be claimed (used for retry backoff).';


--
-- Name: COLUMN tasks.lease_owner; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.lease_owner IS 'Identifier of the processor holding the lease; finishing updates are fenced on it. Required while running.';


--
-- Name: COLUMN tasks.lease_expires_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.lease_expires_at IS 'When the current lease lapses unless extended by a heartbeat; after that the task is reclaimable. Required while running.';


--
-- Name: COLUMN tasks.heartbeat_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.heartbeat_at IS 'Last time the lease holder extended the lease.';


--
-- Name: COLUMN tasks.progress; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.progress IS 'How many filters of the pipeline are done in the current attempt.';


--
-- Name: COLUMN tasks.request_hash; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.request_hash IS 'sha256 of the submission (image, filters, format), to tell a retried submission from a different one reusing its idempotency key.';


--
-- Name: COLUMN tasks.request_id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.request_id IS 'The x-request-id of the CreateTask call, carried into the processor''s logs.';


--
-- Name: COLUMN tasks.images_pruned_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.images_pruned_at IS 'When input_image and result_image were deleted after the retention period.';


--
-- Name: COLUMN tasks.trace_context; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.trace_context IS 'The W3C trace context (traceparent, tracestate) of the CreateTask call; the processor''s attempt spans join that trace.';


--
-- Name: COLUMN tasks.priority; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.priority IS 'Orders the user''s own pending tasks: higher first (-10..10, default 0); never other users'' tasks.';


--
-- Name: COLUMN tasks.claims_mark; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.claims_mark IS 'Claims made (task_claims) when the task was created: with user_claims_mark, how many other users'' tasks started while it waited.';


--
-- Name: COLUMN tasks.user_claims_mark; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.tasks.user_claims_mark IS 'user_queues.claimed of its user when the task was created.';


--
-- Name: user_limits; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.user_limits (
    user_id uuid NOT NULL,
    max_pending integer,
    max_running integer,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT user_limits_max_pending_check CHECK ((max_pending >= 0)),
    CONSTRAINT user_limits_max_running_check CHECK ((max_running >= 0))
);


--
-- Name: TABLE user_limits; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.user_limits IS 'Per-user overrides of TASKGATE_USER_MAX_PENDING and TASKGATE_USER_MAX_RUNNING; NULL keeps the setting, 0 means no limit.';


--
-- Name: user_queues; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.user_queues (
    user_id uuid NOT NULL,
    pending integer DEFAULT 0 NOT NULL,
    running integer DEFAULT 0 NOT NULL,
    claimed bigint DEFAULT 0 NOT NULL,
    turn bigint DEFAULT 0 NOT NULL,
    active boolean DEFAULT false NOT NULL,
    CONSTRAINT user_queues_active_check CHECK ((active = (pending > 0))),
    CONSTRAINT user_queues_pending_check CHECK ((pending >= 0)),
    CONSTRAINT user_queues_running_check CHECK ((running >= 0))
);


--
-- Name: TABLE user_queues; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.user_queues IS 'One row per user: their pending and running tasks (kept by triggers on tasks) and their turn in the fair claim. Claims lock the rows of the users they serve.';


--
-- Name: COLUMN user_queues.claimed; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.user_queues.claimed IS 'Tasks of the user ever claimed (pending -> running).';


--
-- Name: COLUMN user_queues.turn; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.user_queues.turn IS 'When the user was last served (task_queue_turns): the smallest goes next; 0 for a user never served.';


--
-- Name: COLUMN user_queues.active; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.user_queues.active IS 'pending > 0, as a column of its own: the turn index covers only active users, and a count that changes without crossing zero is a HOT update (no index touched).';


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    username text NOT NULL,
    password_hash text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT users_username_length_check CHECK (((char_length(username) >= 3) AND (char_length(username) <= 32)))
);


--
-- Name: TABLE users; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.users IS 'Registered accounts; sessions live in Redis.';


--
-- Name: COLUMN users.password_hash; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.users.password_hash IS 'argon2id encoded hash (argon2-cffi); never the plain password.';


--
-- Name: webhook_attempts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_attempts (
    delivery_id bigint NOT NULL,
    attempt integer NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id bigint NOT NULL,
    started_at timestamp with time zone NOT NULL,
    latency_ms double precision,
    http_status integer,
    error text,
    CONSTRAINT webhook_attempts_attempt_check CHECK ((attempt > 0))
);


--
-- Name: TABLE webhook_attempts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.webhook_attempts IS 'Every POST of a delivery: when, the HTTP status (none when no answer came), the latency (none when its dispatcher died during it) and the error.';


--
-- Name: webhook_deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_deliveries (
    id bigint NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id bigint NOT NULL,
    task_id uuid NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    run_after timestamp with time zone DEFAULT now() NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    CONSTRAINT webhook_deliveries_running_has_lease_check CHECK (((status <> 'running'::text) OR ((lease_owner IS NOT NULL) AND (lease_expires_at IS NOT NULL)))),
    CONSTRAINT webhook_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'delivered'::text, 'failed'::text])))
);


--
-- Name: TABLE webhook_deliveries; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.webhook_deliveries IS 'One event to one endpoint: a queue entry claimed with FOR UPDATE SKIP LOCKED under a lease and finished by fenced updates, like tasks.';


--
-- Name: COLUMN webhook_deliveries.status; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_deliveries.status IS 'pending (due at run_after), running (leased), delivered (a 2xx), failed (attempts used up, or the endpoint disabled).';


--
-- Name: webhook_deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.webhook_deliveries ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.webhook_deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: webhook_endpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_endpoints (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    url text NOT NULL,
    event_types text[] DEFAULT '{}'::text[] NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamp with time zone,
    failing_since timestamp with time zone,
    disabled_at timestamp with time zone,
    disabled_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT webhook_endpoints_disabled_check CHECK (((disabled_at IS NULL) = (disabled_reason IS NULL))),
    CONSTRAINT webhook_endpoints_previous_secret_check CHECK (((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))),
    CONSTRAINT webhook_endpoints_secret_check CHECK ((secret ~~ 'whsec\_%'::text))
);


--
-- Name: TABLE webhook_endpoints; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.webhook_endpoints IS 'Where a user wants task events POSTed (Standard Webhooks 1.0).';


--
-- Name: COLUMN webhook_endpoints.event_types; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_endpoints.event_types IS 'Only these event types (task_events.type); empty for every type.';


--
-- Name: COLUMN webhook_endpoints.secret; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_endpoints.secret IS 'The signing key, whsec_ + base64; shown to its owner once, at creation or rotation.';


--
-- Name: COLUMN webhook_endpoints.previous_secret; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_endpoints.previous_secret IS 'The key before the last rotation: deliveries are signed with both until previous_secret_expires_at.';


--
-- Name: COLUMN webhook_endpoints.failing_since; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_endpoints.failing_since IS 'The first failed attempt since the last success; past TASKGATE_WEBHOOK_DISABLE_AFTER the endpoint is disabled.';


--
-- Name: COLUMN webhook_endpoints.disabled_reason; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_endpoints.disabled_reason IS 'Why deliveries stopped (410 Gone, or failing since a time), for its owner to see.';


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: task_attempts task_attempts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_attempts
    ADD CONSTRAINT task_attempts_pkey PRIMARY KEY (task_id, attempt);


--
-- Name: task_events task_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_events
    ADD CONSTRAINT task_events_pkey PRIMARY KEY (id);


--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);


--
-- Name: user_limits user_limits_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.user_limits
    ADD CONSTRAINT user_limits_pkey PRIMARY KEY (user_id);


--
-- Name: user_queues user_queues_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.user_queues
    ADD CONSTRAINT user_queues_pkey PRIMARY KEY (user_id);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: users users_username_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_username_key UNIQUE (username);


--
-- Name: webhook_attempts webhook_attempts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_pkey PRIMARY KEY (delivery_id, attempt);


--
-- Name: webhook_deliveries webhook_deliveries_event_endpoint_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id);


--
-- Name: webhook_deliveries webhook_deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id);


--
-- Name: webhook_endpoints webhook_endpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id);


--
-- Name: task_events_user_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_events_user_idx ON public.task_events USING btree (user_id, id);


--
-- Name: tasks_claimable_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_claimable_idx ON public.tasks USING btree (run_after, created_at) WHERE (status = 'pending'::text);


--
-- Name: tasks_lease_expiry_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_lease_expiry_idx ON public.tasks USING btree (lease_expires_at) WHERE (status = 'running'::text);


--
-- Name: tasks_pending_created_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_pending_created_idx ON public.tasks USING btree (created_at, id) WHERE (status = 'pending'::text);


--
-- Name: tasks_prunable_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_prunable_idx ON public.tasks USING btree (finished_at) WHERE ((images_pruned_at IS NULL) AND (status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])));


--
-- Name: tasks_user_created_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_user_created_idx ON public.tasks USING btree (user_id, created_at DESC, id DESC);


--
-- Name: tasks_user_idempotency_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX tasks_user_idempotency_key ON public.tasks USING btree (user_id, idempotency_key) WHERE (idempotency_key IS NOT NULL);


--
-- Name: tasks_user_queue_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_user_queue_idx ON public.tasks USING btree (user_id, priority DESC, created_at, id) WHERE (status = 'pending'::text);


--
-- Name: user_queues_turn_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX user_queues_turn_idx ON public.user_queues USING btree (turn, user_id) WHERE active;


--
-- Name: webhook_attempts_endpoint_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_attempts_endpoint_idx ON public.webhook_attempts USING btree (endpoint_id, started_at DESC);


--
-- Name: webhook_deliveries_due_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_deliveries_due_idx ON public.webhook_deliveries USING btree (endpoint_id, run_after, event_id) WHERE (status = 'pending'::text);


--
-- Name: webhook_deliveries_lease_expiry_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_deliveries_lease_expiry_idx ON public.webhook_deliveries USING btree (lease_expires_at) WHERE (status = 'running'::text);


--
-- Name: webhook_deliveries_open_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_deliveries_open_idx ON public.webhook_deliveries USING btree (endpoint_id, task_id, event_id) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));


--
-- Name: webhook_endpoints_enabled_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_endpoints_enabled_idx ON public.webhook_endpoints USING btree (id) WHERE (disabled_at IS NULL);


--
-- Name: webhook_endpoints_user_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_endpoints_user_idx ON public.webhook_endpoints USING btree (user_id, created_at, id);


--
-- Name: task_events task_events_fan_out_webhooks; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER task_events_fan_out_webhooks AFTER INSERT ON public.task_events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION public.taskgate_fan_out_webhooks();


--
-- Name: task_events task_events_notify; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER task_events_notify AFTER INSERT ON public.task_events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION public.taskgate_notify_task_feed();


--
-- Name: task_events task_events_sequence; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER task_events_sequence BEFORE INSERT ON public.task_events FOR EACH ROW EXECUTE FUNCTION public.taskgate_sequence_task_event();


--
-- Name: tasks tasks_count_queue_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_count_queue_delete AFTER DELETE ON public.tasks REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION public.taskgate_count_queue();


--
-- Name: tasks tasks_count_queue_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_count_queue_insert AFTER INSERT ON public.tasks REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.taskgate_count_queue();


--
-- Name: tasks tasks_count_queue_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_count_queue_update AFTER UPDATE ON public.tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.taskgate_count_queue();


--
-- Name: tasks tasks_notify_change; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_notify_change AFTER UPDATE ON public.tasks FOR EACH ROW WHEN (((new.status IS DISTINCT FROM old.status) OR (new.progress IS DISTINCT FROM old.progress) OR (new.cancel_requested IS DISTINCT FROM old.cancel_requested))) EXECUTE FUNCTION public.taskgate_notify_task_change();


--
-- Name: tasks tasks_notify_pending_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_notify_pending_insert AFTER INSERT ON public.tasks FOR EACH ROW WHEN ((new.status = 'pending'::text)) EXECUTE FUNCTION public.taskgate_notify_pending_task();


--
-- Name: tasks tasks_notify_pending_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tasks_notify_pending_update AFTER UPDATE ON public.tasks FOR EACH ROW WHEN (((new.status = 'pending'::text) AND (old.status IS DISTINCT FROM 'pending'::text))) EXECUTE FUNCTION public.taskgate_notify_pending_task();


--
-- Name: users users_create_queue; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_create_queue AFTER INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.taskgate_create_user_queue();


--
-- Name: task_attempts task_attempts_task_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_attempts
    ADD CONSTRAINT task_attempts_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.tasks(id) ON DELETE CASCADE;


--
-- Name: tasks tasks_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: user_limits user_limits_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.user_limits
    ADD CONSTRAINT user_limits_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: user_queues user_queues_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.user_queues
    ADD CONSTRAINT user_queues_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: webhook_attempts webhook_attempts_delivery_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES public.webhook_deliveries(id) ON DELETE CASCADE;


--
-- Name: webhook_deliveries webhook_deliveries_event_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_event_id_fkey FOREIGN KEY (event_id) REFERENCES public.task_events(id) ON DELETE CASCADE;


--
-- Name: webhook_endpoints webhook_endpoints_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--



--
-- Dbmate schema migrations
--

INSERT INTO public.schema_migrations (version) VALUES
    ('20261122000001'),
    ('20261122000002'),
    ('20261122000003'),
    ('20261122000004'),
    ('20261203000001'),
    ('20261203000002'),
    ('20261203070000'),
    ('20261203070100'),
    ('20261203080000'),
    ('20261206000001');
