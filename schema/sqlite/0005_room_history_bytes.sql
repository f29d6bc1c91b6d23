-- Stored room history is bounded in bytes as well as in messages (rooms.max_history_bytes):
-- each message's size as written, so that trimming and loading need not read the stanzas.
ALTER TABLE room_history ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
UPDATE room_history SET bytes = LENGTH(CAST(stanza AS BLOB));
