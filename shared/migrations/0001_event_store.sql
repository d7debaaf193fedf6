-- The event store: every accepted delivery and the append-only log of UseDesk facts.

CREATE TABLE deliveries (
    delivery_id   uuid        NOT NULL,
    received_at   timestamptz NOT NULL,
    kind          text        NOT NULL,
    content_type  text        NOT NULL,
    -- As received, with `secret` and `custom_blocks[].secret_key` redacted by the ingress.
    body          bytea       NOT NULL,
    -- SHA-256 of the body before redaction, as the ingress saw it.
    body_sha256   text,
    outcome       text        NOT NULL,
    error         text,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_pkey PRIMARY KEY (delivery_id),
    CONSTRAINT deliveries_kind_check CHECK (kind IN (
        'ticket_created', 'ticket_changed', 'comment_created', 'rating', 'ping', 'chat', 'unknown'
    )),
    CONSTRAINT deliveries_outcome_check CHECK (outcome IN (
        'recorded', 'duplicate', 'ignored', 'rejected'
    )),
    CONSTRAINT deliveries_error_check CHECK ((outcome = 'rejected') = (error IS NOT NULL))
);

CREATE INDEX deliveries_rejected_idx ON deliveries (received_at) WHERE outcome = 'rejected';
CREATE INDEX deliveries_received_at_idx ON deliveries (received_at);

CREATE TABLE events (
    position     bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id    bigint      NOT NULL,
    type         text        NOT NULL,
    source_id    text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    data         jsonb       NOT NULL,
    delivery_id  uuid        NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_type_source_id_key UNIQUE (type, source_id),
    CONSTRAINT events_type_check CHECK (type IN (
        'ticket_created', 'ticket_changed', 'comment_created', 'rating'
    ))
);

-- One ticket's stream, in order.
CREATE INDEX events_ticket_id_position_idx ON events (ticket_id, position);
-- Global position scans, and "how old is the newest event" (the row with the last position),
-- use the primary key: every index more is paid on every append.

-- Append-only in the database itself, not only by convention.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'rebuild projections with `deskledger replay` instead of editing events';
END;
$$;

CREATE TRIGGER events_append_only_rows
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_append_only_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Bodies and event data are mostly 1-4 KB, right where PostgreSQL starts compressing values:
-- lz4 costs a fraction of the default pglz's CPU on every append. Servers built without lz4
-- keep pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE deliveries ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server: values stay compressed with pglz';
END;
$$;
