-- Secret feed links (issue #3): an unguessable URL that reads one feed, for BI tools that
-- cannot send an Authorization header. Keep in step with ../sqlite/0002_feed_links.sql.
--
-- Like API keys, only the lookup prefix and the SHA-256 of the token are stored. Revoked
-- rows stay (revoked_at) so the gateway can tell a revoked link from an unknown one, and a
-- feed's links go with it when the feed is deleted.

CREATE TABLE feed_links (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feed_id      BIGINT NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX feed_links_feed ON feed_links (feed_id);
