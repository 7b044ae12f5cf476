-- SCRAM-SHA-256 logins to the PostgreSQL endpoint (issue #3). Keep in step with
-- ../sqlite/0003_key_scram.sql.
--
-- A key's SCRAM verifier in PostgreSQL's form, SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
-- (RFC 5802/7677): enough to check a client's proof, not to log in. Keys made before this
-- migration have none (only their hash is known): they keep working with a clear-text
-- password, over TLS off the machine.

ALTER TABLE api_keys ADD COLUMN scram TEXT;
