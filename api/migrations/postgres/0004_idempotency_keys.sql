-- Idempotency-Key: what the first create with a key stored, so that a retry with the same key,
-- on any replica, gets that item instead of a second one. The item's fields are kept as answered
-- then, whatever happens to the item later; stored_at lets old keys be removed.
CREATE TABLE idempotency_keys (
  key TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  item_id BIGINT NOT NULL,
  item_text TEXT NOT NULL,
  item_created_at TEXT NOT NULL,
  stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_stored_at ON idempotency_keys (stored_at);
