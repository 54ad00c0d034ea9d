-- Appending many events in one round trip and one commit: the API's concurrent
-- requests, batched (flowrt/store/appends.py). Each event goes through
-- flowrt_append_event (0002), so every rule is the single append's, and each gets
-- its own outcome. The rows are taken in (tenant, execution) order, arrival order
-- within one execution: every batch locks execution rows in the same global order,
-- so two batches can wait on each other but never in a cycle.
--
-- Returns one row per input, with its position (1-based) in the arrays.
CREATE FUNCTION flowrt_append_events(
    p_tenant text[], p_execution text[], p_event_id uuid[], p_name text[], p_payload jsonb[],
    p_key text[], p_hash text[])
RETURNS TABLE (ord bigint, outcome text, event_id uuid, seq bigint, workflow text, status text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution, p_event_id, p_name, p_payload,
                                  p_key, p_hash) WITH ORDINALITY
                           AS a(t, x, id, n, pl, k, h, i)
             ORDER BY a.t, a.x, a.i LOOP
        RETURN QUERY SELECT r.i, f.outcome, f.event_id, f.seq, f.workflow, f.status
                       FROM flowrt_append_event(r.t, r.x, r.id, r.n, r.pl, r.k, r.h) f;
    END LOOP;
END $$;
