//! A span for every call to the database, when traces are exported: the store wrapped in one more
//! store that opens an OpenTelemetry client span (`db.*` conventions) around each call and
//! passes it on. Only installed with tracing on, so the store is called directly otherwise.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument;

use super::{
    DatabaseStatus, IdempotencyKey, Item, ItemStore, ItemText, Location, Once, Page, Revision,
    StoreError,
};
use crate::feed::ChangeFeed;
use crate::traces;

const ITEMS: &str = "items";

/// `store`, with a span around each call naming the database at `location`.
pub fn traced(store: Arc<dyn ItemStore>, location: &Location) -> Arc<dyn ItemStore> {
    let peer = match location {
        Location::Sqlite(path) => Peer {
            system: "sqlite",
            namespace: path.display().to_string(),
            server: None,
            revision_is_read: false,
        },
        Location::Postgres(target) => {
            let (namespace, server) = target.database_and_server();
            Peer {
                system: "postgresql",
                namespace,
                server,
                revision_is_read: true,
            }
        }
    };
    Arc::new(Traced { store, peer })
}

/// What every span says about the database.
struct Peer {
    system: &'static str,
    namespace: String,
    server: Option<(String, u16)>,
    /// Whether the revision is a query (Postgres) rather than a number held in memory (SQLite).
    revision_is_read: bool,
}

struct Traced {
    store: Arc<dyn ItemStore>,
    peer: Peer,
}

impl Traced {
    /// Runs `call` inside a client span named by `operation` on `table`, marked as an error when
    /// it fails.
    async fn span<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (address, port) = match &self.peer.server {
            // Signed: the OpenTelemetry layer exports unsigned numbers as text.
            Some((address, port)) => (Some(address.as_str()), Some(i64::from(*port))),
            None => (None, None),
        };
        let span = tracing::info_span!(
            target: traces::TARGET,
            "database",
            otel.name = format!("{operation} {table}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.peer.system,
            db.namespace = self.peer.namespace.as_str(),
            db.operation.name = operation,
            db.collection.name = table,
            server.address = address,
            server.port = port,
            error.type = tracing::field::Empty,
        );
        let result = call.instrument(span.clone()).await;
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error_type(error));
        }
        result
    }
}

fn error_type(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::OutcomeUnknown { .. } => "outcome_unknown",
        StoreError::OutOfSpace(_) => "out_of_space",
        StoreError::Failed(_) => "failed",
    }
}

#[async_trait]
impl ItemStore for Traced {
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError> {
        self.span("SELECT", ITEMS, self.store.list(page)).await
    }

    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError> {
        self.span("SELECT", ITEMS, self.store.get(id)).await
    }

    async fn create(&self, text: ItemText) -> Result<Item, StoreError> {
        self.span("INSERT", ITEMS, self.store.create(text)).await
    }

    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError> {
        self.span("INSERT", ITEMS, self.store.create_once(text, key))
            .await
    }

    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError> {
        self.span("UPDATE", ITEMS, self.store.update(id, text))
            .await
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        self.span("DELETE", ITEMS, self.store.delete(id)).await
    }

    async fn status(&self) -> DatabaseStatus {
        self.store.status().await
    }

    async fn revision(&self) -> Result<Option<Revision>, StoreError> {
        if self.peer.revision_is_read {
            self.span("SELECT", "items_revision", self.store.revision())
                .await
        } else {
            self.store.revision().await
        }
    }

    fn changes(&self) -> &ChangeFeed {
        self.store.changes()
    }

    fn is_alive(&self) -> bool {
        self.store.is_alive()
    }

    async fn close(&self) {
        self.store.close().await;
    }
}
