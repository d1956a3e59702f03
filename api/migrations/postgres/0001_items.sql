-- The items table, as on SQLite: ids never reused, created_at kept as the exact text written.
CREATE TABLE items (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  text TEXT NOT NULL,
  created_at TEXT NOT NULL
);

-- A number that changes in the same transaction as any change to the items, whoever makes it
-- (this service, `transfer`, or SQL by hand). A process may reuse what it read while the number
-- is unchanged; once a write has committed, every reader sees the new number.
CREATE TABLE items_revision (
  only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
  revision BIGINT NOT NULL
);
INSERT INTO items_revision (revision) VALUES (0);

-- search_path as at creation: the trigger finds its table whatever the writer's search_path.
CREATE FUNCTION items_bump_revision() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
  UPDATE items_revision SET revision = revision + 1;
  RETURN NULL;
END
$$;

CREATE TRIGGER items_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON items
  FOR EACH STATEMENT EXECUTE FUNCTION items_bump_revision();
