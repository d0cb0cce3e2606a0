-- st2-matrix schema, version 2: StackStorm commands. Append-only, like every migration.

-- Direct chats with the bot: every message there is a command. Set from the invite's
-- is_direct flag.
ALTER TABLE rooms ADD COLUMN direct INTEGER NOT NULL DEFAULT 0;
-- A room's own pack filter (comma-separated, or '*'); NULL means [bridge].packs.
ALTER TABLE rooms ADD COLUMN packs TEXT;

-- The enabled aliases as StackStorm last returned them, so help and matching work from the
-- first moment after a restart, even while StackStorm is down.
-- Keyed by list position, not ref: the list is stored exactly as returned.
CREATE TABLE aliases (
    seq   INTEGER PRIMARY KEY,
    ref   TEXT NOT NULL,
    pack  TEXT NOT NULL,
    alias TEXT NOT NULL            -- the alias object as StackStorm returned it (JSON)
);

-- Small facts: when the aliases were fetched, etc.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- StackStorm tokens: the bridge's own ('bot') and, later, people's. Encrypted (crypto.rs).
CREATE TABLE st2_tokens (
    owner      TEXT PRIMARY KEY NOT NULL,
    sealed     TEXT NOT NULL,
    expires_at INTEGER              -- unix ms; NULL = does not expire (API key)
) WITHOUT ROWID;

-- Every execution the bridge started: where its result must go.
CREATE TABLE executions (
    execution_id TEXT PRIMARY KEY NOT NULL,
    room_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    thread_root  TEXT,
    sender       TEXT NOT NULL,
    alias_ref    TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    result_at    INTEGER             -- when its result was queued for the room
) WITHOUT ROWID;
CREATE INDEX executions_open ON executions (created_at) WHERE result_at IS NULL;
