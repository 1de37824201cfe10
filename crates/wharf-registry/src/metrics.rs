//! Prometheus metrics for `http.debug.prometheus`, named as registry:2 names its own
//! (`registry_http_requests_total{handler,method,code}`, `registry_notifications_*`), so
//! dashboards built for Distribution keep working.
//!
//! `prometheus-client` is the Prometheus project's own Rust client: typed label sets, no
//! global registry (each server, and each test, has its own), and OpenMetrics text out.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    handler: &'static str,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerMethod {
    handler: &'static str,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handler {
    handler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    duration: HistogramFamily<HandlerMethod>,
    bytes_in: Family<Handler, Counter>,
    bytes_out: Family<Handler, Counter>,
    in_flight: Family<Handler, Gauge>,
    uploads_in_flight: Gauge,
    auth_failures: Family<Handler, Counter>,
    events: Family<Action, Counter>,
    pending: Family<EndpointLabel, Gauge>,
    delivered: Family<EndpointLabel, Counter>,
    failed: Family<EndpointLabel, Counter>,
    healthy: Gauge,
    /// Not a metric: how many upload requests are open, to keep the gauge exact.
    uploads: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// prometheus-client ends every registered help text with a period: the texts here have
// none, or the page would show `..`.
macro_rules! reg {
    ($r:expr, $name:literal, $help:literal, $m:expr) => {
        $r.register($name, $help, $m.clone())
    };
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("registry"),
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            in_flight: Family::default(),
            uploads_in_flight: Gauge::default(),
            auth_failures: Family::default(),
            events: Family::default(),
            pending: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            healthy: Gauge::default(),
            uploads: AtomicI64::new(0),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        reg!(
            r,
            "http_requests",
            "Requests answered, by handler, method and status code",
            self.requests
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer a request (to its response head), by handler and method",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "http_in",
            "Request body bytes read, by handler",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        r.register_with_unit(
            "http_out",
            "Response body bytes sent, by handler",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
        reg!(
            r,
            "http_in_flight_requests",
            "Requests being answered, by handler",
            self.in_flight
        );
        reg!(
            r,
            "http_uploads_in_flight",
            "Blob upload requests (POST, PATCH, PUT) receiving data now",
            self.uploads_in_flight
        );
        reg!(
            r,
            "auth_failures",
            "Requests refused for missing or insufficient credentials (401, 403, 429), by handler",
            self.auth_failures
        );
        reg!(
            r,
            "notifications_events",
            "Events recorded in the event log, by action",
            self.events
        );
        reg!(
            r,
            "notifications_pending",
            "Events not yet delivered to an endpoint",
            self.pending
        );
        reg!(
            r,
            "notifications_delivered",
            "Events an endpoint accepted",
            self.delivered
        );
        reg!(
            r,
            "notifications_failures",
            "Delivery attempts an endpoint did not accept (each retry counts)",
            self.failed
        );
        reg!(
            r,
            "storage_healthy",
            "1 while health.storagedriver passes, 0 when it fails",
            self.healthy
        );
        self.healthy.set(1);
        self
    }

    /// Expose figures that another part of the registry keeps (the pull-through cache's
    /// counters, the jobs' reports), read when scraped. The wiring registers them, so this
    /// module depends on none of them.
    pub fn add_collector<C>(&mut self, collector: std::sync::Arc<C>)
    where
        C: prometheus_client::collector::Collector,
    {
        self.registry
            .register_collector(Box::new(ArcCollector(collector)));
    }

    /// The OpenMetrics text a scrape gets.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A request begins: counts it in flight until the returned guard drops.
    pub fn begin(&self, handler: &'static str, upload: bool) -> InFlight<'_> {
        self.in_flight.get_or_create(&Handler { handler }).inc();
        if upload {
            let n = self.uploads.fetch_add(1, Ordering::Relaxed) + 1;
            self.uploads_in_flight.set(n);
        }
        InFlight {
            metrics: self,
            handler,
            upload,
        }
    }

    pub fn answered(&self, handler: &'static str, method: &str, code: u16, took: Duration) {
        let method = method.to_owned();
        self.requests
            .get_or_create(&Request {
                handler,
                method: method.clone(),
                code: code.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&HandlerMethod { handler, method })
            .observe(took.as_secs_f64());
    }

    pub fn bytes_in(&self, handler: &'static str, n: u64) {
        if n > 0 {
            self.bytes_in.get_or_create(&Handler { handler }).inc_by(n);
        }
    }

    /// The counter response bodies add to as they are sent.
    pub fn bytes_out_counter(&self, handler: &'static str) -> Counter {
        self.bytes_out.get_or_create(&Handler { handler }).clone()
    }

    pub fn auth_failed(&self, handler: &'static str) {
        self.auth_failures.get_or_create(&Handler { handler }).inc();
    }

    pub fn event_recorded(&self, action: &str) {
        self.events
            .get_or_create(&Action {
                action: action.to_owned(),
            })
            .inc();
    }

    pub fn notification_pending(&self, endpoint: &str, n: u64) {
        self.pending
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .set(n as i64);
    }

    pub fn notification_delivered(&self, endpoint: &str) {
        self.delivered
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }

    pub fn notification_failed(&self, endpoint: &str) {
        self.failed
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }
}

pub struct InFlight<'a> {
    metrics: &'a Metrics,
    handler: &'static str,
    upload: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics
            .in_flight
            .get_or_create(&Handler {
                handler: self.handler,
            })
            .dec();
        if self.upload {
            let n = self.metrics.uploads.fetch_sub(1, Ordering::Relaxed) - 1;
            self.metrics.uploads_in_flight.set(n);
        }
    }
}

/// A collector shared with the code that counts.
#[derive(Debug)]
struct ArcCollector<C>(std::sync::Arc<C>);

impl<C: prometheus_client::collector::Collector> prometheus_client::collector::Collector
    for ArcCollector<C>
{
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}
