-- Counting an attempt on the next event of a pass before its actions run, for many
-- executions in one round trip and one commit: the concurrent jobs of one worker,
-- batched (flowrt/store/passes.py), like the leases (0008). A pass's first event had
-- its attempt counted by the lease; every later event of the same pass is marked
-- here, fenced on the lease's epoch and processed_seq = seq - 1 exactly as the
-- single statement was (flowrt/store/processing.py tells why "status <> 'dead'").
--
-- Committed without waiting for the WAL flush, for the lease's reason (0008): the
-- event's fenced commit, synchronous, flushes the WAL up to itself and so this mark
-- with it, and no outcome depends on a mark alone. Only a PostgreSQL crash in
-- between can lose one: the attempt is then not counted (the crash was not the
-- event's fault). Rows are taken in (tenant, execution) order, as everywhere.
--
-- Returns (position, attempts) for each mark that applied; a fenced one none.
CREATE FUNCTION flowrt_mark_events(
    p_tenant text[], p_execution text[], p_seq bigint[], p_epoch bigint[],
    p_first bigint[], p_worker text)
RETURNS TABLE (ord bigint, attempts integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution, p_seq, p_epoch, p_first)
                           WITH ORDINALITY AS a(t, x, s, ep, f, i)
             ORDER BY a.t, a.x, a.i LOOP
        RETURN QUERY
        UPDATE event_processing p SET status = 'processing',
               attempts = p.attempts + CASE WHEN p.seq = r.f THEN 0 ELSE 1 END,
               worker = p_worker, started_at = now()
          FROM executions x
         WHERE p.tenant_id = r.t AND p.execution_id = r.x AND p.seq = r.s
           AND p.status <> 'dead'
           AND x.tenant_id = p.tenant_id AND x.execution_id = p.execution_id
           AND x.lease_epoch = r.ep AND x.processed_seq = r.s - 1 AND x.blocked_seq IS NULL
        RETURNING r.i, p.attempts;
    END LOOP;
END $$;
