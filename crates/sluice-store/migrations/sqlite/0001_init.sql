-- Sluice metadata, SQLite flavour. Keep in step with ../postgres/0001_init.sql: the two
-- files describe the same tables, only the types differ.
--
-- Timestamps are epoch milliseconds (INTEGER): they compare and sort the same way on both
-- backends and need no time-zone parsing. AUTOINCREMENT stops SQLite from reusing the id of
-- a deleted row, which matters for invocation paging by `after_id`.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row holding a value sealed with the master key, so a wrong key is refused at open
-- instead of failing later on the first data-source read.
CREATE TABLE master_key_check (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    workspace_id INTEGER REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    CHECK ((role = 'admin') = (workspace_id IS NULL))
);
-- Only live keys must have distinct prefixes: a revoked key's prefix may come back (an
-- admin key set again through SLUICE_ADMIN_KEY has a prefix derived from its hash).
CREATE UNIQUE INDEX api_keys_live_prefix ON api_keys (prefix) WHERE revoked_at IS NULL;

CREATE TABLE sources (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    -- "v1:<nonce>:<ciphertext>", never the clear JSON.
    config     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE source_grants (
    source_id    INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    PRIMARY KEY (source_id, workspace_id)
);

CREATE TABLE feeds (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- The per-feed number of the live revision. Not a foreign key: revisions already
    -- reference feeds, and the store sets this only to a number it has just checked.
    live_revision INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE revisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    feed_id    INTEGER NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    filename   TEXT NOT NULL,
    code       TEXT NOT NULL,
    lockfile   TEXT NOT NULL,
    env_hash   TEXT NOT NULL,
    signature  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (feed_id, number)
);

CREATE TABLE invocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    feed_id     INTEGER NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    revision    INTEGER NOT NULL,
    request_id  TEXT NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    row_count   INTEGER NOT NULL,
    error_code  TEXT,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    params      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX invocations_feed ON invocations (feed_id, id);
