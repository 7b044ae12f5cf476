-- Secret feed links (issue #3): an unguessable URL that reads one feed, for BI tools that
-- cannot send an Authorization header. Keep in step with ../postgres/0002_feed_links.sql.
--
-- Like API keys, only the lookup prefix and the SHA-256 of the token are stored. Revoked
-- rows stay (revoked_at) so the gateway can tell a revoked link from an unknown one, and a
-- feed's links go with it when the feed is deleted.

CREATE TABLE feed_links (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    feed_id      INTEGER NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX feed_links_feed ON feed_links (feed_id);
