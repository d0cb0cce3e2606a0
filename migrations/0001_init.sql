-- st2-matrix schema, version 1. Migrations are append-only: never edit this file once landed.

-- Transactions the homeserver pushed that are stored. Keyed by the homeserver's txn id AND a
-- digest of the event ids it carried: Synapse restarts its counter at 1 on a fresh server, so
-- a bare txn id is not a stable key.
CREATE TABLE processed_txns (
    txn_key      TEXT PRIMARY KEY NOT NULL,
    processed_at INTEGER NOT NULL            -- unix ms
) WITHOUT ROWID;
CREATE INDEX processed_txns_age ON processed_txns (processed_at);

-- Events that need work (commands, invites, membership changes), stored before the
-- transaction is acknowledged. event_id is the dedupe key: an event is acted on at most once.
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,               -- see store::inbox::Kind
    event       TEXT NOT NULL,               -- the event as received (JSON)
    state       TEXT NOT NULL DEFAULT 'pending', -- pending | started | done
    received_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX inbox_open ON inbox (room_id, seq) WHERE state != 'done';
CREATE INDEX inbox_finished ON inbox (finished_at) WHERE state = 'done';

-- Everything the bridge says, queued before it is sent. txn_id is chosen here, once, so a
-- retry after a crash is deduplicated by the homeserver.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id         TEXT NOT NULL,
    txn_id          TEXT NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    content         TEXT NOT NULL,           -- event content (JSON, from ruma types)
    state           TEXT NOT NULL DEFAULT 'pending', -- pending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,        -- unix ms
    last_error      TEXT,
    event_id        TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE state != 'pending';

-- Rooms the bot is in.
CREATE TABLE rooms (
    room_id               TEXT PRIMARY KEY NOT NULL,
    joined_at             INTEGER NOT NULL,
    inviter               TEXT,
    encrypted             INTEGER NOT NULL DEFAULT 0,
    encryption_notice_at  INTEGER
) WITHOUT ROWID;
