-- st2-matrix schema, version 7: files the bridge posts (a long result, an execution's output).
-- Append-only.

-- A file message is queued in `outbox` like any message (its content without the file's
-- `url`/`file`), and its bytes wait here until the sender uploads them, just before it sends
-- the message: a crash before the upload is recorded only means uploading again.
CREATE TABLE outbox_files (
    txn_id   TEXT PRIMARY KEY NOT NULL,  -- the outbox message that carries the file
    data     BLOB NOT NULL,
    mimetype TEXT NOT NULL,
    uploaded TEXT                        -- NULL | plain | encrypted: how the message's content
                                         -- now refers to the uploaded file
);

-- The bytes are only needed until the message is sent or given up on.
CREATE TRIGGER outbox_files_done AFTER UPDATE OF state ON outbox
WHEN NEW.state != 'pending'
BEGIN
    DELETE FROM outbox_files WHERE txn_id = NEW.txn_id;
END;

CREATE TRIGGER outbox_files_purged AFTER DELETE ON outbox
BEGIN
    DELETE FROM outbox_files WHERE txn_id = OLD.txn_id;
END;
