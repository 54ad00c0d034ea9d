-- Appending an event in one round trip. The function does what the API did in six
-- statements (lock the execution row, check the idempotency key and the status,
-- insert the event and its processing record, move last_seq), inside the caller's
-- implicit transaction. The row lock still serialises appends to one execution, so
-- seq has no gaps, and a retried Idempotency-Key sees the first append.
--
-- outcome: 'appended' | 'replayed' (same key, same body) | 'key_mismatch' |
--          'finished' | 'not_found'
CREATE FUNCTION flowrt_append_event(
    p_tenant text, p_execution text, p_event_id uuid, p_name text, p_payload jsonb,
    p_key text, p_hash text)
RETURNS TABLE (outcome text, event_id uuid, seq bigint, workflow text, status text)
LANGUAGE plpgsql AS $$
DECLARE
    x record;
    prior record;
BEGIN
    SELECT e.status, e.last_seq, e.workflow INTO x FROM executions e
     WHERE e.tenant_id = p_tenant AND e.execution_id = p_execution FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT ev.event_id, ev.seq, ev.request_hash INTO prior FROM events ev
         WHERE ev.tenant_id = p_tenant AND ev.execution_id = p_execution
           AND ev.idempotency_key = p_key;
        IF FOUND THEN
            RETURN QUERY SELECT CASE WHEN prior.request_hash = p_hash THEN 'replayed'
                                     ELSE 'key_mismatch' END,
                                prior.event_id, prior.seq, x.workflow, x.status;
            RETURN;
        END IF;
    END IF;
    IF x.status IN ('completed', 'failed', 'cancelled') THEN
        RETURN QUERY SELECT 'finished', NULL::uuid, NULL::bigint, x.workflow, x.status;
        RETURN;
    END IF;
    INSERT INTO events (tenant_id, execution_id, seq, event_id, name, payload,
                        idempotency_key, request_hash)
    VALUES (p_tenant, p_execution, x.last_seq + 1, p_event_id, p_name, p_payload, p_key, p_hash);
    INSERT INTO event_processing (tenant_id, execution_id, seq)
    VALUES (p_tenant, p_execution, x.last_seq + 1);
    UPDATE executions SET last_seq = x.last_seq + 1
     WHERE tenant_id = p_tenant AND execution_id = p_execution;
    RETURN QUERY SELECT 'appended', p_event_id, x.last_seq + 1, x.workflow, x.status;
END $$;
