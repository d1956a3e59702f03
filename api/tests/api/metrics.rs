//! `/metrics` on `METRICS_ADDR`: Prometheus' text format, the names operators' dashboards and
//! alerts use, never on the public port. The recorder is process-wide and other tests record
//! into it at the same time, so every count here is compared before and after, never absolute.

use std::collections::BTreeMap;

use crate::events::Events;
use crate::helpers::{Backend, TestApp};

/// One sample: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of one scrape, by metric name.
struct Scrape(BTreeMap<String, Vec<Sample>>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let addr = app.metrics_addr.expect("METRICS_ADDR was set");
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("/metrics answers");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Self::parse(&response.text().await.unwrap())
    }

    fn parse(text: &str) -> Self {
        let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=\"value\"");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            let value = value.parse().expect("a sample's value is a number");
            samples
                .entry(name.to_owned())
                .or_default()
                .push(Sample { labels, value });
        }
        Self(samples)
    }

    /// The value of `name` whose labels include every pair of `labels`, 0 when none is shown.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

async fn measured(backend: Backend) -> Option<TestApp> {
    TestApp::on_with(backend, |config| {
        config.metrics_addr = items_api::config::MaybeAddr(Some("127.0.0.1:0".parse().unwrap()));
        config.build_version = "metrics-test".into();
        config.database_pool_size = 3;
    })
    .await
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_never_on_the_public_one() {
    let app = measured(Backend::Sqlite).await.unwrap();
    assert_ne!(app.metrics_addr.unwrap().port(), app.addr.port());
    let scrape = Scrape::of(&app).await;
    for name in [
        "items_build_info",
        "items_database_reachable",
        "items_http_connections_refused_total",
        "items_event_streams_limit",
        "items_events_sent_total",
        "items_list_cache_requests_total",
        // Before the first write: a rate over a histogram needs it scraped before the writes.
        "items_sqlite_write_batch_size_count",
        "items_sqlite_commit_duration_seconds_count",
    ] {
        assert!(scrape.has(name), "{name} is shown");
    }
    let public = app.get("/metrics").await;
    assert_eq!(public.status(), 404);
    assert_eq!(public.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_class_never_by_path() {
    let app = measured(Backend::Sqlite).await.unwrap();
    let count = "http_server_request_duration_seconds_count";
    let missing = [
        ("http_request_method", "GET"),
        ("http_route", "/api/items/{id}"),
        ("status_class", "4xx"),
    ];
    let unmatched = [("http_route", "unmatched"), ("status_class", "4xx")];
    let before = Scrape::of(&app).await;
    for id in [987_654_321, 987_654_322, 987_654_323] {
        assert_eq!(app.get(&format!("/api/items/{id}")).await.status(), 404);
    }
    assert_eq!(app.get("/no-such-page-4711").await.status(), 404);
    let after = Scrape::of(&app).await;
    assert!(after.value(count, &missing) >= before.value(count, &missing) + 3.0);
    assert!(after.value(count, &unmatched) > before.value(count, &unmatched));
    let text = reqwest::get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for path in ["987654321", "4711"] {
        assert!(!text.contains(path), "no series is labelled with a path");
    }
}

#[tokio::test]
async fn the_database_the_writer_and_the_list_cache_report_on_sqlite() {
    let app = measured(Backend::Sqlite).await.unwrap();
    let batches = "items_sqlite_write_batch_size_count";
    let cache = "items_list_cache_requests_total";
    let before = Scrape::of(&app).await;
    app.add("counted").await;
    app.items().await;
    app.items().await;
    let after = Scrape::of(&app).await;
    assert!(after.value(batches, &[]) > before.value(batches, &[]));
    assert!(after.value(cache, &[("result", "hit")]) > before.value(cache, &[("result", "hit")]));
    assert_eq!(after.value("items_database_reachable", &[]), 1.0);
    assert_eq!(after.value("items_database_writable", &[]), 1.0);
    assert!(after.value("items_database_disk_free_bytes", &[]) > 0.0);
    let build = [("version", "metrics-test"), ("backend", "sqlite")];
    assert_eq!(after.value("items_build_info", &build), 1.0);
}

#[tokio::test]
async fn change_streams_and_their_events_are_counted() {
    let app = measured(Backend::Sqlite).await.unwrap();
    let sent = "items_events_sent_total";
    let before = Scrape::of(&app).await;
    let mut stream = Events::open(app.url("/api/items/events"), None).await;
    assert_eq!(stream.status, 200);
    stream.next().await;
    app.add("streamed").await;
    stream.next().await;
    let after = Scrape::of(&app).await;
    assert!(after.value("items_event_streams_open", &[]) >= 1.0);
    for event in ["ready", "created"] {
        let labels = [("event", event)];
        assert!(
            after.value(sent, &labels) > before.value(sent, &labels),
            "{event} counted"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
async fn the_pool_reports_its_connections_on_postgres() {
    let Some(app) = measured(Backend::Postgres).await else {
        return;
    };
    app.add("pooled").await;
    let scrape = Scrape::of(&app).await;
    assert_eq!(scrape.value("db_client_connection_max", &[]), 3.0);
    let open = scrape.value("db_client_connection_count", &[]);
    assert!((1.0..=3.0).contains(&open), "{open} connections open");
    assert_eq!(scrape.value("items_database_reachable", &[]), 1.0);
    let build = [("version", "metrics-test"), ("backend", "postgres")];
    assert_eq!(scrape.value("items_build_info", &build), 1.0);
}
