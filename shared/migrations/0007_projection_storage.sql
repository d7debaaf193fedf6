-- The tickets row is rewritten whole each batch that touches its ticket (issue 18). Measured on
-- the bench corpus it was ~3 KB: the custom fields (~1.5 KB, a free-text field among them) and
-- the fold's state (~1.2 KB), both uncompressed inline. Now:
-- - `custom_fields` goes out of line (TOAST, lz4-compressed) once the row passes 512 bytes, and
--   the upsert keeps the stored value when the new one is equal (`Table.of(keep_equal=...)`):
--   an unchanged value is then an 18-byte pointer in the new row version, not its bytes again;
-- - the other variable-length columns stay inline (MAIN): `fold_state` compressed with lz4
--   (1.2 KB -> 0.7 KB) when the row is still over 512 bytes, the small ones as they are.
-- Metadata only: rows are stored this way as they are next written (or by `deskledger replay`).
ALTER TABLE tickets SET (toast_tuple_target = 512, fillfactor = 60);
ALTER TABLE tickets
    ALTER COLUMN fold_state SET STORAGE MAIN,
    ALTER COLUMN subject SET STORAGE MAIN,
    ALTER COLUMN email SET STORAGE MAIN,
    ALTER COLUMN tags SET STORAGE MAIN,
    ALTER COLUMN status_durations SET STORAGE MAIN,
    ALTER COLUMN priority SET STORAGE MAIN;

DO $$
BEGIN
    ALTER TABLE tickets
        ALTER COLUMN fold_state SET COMPRESSION lz4,
        ALTER COLUMN custom_fields SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server: values stay compressed with pglz';
END;
$$;
