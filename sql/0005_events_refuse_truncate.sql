-- TRUNCATE skips row-level triggers, so 0001's guard does not see it: refuse it on
-- the log too (TRUNCATE events, and TRUNCATE ... CASCADE from executions).
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION flowrt_events_append_only();
