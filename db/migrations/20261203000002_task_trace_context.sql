-- migrate:up
-- The W3C trace context (traceparent, tracestate) of the CreateTask call, so
-- that a processor's attempts join the trace that created the task.
ALTER TABLE tasks ADD COLUMN trace_context jsonb;

COMMENT ON COLUMN tasks.trace_context IS 'The W3C trace context (traceparent, tracestate) of the CreateTask call; the processor''s attempt spans join that trace.';

-- migrate:down
ALTER TABLE tasks DROP COLUMN trace_context;
