-- st2-matrix schema, version 8: executions watched live from the room. Append-only.

-- The ack the bot posted for an execution, edited in place as the execution moves: its text
-- (the edit repeats it) and its send transaction id; its event id is copied from the outbox
-- when it is sent (trigger below), as the outbox's own rows are purged after a while.
ALTER TABLE executions ADD COLUMN ack_text TEXT;
ALTER TABLE executions ADD COLUMN ack_txn TEXT;
ALTER TABLE executions ADD COLUMN ack_event_id TEXT;
-- The last status seen on the stream, and when the execution was seen to end (then the ack
-- shows the end and the command got its ✅/❌ once).
ALTER TABLE executions ADD COLUMN status TEXT;
ALTER TABLE executions ADD COLUMN ended_at INTEGER;
CREATE INDEX executions_ack ON executions (ack_txn) WHERE ack_txn IS NOT NULL;
CREATE INDEX executions_room ON executions (room_id, created_at);
CREATE INDEX executions_live ON executions (created_at) WHERE ended_at IS NULL;

CREATE TRIGGER executions_ack_sent AFTER UPDATE OF event_id ON outbox
WHEN NEW.event_id IS NOT NULL
BEGIN
    UPDATE executions SET ack_event_id = NEW.event_id WHERE ack_txn = NEW.txn_id;
END;
