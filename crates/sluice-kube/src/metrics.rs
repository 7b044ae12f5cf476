//! Operator metrics (Prometheus text format at `/metrics`): reconciles by kind and result,
//! failures by error category, reconcile duration.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 12))) as fn() -> Histogram,
        );
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles by kind and error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            duration.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct Timer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn timer(&self, kind: &str) -> Timer {
        Timer {
            start: Instant::now(),
            histogram: self
                .duration
                .get_or_create(&vec![("kind".into(), kind.into())])
                .clone(),
        }
    }

    /// Count a finished reconcile; `error` is the error's category, if it failed.
    pub fn record(&self, kind: &str, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        if let Some(category) = error {
            self.failures
                .get_or_create(&vec![
                    ("kind".into(), kind.into()),
                    ("category".into(), category.into()),
                ])
                .inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_and_categories() {
        let m = Metrics::default();
        m.record("feed", None);
        m.record("feed", Some("api"));
        drop(m.timer("feed"));
        let text = m.render();
        assert!(
            text.contains(r#"sluice_operator_reconciles_total{kind="feed",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"sluice_operator_reconcile_failures_total{kind="feed",category="api"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_operator_reconcile_duration_seconds_count{kind="feed"} 1"#),
            "{text}"
        );
    }
}
