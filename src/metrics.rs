//! Prometheus metrics, per topic and per error code, in the text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerOutcomeLabel {
    pub handler: String,
    pub outcome: String,
}

/// A topic's live numbers (see [`Metrics::topic_counts`]).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TopicCounts {
    pub published: u64,
    pub delivered: u64,
    pub subscribers: i64,
}

type HistogramFamily = Family<TopicLabel, Histogram, fn() -> Histogram>;
type HandlerHistogramFamily = Family<HandlerLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    published: Family<TopicLabel, Counter>,
    delivered: Family<TopicLabel, Counter>,
    publish_seconds: HistogramFamily,
    subscribers: Family<TopicLabel, Gauge>,
    errors: Family<ErrorLabel, Counter>,
    webhooks: Family<WebhookLabel, Counter>,
    /// The (source, outcome) pairs `webhooks` has counted: a family cannot
    /// list its labels, and the console shows every one.
    webhook_labels: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    handler_outcomes: Family<HandlerOutcomeLabel, Counter>,
    handler_breaker: Family<HandlerOutcomeLabel, Counter>,
    handler_call_seconds: HandlerHistogramFamily,
}

fn publish_histogram() -> Histogram {
    // 100 µs .. ~3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let published = Family::default();
        let delivered = Family::default();
        let publish_seconds = HistogramFamily::new_with_constructor(publish_histogram);
        let subscribers = Family::default();
        let errors = Family::default();
        let webhooks = Family::default();
        let handler_outcomes = Family::default();
        let handler_breaker = Family::default();
        let handler_call_seconds = HandlerHistogramFamily::new_with_constructor(publish_histogram);
        registry.register(
            "events_published",
            "Events durably appended",
            published.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to SSE subscribers",
            delivered.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time from a publish request's parsed body to its durable append",
            publish_seconds.clone(),
        );
        registry.register("sse_subscribers", "Open SSE streams", subscribers.clone());
        registry.register(
            "http_errors",
            "Error responses by error code",
            errors.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook deliveries per source: received, accepted, duplicate, or the rejection reason",
            webhooks.clone(),
        );
        registry.register(
            "handler_outcomes",
            "Handled events by outcome: succeeded (result published) or failed (dead-lettered)",
            handler_outcomes.clone(),
        );
        registry.register(
            "handler_breaker_transitions",
            "Circuit breaker changes of state, by the state entered",
            handler_breaker.clone(),
        );
        registry.register(
            "handler_call_duration_seconds",
            "Duration of handler action calls",
            handler_call_seconds.clone(),
        );

        Self {
            registry,
            published,
            delivered,
            publish_seconds,
            subscribers,
            errors,
            webhooks,
            webhook_labels: Default::default(),
            handler_outcomes,
            handler_breaker,
            handler_call_seconds,
        }
    }
}

fn topic(name: &str) -> TopicLabel {
    TopicLabel {
        topic: name.to_owned(),
    }
}

impl Metrics {
    pub fn published(&self, name: &str, events: u64, seconds: f64) {
        self.published.get_or_create(&topic(name)).inc_by(events);
        self.publish_seconds
            .get_or_create(&topic(name))
            .observe(seconds);
    }

    pub fn delivered(&self, name: &str, events: u64) {
        self.delivered.get_or_create(&topic(name)).inc_by(events);
    }

    pub fn subscriber_gauge(&self, name: &str) -> Gauge {
        self.subscribers.get_or_create(&topic(name)).clone()
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn webhook(&self, source: &str, outcome: &str) {
        let label = WebhookLabel {
            source: source.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.webhooks.get_or_create(&label).inc();
        self.webhook_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((label.source, label.outcome));
    }

    /// A topic's live numbers, for the console: events published and
    /// delivered to SSE subscribers since this process started, and the
    /// SSE streams open now.
    pub fn topic_counts(&self, name: &str) -> TopicCounts {
        let label = topic(name);
        TopicCounts {
            published: self.published.get(&label).map_or(0, |c| c.get()),
            delivered: self.delivered.get(&label).map_or(0, |c| c.get()),
            subscribers: self.subscribers.get(&label).map_or(0, |g| g.get()),
        }
    }

    /// Webhook deliveries counted per (source, outcome) since this process
    /// started.
    pub fn webhook_counts(&self) -> Vec<(String, String, u64)> {
        let labels = self
            .webhook_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        labels
            .into_iter()
            .map(|(source, outcome)| {
                let label = WebhookLabel {
                    source: source.clone(),
                    outcome: outcome.clone(),
                };
                let count = self.webhooks.get(&label).map_or(0, |c| c.get());
                (source, outcome, count)
            })
            .collect()
    }

    pub fn handler_outcome(&self, handler: &str, outcome: &str) {
        let label = HandlerOutcomeLabel {
            handler: handler.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.handler_outcomes.get_or_create(&label).inc();
    }

    pub fn handler_breaker(&self, handler: &str, state: &str) {
        let label = HandlerOutcomeLabel {
            handler: handler.to_owned(),
            outcome: state.to_owned(),
        };
        self.handler_breaker.get_or_create(&label).inc();
    }

    pub fn handler_call(&self, handler: &str, seconds: f64) {
        let label = HandlerLabel {
            handler: handler.to_owned(),
        };
        self.handler_call_seconds
            .get_or_create(&label)
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    /// The OpenMetrics text exposition (`application/openmetrics-text`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics (and `promtool check metrics`).
    pub fn render_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.render())
    }
}

/// OpenMetrics text → Prometheus text 0.0.4: a counter family's HELP and
/// TYPE name its `_total` samples, and there are no UNIT or EOF lines.
fn openmetrics_to_prometheus_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod exposition_tests {
    #[test]
    fn counters_are_named_by_their_samples_and_eof_goes() {
        let open = "# HELP x Events.\n# TYPE x counter\nx_total{t=\"a\"} 1\n# HELP h Time.\n# TYPE h histogram\n# UNIT h seconds\nh_sum 0.5\n# EOF\n";
        assert_eq!(
            super::openmetrics_to_prometheus_text(open),
            "# HELP x_total Events.\n# TYPE x_total counter\nx_total{t=\"a\"} 1\n# HELP h Time.\n# TYPE h histogram\nh_sum 0.5\n"
        );
    }
}
