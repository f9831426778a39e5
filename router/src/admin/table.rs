//! A result set the admin side builds (SHOW ...), and its two renderings:
//! PostgreSQL wire messages for the console, JSON for the HTTP API. One
//! builder per view keeps the console and the API in agreement.

use bytes::BytesMut;

use crate::protocol::backend::{self as be, Column};

/// Type OIDs of the columns the admin side emits.
const INT8: i32 = 20;
const TEXT: i32 = 25;
const FLOAT8: i32 = 701;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Null,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::from(n as u64)
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        // PgBouncer's console shows flags as 0/1 integers.
        Value::Int(i64::from(b))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<(&'static str, Kind)>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Kind)]) -> Self {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; it must have one value per column.
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(n, _)| *n).collect()
    }

    /// RowDescription, DataRows and CommandComplete (`SHOW`).
    pub fn encode(&self, out: &mut BytesMut) {
        let columns: Vec<Column<'_>> = self
            .columns
            .iter()
            .map(|(name, kind)| Column {
                name,
                type_oid: match kind {
                    Kind::Text => TEXT,
                    Kind::Int => INT8,
                    Kind::Float => FLOAT8,
                },
            })
            .collect();
        be::row_description(out, &columns);
        for row in &self.rows {
            let texts: Vec<Option<String>> = row
                .iter()
                .map(|v| match v {
                    Value::Text(s) => Some(s.clone()),
                    Value::Int(n) => Some(n.to_string()),
                    // Rust's shortest round-trip form is valid float8 input.
                    Value::Float(x) => Some(x.to_string()),
                    Value::Null => None,
                })
                .collect();
            let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
            be::data_row(out, &refs);
        }
        be::command_complete(out, "SHOW");
    }

    /// An array of objects keyed by column name.
    pub fn to_json(&self) -> serde_json::Value {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let mut obj = serde_json::Map::new();
                for ((name, _), v) in self.columns.iter().zip(row) {
                    let v = match v {
                        Value::Text(s) => serde_json::Value::String(s.clone()),
                        Value::Int(n) => serde_json::Value::from(*n),
                        // NaN and infinities have no JSON form: null.
                        Value::Float(x) => serde_json::Value::from(*x),
                        Value::Null => serde_json::Value::Null,
                    };
                    obj.insert((*name).to_string(), v);
                }
                serde_json::Value::Object(obj)
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer's console prints times.
pub fn timestamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn json_keeps_types() {
        let mut t = Table::new(&[("name", Kind::Text), ("n", Kind::Int)]);
        t.push(vec!["a".into(), 3u64.into()]);
        t.push(vec![Value::Null, true.into()]);
        assert_eq!(t.to_json().to_string(), r#"[{"n":3,"name":"a"},{"n":1,"name":null}]"#);
        let mut t = Table::new(&[("x", Kind::Float)]);
        t.push(vec![0.25.into()]);
        t.push(vec![f64::NAN.into()]);
        assert_eq!(t.to_json().to_string(), r#"[{"x":0.25},{"x":null}]"#);
    }

    #[test]
    fn encodes_one_message_per_row_and_a_tag() {
        let mut t = Table::new(&[("v", Kind::Text)]);
        t.push(vec!["x".into()]);
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(out[0], b'T');
        assert!(out.windows(5).any(|w| w == b"SHOW\0"));
    }
}
