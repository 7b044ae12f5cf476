//! Prometheus metrics, per feed: requests by status, latency, rows served, errors by code,
//! requests by the revision that served them (a canary's calls apart from the live
//! revision's), and worker pool sizes read from the runtime at scrape time.

use crate::state::Gateway;
use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{collections::HashMap, sync::RwLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub workspace: String,
    pub feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub workspace: String,
    pub feed: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub workspace: String,
    pub feed: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub workspace: String,
    pub feed: String,
    pub revision: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub revision: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabels, Counter>,
    pub latency: Family<FeedLabels, Histogram>,
    pub rows: Family<FeedLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub cache_hits: Family<FeedLabels, Counter>,
    /// Requests by the revision that served them and status. Its series grow with the
    /// revisions served since the process started, like `workers`' do.
    pub served: Family<RevisionLabels, Counter>,
    pub records_dropped: Counter,
    workers: Family<PoolLabels, Gauge>,
    workers_busy: Family<PoolLabels, Gauge>,
    waiting: Family<PoolLabels, Gauge>,
    restarts: Family<PoolLabels, Gauge>,
    /// Per workspace and feed, the series a successful request touches, so the hot path
    /// finds them with two string lookups instead of building and hashing owned label
    /// sets in four families. The handles share their values with the families.
    hot: RwLock<HashMap<String, HashMap<String, Hot>>>,
    /// Per workspace, feed and revision, its series of `served` for status 200, found by
    /// string lookups as `hot` is.
    served_ok: RwLock<ByRevision>,
}

/// Workspace → feed → revision → counter.
type ByRevision = HashMap<String, HashMap<String, HashMap<String, Counter>>>;

/// The series of one feed that every successful request updates.
#[derive(Clone)]
struct Hot {
    ok: Counter,
    latency: Histogram,
    rows: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<StatusLabels, Counter>::default();
        let latency = Family::<FeedLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ])
        });
        let rows = Family::<FeedLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let cache_hits = Family::<FeedLabels, Counter>::default();
        let served = Family::<RevisionLabels, Counter>::default();
        let records_dropped = Counter::default();
        let workers = Family::<PoolLabels, Gauge>::default();
        let workers_busy = Family::<PoolLabels, Gauge>::default();
        let waiting = Family::<PoolLabels, Gauge>::default();
        let restarts = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "feed_requests",
            "Feed requests by HTTP status",
            requests.clone(),
        );
        registry.register(
            "feed_request_duration_seconds",
            "Feed request latency, first byte to last",
            latency.clone(),
        );
        registry.register("feed_rows", "Rows served", rows.clone());
        registry.register("feed_errors", "Feed errors by code", errors.clone());
        registry.register(
            "feed_cache_hits",
            "Requests answered from the result cache",
            cache_hits.clone(),
        );
        registry.register(
            "feed_revision_requests",
            "Feed requests by the revision that served them and HTTP status",
            served.clone(),
        );
        registry.register(
            "invocation_records_dropped",
            "Invocation log records dropped because the store could not keep up",
            records_dropped.clone(),
        );
        registry.register(
            "workers",
            "Python worker processes per live revision",
            workers.clone(),
        );
        registry.register(
            "workers_busy",
            "Workers serving a call",
            workers_busy.clone(),
        );
        registry.register(
            "workers_waiting_calls",
            "Calls waiting for a worker",
            waiting.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers replaced after a crash or timeout",
            restarts.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            rows,
            errors,
            cache_hits,
            served,
            records_dropped,
            workers,
            workers_busy,
            waiting,
            restarts,
            hot: RwLock::default(),
            served_ok: RwLock::default(),
        }
    }
}

impl Metrics {
    pub fn feed(ws: &str, feed: &str) -> FeedLabels {
        FeedLabels {
            workspace: ws.to_string(),
            feed: feed.to_string(),
        }
    }

    /// Take a feed's hot series from the families and keep them for the next request.
    fn hot_series(&self, ws: &str, feed: &str) -> Hot {
        let labels = Self::feed(ws, feed);
        let h = Hot {
            ok: self
                .requests
                .get_or_create(&StatusLabels {
                    workspace: ws.into(),
                    feed: feed.into(),
                    status: 200,
                })
                .clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            rows: self.rows.get_or_create(&labels).clone(),
        };
        self.hot
            .write()
            .expect("metrics lock")
            .entry(labels.workspace)
            .or_default()
            .insert(labels.feed, h.clone());
        h
    }

    /// A request a revision served (or failed in): [`Metrics::record`], and the count by
    /// revision.
    #[allow(clippy::too_many_arguments)]
    pub fn record_served(
        &self,
        ws: &str,
        feed: &str,
        revision: &str,
        status: u16,
        seconds: f64,
        rows: u64,
        error: Option<&str>,
    ) {
        self.record(ws, feed, status, seconds, rows, error);
        let labels = || RevisionLabels {
            workspace: ws.into(),
            feed: feed.into(),
            revision: revision.into(),
            status,
        };
        if status != 200 {
            self.served.get_or_create(&labels()).inc();
            return;
        }
        let found = self
            .served_ok
            .read()
            .expect("metrics lock")
            .get(ws)
            .and_then(|m| m.get(feed))
            .and_then(|m| m.get(revision))
            .cloned();
        let c = found.unwrap_or_else(|| {
            let c = self.served.get_or_create(&labels()).clone();
            self.served_ok
                .write()
                .expect("metrics lock")
                .entry(ws.to_string())
                .or_default()
                .entry(feed.to_string())
                .or_default()
                .insert(revision.to_string(), c.clone());
            c
        });
        c.inc();
    }

    /// A request that ended before a revision was chosen (a bad parameter, an unknown feed),
    /// or one a revision served (see [`Metrics::record_served`]).
    pub fn record(
        &self,
        ws: &str,
        feed: &str,
        status: u16,
        seconds: f64,
        rows: u64,
        error: Option<&str>,
    ) {
        if status == 200 && error.is_none() {
            let found = self
                .hot
                .read()
                .expect("metrics lock")
                .get(ws)
                .and_then(|m| m.get(feed))
                .cloned();
            let h = found.unwrap_or_else(|| self.hot_series(ws, feed));
            h.ok.inc();
            h.latency.observe(seconds);
            if rows > 0 {
                h.rows.inc_by(rows);
            }
            return;
        }
        self.requests
            .get_or_create(&StatusLabels {
                workspace: ws.into(),
                feed: feed.into(),
                status,
            })
            .inc();
        let labels = Self::feed(ws, feed);
        self.latency.get_or_create(&labels).observe(seconds);
        if rows > 0 {
            self.rows.get_or_create(&labels).inc_by(rows);
        }
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    workspace: ws.into(),
                    feed: feed.into(),
                    code: code.into(),
                })
                .inc();
        }
    }
}

pub async fn scrape(State(gw): State<Gateway>) -> Response {
    let m = &gw.inner.metrics;
    m.workers.clear();
    m.workers_busy.clear();
    m.waiting.clear();
    m.restarts.clear();
    for s in gw.inner.runtime.stats() {
        let l = PoolLabels {
            revision: s.revision_id.to_string(),
        };
        m.workers.get_or_create(&l).set(s.workers as i64);
        m.workers_busy.get_or_create(&l).set(s.busy as i64);
        m.waiting.get_or_create(&l).set(s.waiting as i64);
        m.restarts.get_or_create(&l).set(s.restarts as i64);
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &m.registry) {
        return crate::ApiError::from(sluice_core::Error::internal(e)).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
