-- Feeds only the cluster has (runtime = kubernetes: Feeds applied as YAML by GitOps), kept
-- so their calls get an invocation log and traffic counts like any feed's. Keep in step
-- with the other backend's 0006_cluster_feeds.sql.
--
-- The gateway adds a row for such a feed the first time it serves it, with `origin`
-- 'cluster' and no live revision, and one revision per revision name the cluster serves
-- (`name`: the Feed's `spec.revision` or content hash), numbered like any revision, with
-- the signature its agent reported and no code (the code is in the image). Listings,
-- deploys' view of existing feeds, rollbacks and revision lookups by number see only
-- 'sluice' feeds; a deploy through the API of a feed of the same name takes the row over
-- (its log and counts stay, its numbering continues).
ALTER TABLE feeds ADD COLUMN origin TEXT NOT NULL DEFAULT 'sluice';
ALTER TABLE revisions ADD COLUMN name TEXT;
CREATE UNIQUE INDEX revisions_name ON revisions (feed_id, name);
