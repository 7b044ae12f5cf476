//! Metadata store on sqlx: SQLite (embedded) and PostgreSQL, with migrations for both.
