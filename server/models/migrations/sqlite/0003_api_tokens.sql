-- expand: it only adds a table; code from before it runs unchanged on the schema it leaves.
-- API tokens. Only the SHA-256 of a token is kept (hex); the token itself is shown once, when it
-- is made. Times are ISO 8601 UTC text written by the application, as in users; a token is
-- active while revoked_at is NULL and expires_at (NULL: never) is in the future.
-- AUTOINCREMENT: a revoked token's id is never handed out again (jobs remember their owner's id).
-- The PostgreSQL copy (../postgresql/) has the same columns.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    expires_at TEXT,
    revoked_at TEXT
);
