-- Starting many executions in one round trip and one commit: the API's concurrent
-- start requests, batched (flowrt/store/appends.py), as 0007 does for appends. Each
-- goes through flowrt_start_execution (0004), in (tenant, execution) order, so two
-- batches never wait on each other in a cycle. One row per input, with its position.
CREATE FUNCTION flowrt_start_executions(
    p_tenant text[], p_execution text[], p_event_id uuid[], p_workflow text[],
    p_version integer[], p_name text, p_payload jsonb[], p_hash text[])
RETURNS TABLE (ord bigint, outcome text, event_id uuid, workflow text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM unnest(p_tenant, p_execution, p_event_id, p_workflow, p_version,
                                  p_payload, p_hash) WITH ORDINALITY
                           AS a(t, x, id, w, v, pl, h, i)
             ORDER BY a.t, a.x, a.i LOOP
        RETURN QUERY SELECT r.i, f.outcome, f.event_id, f.workflow
                       FROM flowrt_start_execution(r.t, r.x, r.id, r.w, r.v, p_name, r.pl,
                                                   r.h) f;
    END LOOP;
END $$;
