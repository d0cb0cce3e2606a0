-- st2-matrix schema, version 3: results back into rooms. Append-only, like every migration.

-- The direct chat the bot opened with each person, for whispered results.
CREATE TABLE dm_rooms (
    user_id    TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Executions are matched to announcements by the command's event id.
CREATE INDEX executions_event ON executions (event_id);
