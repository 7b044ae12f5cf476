-- Drafts (issue #5): the web IDE saves a feed module as its author types, on the server,
-- so work survives a closed tab or another computer. Keep in step with
-- ../postgres/0004_drafts.sql.
--
-- A draft belongs to one author (the prefix of the key that wrote it: keys are the users
-- until OIDC) in one workspace, under a feed name; it is never served. Deleting the
-- workspace deletes its drafts; deploying leaves them to the IDE, which drops the draft
-- it just published.

CREATE TABLE drafts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    filename     TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, owner, name)
);
