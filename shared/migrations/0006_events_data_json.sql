-- `events.data` as `json` instead of `jsonb` (issue 18).
--
-- Every read of the store (the replay, catch-up, `deskledger ticket`) wants the event's JSON
-- text, and PostgreSQL 15 renders jsonb back to text character by character: ~15 µs of server
-- CPU for an average event (2.4 KB), three times what sending the stored text costs (~5 µs).
-- `json` keeps the text as the worker wrote it (validated on input, like jsonb). Measured on
-- 1,000,000 events: reading and decoding 2.4-3.1x faster; appending costs ~4 µs more server CPU
-- per event (51 vs 47 µs in batches of 500); 18 % less disk.
--
-- What it costs people who query `events` directly (docs/architecture.md): `->`, `->>`, `#>>`
-- and the json_* functions work as before, but each call parses the document (a full scan
-- extracting a field: ~2 s -> ~20 s per million events); the jsonb-only operators (`@>`, `?`,
-- jsonpath) need `data::jsonb`, or the view `events_jsonb` below, which is `events` with `data`
-- as jsonb, as the table was. A GIN index, where one is wanted, is an expression index:
-- CREATE INDEX ... ON events USING gin ((data::jsonb) jsonb_path_ops), queried through the view.
--
-- This rewrites the table and its indexes under an ACCESS EXCLUSIVE lock: workers wait
-- (deliveries stay queued in RabbitMQ) for about 1.5 min per million events on a two-core
-- machine. Old rows keep decoding: their new text is jsonb's rendering of the same JSON.

DO $$
BEGIN
    SET LOCAL default_toast_compression = lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server: values stay compressed with pglz';
END;
$$;

ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;

DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END;
$$;

CREATE VIEW events_jsonb AS
SELECT
    position,
    ticket_id,
    type,
    source_id,
    source,
    occurred_at,
    recorded_at,
    data::jsonb AS data,
    delivery_id
FROM events;

COMMENT ON VIEW events_jsonb IS
    'events with data as jsonb (the jsonb operators: @>, ?, jsonpath); converts each row read';
