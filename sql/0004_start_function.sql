-- Starting an execution in one round trip, as appending does (0002): pick the
-- workflow's version (the latest registered when none is given), create the
-- execution, and append its flowrt.started event (seq 1) with its processing record.
-- A second start of the same execution id with the same request returns the first
-- one; with another request it is a conflict.
--
-- outcome: 'started' | 'replayed' | 'conflict' | 'no_workflow' | 'no_version'
CREATE FUNCTION flowrt_start_execution(
    p_tenant text, p_execution text, p_event_id uuid, p_workflow text, p_version integer,
    p_name text, p_payload jsonb, p_hash text)
RETURNS TABLE (outcome text, event_id uuid, workflow text)
LANGUAGE plpgsql AS $$
DECLARE
    v integer := p_version;
    prior record;
BEGIN
    IF v IS NULL THEN
        SELECT max(d.version) INTO v FROM workflow_definitions d
         WHERE d.tenant_id = p_tenant AND d.name = p_workflow;
        IF v IS NULL THEN
            RETURN QUERY SELECT 'no_workflow', NULL::uuid, p_workflow;
            RETURN;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM workflow_definitions d WHERE d.tenant_id = p_tenant
                       AND d.name = p_workflow AND d.version = v) THEN
        RETURN QUERY SELECT 'no_version', NULL::uuid, p_workflow;
        RETURN;
    END IF;
    INSERT INTO executions (tenant_id, execution_id, workflow, version, last_seq, request_hash)
    VALUES (p_tenant, p_execution, p_workflow, v, 1, p_hash)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT x.request_hash, x.workflow, e.event_id INTO prior
          FROM executions x JOIN events e USING (tenant_id, execution_id)
         WHERE x.tenant_id = p_tenant AND x.execution_id = p_execution AND e.seq = 1;
        IF prior.request_hash IS DISTINCT FROM p_hash THEN
            RETURN QUERY SELECT 'conflict', NULL::uuid, prior.workflow;
        ELSE
            RETURN QUERY SELECT 'replayed', prior.event_id, prior.workflow;
        END IF;
        RETURN;
    END IF;
    INSERT INTO events (tenant_id, execution_id, seq, event_id, name, payload, request_hash)
    VALUES (p_tenant, p_execution, 1, p_event_id, p_name, p_payload, p_hash);
    INSERT INTO event_processing (tenant_id, execution_id, seq)
    VALUES (p_tenant, p_execution, 1);
    RETURN QUERY SELECT 'started', p_event_id, p_workflow;
END $$;
