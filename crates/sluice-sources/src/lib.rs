//! Data-source connectors: run SQL with bound parameters on SQLite and PostgreSQL and stream Arrow record batches.
