//! Benchmark results: one row per figure, printed as a table and written as JSON.

use std::fmt::Write as _;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// `chat` or `mosquitto`.
    pub system: &'static str,
    pub workload: &'static str,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// Parameters and observations (CPU of each process, what saturated).
    pub notes: String,
    /// Scale curve: the connected clients this figure was measured with.
    pub clients: Option<usize>,
}

impl Row {
    pub fn new(
        system: &'static str,
        workload: &'static str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            system,
            workload,
            metric,
            value,
            unit,
            notes: String::new(),
            clients: None,
        }
    }

    /// The same figure as a point of the scale curve, at `clients` connected clients.
    pub fn at(mut self, clients: usize) -> Row {
        self.workload = "scale";
        self.clients = Some(clients);
        self
    }

    pub fn note(mut self, notes: impl Into<String>) -> Row {
        self.notes = notes.into();
        self
    }
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<12} {:<28} {:>14} {:<8} notes",
        "system", "workload", "metric", "value", "unit"
    );
    for r in rows {
        let workload = match r.clients {
            Some(n) => format!("{}@{n}", r.workload),
            None => r.workload.to_string(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<12} {:<28} {:>14.2} {:<8} {}",
            r.system, workload, r.metric, r.value, r.unit, r.notes
        );
    }
    out
}

/// The rows as a JSON array of objects.
pub fn json(rows: &[Row]) -> String {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut item = serde_json::json!({
                "system": r.system,
                "workload": r.workload,
                "metric": r.metric,
                "value": r.value,
                "unit": r.unit,
                "notes": r.notes,
            });
            if let Some(n) = r.clients {
                item["clients"] = n.into();
            }
            item
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_default()
}
