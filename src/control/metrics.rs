//! Prometheus metrics (README "Metrics"): the `metrics` facade, exported by
//! metrics-exporter-prometheus's own HTTP listener, only when `[metrics] listen` is set.
//! Engine events count as they happen; the data plane's counters, which the workers
//! keep per worker (no shared cache line per packet), and the gauges are read once a
//! second. A Child SA's series disappear a little after the SA does.

use super::status::Registry;
use crate::ike::{DownReason, Endpoint, Event};
use crate::sink::SaSink;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Series not updated for this long are dropped: those of Child SAs that are gone
/// (everything else is updated every second).
const IDLE: Duration = Duration::from_secs(10);

/// The worker batch size histograms' buckets, in packets.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// What the exporter has been given so far of the counters it cannot watch itself.
pub struct Metrics {
    /// Batches per size already recorded, as [`SaSink::batch_sizes`] gives them.
    batches: [Vec<u64>; 3],
}

impl Metrics {
    /// Serves the metrics on `listen` from now on (on the daemon's runtime).
    pub fn start(listen: SocketAddr) -> Result<Self, String> {
        PrometheusBuilder::new()
            .with_http_listener(listen)
            .idle_timeout(MetricKindMask::COUNTER | MetricKindMask::GAUGE, Some(IDLE))
            .set_buckets_for_metric(Matcher::Prefix("esptun_worker_".into()), &BATCH_BUCKETS)
            .and_then(PrometheusBuilder::install)
            .map_err(|e| format!("metrics on {listen}: {e}"))?;
        describe();
        Ok(Self {
            batches: Default::default(),
        })
    }

    /// Counts what `event` says happened; `registry` must not have taken it in yet.
    pub fn on_event(&mut self, event: &Event, registry: &Registry) {
        match event {
            Event::IkeSaUp(_) => counter!("esptun_ike_handshakes_completed_total").increment(1),
            Event::IkeSaRekeyed { .. } => {
                counter!("esptun_rekeys_total", "sa" => "ike").increment(1)
            }
            Event::ChildSaUp(c) if c.rekeys.is_some() => {
                counter!("esptun_rekeys_total", "sa" => "child").increment(1);
            }
            Event::IkeSaDown { spi_i, reason, .. } if !registry.is_up(*spi_i) => {
                counter!("esptun_ike_handshakes_failed_total", "reason" => failure(reason))
                    .increment(1);
            }
            _ => {}
        }
    }

    /// Brings the gauges and the data plane's counters up to date.
    pub fn refresh(&mut self, endpoint: &Endpoint, dataplane: &dyn SaSink, registry: &Registry) {
        let stats = endpoint.stats();
        counter!("esptun_ike_handshakes_started_total").absolute(stats.handshakes_started);
        counter!("esptun_ike_retransmits_total").absolute(stats.retransmits);
        counter!("esptun_ike_malformed_total").absolute(endpoint.malformed());
        gauge!("esptun_ike_sas", "state" => "established").set(endpoint.established() as f64);
        gauge!("esptun_ike_sas", "state" => "half_open").set(endpoint.half_open() as f64);
        gauge!("esptun_child_sas_installed").set(dataplane.installed() as f64);
        let (online, offline) = endpoint.leases();
        gauge!("esptun_virtual_ips", "state" => "online").set(online as f64);
        gauge!("esptun_virtual_ips", "state" => "offline").set(offline as f64);
        let up: HashSet<(&str, &str)> = registry
            .child_sas()
            .map(|(_, conn, child)| (conn, child))
            .collect();
        for (_, policy) in endpoint.connections() {
            for child in &policy.children {
                let up = up.contains(&(policy.name.as_str(), child.name.as_str()));
                gauge!("esptun_children_down", "connection" => policy.name.clone(), "child" => child.name.clone())
                    .set(if up { 0.0 } else { 1.0 });
            }
        }
        for (spi_in, connection, child) in registry.child_sas() {
            let Some(((packets_in, bytes_in), (packets_out, bytes_out))) =
                dataplane.traffic(spi_in)
            else {
                continue;
            };
            let spi = format!("{spi_in:08x}");
            for (direction, packets, bytes) in [
                ("in", packets_in, bytes_in),
                ("out", packets_out, bytes_out),
            ] {
                let labels = [
                    ("connection", connection.to_string()),
                    ("child", child.to_string()),
                    ("spi_in", spi.clone()),
                    ("direction", direction.to_string()),
                ];
                counter!("esptun_child_sa_packets_total", &labels).absolute(packets);
                counter!("esptun_child_sa_bytes_total", &labels).absolute(bytes);
            }
        }
        for (reason, n) in dataplane.drops() {
            counter!("esptun_dropped_packets_total", "reason" => reason).absolute(n);
        }
        for (worker, (out, r#in)) in dataplane.worker_packets().into_iter().enumerate() {
            let worker = worker.to_string();
            for (direction, n) in [("outbound", out), ("inbound", r#in)] {
                counter!("esptun_worker_packets_total", "worker" => worker.clone(), "direction" => direction)
                    .absolute(n);
            }
        }
        let histograms = [
            histogram!("esptun_worker_batch_packets", "direction" => "outbound"),
            histogram!("esptun_worker_batch_packets", "direction" => "inbound"),
            histogram!("esptun_worker_gro_train_packets"),
        ];
        for ((batches, now), seen) in histograms
            .iter()
            .zip(dataplane.batch_sizes())
            .zip(&mut self.batches)
        {
            seen.resize(now.len(), 0);
            for (size, (&total, before)) in now.iter().zip(seen.iter_mut()).enumerate() {
                if total > *before {
                    batches.record_many(
                        size as f64,
                        usize::try_from(total - *before).unwrap_or(usize::MAX),
                    );
                    *before = total;
                }
            }
        }
    }
}

/// The `reason` label of a handshake that failed.
fn failure(reason: &DownReason) -> String {
    match reason {
        DownReason::PeerDead => "timeout".into(),
        DownReason::HalfOpenExpired => "half_open_expired".into(),
        DownReason::DeletedByPeer => "deleted_by_peer".into(),
        DownReason::DeletedLocally => "deleted".into(),
        DownReason::Replaced => "replaced".into(),
        DownReason::Failed(e) => e.notify().to_string(),
        DownReason::Refused(n) => format!("peer_{n}"),
    }
}

/// The HELP lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("esptun_ike_sas", "IKE SAs by state");
    describe_gauge!("esptun_child_sas_installed", "Child SAs in the data plane");
    describe_counter!(
        "esptun_worker_packets_total",
        "Packets each ESP worker read from the TUN (outbound) or received (inbound)"
    );
    describe_gauge!(
        "esptun_virtual_ips",
        "Virtual IP leases: online (an IKE SA holds it), offline (kept for its identity)"
    );
    describe_gauge!(
        "esptun_children_down",
        "1 while a configured child has no Child SA"
    );
    describe_counter!(
        "esptun_ike_handshakes_started_total",
        "IKE SAs begun, by us or a peer"
    );
    describe_counter!(
        "esptun_ike_handshakes_completed_total",
        "IKE SAs established"
    );
    describe_counter!(
        "esptun_ike_handshakes_failed_total",
        "IKE SAs that went before they were established, by reason"
    );
    describe_counter!("esptun_ike_retransmits_total", "IKE requests sent again");
    describe_counter!(
        "esptun_ike_malformed_total",
        "IKE datagrams that did not decode"
    );
    describe_counter!("esptun_rekeys_total", "IKE SA and Child SA rekeys");
    describe_counter!(
        "esptun_child_sa_packets_total",
        "Inner packets through a Child SA"
    );
    describe_counter!(
        "esptun_child_sa_bytes_total",
        Unit::Bytes,
        "Inner bytes through a Child SA"
    );
    describe_counter!(
        "esptun_dropped_packets_total",
        "Packets the data plane dropped, by reason"
    );
    describe_histogram!(
        "esptun_worker_batch_packets",
        "Packets an ESP worker moved per batch"
    );
    describe_histogram!(
        "esptun_worker_gro_train_packets",
        "Datagrams an ESP worker received per UDP GRO train"
    );
}
