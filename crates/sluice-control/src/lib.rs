//! Control API /api/v1: workspaces, feeds, revisions, deploys, keys, data sources, logs.
