-- Tenants and API keys (docs/decisions/0005). Every data row already carries
-- tenant_id (0001); a tenant now comes from the caller's key, never from the request.

CREATE TABLE tenants (
    tenant_id   text        PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    -- requests per second and bucket size of this tenant's rate limit; NULL: the
    -- deployment's FLOWRT_RATE_LIMIT / FLOWRT_RATE_BURST
    rate_limit  double precision CHECK (rate_limit > 0),
    rate_burst  integer     CHECK (rate_burst > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The tenants that already hold executions (FLOWRT_TENANT before keys existed).
INSERT INTO tenants (tenant_id)
SELECT DISTINCT tenant_id FROM executions
 WHERE tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';

-- A key is shown once at creation as "frk_<key_id>_<secret>". Only the SHA-256 of the
-- whole key is kept: keys are 256-bit random, so a fast hash is enough (a slow KDF
-- guards low-entropy passwords, and would cost every request).
CREATE TABLE api_keys (
    key_id       text        PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants,
    role         text        NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    key_hash     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

-- Definitions are deployment-wide: they are code, shipped with the workers that run
-- their actions, and every worker serves every tenant. Tenants isolate data, not code.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM workflow_definitions
                GROUP BY name, version HAVING count(DISTINCT body_hash) > 1) THEN
        RAISE EXCEPTION 'two tenants registered different bodies under one workflow version;'
            ' give one of them a new version before migrating';
    END IF;
END $$;
ALTER TABLE executions DROP CONSTRAINT executions_tenant_id_workflow_version_fkey;
DELETE FROM workflow_definitions a USING workflow_definitions b
 WHERE a.name = b.name AND a.version = b.version AND a.tenant_id > b.tenant_id;
ALTER TABLE workflow_definitions DROP CONSTRAINT workflow_definitions_pkey;
ALTER TABLE workflow_definitions DROP COLUMN tenant_id;
ALTER TABLE workflow_definitions ADD PRIMARY KEY (name, version);
ALTER TABLE executions ADD FOREIGN KEY (workflow, version) REFERENCES workflow_definitions;

CREATE OR REPLACE FUNCTION flowrt_start_execution(
    p_tenant text, p_execution text, p_event_id uuid, p_workflow text, p_version integer,
    p_name text, p_payload jsonb, p_hash text)
RETURNS TABLE (outcome text, event_id uuid, workflow text)
LANGUAGE plpgsql AS $$
DECLARE
    v integer := p_version;
    prior record;
BEGIN
    IF v IS NULL THEN
        SELECT max(d.version) INTO v FROM workflow_definitions d WHERE d.name = p_workflow;
        IF v IS NULL THEN
            RETURN QUERY SELECT 'no_workflow', NULL::uuid, p_workflow;
            RETURN;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM workflow_definitions d
                       WHERE d.name = p_workflow AND d.version = v) THEN
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
