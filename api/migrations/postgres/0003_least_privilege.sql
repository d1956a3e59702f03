-- The service may sign in as a role that can only read and write the items (`items-api migrate
-- --app-role`). The change bookkeeping then runs with the rights of the function's owner (the
-- role that migrated), so the serving role needs no write access to items_revision. The
-- function's search_path is fixed (migration 0002), as a SECURITY DEFINER function's must be.
ALTER FUNCTION items_record_change() SECURITY DEFINER;
-- Trigger functions cannot be called directly; no one needs to try.
REVOKE EXECUTE ON FUNCTION items_record_change() FROM PUBLIC;
