-- flowrt's first schema. Every table carries tenant_id from the start, with a default
-- tenant until auth lands, so tenancy is an addition later, not a rewrite.

-- Registered definitions. A (tenant, name, version) is immutable: the body hash
-- lets a re-registration with a different body be refused.
CREATE TABLE workflow_definitions (
    tenant_id   text        NOT NULL DEFAULT 'default',
    name        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    body        jsonb       NOT NULL,
    body_hash   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version)
);

-- The projection of each execution: what its log folds to, kept current by the
-- worker's fenced commit. last_seq is the log's head; processed_seq how far the
-- workers got; blocked_seq a dead event that holds the rest back; lease_epoch is
-- bumped by each worker that takes the execution, and fences stale commits.
CREATE TABLE executions (
    tenant_id      text        NOT NULL DEFAULT 'default',
    execution_id   text        NOT NULL,
    workflow       text        NOT NULL,
    version        integer     NOT NULL,
    status         text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    state          text,
    data           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_seq       bigint      NOT NULL DEFAULT 0,
    processed_seq  bigint      NOT NULL DEFAULT 0,
    blocked_seq    bigint,
    lease_epoch    bigint      NOT NULL DEFAULT 0,
    request_hash   text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id),
    FOREIGN KEY (tenant_id, workflow, version) REFERENCES workflow_definitions,
    CHECK (processed_seq <= last_seq)
);
CREATE INDEX executions_by_created ON executions (tenant_id, created_at DESC, execution_id DESC);
CREATE INDEX executions_lagging ON executions (updated_at)
    WHERE processed_seq < last_seq AND blocked_seq IS NULL;

-- The log: append-only (a trigger refuses UPDATE and DELETE).
CREATE TABLE events (
    tenant_id        text        NOT NULL DEFAULT 'default',
    execution_id     text        NOT NULL,
    seq              bigint      NOT NULL CHECK (seq > 0),
    event_id         uuid        NOT NULL UNIQUE,
    name             text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key  text,
    request_hash     text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, seq),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions
);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, execution_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE FUNCTION flowrt_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION flowrt_events_append_only();

-- One processing record per event: written pending with the event, then by the
-- worker that processes it. published is the outbox flag: false until the wake-up
-- hint reached Redis; the relay republishes what stays false.
CREATE TABLE event_processing (
    tenant_id     text        NOT NULL DEFAULT 'default',
    execution_id  text        NOT NULL,
    seq           bigint      NOT NULL,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'completed', 'ignored', 'failed', 'dead')),
    published     boolean     NOT NULL DEFAULT false,
    attempts      integer     NOT NULL DEFAULT 0,
    worker        text,
    from_state    text,
    to_state      text,
    actions       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    processed_at  timestamptz,
    PRIMARY KEY (tenant_id, execution_id, seq),
    FOREIGN KEY (tenant_id, execution_id, seq) REFERENCES events
);
CREATE INDEX event_processing_unpublished ON event_processing (created_at) WHERE NOT published;
