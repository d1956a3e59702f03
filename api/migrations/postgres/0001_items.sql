-- The items table, as on SQLite: ids never reused, created_at kept as the exact text written.
CREATE TABLE items (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  text TEXT NOT NULL,
  created_at TEXT NOT NULL
);
