//! The commands an operator runs beside the service: `migrate`, `backup`, `restore` and
//! `transfer`. Unlike serving, each is about one backend's files or roles by nature (a SQLite
//! backup is a file copy; a transfer goes from one named backend to another), so this module may
//! name the backends; the request-serving side (http/, startup) never does.

pub mod transfer;

use crate::store::{Location, StoreSettings, postgres, sqlite};

pub use crate::store::settings::{AppRole, RoleCreation};
pub use crate::store::sqlite::backup::CopyReport;

/// Schema versions before and after `items-api migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateReport {
    pub from: i64,
    pub to: i64,
}

/// `items-api migrate`: brings the schema of the database the settings name up to date and,
/// on Postgres, gives `app_role` the rights serving needs.
pub async fn migrate(
    settings: &StoreSettings,
    app_role: Option<&AppRole>,
) -> Result<MigrateReport, String> {
    match &settings.location {
        Location::Sqlite(path) => {
            if app_role.is_some() {
                return Err(
                    "MIGRATE_APP_ROLE is for Postgres: a SQLite file has no roles; unset it".into(),
                );
            }
            let (path, options) = (path.clone(), settings.sqlite.clone());
            let (from, to) =
                tokio::task::spawn_blocking(move || sqlite::migrate_file(&path, &options))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())?;
            Ok(MigrateReport {
                from: from as i64,
                to: to as i64,
            })
        }
        Location::Postgres(target) => {
            let migrated = postgres::migrate(target, app_role).await?;
            Ok(MigrateReport {
                from: migrated.from.into(),
                to: migrated.to.into(),
            })
        }
    }
}

/// `items-api backup FILE`: a consistent copy of the database as a new SQLite file, taken while
/// the service keeps running. From Postgres this is a `transfer` into that file.
pub async fn backup(location: &Location, file: &std::path::Path) -> Result<CopyReport, String> {
    let file = file.to_path_buf();
    let location = location.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || match &location {
        Location::Sqlite(path) => sqlite::backup::backup(path, &file),
        Location::Postgres(_) => sqlite::backup::write_new_file(&file, |partial| {
            let copy = Location::Sqlite(partial.to_path_buf());
            let copied = runtime.block_on(transfer::transfer(&location, &copy, |_| {}));
            // The transfer claimed the new file like a service would; the claim ends here.
            let _ = std::fs::remove_file(sqlite::owner_lock_path(partial));
            copied
                .map(drop)
                .map_err(|error| sqlite::backup::BackupError::Copy(error.0))
        }),
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| error.to_string())
}

/// `items-api restore FILE`: replaces a SQLite database with a backup. Postgres is loaded with
/// `transfer` instead, into an empty database.
pub async fn restore(location: &Location, file: &std::path::Path) -> Result<CopyReport, String> {
    match location {
        Location::Sqlite(path) => {
            let (path, file) = (path.clone(), file.to_path_buf());
            tokio::task::spawn_blocking(move || sqlite::backup::restore(&file, &path))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| error.to_string())
        }
        Location::Postgres(target) => Err(format!(
            "restore replaces a SQLite database file; to load {} into Postgres, run \
             `items-api transfer --from {} --to \"$DATABASE_URL\"` into an empty database \
             ({target})",
            file.display(),
            file.display()
        )),
    }
}
