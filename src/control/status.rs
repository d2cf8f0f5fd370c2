//! What `esptun status` shows: the IKE SAs that are up and their Child SAs, kept
//! from the engine's events, with each Child SA's traffic read from the data plane
//! when asked. The JSON it answers with is the interface (`esptun status --json`);
//! the text form is made from it by the client, so the two never disagree.

use crate::ike::{ChildSaUp, Event, IkeSaUp};
use crate::sink::SaSink;
use crate::wire::IkeSpi;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// An IKE SA that is up.
struct IkeEntry {
    facts: Value,
    since: Duration,
}

/// A Child SA that is up.
struct ChildEntry {
    spi_i: IkeSpi,
    facts: Value,
    since: Duration,
    /// Its hard time limit, from when it was made.
    life: Option<Duration>,
    /// When the engine rekeys it, from when it was made.
    rekey: Option<Duration>,
}

/// The SAs that are up, by IKE SA initiator SPI and by Child SA inbound SPI.
#[derive(Default)]
pub struct Registry {
    ike: BTreeMap<u64, IkeEntry>,
    children: BTreeMap<u32, ChildEntry>,
}

impl Registry {
    /// Takes in an engine event at `now` (the daemon's monotonic clock).
    pub fn on_event(&mut self, event: &Event, now: Duration) {
        match event {
            Event::IkeSaUp(up) => self.ike_up(up, now),
            Event::IkeSaRekeyed { old, up } => {
                self.ike_up(up, now);
                for child in self.children.values_mut() {
                    if child.spi_i == *old {
                        child.spi_i = up.spi_i;
                    }
                }
            }
            Event::IkeSaDown { spi_i, .. } => {
                self.ike.remove(&spi_i.0);
                self.children.retain(|_, c| c.spi_i != *spi_i);
            }
            Event::ChildSaUp(c) => self.child_up(c, now),
            Event::ChildSaOutbound { spi_in, .. } => {
                if let Some(c) = self.children.get_mut(spi_in) {
                    c.facts["outbound"] = json!(true);
                }
            }
            Event::ChildSaDown { spi_in, .. } => {
                self.children.remove(spi_in);
            }
            _ => {}
        }
    }

    fn ike_up(&mut self, up: &IkeSaUp, now: Duration) {
        let facts = json!({
            "connection": up.connection,
            "state": "ESTABLISHED",
            "spi_i": format!("{:016x}", up.spi_i.0),
            "spi_r": format!("{:016x}", up.spi_r.0),
            "initiator": up.initiator,
            "local": up.local.to_string(),
            "local_id": up.local_id.to_string(),
            "remote": up.remote.to_string(),
            "remote_id": up.remote_id.to_string(),
            "algorithms": up.suite.to_string(),
            "behind_nat": up.behind_nat,
            "virtual_ips": up.virtual_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "dns": up.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        self.ike.insert(up.spi_i.0, IkeEntry { facts, since: now });
    }

    fn child_up(&mut self, c: &ChildSaUp, now: Duration) {
        let facts = json!({
            "name": c.child,
            "state": "INSTALLED",
            "spi_in": format!("{:08x}", c.spi_in),
            "spi_out": format!("{:08x}", c.spi_out),
            "algorithms": super::log::esp_algorithms(c),
            "mode": if c.transport { "transport" } else { "tunnel" },
            "per_resource": c.per_resource,
            "spread": crate::ike::is_spread(c.spi_in),
            "encap": c.encap,
            "outbound": c.outbound,
            "local_ts": c.local_ts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "remote_ts": c.remote_ts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        let entry = ChildEntry {
            spi_i: c.spi_i,
            facts,
            since: now,
            life: c.lifetime.hard.time,
            rekey: c.rekey_after,
        };
        self.children.insert(c.spi_in, entry);
    }

    /// The connection of the IKE SA with initiator SPI `spi_i`, if it is up.
    pub fn connection_of(&self, spi_i: IkeSpi) -> Option<&str> {
        self.ike.get(&spi_i.0)?.facts["connection"].as_str()
    }

    /// Whether the IKE SA with initiator SPI `spi_i` is up.
    pub fn is_up(&self, spi_i: IkeSpi) -> bool {
        self.ike.contains_key(&spi_i.0)
    }

    /// Each Child SA that is up: its inbound SPI, connection and child name.
    pub fn child_sas(&self) -> impl Iterator<Item = (u32, &str, &str)> {
        self.children.iter().map(|(&spi_in, c)| {
            let connection = self
                .ike
                .get(&c.spi_i.0)
                .and_then(|ike| ike.facts["connection"].as_str())
                .unwrap_or_default();
            (
                spi_in,
                connection,
                c.facts["name"].as_str().unwrap_or_default(),
            )
        })
    }

    /// How many IKE SAs of connection `name` are up.
    pub fn ike_sas_of(&self, name: &str) -> usize {
        self.ike
            .values()
            .filter(|e| e.facts["connection"] == name)
            .count()
    }

    /// Every IKE SA with its Child SAs, their ages, the time each Child SA has left
    /// and its traffic.
    pub fn status(&self, now: Duration, dataplane: &dyn SaSink) -> Value {
        // Sorted out once: a walk over every Child SA per IKE SA took seconds at 50 000.
        let mut children: HashMap<u64, Vec<Value>> = HashMap::new();
        for (&spi_in, c) in &self.children {
            let mut facts = c.facts.clone();
            let age = now.saturating_sub(c.since);
            facts["installed_secs"] = json!(age.as_secs());
            facts["rekey_secs"] = json!(c.rekey.map(|r| r.saturating_sub(age).as_secs()));
            facts["expires_secs"] = json!(c.life.map(|l| l.saturating_sub(age).as_secs()));
            let ((packets_in, bytes_in), (packets_out, bytes_out)) =
                dataplane.traffic(spi_in).unwrap_or_default();
            facts["packets_in"] = json!(packets_in);
            facts["bytes_in"] = json!(bytes_in);
            facts["packets_out"] = json!(packets_out);
            facts["bytes_out"] = json!(bytes_out);
            children.entry(c.spi_i.0).or_default().push(facts);
        }
        let ike_sas: Vec<Value> = self
            .ike
            .iter()
            .map(|(spi_i, ike)| {
                let mut facts = ike.facts.clone();
                facts["established_secs"] = json!(now.saturating_sub(ike.since).as_secs());
                facts["child_sas"] = json!(children.remove(spi_i).unwrap_or_default());
                facts
            })
            .collect();
        let workers: Vec<Value> = dataplane
            .worker_packets()
            .into_iter()
            .map(|(out, r#in)| json!({ "packets_out": out, "packets_in": r#in }))
            .collect();
        json!({ "ike_sas": ike_sas, "workers": workers })
    }
}

/// `esptun status` as text, in the manner of `swanctl --list-sas`.
pub fn text(status: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let empty = Vec::new();
    let sas = status["ike_sas"].as_array().unwrap_or(&empty);
    if sas.is_empty() {
        out.push_str("no IKE SA is up\n");
    }
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    for ike in sas {
        let star = |initiator: bool| if initiator { "*" } else { "" };
        let initiator = ike["initiator"].as_bool().unwrap_or(false);
        let _ = writeln!(
            out,
            "{}: {}, IKEv2, {}_i{} {}_r{}",
            s(&ike["connection"]),
            s(&ike["state"]),
            s(&ike["spi_i"]),
            star(initiator),
            s(&ike["spi_r"]),
            star(!initiator)
        );
        let _ = writeln!(
            out,
            "  local  '{}' @ {}",
            s(&ike["local_id"]),
            s(&ike["local"])
        );
        let nat = if ike["behind_nat"].as_bool() == Some(true) {
            " (we are behind a NAT)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  remote '{}' @ {}{nat}",
            s(&ike["remote_id"]),
            s(&ike["remote"])
        );
        let strings = |v: &serde_json::Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let vips = strings(&ike["virtual_ips"]);
        if !vips.is_empty() {
            let whose = if ike["initiator"].as_bool() == Some(true) {
                "ours"
            } else {
                "peer's"
            };
            let _ = writeln!(out, "  virtual IPs {vips} ({whose})");
        }
        let dns = strings(&ike["dns"]);
        if !dns.is_empty() {
            let _ = writeln!(out, "  DNS {dns}");
        }
        let _ = writeln!(out, "  {}", s(&ike["algorithms"]));
        let _ = writeln!(out, "  established {}s ago", ike["established_secs"]);
        for c in ike["child_sas"].as_array().unwrap_or(&empty) {
            let encap = if c["encap"].as_bool() == Some(true) {
                "ESP in UDP"
            } else {
                "ESP"
            };
            let per_resource = if c["per_resource"].as_bool() == Some(true) {
                ", per-resource"
            } else {
                ""
            };
            let spread = if c["spread"].as_bool() == Some(true) {
                ", spread"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {}: {}, {}{per_resource}{spread}, {encap} SPIs: {}_i {}_o",
                s(&c["name"]),
                s(&c["state"]),
                s(&c["mode"]).to_uppercase(),
                s(&c["spi_in"]),
                s(&c["spi_out"])
            );
            let _ = writeln!(out, "    {}", s(&c["algorithms"]));
            let rekey = c["rekey_secs"]
                .as_u64()
                .map(|r| format!(", rekeying in {r}s"))
                .unwrap_or_default();
            let expires = c["expires_secs"]
                .as_u64()
                .map(|e| format!(", expires in {e}s"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    installed {}s ago{rekey}{expires}",
                c["installed_secs"]
            );
            let _ = writeln!(
                out,
                "    in  {}, {} bytes, {} packets",
                s(&c["spi_in"]),
                c["bytes_in"],
                c["packets_in"]
            );
            let _ = writeln!(
                out,
                "    out {}, {} bytes, {} packets",
                s(&c["spi_out"]),
                c["bytes_out"],
                c["packets_out"]
            );
            let list = |v: &Value| {
                let items = v.as_array().unwrap_or(&empty).iter().map(s);
                items.collect::<Vec<_>>().join(" ")
            };
            let _ = writeln!(out, "    local  {}", list(&c["local_ts"]));
            let _ = writeln!(out, "    remote {}", list(&c["remote_ts"]));
        }
    }
    for (i, w) in status["workers"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            out,
            "worker {i}: {} packets from the TUN, {} from the network",
            w["packets_out"], w["packets_in"]
        );
    }
    out
}

/// `esptun conns` as text: a line per connection.
pub fn conns_text(answer: &Value) -> String {
    let empty = Vec::new();
    let mut out = String::new();
    for c in answer["connections"].as_array().unwrap_or(&empty) {
        let n = c["ike_sas"].as_u64().unwrap_or(0);
        let state = match (n, c["held"].as_bool() == Some(true)) {
            (0, true) => "down (esptun down)".to_string(),
            (0, false) => "down".to_string(),
            (n, _) => format!("up ({n} IKE SA{})", if n == 1 { "" } else { "s" }),
        };
        let list = |v: &Value| {
            let items = v.as_array().unwrap_or(&empty).iter();
            items
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let peers = list(&c["remote_addrs"]);
        let held = list(&c["children_held"]);
        out.push_str(&format!(
            "{}: {state}; peer {}; children {}{}\n",
            c["name"].as_str().unwrap_or("?"),
            if peers.is_empty() { "any" } else { &peers },
            list(&c["children"]),
            if held.is_empty() {
                String::new()
            } else {
                format!(" ({held} down: esptun down)")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_text_names_each_child_sas_mode() {
        let status = json!({ "ike_sas": [{ "child_sas": [
            { "name": "host", "state": "INSTALLED", "mode": "transport" },
            { "name": "net", "state": "INSTALLED", "mode": "tunnel", "per_resource": true },
            { "name": "wide", "state": "INSTALLED", "mode": "tunnel", "spread": true },
        ] }], "workers": [{ "packets_out": 5, "packets_in": 7 }] });
        let text = super::text(&status);
        assert!(
            text.contains("\n  host: INSTALLED, TRANSPORT, ESP SPIs"),
            "{text}"
        );
        assert!(
            text.contains("\n  net: INSTALLED, TUNNEL, per-resource, ESP SPIs"),
            "{text}"
        );
        assert!(
            text.contains("\n  wide: INSTALLED, TUNNEL, spread, ESP SPIs"),
            "{text}"
        );
        assert!(
            text.contains("\nworker 0: 5 packets from the TUN, 7 from the network\n"),
            "{text}"
        );
    }
}
