-- st2-matrix schema, version 4: admin room, permissions, per-user StackStorm identity.
-- Append-only, like every migration.

-- Room permission rules set in the admin room (`rooms allow` / `rooms deny`).
CREATE TABLE room_rules (
    room_id TEXT NOT NULL,
    rule    TEXT NOT NULL,              -- user id, glob, *:server, server name, power>=N
    level   TEXT NOT NULL,              -- none | help | run | admin
    PRIMARY KEY (room_id, rule)
) WITHOUT ROWID;

-- One-time login links (`!st2 login`): only a hash of the link's token is stored.
CREATE TABLE login_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,           -- the direct chat to confirm in
    form_token TEXT NOT NULL,           -- the page's one-time form token
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;

-- People's linked StackStorm identities. Secrets are sealed (crypto.rs), never in clear.
CREATE TABLE user_credentials (
    user_id          TEXT PRIMARY KEY NOT NULL,
    st2_user         TEXT NOT NULL,
    kind             TEXT NOT NULL,     -- password | api_key
    sealed_secret    TEXT NOT NULL,     -- the password or API key
    sealed_token     TEXT,              -- current token (password kind)
    token_expires_at INTEGER,
    linked_at        INTEGER NOT NULL
) WITHOUT ROWID;
