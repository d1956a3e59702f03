-- Idempotency-Key: what the first create with a key stored, so that a retry with the same key
-- gets that item instead of a second one. The item's fields are kept as answered then, whatever
-- happens to the item later. stored_at (Unix seconds) lets old keys be removed.
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  item_id INTEGER NOT NULL,
  item_text TEXT NOT NULL,
  item_created_at TEXT NOT NULL,
  stored_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_stored_at ON idempotency_keys (stored_at);
