-- The response cache's namespace generations: bumped in the transaction of every write that
-- invalidates a namespace; cached entries are keyed by it, so none from before a committed
-- write is read again by any process (server/cache/store.py). The SQLite copy: ../sqlite/.
CREATE TABLE cache_generations (
    namespace text COLLATE "C" PRIMARY KEY,
    generation bigint NOT NULL
);
