-- st2-matrix schema, version 10: commands in doubt are resolved from StackStorm. Append-only.

-- What the bridge is about to send to StackStorm for a command (`POST /aliasexecution`),
-- written in the commit that marks its inbox row started, before the request leaves, and
-- deleted in the commit that finishes the row. A row found here after a crash is a command in
-- doubt: StackStorm may or may not have started it. These columns are what it takes to look it
-- up among StackStorm's executions (`GET /executions?action=…&user=…&timestamp_gt=…`, then an
-- exact match on the event id in the execution's notify `source_context`) and, if it ran, to
-- record it as a normal run would.
CREATE TABLE command_attempts (
    inbox_seq      INTEGER PRIMARY KEY NOT NULL, -- the inbox row (inbox.seq)
    room_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,                -- the command's event: source_context.event_id
    thread_root    TEXT,                         -- the command's thread, when it was in one
    sender         TEXT NOT NULL,                -- Matrix user id of the command's sender
    alias_ref      TEXT NOT NULL,                -- the alias it matched (pack.name)
    action_ref     TEXT NOT NULL,                -- the alias's action (the `action` filter)
    st2_user       TEXT,                         -- StackStorm user of the credential used, when known
    ack_enabled    INTEGER NOT NULL,             -- the alias's ack.enabled: acknowledge it if it ran
    ack_append_url INTEGER NOT NULL,             -- the alias's ack.append_url
    started_at     INTEGER NOT NULL,             -- unix ms, the bridge's clock
    -- Results delivered for the command (announcements carrying its source_context) while its
    -- executions were not recorded: recording them later marks this many as posted, so none is
    -- posted twice.
    results_posted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX command_attempts_event ON command_attempts (event_id);
