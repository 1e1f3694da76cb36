//! `--http ADDR`: what the stream is doing, served by the binary itself.
//!
//! ```text
//!  GET /          live dashboard (one self-contained page, no CDN): input vs process
//!                 rate, batch duration by phase, watermark lag, state size, memory,
//!                 rows per partition and per state shard, and the plan as stages around the exchange
//!  GET /metrics   Prometheus text (prometheus-client): counters, gauges, a histogram,
//!                 and per source table (label `table`) records read and lag
//!  GET /progress  the last progress records (JSON array, newest last)
//!  GET /plan      the plan text (`sluice explain`)
//! ```
//!
//! With a token (`--http-token` / `SLUICE_HTTP_TOKEN`) every route answers 401 unless
//! the request carries it (`Authorization: Bearer TOKEN` or `?token=TOKEN`); an
//! address beyond loopback refuses to start without one, since the plan and figures
//! describe the user's data.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::BatchProgress;
use crate::error::{Error, Result};

/// Progress records kept for /progress and the dashboard.
pub const KEEP: usize = 300;

/// The metrics and recent progress a running query publishes.
pub struct Published {
    registry: Registry,
    input_rows: Counter,
    output_rows: Counter,
    malformed_rows: Counter,
    late_rows: Counter,
    batches: Counter,
    state_groups: Gauge,
    lag: Gauge,
    rss: Gauge,
    batch_seconds: Histogram,
    phase_seconds: Family<Vec<(&'static str, &'static str)>, Counter<f64>>,
    /// Per source table (label `table`): records read, and the lag after the batch.
    table_rows: Family<Vec<(&'static str, String)>, Counter>,
    table_lag: Family<Vec<(&'static str, String)>, Gauge>,
    /// Per stateful operator (label `operator`: its position and kind): rows in and
    /// out, and the rows and bytes its state holds.
    operator_rows: Family<Vec<(&'static str, String)>, Counter>,
    operator_state: Family<Vec<(&'static str, String)>, Gauge>,
    progress: Mutex<VecDeque<String>>,
    plan: String,
}

impl Published {
    /// Metrics registered, no batch yet; `plan` is shown on the dashboard.
    pub fn new(plan: String) -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let input_rows = Counter::default();
        let output_rows = Counter::default();
        let malformed_rows = Counter::default();
        let late_rows = Counter::default();
        let batches = Counter::default();
        let state_groups = Gauge::default();
        let lag = Gauge::default();
        let rss = Gauge::default();
        let batch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let phase_seconds = Family::<Vec<(&'static str, &'static str)>, Counter<f64>>::default();
        let table_rows = Family::<Vec<(&'static str, String)>, Counter>::default();
        let table_lag = Family::<Vec<(&'static str, String)>, Gauge>::default();
        let operator_rows = Family::<Vec<(&'static str, String)>, Counter>::default();
        let operator_state = Family::<Vec<(&'static str, String)>, Gauge>::default();
        registry.register(
            "operator_rows",
            "Rows each stateful operator took in (direction=\"in\") and emitted (\"out\")",
            operator_rows.clone(),
        );
        registry.register(
            "operator_state",
            "Rows (what=\"rows\") and bytes (\"bytes\") each stateful operator's state holds",
            operator_state.clone(),
        );
        registry.register(
            "table_input_rows",
            "Records read from each source table",
            table_rows.clone(),
        );
        registry.register(
            "table_lag_records",
            "Records available in each source table but not read",
            table_lag.clone(),
        );
        registry.register(
            "input_rows",
            "Records read from the source",
            input_rows.clone(),
        );
        registry.register(
            "output_rows",
            "Rows handed to the sink",
            output_rows.clone(),
        );
        registry.register(
            "malformed_rows",
            "Records that did not decode",
            malformed_rows.clone(),
        );
        registry.register(
            "late_rows",
            "Rows dropped behind the watermark",
            late_rows.clone(),
        );
        registry.register("batches", "Micro-batches completed", batches.clone());
        registry.register("state_groups", "Groups held in state", state_groups.clone());
        registry.register(
            "lag_records",
            "Records available in the source but not read",
            lag.clone(),
        );
        registry.register(
            "memory_rss_bytes",
            "Resident memory of the process",
            rss.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Micro-batch duration",
            batch_seconds.clone(),
        );
        registry.register(
            "phase_seconds",
            "Time spent per batch phase (source-thread phases read and decode overlap the others)",
            phase_seconds.clone(),
        );
        Self {
            registry,
            input_rows,
            output_rows,
            malformed_rows,
            late_rows,
            batches,
            state_groups,
            lag,
            rss,
            batch_seconds,
            phase_seconds,
            table_rows,
            table_lag,
            operator_rows,
            operator_state,
            progress: Mutex::new(VecDeque::new()),
            plan,
        }
    }

    /// Publishes one batch: its figures and its JSON progress record.
    pub fn record(&self, p: &BatchProgress, json: String) {
        self.input_rows.inc_by(p.input_rows);
        self.output_rows.inc_by(p.output_rows);
        self.malformed_rows.inc_by(p.malformed_rows);
        self.late_rows.inc_by(p.late_rows);
        self.batches.inc();
        self.state_groups.set(p.state_groups as i64);
        self.lag.set(p.lag as i64);
        self.rss.set(super::rss_bytes().unwrap_or(0) as i64);
        self.batch_seconds.observe(p.duration.as_secs_f64());
        for (phase, d) in p.phases.iter().chain(&p.source_phases) {
            self.phase_seconds
                .get_or_create(&vec![("phase", *phase)])
                .inc_by(d.as_secs_f64());
        }
        for t in &p.sources {
            let label = vec![("table", t.table.clone())];
            self.table_rows.get_or_create(&label).inc_by(t.input_rows);
            self.table_lag.get_or_create(&label).set(t.lag as i64);
        }
        for (i, o) in p.operators.iter().enumerate() {
            let op = format!("{i}:{}", o.operator);
            let label =
                |k: &'static str, v: &str| vec![("operator", op.clone()), (k, v.to_string())];
            self.operator_rows
                .get_or_create(&label("direction", "in"))
                .inc_by(o.rows_in);
            self.operator_rows
                .get_or_create(&label("direction", "out"))
                .inc_by(o.rows_out);
            self.operator_state
                .get_or_create(&label("what", "rows"))
                .set(o.state_rows as i64);
            self.operator_state
                .get_or_create(&label("what", "bytes"))
                .set(o.state_bytes as i64);
        }
        if let Ok(mut q) = self.progress.lock() {
            q.push_back(json);
            while q.len() > KEEP {
                q.pop_front();
            }
        }
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn progress_json(&self) -> String {
        let q = self
            .progress
            .lock()
            .map(|q| q.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        format!("[{}]", q.join(","))
    }
}

/// Parses `--http`: `PORT` means 127.0.0.1:PORT (loopback unless an address says otherwise).
pub fn address(spec: &str) -> Result<std::net::SocketAddr> {
    let full = if spec.contains(':') {
        spec.to_string()
    } else {
        format!("127.0.0.1:{spec}")
    };
    full.parse().map_err(|_| {
        Error::option(
            "--http",
            format!("'{spec}' is not PORT or HOST:PORT (e.g. 8080 or 0.0.0.0:8080)"),
        )
    })
}

/// Binds `addr` and serves in the background, every route behind `token` when there
/// is one; returns the bound address. Refuses an address beyond loopback without one.
pub async fn serve(
    addr: std::net::SocketAddr,
    published: Arc<Published>,
    token: Option<&str>,
) -> Result<std::net::SocketAddr> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Error::option(
            "--http",
            format!(
                "{addr} can be reached from other machines, so it needs a token: set \
                 SLUICE_HTTP_TOKEN (or --http-token) and send it as `Authorization: Bearer TOKEN` \
                 (the dashboard: /?token=TOKEN), or listen on loopback (--http 127.0.0.1:PORT)"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io("cannot listen on", addr.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot listen on", addr.to_string(), e))?;
    let p = (
        Arc::clone(&published),
        Arc::clone(&published),
        Arc::clone(&published),
    );
    let app = Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    p.0.metrics_text(),
                )
                    .into_response()
            }),
        )
        .route(
            "/progress",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    p.1.progress_json(),
                )
                    .into_response()
            }),
        )
        .route("/plan", get(move || async move { p.2.plan.clone() }));
    let app = match token {
        None => app,
        Some(t) => {
            let token: Arc<str> = Arc::from(t);
            app.layer(axum::middleware::from_fn(
                move |req: Request, next: Next| {
                    let token = Arc::clone(&token);
                    async move { guard(&token, req, next).await }
                },
            ))
        }
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

/// Passes `req` on when it carries `token`, else answers 401.
async fn guard(token: &str, req: Request, next: Next) -> Response {
    let from_query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes()).find_map(|(k, v)| (k == "token").then_some(v))
    });
    let given = bearer(req.headers())
        .map(std::borrow::Cow::Borrowed)
        .or(from_query);
    match given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        true => next.run(req).await,
        false => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this Sluice endpoint needs its token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN\n",
        )
            .into_response(),
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Byte equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The dashboard page: plain HTML, SVG and a little JavaScript, polling /progress.
pub const DASHBOARD: &str = include_str!("dashboard.html");
