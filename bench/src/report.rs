//! The benchmark report: rows of (what, Peernotes, baseline, ratio, target),
//! printed as a Markdown table and written to `target/bench/report.md` and
//! `report.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One measured figure beside its baseline from the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub row: String,
    pub peernotes: f64,
    pub baseline: Option<f64>,
    pub baseline_name: String,
    pub unit: String,
    /// What the figure should meet, in words, and whether it does.
    pub target: Option<String>,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(row: &str, peernotes: f64, unit: &str) -> Row {
        Row {
            row: row.to_string(),
            peernotes,
            baseline: None,
            baseline_name: String::new(),
            unit: unit.to_string(),
            target: None,
            met: None,
        }
    }

    pub fn against(mut self, name: &str, baseline: f64) -> Row {
        self.baseline_name = name.to_string();
        self.baseline = Some(baseline);
        self
    }

    pub fn target(mut self, target: &str, met: bool) -> Row {
        self.target = Some(target.to_string());
        self.met = Some(met);
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .filter(|b| *b > 0.0)
            .map(|b| self.peernotes / b)
    }
}

fn figure(value: f64, unit: &str) -> String {
    match unit {
        "bytes" if value >= 1e6 => format!("{:.2} MB", value / 1e6),
        "bytes" if value >= 1e3 => format!("{:.1} KB", value / 1e3),
        "bytes" => format!("{value:.0} B"),
        "ms" if value < 10.0 => format!("{value:.2} ms"),
        "ms" => format!("{value:.0} ms"),
        _ => format!("{value:.2} {unit}"),
    }
}

/// The report as a Markdown table.
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(out, "| row | Peernotes | baseline | ratio | target |");
    let _ = writeln!(out, "|---|---:|---|---:|---|");
    for row in rows {
        let baseline = match row.baseline {
            Some(b) => format!("{} ({})", figure(b, &row.unit), row.baseline_name),
            None => "—".into(),
        };
        let ratio = row
            .ratio()
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "—".into());
        let target = match (&row.target, row.met) {
            (Some(t), Some(true)) => format!("{t} ✓"),
            (Some(t), Some(false)) => format!("{t} ✗ missed"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.row,
            figure(row.peernotes, &row.unit),
            baseline,
            ratio,
            target
        );
    }
    out
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write(dir: &Path, rows: &[Row], header: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(rows, header))?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(rows)?)?;
    Ok(())
}

/// The value at quantile `q` (0..=1) of `samples`, sorting them.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    if samples.is_empty() {
        return f64::NAN;
    }
    let at = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[at]
}
