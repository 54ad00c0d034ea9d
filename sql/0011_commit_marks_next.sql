-- The fenced commit of one event that also counts the attempt on the next event of
-- the same pass (p_next, 0 for none) when that one will run actions: what
-- flowrt_mark_events (0010) did in a statement and a transaction of its own, between
-- this commit and the next event's actions. Fenced by the commit itself: only when
-- the commit applied (processed_seq is then p_next - 1, the epoch the committer's,
-- nothing blocked), and never on a dead event ("status <> 'dead'", as in 0010). The
-- mark is now as durable as the commit, which it shares.
--
-- An overload beside 0008's 13-argument function, which workers of the version
-- before keep calling during a rolling upgrade (redefined below to call this one).
CREATE FUNCTION flowrt_commit_events(
    p_tenant text[], p_execution text[], p_seq bigint[], p_epoch bigint[],
    p_xstatus text[], p_state text[], p_data jsonb[], p_status text[], p_from text[],
    p_to text[], p_actions jsonb[], p_error text[], p_worker text, p_next bigint[])
RETURNS TABLE (ord bigint, processed_at timestamptz, last_seq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution, p_seq, p_epoch, p_xstatus, p_state,
                                  p_data, p_status, p_from, p_to, p_actions, p_error, p_next)
                           WITH ORDINALITY AS a(t, x, s, ep, xs, st, d, ps, fr, tt, ac, er, nx, i)
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
                RETURNING x.updated_at, x.last_seq),
             n AS (UPDATE event_processing q SET status = 'processing',
                          attempts = q.attempts + 1, worker = p_worker,
                          started_at = x.updated_at
                     FROM x
                    WHERE r.nx = r.s + 1 AND q.tenant_id = r.t AND q.execution_id = r.x
                      AND q.seq = r.nx AND q.status <> 'dead')
        SELECT r.i, p.updated_at, p.last_seq FROM p;
    END LOOP;
END $$;

-- 0008's 13-argument form, kept for those workers, now runs this one with no next
-- event to mark: one body to keep in step.
CREATE OR REPLACE FUNCTION flowrt_commit_events(
    p_tenant text[], p_execution text[], p_seq bigint[], p_epoch bigint[],
    p_xstatus text[], p_state text[], p_data jsonb[], p_status text[], p_from text[],
    p_to text[], p_actions jsonb[], p_error text[], p_worker text)
RETURNS TABLE (ord bigint, processed_at timestamptz, last_seq bigint)
LANGUAGE sql AS $$
    SELECT * FROM flowrt_commit_events(p_tenant, p_execution, p_seq, p_epoch, p_xstatus,
                                       p_state, p_data, p_status, p_from, p_to, p_actions,
                                       p_error, p_worker,
                                       array_fill(0::bigint, ARRAY[cardinality(p_seq)]))
$$;
