-- Helpdesk semantics (docs/semantics.md): the field history, the change order, warnings.
-- The projections' rules changed with this version: run `deskledger replay` once after it.

-- What a delivery's decoder coerced rather than refused (a number where text belongs).
ALTER TABLE deliveries ADD COLUMN warnings text[];

-- UseDesk's order of a ticket's changes, and which time `changed_at` is.
ALTER TABLE ticket_status_changes ADD COLUMN change_id bigint;
ALTER TABLE ticket_status_changes ADD COLUMN time_source text;
UPDATE ticket_status_changes SET change_id = source_id::bigint, time_source = 'usedesk';
ALTER TABLE ticket_status_changes ALTER COLUMN change_id SET NOT NULL;
ALTER TABLE ticket_status_changes ALTER COLUMN time_source SET NOT NULL;
ALTER TABLE ticket_status_changes ADD CONSTRAINT ticket_status_changes_time_source_check
    CHECK (time_source IN ('usedesk', 'received'));

-- The ticket's priority, from changes whose target is `priority`.
ALTER TABLE tickets ADD COLUMN priority text;

-- One row per entry of a change event's `data[]`, every target: the field history.
CREATE TABLE ticket_field_changes (
    source_id       text        NOT NULL,
    entry           integer     NOT NULL,
    ticket_id       bigint      NOT NULL,
    change_id       bigint      NOT NULL,
    field           text        NOT NULL,
    old_value       text,
    new_value       text,
    old_value_json  text,
    new_value_json  text,
    changed_at      timestamptz NOT NULL,
    time_source     text        NOT NULL,
    user_id         bigint,
    trigger_id      bigint,
    CONSTRAINT ticket_field_changes_pkey PRIMARY KEY (source_id, entry),
    CONSTRAINT ticket_field_changes_time_source_check
        CHECK (time_source IN ('usedesk', 'received'))
);

CREATE INDEX ticket_field_changes_ticket_idx ON ticket_field_changes (ticket_id, change_id);
CREATE INDEX ticket_field_changes_field_idx ON ticket_field_changes (field, changed_at);
