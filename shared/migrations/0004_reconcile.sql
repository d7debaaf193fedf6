-- Reconciliation with UseDesk's REST API (`deskledger reconcile`, issue 15).

-- How DeskLedger learned each fact: a webhook, or the API (a fact webhooks never delivered).
-- A constant default does not rewrite the table, and fires no row trigger (append-only holds).
ALTER TABLE events
    ADD COLUMN source text NOT NULL DEFAULT 'webhook',
    ADD CONSTRAINT events_source_check CHECK (source IN ('webhook', 'api'));

-- A ticket's state as the API reported it, where its history did not explain it.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN (
    'ticket_created', 'ticket_changed', 'comment_created', 'rating', 'ticket_snapshot'
));

-- Every event has a `recorded` delivery (architecture.md). A fact found through the API has a
-- delivery row of its own, `source = 'api'`: its body is the webhook-shaped JSON the fact was
-- built from, so it can be decoded again like any webhook.
ALTER TABLE deliveries
    ADD COLUMN source text NOT NULL DEFAULT 'webhook',
    ADD CONSTRAINT deliveries_source_check CHECK (source IN ('webhook', 'api'));
ALTER TABLE deliveries DROP CONSTRAINT deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check CHECK (kind IN (
    'ticket_created', 'ticket_changed', 'comment_created', 'rating', 'ping', 'chat', 'unknown',
    'ticket_snapshot'
));

-- One row per pass, complete or not: what it listed, fetched and found.
CREATE TABLE reconcile_passes (
    pass_id          uuid        NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    -- `updated_after` as sent (UTC), NULL for a pass over named tickets only.
    window_start     timestamptz,
    window_end       timestamptz NOT NULL,
    mode             text        NOT NULL,
    outcome          text        NOT NULL DEFAULT 'running',
    offset_semantics text,
    tickets_listed   integer     NOT NULL DEFAULT 0,
    tickets_fetched  integer     NOT NULL DEFAULT 0,
    tickets_gone     integer     NOT NULL DEFAULT 0,
    -- {"ticket_created": 3, ...}: facts the API had that were not stored
    missing          jsonb       NOT NULL DEFAULT '{}',
    corrections      integer     NOT NULL DEFAULT 0,
    api_calls        integer     NOT NULL DEFAULT 0,
    error            text,
    CONSTRAINT reconcile_passes_pkey PRIMARY KEY (pass_id),
    CONSTRAINT reconcile_passes_mode_check CHECK (mode IN ('resume', 'since', 'tickets')),
    CONSTRAINT reconcile_passes_outcome_check CHECK (outcome IN (
        'running', 'complete', 'incomplete', 'failed'
    ))
);

CREATE INDEX reconcile_passes_started_at_idx ON reconcile_passes (started_at);

-- Where the next pass without --since starts: the start of the last complete pass (UTC).
CREATE TABLE reconcile_watermark (
    singleton   boolean     NOT NULL DEFAULT true,
    watermark   timestamptz NOT NULL,
    pass_id     uuid        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reconcile_watermark_pkey PRIMARY KEY (singleton),
    CONSTRAINT reconcile_watermark_singleton_check CHECK (singleton)
);

-- What the API said of each ticket the last time it was read: `last_updated_at` as UseDesk's
-- text (compared API to API, never with webhook times), and whether it is gone (code 113).
CREATE TABLE reconcile_tickets (
    ticket_id        bigint      NOT NULL,
    last_updated_at  text,
    read_at          timestamptz NOT NULL,
    gone             boolean     NOT NULL DEFAULT false,
    gone_reason      text,
    CONSTRAINT reconcile_tickets_pkey PRIMARY KEY (ticket_id)
);

-- Every fact the API showed, once: the completeness figure's denominator. `missing`: the
-- webhooks had not delivered it; `webhook_expected`: false for what no webhook ever carries
-- (comments written by rules) or what happened before DeskLedger received its first webhook.
CREATE TABLE reconcile_facts (
    type              text        NOT NULL,
    source_id         text        NOT NULL,
    ticket_id         bigint      NOT NULL,
    occurred_at       timestamptz NOT NULL,
    missing           boolean     NOT NULL,
    webhook_expected  boolean     NOT NULL,
    pass_id           uuid        NOT NULL,
    checked_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reconcile_facts_pkey PRIMARY KEY (type, source_id)
);

CREATE INDEX reconcile_facts_occurred_at_idx ON reconcile_facts (occurred_at);
