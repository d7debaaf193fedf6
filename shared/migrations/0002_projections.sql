-- Ticket projections: a pure function of `events`, rebuilt by `deskledger replay`.

CREATE TABLE tickets (
    ticket_id          bigint      NOT NULL,
    company_id         bigint,
    status_id          integer,
    subject            text,
    client_id          bigint,
    assignee_id        bigint,
    group_id           bigint,
    channel_id         bigint,
    email              text,
    published_at       timestamptz,
    last_updated_at    timestamptz,
    -- {"<field id>": {"name": ..., "value": ...}}
    custom_fields      jsonb       NOT NULL DEFAULT '{}',
    -- sorted tag names
    tags               jsonb       NOT NULL DEFAULT '[]',
    comments_count     integer     NOT NULL DEFAULT 0,
    rating             integer,
    first_response_at  timestamptz,
    first_resolved_at  timestamptz,
    resolved_at        timestamptz,
    reopened_count     integer     NOT NULL DEFAULT 0,
    -- {"<status id>": seconds spent in it, up to the last known change}
    status_durations   jsonb       NOT NULL DEFAULT '{}',
    suspected_gaps     integer     NOT NULL DEFAULT 0,
    -- true until the ticket's creation webhook has been seen
    partial            boolean     NOT NULL DEFAULT false,
    events_count       integer     NOT NULL DEFAULT 0,
    -- the fold's own state (per-field versions, status history) as MessagePack; not for queries
    fold_state         bytea       NOT NULL,
    CONSTRAINT tickets_pkey PRIMARY KEY (ticket_id)
)
-- Every batch rewrites the rows it touches: keep rows of up to 8 KB inline and uncompressed
-- rather than paying TOAST compression on each rewrite (the default starts at about 2 KB).
WITH (toast_tuple_target = 8160);

CREATE INDEX tickets_status_id_idx ON tickets (status_id);
CREATE INDEX tickets_assignee_id_idx ON tickets (assignee_id);

CREATE TABLE ticket_status_changes (
    source_id    text        NOT NULL,
    ticket_id    bigint      NOT NULL,
    old_status   integer,
    new_status   integer,
    changed_at   timestamptz NOT NULL,
    user_id      bigint,
    trigger_id   bigint,
    changed_by   text        NOT NULL,
    CONSTRAINT ticket_status_changes_pkey PRIMARY KEY (source_id)
);

CREATE INDEX ticket_status_changes_ticket_idx ON ticket_status_changes (ticket_id, changed_at);

CREATE TABLE ticket_comments (
    comment_id    bigint      NOT NULL,
    ticket_id     bigint      NOT NULL,
    type          text,
    author        text,
    user_id       bigint,
    client_id     bigint,
    message       text,
    published_at  timestamptz NOT NULL,
    is_first      boolean     NOT NULL,
    CONSTRAINT ticket_comments_pkey PRIMARY KEY (comment_id)
);

CREATE INDEX ticket_comments_ticket_idx ON ticket_comments (ticket_id, published_at);

CREATE TABLE ticket_ratings (
    rating_id          bigint      NOT NULL,
    ticket_id          bigint      NOT NULL,
    rating             integer,
    comment            text,
    client_id          bigint,
    user_id            bigint,
    ticket_comment_id  bigint,
    created_at         timestamptz,
    updated_at         timestamptz,
    CONSTRAINT ticket_ratings_pkey PRIMARY KEY (rating_id)
);

CREATE INDEX ticket_ratings_ticket_idx ON ticket_ratings (ticket_id);
