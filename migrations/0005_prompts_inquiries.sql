-- st2-matrix schema, version 5: messages people answer (inquiries, approvals). Append-only.

-- A queued event that relates to another queued event (a reaction to, an edit of, the end of
-- a poll the bot posted) names it by its send transaction id: the target's event id is only
-- known once it is sent, and the outbox fills it in just before sending this one.
ALTER TABLE outbox ADD COLUMN relates_to_txn TEXT;

-- Messages of the bot that people answer with a reaction, a poll vote or a reply: a question
-- of an inquiry, a request for approval. Keyed by the send transaction id of the message;
-- its event id is copied from the outbox when the message is sent (trigger below).
CREATE TABLE prompts (
    txn_id     TEXT PRIMARY KEY NOT NULL,
    event_id   TEXT,
    room_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,            -- inquiry | approval
    target_id  TEXT NOT NULL,            -- the inquiry id or the approval id
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX prompts_event ON prompts (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX prompts_target ON prompts (kind, target_id);

CREATE TRIGGER prompts_sent AFTER UPDATE OF event_id ON outbox
WHEN NEW.event_id IS NOT NULL
BEGIN
    UPDATE prompts SET event_id = NEW.event_id WHERE txn_id = NEW.txn_id;
END;

-- StackStorm inquiries the bridge has posted (or decided not to post): each is posted once,
-- across restarts, and closed once.
CREATE TABLE inquiries (
    inquiry_id  TEXT PRIMARY KEY NOT NULL,   -- StackStorm's id (= the core.ask execution's)
    room_id     TEXT,                        -- where the question was posted; NULL: nowhere
    thread_root TEXT,                        -- the thread it was posted in
    question    TEXT NOT NULL,               -- the inquiry as StackStorm listed it (JSON)
    prompt_txn  TEXT,                        -- the question's send transaction id
    state       TEXT NOT NULL,               -- open | answered | timed_out | elsewhere | unposted
    answered_by TEXT,                        -- Matrix user id
    answer      TEXT,                        -- the response sent (JSON)
    posted_at   INTEGER NOT NULL,
    closed_at   INTEGER
) WITHOUT ROWID;
CREATE INDEX inquiries_open ON inquiries (room_id) WHERE state = 'open';

-- People told once that they may not answer a prompt (their reaction is ignored after that).
CREATE TABLE prompt_refusals (
    kind      TEXT NOT NULL,
    target_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (kind, target_id, user_id)
) WITHOUT ROWID;
