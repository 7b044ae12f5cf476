-- Sluice metadata, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql: the two
-- files describe the same tables, only the types differ.
--
-- Timestamps are epoch milliseconds (BIGINT): they compare and sort the same way on both
-- backends and need no time-zone parsing. Identity columns never reuse the id of
-- a deleted row, which matters for invocation paging by `after_id`.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row holding a value sealed with the master key, so a wrong key is refused at open
-- instead of failing later on the first data-source read.
CREATE TABLE master_key_check (
    id    SMALLINT PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    workspace_id BIGINT REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    CHECK ((role = 'admin') = (workspace_id IS NULL))
);
-- Only live keys must have distinct prefixes: a revoked key's prefix may come back (an
-- admin key set again through SLUICE_ADMIN_KEY has a prefix derived from its hash).
CREATE UNIQUE INDEX api_keys_live_prefix ON api_keys (prefix) WHERE revoked_at IS NULL;

CREATE TABLE sources (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    -- "v1:<nonce>:<ciphertext>", never the clear JSON.
    config     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE source_grants (
    source_id    BIGINT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    PRIMARY KEY (source_id, workspace_id)
);

CREATE TABLE feeds (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- The per-feed number of the live revision. Not a foreign key: revisions already
    -- reference feeds, and the store sets this only to a number it has just checked.
    live_revision BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE revisions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feed_id    BIGINT NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    number     BIGINT NOT NULL,
    filename   TEXT NOT NULL,
    code       TEXT NOT NULL,
    lockfile   TEXT NOT NULL,
    env_hash   TEXT NOT NULL,
    signature  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (feed_id, number)
);

CREATE TABLE invocations (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feed_id     BIGINT NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    status      BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    row_count   BIGINT NOT NULL,
    error_code  TEXT,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    params      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX invocations_feed ON invocations (feed_id, id);
