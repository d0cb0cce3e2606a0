-- st2-matrix schema, version 9: sends whose outcome is unknown. Append-only.

-- 1 while the homeserver may have a message that the outbox does not know it sent: set for a
-- room's queue before the sender works through it, cleared for the rows it did not get to
-- and for a clear failure, kept for a send that got no answer and for everything a crash
-- interrupted. Such a row is looked up among the bot's recent events in its room before it is
-- sent again (see the outbox's module doc).
ALTER TABLE outbox ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;
