//! The text form of `inspect` records: one header line per datagram, then one
//! line per payload, nested payloads and lists indented below their parent.

use serde_json::{Map, Value};
use std::fmt::Write;

/// Renders inspect records as indented text.
pub fn text(records: &[Value]) -> String {
    let mut out = String::new();
    for record in records {
        header_line(&mut out, record);
        if let Some(error) = record.get("error").and_then(Value::as_str) {
            let _ = writeln!(out, "  error: {error}");
        }
        for payload in record
            .get("payloads")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            object(&mut out, payload, 1);
        }
    }
    out
}

fn header_line(out: &mut String, r: &Value) {
    let field = |k: &str| r.get(k).map(scalar).unwrap_or_default();
    let time = r.get("time").and_then(Value::as_f64).unwrap_or(0.0);
    let _ = write!(
        out,
        "#{} {time:.6} {} -> {} {}",
        field("frame"),
        field("src"),
        field("dst"),
        field("protocol")
    );
    if r.get("exchange").is_some() {
        let _ = write!(
            out,
            " {} {} from {} mid={} spi_i={} spi_r={} {}",
            field("exchange"),
            field("message"),
            field("sender"),
            field("message_id"),
            field("spi_i"),
            field("spi_r"),
            field("summary")
        );
    } else if r.get("spi").is_some() {
        let _ = write!(out, " spi={} seq={}", field("spi"), field("seq"));
    }
    if r.get("length").is_some() {
        let _ = write!(out, " ({} bytes)", field("length"));
    }
    out.push('\n');
}

/// One object: its head and scalar fields on a line, nested lists below it.
fn object(out: &mut String, v: &Value, depth: usize) {
    let Some(map) = v.as_object() else {
        let _ = writeln!(out, "{}{}", indent(depth), scalar(v));
        return;
    };
    out.push_str(&indent(depth));
    out.push_str(&inline_fields(map));
    out.push('\n');
    for (key, value) in map {
        match value {
            Value::Array(items) if items.iter().any(Value::is_object) => {
                let _ = writeln!(out, "{}{key}:", indent(depth + 1));
                for item in items {
                    object(out, item, depth + 2);
                }
            }
            Value::Object(_) => {
                let _ = writeln!(out, "{}{key}:", indent(depth + 1));
                object(out, value, depth + 2);
            }
            _ => {}
        }
    }
}

fn inline_fields(map: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (key, value) in map {
        match value {
            Value::Array(items) if items.iter().any(Value::is_object) => {}
            Value::Object(_) => {}
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect();
                parts.push(format!("{key}=[{}]", items.join(", ")));
            }
            _ if key == "payload" => parts.push(scalar(value)),
            _ => parts.push(format!("{key}={}", scalar(value))),
        }
    }
    parts.join(" ")
}

/// A scalar as text, quoted when it holds spaces so fields stay separable.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains(' ') || s.is_empty() => format!("{s:?}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_lists_indent_below_their_payload() {
        let records = [json!({
            "frame": 3, "time": 0.5, "src": "192.0.2.1:4500", "dst": "192.0.2.2:4500",
            "protocol": "IKE", "length": 80, "exchange": "IKE_AUTH", "message": "request",
            "sender": "initiator", "message_id": 1, "spi_i": "01", "spi_r": "02",
            "summary": "[SK]",
            "payloads": [{ "payload": "SK", "next": "IDi", "integrity": "ok",
                "decrypted": [{ "payload": "IDi", "type": "FQDN", "id": "left example" },
                              { "payload": "N(X)", "hashes": ["SHA2_256", "SHA2_384"] }] }],
        })];
        assert_eq!(
            text(&records),
            "#3 0.500000 192.0.2.1:4500 -> 192.0.2.2:4500 IKE IKE_AUTH request from initiator \
             mid=1 spi_i=01 spi_r=02 [SK] (80 bytes)\n  SK next=IDi integrity=ok\n    decrypted:\n      \
             IDi type=FQDN id=\"left example\"\n      N(X) hashes=[SHA2_256, SHA2_384]\n"
        );
    }
}
