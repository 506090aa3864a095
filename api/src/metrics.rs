//! Prometheus metrics of the HTTP layer: request counts and latency per route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("hoody_http_requests_total", "HTTP requests answered, by method, route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("hoody_http_request_duration_seconds", "HTTP request latency, by method and route")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method", "route"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        registry.register(Box::new(latency.clone())).expect("unique metric");
        HttpMetrics { registry, requests, latency }
    }

    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `route` label of a request no route matched, whatever its path.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The `method` label of a request whose method is not one of HTTP's own.
pub const OTHER_METHOD: &str = "other";

/// A method's label: HTTP's nine methods by name, any other (a client may send
/// any token) as [`OTHER_METHOD`], so clients cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER_METHOD,
    }
}

/// Middleware: counts and times every request under its route template (never the
/// concrete path, which would leak ids and explode cardinality); every path no
/// route matched is [`UNMATCHED_ROUTE`], every unknown method [`OTHER_METHOD`].
pub async fn track(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics.requests.with_label_values(&[method, &route, &status]).inc();
    metrics.latency.with_label_values(&[method, &route]).observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// The label values of the request counter's series.
    fn labels(metrics: &HttpMetrics) -> Vec<(String, String, String)> {
        let families = metrics.registry.gather();
        let requests = families.iter().find(|f| f.get_name() == "hoody_http_requests_total").expect("request counter");
        requests
            .get_metric()
            .iter()
            .map(|m| {
                let value = |name: &str| m.get_label().iter().find(|l| l.get_name() == name).map(|l| l.get_value().to_string()).unwrap_or_default();
                (value("method"), value("route"), value("status"))
            })
            .collect()
    }

    #[tokio::test]
    async fn random_methods_and_paths_fold_into_bounded_labels() {
        let metrics = HttpMetrics::new();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/api/v1/containers/{id}", get(|| async { "one" }).delete(|| async { "gone" }))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), track));
        // A small LCG: the paths and methods differ on every request.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for i in 0..300 {
            let r = next();
            let method = match i % 4 {
                0 => format!("X{r:x}"),
                1 => "GET".to_string(),
                2 => "DELETE".to_string(),
                _ => format!("PROPFIND{}", r % 1000),
            };
            let path = match r % 3 {
                0 => format!("/api/v1/containers/{r:x}"),
                1 => format!("/random/{r:x}/{i}"),
                _ => format!("/api/v1/{r:x}"),
            };
            let req = axum::http::Request::builder().method(method.as_str()).uri(&path).body(Body::empty()).unwrap();
            let _ = app.clone().oneshot(req).await.unwrap();
        }
        let series = labels(&metrics);
        let methods: HashSet<&str> = series.iter().map(|(m, _, _)| m.as_str()).collect();
        let routes: HashSet<&str> = series.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(methods, HashSet::from(["GET", "DELETE", OTHER_METHOD]), "method labels");
        assert_eq!(routes, HashSet::from(["/api/v1/containers/{id}", UNMATCHED_ROUTE]), "route labels");
        assert!(series.len() <= 12, "{} series: {series:?}", series.len());
    }
}
