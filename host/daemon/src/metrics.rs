//! A Prometheus endpoint (`GET /metrics`, text format 0.0.4) on a listener of its own, off
//! unless settings.json `metrics.listen` names one: audit events by kind since the start (logins
//! ok and failed, decisions, plugin refusals, ...), sessions running, the audit trail's head and
//! how far each audit stream's receiver lags behind it, plugin hook calls (by outcome, their
//! latency, those running now). Aggregates only: no user or target names, so it can be scraped
//! without credentials from where the listener is reachable.

use gatehouse_store::{SETTINGS, Store};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// settings.json `metrics`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `/metrics` is served (plain HTTP: keep it on loopback or a management network).
    pub listen: std::net::SocketAddr,
}

/// What the endpoint reports.
pub struct Metrics {
    store: Arc<Store>,
    live: gatehouse_ssh::LiveSessions,
    streams: Vec<String>,
    counts: Mutex<BTreeMap<String, u64>>,
    plugins: Option<gatehouse_plugin_host::PluginHost>,
}

impl Metrics {
    pub fn new(
        store: Arc<Store>,
        live: gatehouse_ssh::LiveSessions,
        streams: Vec<String>,
        plugins: Option<gatehouse_plugin_host::PluginHost>,
    ) -> Self {
        Self {
            store,
            live,
            streams,
            counts: Mutex::new(BTreeMap::new()),
            plugins,
        }
    }

    /// Counts the audit events appended from now on, until the task is dropped.
    pub async fn tail(self: Arc<Self>) {
        let mut after = self
            .store
            .list_audit(Some(1))
            .ok()
            .and_then(|l| l.last().map(|e| e.seq))
            .unwrap_or(0);
        loop {
            let batch = match self.store.audit_after(after, 1000) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: reading the audit trail");
                    Vec::new()
                }
            };
            let Some(last) = batch.last().map(|e| e.seq) else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            after = last;
            if let Ok(mut counts) = self.counts.lock() {
                for event in &batch {
                    let kind = serde_json::to_value(&event.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    *counts.entry(kind).or_default() += 1;
                }
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP gatehouse_audit_events_total Audit events since this process started, by kind.\n\
             # TYPE gatehouse_audit_events_total counter\n",
        );
        if let Ok(counts) = self.counts.lock() {
            for (kind, count) in counts.iter() {
                out.push_str(&format!(
                    "gatehouse_audit_events_total{{kind=\"{kind}\"}} {count}\n"
                ));
            }
        }
        out.push_str(&format!(
            "# HELP gatehouse_sessions_running Sessions (SSH and RDP) running in this process.\n\
             # TYPE gatehouse_sessions_running gauge\n\
             gatehouse_sessions_running {}\n",
            self.live.ids().len()
        ));
        let head = self
            .store
            .list_audit(Some(1))
            .ok()
            .and_then(|l| l.last().map(|e| e.seq))
            .unwrap_or(0);
        out.push_str(&format!(
            "# HELP gatehouse_audit_head The sequence number of the last audit event.\n\
             # TYPE gatehouse_audit_head gauge\n\
             gatehouse_audit_head {head}\n"
        ));
        out.push_str(
            "# HELP gatehouse_audit_stream_lag_events Audit events a stream's receiver has not confirmed.\n\
             # TYPE gatehouse_audit_stream_lag_events gauge\n",
        );
        for name in &self.streams {
            let position = self
                .store
                .get(&SETTINGS, &format!("audit_stream:{name}"))
                .ok()
                .flatten()
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let name: String = name
                .chars()
                .filter(|c| !matches!(c, '"' | '\\' | '\n'))
                .collect();
            out.push_str(&format!(
                "gatehouse_audit_stream_lag_events{{stream=\"{name}\"}} {}\n",
                head.saturating_sub(position)
            ));
        }
        if let Some(plugins) = &self.plugins {
            render_plugin_calls(&mut out, &plugins.call_stats());
        }
        out
    }
}

/// A label value as the text format wants it.
fn label(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\n'))
        .collect()
}

/// Plugin hook calls: by outcome, their latency as a histogram, and those running now.
fn render_plugin_calls(out: &mut String, stats: &gatehouse_plugin_host::stats::CallStats) {
    use gatehouse_plugin_host::stats::LATENCY_BUCKETS;
    out.push_str(
        "# HELP gatehouse_plugin_calls_total Plugin hook calls since this process started, by outcome.\n\
         # TYPE gatehouse_plugin_calls_total counter\n",
    );
    for hook in &stats.hooks {
        let (plugin, name) = (label(&hook.plugin), label(&hook.hook));
        for (outcome, count) in [
            ("ok", hook.ok),
            ("failed", hook.failed),
            ("timeout", hook.timed_out),
        ] {
            out.push_str(&format!(
                "gatehouse_plugin_calls_total{{plugin=\"{plugin}\",hook=\"{name}\",outcome=\"{outcome}\"}} {count}\n"
            ));
        }
    }
    out.push_str(
        "# HELP gatehouse_plugin_call_seconds How long plugin hook calls took.\n\
         # TYPE gatehouse_plugin_call_seconds histogram\n",
    );
    for hook in &stats.hooks {
        let labels = format!(
            "plugin=\"{}\",hook=\"{}\"",
            label(&hook.plugin),
            label(&hook.hook)
        );
        for (bound, count) in LATENCY_BUCKETS.iter().zip(hook.buckets) {
            out.push_str(&format!(
                "gatehouse_plugin_call_seconds_bucket{{{labels},le=\"{bound}\"}} {count}\n"
            ));
        }
        out.push_str(&format!(
            "gatehouse_plugin_call_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
             gatehouse_plugin_call_seconds_sum{{{labels}}} {}\n\
             gatehouse_plugin_call_seconds_count{{{labels}}} {}\n",
            hook.calls(),
            hook.seconds_sum,
            hook.calls()
        ));
    }
    out.push_str(&format!(
        "# HELP gatehouse_plugin_calls_in_flight Plugin hook calls running now.\n\
         # TYPE gatehouse_plugin_calls_in_flight gauge\n\
         gatehouse_plugin_calls_in_flight {}\n",
        stats.in_flight
    ));
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, body) = if request.uri().path() == "/metrics"
                            && request.method() == hyper::Method::GET
                        {
                            (StatusCode::OK, metrics.render())
                        } else {
                            (
                                StatusCode::NOT_FOUND,
                                "not found: GET /metrics\n".to_string(),
                            )
                        };
                        Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let io = hyper_util::rt::TokioIo::new(socket);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), served).await {
                tracing::debug!(error = %e, "metrics: a scrape took too long");
            }
        });
    }
}
