//! `items-api migrate` and the serving role: the schema migrated by its owner, the service signing
//! in with the rights `migrate` grants and no more, a service waiting for a schema not migrated
//! yet, and the schema versions a build can or cannot serve.

use items_api::store::postgres::SCHEMA_VERSION;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of, run_binary};
use crate::postgres_support::{
    as_user, connect, database, eventually, execute, fresh_app_role_url, schema_of,
};

#[test]
fn migrate_brings_a_sqlite_file_up_to_date_and_refuses_an_app_role() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/app.db");
    let db = db.to_str().unwrap();
    let (code, stdout, stderr) = run_binary(&["migrate"], &[("DB_PATH", db)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("from schema version 0 to 2"), "{stdout}");
    let (code, stdout, _) = run_binary(&["migrate"], &[("DB_PATH", db)]);
    assert_eq!(code, 0);
    assert!(stdout.contains("already at schema version 2"), "{stdout}");
    let (code, _, stderr) = run_binary(&["migrate", "--app-role", "app"], &[("DB_PATH", db)]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("MIGRATE_APP_ROLE is for Postgres"),
        "{stderr}"
    );
}

#[test]
fn a_sqlite_service_told_not_to_migrate_refuses_a_file_that_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("DB_PATH", db.to_str().unwrap()),
            ("BIND_ADDR", "127.0.0.1:0"),
            ("MIGRATE_ON_START", "false"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("schema version 0, this build needs 2; run `items-api migrate` first"),
        "{stderr}"
    );
}

/// What `role` may not do, each refused for want of a privilege (SQLSTATE 42501).
async fn assert_refused(url: &str, statements: &[&str]) {
    let client = connect(url).await.unwrap();
    for statement in statements {
        let error = client
            .batch_execute(statement)
            .await
            .expect_err(&format!("the serving role could run {statement}"));
        assert_eq!(
            error.code().map(|code| code.code()),
            Some("42501"),
            "{statement}: {error}"
        );
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn migrate_creates_the_serving_role_and_grants_it_dml_on_items_only() {
    let Some(url) = database().await else { return };
    let role = format!("{}_app", schema_of(&url));
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("app-password");
    std::fs::write(&password_file, "app password\n").unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("MIGRATE_APP_ROLE", role.as_str()),
        (
            "MIGRATE_APP_ROLE_PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
    ];
    let (code, stdout, stderr) = run_binary(&["migrate"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "from schema version 0 to {SCHEMA_VERSION}; {role} may serve"
        )),
        "{stdout}"
    );
    let (code, stdout, stderr) = run_binary(&["migrate"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("already at schema version {SCHEMA_VERSION}")),
        "{stdout}"
    );

    // The trailing newline of the file is not part of the password.
    let served = as_user(&url, &role, "app password").unwrap();
    let client = connect(&served).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO items (text, created_at) VALUES ('x', 'now');
             UPDATE items SET text = 'y'; SELECT revision FROM items_revision; DELETE FROM items;",
        )
        .await
        .unwrap();
    assert_refused(
        &served,
        &[
            "UPDATE items_revision SET revision = 0",
            "DELETE FROM items_schema_migrations",
            "TRUNCATE items",
            "ALTER TABLE items ADD COLUMN extra integer",
            "DROP TABLE items",
            &format!("CREATE TABLE {}.other (id integer)", schema_of(&url)),
        ],
    )
    .await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn the_serving_role_can_write_only_because_the_bookkeeping_runs_as_its_owner() {
    let served = match fresh_app_role_url().await {
        Ok(url) => url,
        Err(reason) => return crate::postgres_support::unavailable(&reason),
    };
    let schema = schema_of(&served);
    let admin = crate::postgres_support::shared().unwrap().admin_url.clone();
    let app = TestApp::spawn_with(|config| {
        config.database_url = items_api::config::DatabaseUrl(served.clone());
    })
    .await;
    assert_eq!(
        app.post_json(&json!({"text": "allowed"})).await.status(),
        201
    );

    // Were the service to need more than it is granted, the contract tests would see this.
    let invoker = format!("ALTER FUNCTION {schema}.items_record_change() SECURITY INVOKER");
    execute(&admin, &invoker).await.unwrap();
    let refused = app.post_json(&json!({"text": "refused"})).await;
    assert_eq!(refused.status(), 500);
    let definer = format!("ALTER FUNCTION {schema}.items_record_change() SECURITY DEFINER");
    execute(&admin, &definer).await.unwrap();
    assert_eq!(
        app.post_json(&json!({"text": "allowed"})).await.status(),
        201
    );
    app.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_does_not_migrate_answers_503_until_the_schema_is_migrated() {
    let Some(url) = database().await else { return };
    let app = TestApp::spawn_with(|config| {
        config.database_url = items_api::config::DatabaseUrl(url.clone());
        config.migrate_on_start = Some(false);
    })
    .await;
    let health = app.get("/api/health").await;
    assert_eq!(health.status(), 503);
    let health = json_of(health).await;
    let reason = health["database"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("has no items schema yet") && reason.contains("run `items-api migrate`"),
        "{health}"
    );
    let refused = app.post_json(&json!({"text": "too early"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    let (code, _, stderr) = run_binary(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    let migrated = eventually(Duration::from_secs(15), async || {
        app.get("/api/health").await.status() == 200
    })
    .await;
    assert!(migrated, "the service did not notice the migrated schema");
    assert_eq!(
        app.post_json(&json!({"text": "in time"})).await.status(),
        201
    );
    app.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn an_entra_serving_role_is_created_through_azures_own_function() {
    let Some(url) = database().await else { return };
    let role = format!("{}_identity", schema_of(&url));
    // Azure Database for PostgreSQL's function, as far as `migrate` relies on it.
    execute(
        &url,
        "CREATE TABLE entra_calls (role text, object_id text, kind text, admin boolean, mfa boolean);
         CREATE FUNCTION pgaadauth_create_principal_with_oid(role text, object_id text, kind text,
                                                             admin boolean, mfa boolean)
         RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO entra_calls VALUES (role, object_id, kind, admin, mfa);
           EXECUTE format('CREATE ROLE %I LOGIN', role);
           RETURN 'Created role for ' || role;
         END $$;",
    )
    .await
    .unwrap();
    let object_id = "6f1c2d3e-0000-4000-8000-00000000abcd";
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("MIGRATE_APP_ROLE", role.as_str()),
        ("MIGRATE_APP_ROLE_ENTRA_OBJECT_ID", object_id),
    ];
    for _ in 0..2 {
        let (code, _, stderr) = run_binary(&["migrate"], &env);
        assert_eq!(code, 0, "{stderr}");
    }
    let client = connect(&url).await.unwrap();
    let calls = client
        .query(
            "SELECT role, object_id, kind, admin, mfa FROM entra_calls",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "created once, then found");
    let call = &calls[0];
    assert_eq!(call.get::<_, String>(0), role);
    assert_eq!(call.get::<_, String>(1), object_id);
    assert_eq!(call.get::<_, String>(2), "service");
    assert!(!call.get::<_, bool>(3) && !call.get::<_, bool>(4));
    let rights = client
        .query_one(
            "SELECT has_table_privilege($1, 'items', 'INSERT'),
                    has_table_privilege($1, 'items_revision', 'UPDATE')",
            &[&role],
        )
        .await
        .unwrap();
    assert!(rights.get::<_, bool>(0) && !rights.get::<_, bool>(1));
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn the_serving_role_must_be_a_role_of_its_own() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = runtime.block_on(database()) else {
        return;
    };
    let owner: String = url::Url::parse(&url).unwrap().username().to_owned();
    let (code, _, stderr) = run_binary(
        &["migrate", "--app-role", &owner],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("would not be least privilege"), "{stderr}");
    let (code, _, stderr) = run_binary(
        &["migrate", "--app-role", "no_such_role_anywhere"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_newer_schema_is_served_only_when_marked_compatible_with_this_build() {
    let Some(url) = database().await else { return };
    let (code, _, stderr) = run_binary(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    // An additive migration of a later release: builds from this schema on still serve.
    let (next, after) = (SCHEMA_VERSION + 1, SCHEMA_VERSION + 2);
    execute(
        &url,
        &format!(
            "INSERT INTO items_schema_migrations (version, compatible_from) \
             VALUES ({next}, {SCHEMA_VERSION})"
        ),
    )
    .await
    .unwrap();
    let app = TestApp::spawn_with(|config| {
        config.database_url = items_api::config::DatabaseUrl(url.clone());
    })
    .await;
    assert_eq!(app.get("/api/health").await.status(), 200);
    let created: Value = json_of(app.post_json(&json!({"text": "rolled back"})).await).await;
    assert_eq!(created["text"], "rolled back");
    app.stop().await;
    let (code, stdout, _) = run_binary(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("already at schema version {next}")),
        "{stdout}"
    );

    // One this build cannot serve.
    execute(
        &url,
        &format!(
            "INSERT INTO items_schema_migrations (version, compatible_from) \
             VALUES ({after}, {after})"
        ),
    )
    .await
    .unwrap();
    for args in [&[][..], &["migrate"]] {
        let (code, _, stderr) = run_binary(
            args,
            &[("DATABASE_URL", &url), ("BIND_ADDR", "127.0.0.1:0")],
        );
        assert_eq!(code, 1, "{args:?}");
        assert!(
            stderr.contains(&format!(
                "schema version {after}, newer than this build knows ({SCHEMA_VERSION}) and not \
                 compatible"
            )),
            "{args:?}: {stderr}"
        );
    }
}
