//! `GET /metrics`: Prometheus text exposition, built at scrape time.
//!
//! Nothing is recorded through the `prometheus` crate on the query path:
//! sessions bump worker-local counters (see `stats`), and a scrape builds a
//! registry with one custom collector that sums them into metric families.
//! The prefix (`metrics.metric_prefix`) is the registry's namespace, so a
//! reload can change it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use tokio::net::TcpListener;

use crate::admin::show::{pool_name, role_name};
use crate::route::classify::CacheFigures;
use crate::runtime::Shared;
use crate::stats::BUCKETS_US;

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let app = Router::new().route("/metrics", get(metrics)).with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match render(&shared) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], e),
    }
}

/// The exposition text of everything the router measures.
pub fn render(shared: &Arc<Shared>) -> Result<String, String> {
    let prefix = shared.snapshot().config.router.metrics.metric_prefix.clone();
    let registry = prometheus::Registry::new_custom(Some(prefix), None).map_err(|e| e.to_string())?;
    registry.register(Box::new(RouterCollector { shared: shared.clone() })).map_err(|e| e.to_string())?;
    let mut text = String::new();
    prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Reads the pools of the current snapshot at collect time.
struct RouterCollector {
    shared: Arc<Shared>,
}

/// One metric family under construction.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::from_label(label_pairs(labels));
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.0.mut_metric().push(m);
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

impl Collector for RouterCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Label sets follow the configuration, so descriptors are not
        // fixed; the registry is built per scrape and checks nothing here.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use MetricType::{COUNTER, GAUGE};
        let shared = &self.shared;
        let snapshot = shared.snapshot();
        let clients = shared.client_list.counts();

        let mut active = Family::new("connections_active", "Server connections serving a client.", GAUGE);
        let mut idle = Family::new("connections_idle", "Idle server connections in the pool.", GAUGE);
        let mut size = Family::new("pool_size", "Most server connections the pool may open (max_pool_size).", GAUGE);
        let mut available = Family::new(
            "pool_available",
            "Server connections a client could get without waiting: idle ones plus room to open more.",
            GAUGE,
        );
        let mut paused = Family::new("pool_paused", "1 while the pool is paused by the admin console.", GAUGE);
        let mut banned = Family::new(
            "pool_banned",
            "1 while reads avoid this replica: it failed a health check or a checkout, or lags too much.",
            GAUGE,
        );
        let mut bans = Family::new("bans_total", "Times reads started avoiding this replica.", COUNTER);
        let mut writer = Family::new(
            "pool_primary",
            "1 while this pool's host takes the database's writes (the configured primary until a failover; the role label stays the configured one).",
            GAUGE,
        );
        let mut fenced = Family::new(
            "pool_fenced",
            "1 while this host accepts writes although another host is the primary: it gets no traffic.",
            GAUGE,
        );
        let mut replica_lag = Family::new(
            "replica_lag_seconds",
            "Replica lag the health monitor last measured (replicas with a measurement only).",
            GAUGE,
        );
        let mut connected = Family::new("clients_connected", "Clients logged in to the pool.", GAUGE);
        let mut waiting = Family::new("clients_waiting", "Clients waiting for a server connection.", GAUGE);
        let mut wait =
            Family::new("client_wait_seconds_total", "Time clients spent waiting for a server connection.", COUNTER);
        let mut checkouts = Family::new("checkouts_total", "Server connections handed to clients.", COUNTER);
        let mut queries = Family::new("queries_total", "Queries answered (ReadyForQuery sent to a client).", COUNTER);
        let mut xacts = Family::new("transactions_total", "Transactions completed.", COUNTER);
        let mut xact_time =
            Family::new("transaction_seconds_total", "Time spent inside transactions, summed.", COUNTER);
        let mut received = Family::new("bytes_received_total", "Bytes received from clients.", COUNTER);
        let mut sent = Family::new("bytes_sent_total", "Bytes sent to clients.", COUNTER);
        let mut errors = Family::new("errors_total", "Error replies to clients, by SQLSTATE class.", COUNTER);
        let mut opened = Family::new("server_connections_opened_total", "Server connections opened.", COUNTER);
        let mut closed = Family::new("server_connections_closed_total", "Server connections closed.", COUNTER);
        let mut connect_errors =
            Family::new("server_connect_errors_total", "Failed attempts to open a server connection.", COUNTER);
        let mut duration = Family::new(
            "query_duration_seconds",
            "Time from a request reaching the router to its ReadyForQuery.",
            MetricType::HISTOGRAM,
        );

        for (key, pool) in &snapshot.pools {
            let s = pool.stats();
            let pool_label = pool_name(&snapshot, &key.user, &key.database);
            let server = format!("{}:{}", key.host, key.port);
            let labels = [
                ("database", key.database.as_str()),
                ("user", key.user.as_str()),
                ("pool", pool_label.as_str()),
                ("role", role_name(pool.role)),
                ("server", server.as_str()),
            ];
            let max = pool.max_size() as f64;
            let open = pool.open_count() as f64;
            active.add(&labels, s.active as f64);
            idle.add(&labels, s.idle as f64);
            size.add(&labels, max);
            available.add(&labels, s.idle as f64 + (max - open).max(0.0));
            paused.add(&labels, if pool.is_paused() { 1.0 } else { 0.0 });
            banned.add(&labels, if pool.readable() { 0.0 } else { 1.0 });
            bans.add(&labels, pool.bans_total.load(Ordering::Relaxed) as f64);
            writer.add(&labels, if pool.is_writer() { 1.0 } else { 0.0 });
            fenced.add(&labels, if pool.is_fenced() { 1.0 } else { 0.0 });
            if let (false, Some(ms)) = (pool.is_writer(), pool.lag_ms()) {
                replica_lag.add(&labels, ms as f64 / 1e3);
            }
            connected.add(&labels, clients.get(key).copied().unwrap_or(0) as f64);
            waiting.add(&labels, s.waiting as f64);
            wait.add(&labels, s.wait_us as f64 / 1e6);
            checkouts.add(&labels, s.checkouts as f64);
            queries.add(&labels, s.queries as f64);
            xacts.add(&labels, s.transactions as f64);
            xact_time.add(&labels, s.transaction_us as f64 / 1e6);
            received.add(&labels, s.received as f64);
            sent.add(&labels, s.sent as f64);
            for (class, n) in &s.errors {
                let mut with_class = labels.to_vec();
                with_class.push(("class", class.as_str()));
                errors.add(&with_class, *n as f64);
            }
            opened.add(&labels, pool.opened_total.load(Ordering::Relaxed) as f64);
            closed.add(&labels, pool.closed_total.load(Ordering::Relaxed) as f64);
            connect_errors.add(&labels, pool.errors_total.load(Ordering::Relaxed) as f64);

            let mut h = Histogram::default();
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(BUCKETS_US.len());
            for (bound, n) in BUCKETS_US.iter().zip(s.buckets.iter()) {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
            h.set_bucket(buckets);
            h.set_sample_count(s.buckets.iter().sum());
            h.set_sample_sum(s.query_us as f64 / 1e6);
            let mut m = Metric::from_label(label_pairs(&labels));
            m.set_histogram(h);
            duration.0.mut_metric().push(m);
        }

        let mut failovers =
            Family::new("failovers_total", "Times a database's writes moved to a promoted host.", COUNTER);
        for ((database, shard), topology) in &snapshot.topologies {
            let shard = shard.to_string();
            failovers.add(
                &[("database", database.as_str()), ("shard", shard.as_str())],
                topology.failovers_total.load(Ordering::Relaxed) as f64,
            );
        }
        let mut reloads = Family::new("reloads_total", "Configuration reloads, by outcome.", COUNTER);
        reloads.add(&[("outcome", "success")], shared.reloads_ok.load(Ordering::Relaxed) as f64);
        reloads.add(&[("outcome", "failure")], shared.reloads_failed.load(Ordering::Relaxed) as f64);
        let mut clients_total =
            Family::new("client_connections", "Client connections open, logging in or logged in.", GAUGE);
        clients_total.add(&[], shared.clients.load(Ordering::Relaxed) as f64);
        let mut draining = Family::new("draining", "1 while the router drains for shutdown.", GAUGE);
        draining.add(&[], if shared.is_draining() { 1.0 } else { 0.0 });
        let mut info = Family::new("build_info", "Always 1; the router's version as a label.", GAUGE);
        info.add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);

        // The read/write classifier's caches, summed over workers.
        let mut cache = CacheFigures::default();
        for worker in &shared.query_caches {
            cache.merge(&worker.figures());
        }
        let mut cache_hits = Family::new(
            "query_cache_hits_total",
            "Read/write classifications answered from the cache of query shapes (no parse).",
            COUNTER,
        );
        cache_hits.add(&[], cache.hits as f64);
        let mut cache_misses = Family::new(
            "query_cache_misses_total",
            "Read/write classifications that parsed the query (shape not cached, or never cacheable).",
            COUNTER,
        );
        cache_misses.add(&[], cache.misses as f64);
        let mut cache_entries =
            Family::new("query_cache_entries", "Query shapes in the classifier caches, all workers.", GAUGE);
        cache_entries.add(&[], cache.entries as f64);
        let mut cache_capacity = Family::new(
            "query_cache_capacity",
            "Query shapes the classifier caches may hold: query_cache_size per worker that built one.",
            GAUGE,
        );
        cache_capacity.add(&[], cache.capacity as f64);

        [
            active,
            idle,
            size,
            available,
            paused,
            banned,
            bans,
            writer,
            fenced,
            failovers,
            replica_lag,
            connected,
            waiting,
            wait,
            checkouts,
            queries,
            xacts,
            xact_time,
            received,
            sent,
            errors,
            opened,
            closed,
            connect_errors,
            duration,
            reloads,
            clients_total,
            draining,
            info,
            cache_hits,
            cache_misses,
            cache_entries,
            cache_capacity,
        ]
        .into_iter()
        .map(|f| f.0)
        .collect()
    }
}
