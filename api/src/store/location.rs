//! Where the items live: a SQLite file or a Postgres server, named by a path or a URL.

use std::fmt;
use std::path::{Path, PathBuf};

use super::postgres::Target;
use super::settings::SignIn;

/// A database to serve from, or to move items from or to.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<Target>),
}

/// Why a database URL cannot be used. The message never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LocationError(pub String);

const SQLITE_SCHEME: &str = "sqlite:";

impl Location {
    /// The service's database: `DATABASE_URL` when set, else the SQLite file at `DB_PATH`.
    pub fn from_settings(
        url: &str,
        db_path: &Path,
        sign_in: &SignIn,
    ) -> Result<Self, LocationError> {
        if url.trim().is_empty() {
            return Ok(Self::Sqlite(db_path.to_path_buf()));
        }
        match scheme(url) {
            Some(_) => Self::parse(url, "DATABASE_URL", sign_in),
            None => Err(LocationError(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// \
                 (leave it empty to use DB_PATH)"
                    .into(),
            )),
        }
    }

    /// A Postgres URL, a `sqlite://PATH` URL, or a plain path of a SQLite file. `setting` names
    /// where the value came from, for messages.
    pub fn parse(value: &str, setting: &str, sign_in: &SignIn) -> Result<Self, LocationError> {
        match scheme(value) {
            Some("postgres" | "postgresql") => Target::parse(value, setting, sign_in)
                .map(|target| Self::Postgres(Box::new(target)))
                .map_err(LocationError),
            Some("sqlite") => {
                let path = value[SQLITE_SCHEME.len()..]
                    .strip_prefix("//")
                    .unwrap_or(&value[SQLITE_SCHEME.len()..]);
                if path.is_empty() {
                    return Err(LocationError(format!(
                        "{setting}: a sqlite:// URL needs a file path"
                    )));
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            Some(other) => Err(LocationError(format!(
                "{setting} has an unsupported scheme {other:?}: use postgres://, postgresql:// or \
                 sqlite://"
            ))),
            None if value.is_empty() => Err(LocationError(format!("{setting} is empty"))),
            None => Ok(Self::Sqlite(PathBuf::from(value))),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// The scheme of `value` when it looks like a URL (`name://` or `sqlite:`), lowercased.
fn scheme(value: &str) -> Option<&str> {
    let (name, rest) = value.split_once(':')?;
    let looks_like_scheme = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"+.-".contains(&byte));
    (looks_like_scheme && (rest.starts_with("//") || name.eq_ignore_ascii_case("sqlite")))
        .then_some(name)
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "postgres" => "postgres",
            "postgresql" => "postgresql",
            "sqlite" => "sqlite",
            _ => name,
        })
}

/// For logs and messages: the file, or the URL without its password.
impl fmt::Display for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(formatter, "{}", path.display()),
            Self::Postgres(target) => write!(formatter, "{target}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_url_means_the_sqlite_file_at_db_path() {
        let location =
            Location::from_settings("", Path::new("data/app.db"), &SignIn::default()).unwrap();
        assert!(matches!(location, Location::Sqlite(path) if path == Path::new("data/app.db")));
    }

    #[test]
    fn sqlite_urls_and_plain_paths_name_files() {
        for (value, path) in [
            ("sqlite:///var/data/app.db", "/var/data/app.db"),
            ("sqlite://data/app.db", "data/app.db"),
            ("sqlite:app.db", "app.db"),
            ("backups/old.db", "backups/old.db"),
            ("C.db", "C.db"),
        ] {
            let location = Location::parse(value, "--from", &SignIn::default()).unwrap();
            assert!(
                matches!(&location, Location::Sqlite(found) if found == Path::new(path)),
                "{value} -> {location:?}"
            );
        }
    }

    #[test]
    fn postgres_urls_are_postgres_targets() {
        for url in [
            "postgres://app@db:5432/items",
            "postgresql://app@db/items",
            "POSTGRES://app@db/items",
        ] {
            assert_eq!(
                Location::parse(url, "--from", &SignIn::default())
                    .unwrap()
                    .backend(),
                "postgres"
            );
        }
    }

    #[test]
    fn unknown_schemes_are_refused_by_name() {
        let error =
            Location::parse("mysql://root@db/items", "--from", &SignIn::default()).unwrap_err();
        assert!(error.0.contains("\"mysql\""), "{error}");
        let error = Location::from_settings("db.example:5432", Path::new("x"), &SignIn::default())
            .unwrap_err();
        assert!(error.0.contains("DATABASE_URL must start with"), "{error}");
    }
}
