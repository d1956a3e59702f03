-- Traces across replicas: a write made while its request is traced sets `items.traces` for its
-- transaction (the W3C traceparents of the requests it serves, comma-separated), and the
-- announcement carries them, so the replicas that pass the change on link it to those traces.
-- The ids come first: when the traces would not fit in a notification they are left out, and the
-- announcement is what it was before. Builds that do not know the field ignore it.
CREATE OR REPLACE FUNCTION items_record_change() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  changed_ids BIGINT[];
  count_change BIGINT;
  new_revision BIGINT;
  new_count BIGINT;
  feed_id BIGINT;
  payload TEXT;
  traced TEXT := nullif(current_setting('items.traces', true), '');
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
    IF traced IS NOT NULL AND octet_length(payload) + octet_length(traced) < 7880 THEN
      payload := json_build_object('revision', new_revision, 'total', new_count,
                                   'change', lower(TG_OP), 'ids', changed_ids,
                                   'traces', traced)::TEXT;
    END IF;
  END IF;
  IF payload IS NULL OR octet_length(payload) > 7900 THEN
    payload := json_build_object('revision', new_revision, 'total', new_count,
                                 'change', 'reset')::TEXT;
  END IF;
  PERFORM pg_notify('items_changes_' || feed_id, payload);
  RETURN NULL;
END
$$;
