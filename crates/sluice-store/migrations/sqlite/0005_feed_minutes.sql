-- Exact per-feed traffic (issue #5, the IDE's Observe panel). Keep in step with
-- ../postgres/0005_feed_minutes.sql.
--
-- Invocation records are sampled (a busy feed keeps ~20 quiet calls a second), so the
-- numbers come from here instead: every gateway counts every call it serves in memory and
-- writes, per revision and clock minute, the counts so far. Each server process writes
-- only its own rows (`replica`, random per process) and always the whole count for the
-- minute, never an increment: a flush that is retried after its commit was lost writes
-- the same numbers again instead of adding them twice. Readers add the replicas up.
--
-- `revision_id` is the revision the gateway resolved the call to; `feed_id` is the same
-- revision's feed, kept here so a feed's minutes are read through one index. Both cascade,
-- so deleting a feed deletes its minutes, and a new feed of the same name (new ids) never
-- sees them. Rows older than the longest window the API serves (a day) are pruned.
--
-- `latency_counts` is a JSON array of call counts per latency bucket, with the bucket
-- bounds fixed in the code (`sluice_store::LATENCY_BOUNDS_MS`); `latency_max_ms` is the
-- slowest call, which bounds the open last bucket.

CREATE TABLE feed_minutes (
    feed_id        INTEGER NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
    revision_id    INTEGER NOT NULL REFERENCES revisions (id) ON DELETE CASCADE,
    replica        TEXT NOT NULL,
    -- Epoch milliseconds of the minute's start.
    minute         BIGINT NOT NULL,
    requests       BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    client_errors  BIGINT NOT NULL,
    latency_counts TEXT NOT NULL,
    latency_max_ms REAL NOT NULL,
    PRIMARY KEY (revision_id, replica, minute)
);
CREATE INDEX feed_minutes_feed ON feed_minutes (feed_id, minute);
CREATE INDEX feed_minutes_minute ON feed_minutes (minute);
