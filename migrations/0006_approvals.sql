-- st2-matrix schema, version 6: approvals (commands that wait for a second person). Append-only.

-- A command that needs approval before it runs. The command's event is kept (as the worker
-- handled it: decrypted in an encrypted room) so that, once approved, it is handed back to the
-- inbox as a row of kind `approved` and runs through the usual exactly-once path.
CREATE TABLE approvals (
    approval_id   TEXT PRIMARY KEY NOT NULL,  -- short, typeable: `!st2 approve <id>`
    room_id       TEXT NOT NULL,
    event_id      TEXT NOT NULL,              -- the command's event
    thread_root   TEXT,                       -- the command's thread, when it was in one
    requester     TEXT NOT NULL,              -- Matrix user id of the command's sender
    alias_ref     TEXT NOT NULL,              -- the alias it matched (pack.name)
    summary       TEXT NOT NULL,              -- what will run (Markdown: alias, parameters)
    command_event TEXT NOT NULL,              -- the command's event JSON
    approvers     TEXT NOT NULL,              -- the approver rules when it was asked (JSON array)
    required      INTEGER NOT NULL,           -- distinct approvals needed
    prompt_txn    TEXT NOT NULL,              -- send transaction id of the request message
    state         TEXT NOT NULL,              -- pending | approved | rejected | expired
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    decided_at    INTEGER,
    decided_by    TEXT,                       -- who rejected, or the approvers (comma-separated)
    reason        TEXT,                       -- a rejection's reason
    UNIQUE (room_id, event_id)                -- one request per command, however often handled
) WITHOUT ROWID;
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';

-- Who approved (distinct people; the requester is never recorded here).
CREATE TABLE approval_votes (
    approval_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    voted_at    INTEGER NOT NULL,
    PRIMARY KEY (approval_id, user_id)
) WITHOUT ROWID;

-- People told why their answer did not count, so each is told once per approval.
CREATE TABLE approval_refusals (
    approval_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    PRIMARY KEY (approval_id, user_id)
) WITHOUT ROWID;

-- Approval rules a room has of its own (admin room: `rooms approvals`), tried before the
-- config's `[[approvals]]`.
CREATE TABLE room_approval_rules (
    rule_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    TEXT NOT NULL,
    aliases    TEXT NOT NULL,                 -- JSON array of alias globs
    approvers  TEXT NOT NULL,                 -- JSON array of rules
    required   INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL
);
CREATE INDEX room_approval_rules_room ON room_approval_rules (room_id);
