-- The worker's leases and fenced commits for many executions in one round trip and
-- one commit each: the concurrent jobs of one worker, batched
-- (flowrt/store/passes.py). Per execution, each does exactly what the one-execution
-- statement did before (and a single lease or commit is a batch of one). Rows are
-- taken in (tenant, execution) order, and per execution the executions row before
-- its event_processing rows: the same order as the API's batched appends (0007) and
-- the published marks, so concurrent batches never wait on each other in a cycle.

-- An event a worker leases or commits has reached a worker: both mark it published
-- in the same row update, so the API's published mark, usually later, finds nothing
-- to write (one row version less per event) and the relay never resends it.

-- Bump each execution's epoch (fencing every older holder), count an attempt on its
-- next unprocessed event, and return the projection with up to p_batch events after
-- it. Committed without waiting for the WAL flush (synchronous_commit off for this
-- transaction only): the pass's fenced commit, which is synchronous, flushes the WAL
-- up to itself and so this lease with it, and no outcome depends on a lease alone.
-- Only a PostgreSQL crash in between can lose a lease: then its attempt count is
-- forgotten (the crash was not the event's fault) and its epoch taken again, and
-- processed_seq = seq - 1 still lets exactly one commit of each event apply. An execution with nothing to do (all processed, blocked, unknown) returns no
-- row and writes nothing.
CREATE FUNCTION flowrt_take_leases(
    p_tenant text[], p_execution text[], p_worker text, p_batch integer)
RETURNS TABLE (ord bigint, lease_epoch bigint, workflow text, version integer,
               last_seq bigint, processed_seq bigint, blocked_seq bigint, status text,
               state text, data jsonb, seq bigint, event_id text, name text,
               payload jsonb, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution) WITH ORDINALITY AS a(t, x, i)
             ORDER BY a.t, a.x, a.i LOOP
        RETURN QUERY
        WITH x AS (UPDATE executions SET lease_epoch = lease_epoch + 1
                    WHERE tenant_id = r.t AND execution_id = r.x
                      AND processed_seq < last_seq AND blocked_seq IS NULL
                RETURNING lease_epoch, workflow, version, last_seq, processed_seq,
                          blocked_seq, status, state, data),
             p AS (UPDATE event_processing p SET attempts = p.attempts + 1,
                          status = 'processing', worker = p_worker, started_at = now(),
                          published = true
                     FROM x
                    WHERE p.tenant_id = r.t AND p.execution_id = r.x
                      AND p.seq = x.processed_seq + 1)
        SELECT r.i, x.lease_epoch, x.workflow, x.version, x.last_seq, x.processed_seq,
               x.blocked_seq, x.status, x.state, x.data, e.seq, e.event_id::text, e.name,
               e.payload, e.created_at
          FROM x LEFT JOIN LATERAL (
               SELECT * FROM events e WHERE e.tenant_id = r.t AND e.execution_id = r.x
                  AND e.seq > x.processed_seq AND e.seq <= x.last_seq
                ORDER BY e.seq LIMIT p_batch) e ON true
         ORDER BY e.seq;
    END LOOP;
END $$;

-- Apply each event's outcome and its execution's new projection, fenced: only where
-- processed_seq = seq - 1, the epoch is still the committer's and nothing blocks it.
-- Returns a row (when, and the log's head) for each commit that applied; a fenced
-- one returns none and writes nothing.
CREATE FUNCTION flowrt_commit_events(
    p_tenant text[], p_execution text[], p_seq bigint[], p_epoch bigint[],
    p_xstatus text[], p_state text[], p_data jsonb[], p_status text[], p_from text[],
    p_to text[], p_actions jsonb[], p_error text[], p_worker text)
RETURNS TABLE (ord bigint, processed_at timestamptz, last_seq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution, p_seq, p_epoch, p_xstatus, p_state,
                                  p_data, p_status, p_from, p_to, p_actions, p_error)
                           WITH ORDINALITY AS a(t, x, s, ep, xs, st, d, ps, fr, tt, ac, er, i)
             ORDER BY a.t, a.x, a.i LOOP
        RETURN QUERY
        WITH x AS (UPDATE executions SET status = r.xs, state = r.st, data = r.d,
                          processed_seq = r.s, updated_at = now()
                    WHERE tenant_id = r.t AND execution_id = r.x AND processed_seq = r.s - 1
                      AND lease_epoch = r.ep AND blocked_seq IS NULL
                RETURNING updated_at, last_seq),
             p AS (UPDATE event_processing p SET status = r.ps, from_state = r.fr,
                          to_state = r.tt, actions = r.ac, error = r.er, worker = p_worker,
                          published = true,
                          processed_at = x.updated_at,
                          started_at = coalesce(p.started_at, x.updated_at),
                          attempts = CASE WHEN p.status = 'processing' THEN p.attempts
                                          ELSE p.attempts + 1 END
                     FROM x
                    WHERE p.tenant_id = r.t AND p.execution_id = r.x AND p.seq = r.s
                RETURNING x.updated_at, x.last_seq)
        SELECT r.i, p.updated_at, p.last_seq FROM p;
    END LOOP;
END $$;
