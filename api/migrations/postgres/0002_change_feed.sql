-- The change feed and the item count. Each statement that changes items bumps the revision once,
-- keeps the count exact, and announces what it changed on a notification channel, so every
-- process (one per replica) can tell its clients. A statement that changes no row changes nothing
-- here. The announcement goes out at commit, in commit order; the revision row is locked by the
-- bump until then, so revisions arrive one by one, with no gaps. The channel is
-- `items_changes_<feed>`: a schema of its own for each, as several apps (or tests) may share one
-- database, and notifications belong to the database.
--
-- The payload is JSON: {"revision": N, "total": N, "change": "insert"|"update"|"delete", "ids": [...]}.
-- When the ids would not fit in a notification (at most 8000 bytes), or after a TRUNCATE, the
-- change is "reset" and has no ids: listeners read the list again.
ALTER TABLE items_revision
  ADD COLUMN item_count BIGINT,
  -- Names these items in event ids, so a position from another database is never taken for one here.
  ADD COLUMN feed BIGINT NOT NULL DEFAULT (floor(random() * 9007199254740991))::BIGINT;
UPDATE items_revision SET item_count = (SELECT count(*) FROM items);
ALTER TABLE items_revision ALTER COLUMN item_count SET NOT NULL;

DROP TRIGGER items_changed ON items;
DROP FUNCTION items_bump_revision();

CREATE FUNCTION items_record_change() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
  changed_ids BIGINT[];
  count_change BIGINT;
  new_revision BIGINT;
  new_count BIGINT;
  feed_id BIGINT;
  payload TEXT;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE items_revision SET revision = revision + 1, item_count = 0
      RETURNING revision, item_count, feed INTO new_revision, new_count, feed_id;
  ELSE
    SELECT array_agg(id ORDER BY id) INTO changed_ids FROM changed_rows;
    IF changed_ids IS NULL THEN
      RETURN NULL;
    END IF;
    count_change := CASE TG_OP
      WHEN 'INSERT' THEN cardinality(changed_ids)
      WHEN 'DELETE' THEN -cardinality(changed_ids)
      ELSE 0 END;
    UPDATE items_revision SET revision = revision + 1, item_count = item_count + count_change
      RETURNING revision, item_count, feed INTO new_revision, new_count, feed_id;
    payload := json_build_object('revision', new_revision, 'total', new_count,
                                 'change', lower(TG_OP), 'ids', changed_ids)::TEXT;
  END IF;
  IF payload IS NULL OR octet_length(payload) > 7900 THEN
    payload := json_build_object('revision', new_revision, 'total', new_count,
                                 'change', 'reset')::TEXT;
  END IF;
  PERFORM pg_notify('items_changes_' || feed_id, payload);
  RETURN NULL;
END
$$;

CREATE TRIGGER items_inserted AFTER INSERT ON items
  REFERENCING NEW TABLE AS changed_rows
  FOR EACH STATEMENT EXECUTE FUNCTION items_record_change();
CREATE TRIGGER items_updated AFTER UPDATE ON items
  REFERENCING NEW TABLE AS changed_rows
  FOR EACH STATEMENT EXECUTE FUNCTION items_record_change();
CREATE TRIGGER items_deleted AFTER DELETE ON items
  REFERENCING OLD TABLE AS changed_rows
  FOR EACH STATEMENT EXECUTE FUNCTION items_record_change();
CREATE TRIGGER items_truncated AFTER TRUNCATE ON items
  FOR EACH STATEMENT EXECUTE FUNCTION items_record_change();
