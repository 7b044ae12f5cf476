//! Feed gateway: auth, parameter checks, concurrency limits, encoding rows as JSON/CSV/NDJSON/Arrow.
