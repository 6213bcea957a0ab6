//! The figures of one run: printed as a table, written to `target/bench/results.json`.

use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the figure is compared with, measured in the same run.
    pub baseline: Option<(String, f64)>,
}

#[derive(Debug)]
pub struct Report {
    quick: bool,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report { quick, rows: Vec::new(), notes: Vec::new() }
    }

    pub fn add(&mut self, section: &'static str, figure: impl Into<String>, value: f64, unit: &'static str) {
        self.rows.push(Row { section, figure: figure.into(), value, unit, baseline: None });
    }

    pub fn compare(
        &mut self,
        section: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: impl Into<String>,
        baseline_value: f64,
    ) {
        self.rows.push(Row { section, figure: figure.into(), value, unit, baseline: Some((baseline.into(), baseline_value)) });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: {note}");
        self.notes.push(note);
    }

    pub fn finish(self, elapsed: Duration) {
        let machine = machine();
        println!();
        println!("Pulse benchmarks{} — {}", if self.quick { " (--quick)" } else { "" }, machine["summary"].as_str().unwrap_or(""));
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = row.section;
                println!("\n{section}");
                println!("  {:<58} {:>14}   {:<34} {:>14} {:>9}", "figure", "pulse", "baseline (same run)", "", "ratio");
            }
            match &row.baseline {
                Some((name, b)) => println!(
                    "  {:<58} {:>14}   {:<34} {:>14} {:>9}",
                    row.figure,
                    fmt(row.value, row.unit),
                    name,
                    fmt(*b, row.unit),
                    if *b != 0.0 { format!("{:.2}×", row.value / b) } else { "–".into() }
                ),
                None => println!("  {:<58} {:>14}", row.figure, fmt(row.value, row.unit)),
            }
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
        println!("\n({:.0} s)", elapsed.as_secs_f64());

        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section, "figure": r.figure, "value": r.value, "unit": r.unit,
                    "baseline": r.baseline.as_ref().map(|b| &b.0), "baseline_value": r.baseline.as_ref().map(|b| b.1),
                    "ratio": r.baseline.as_ref().filter(|b| b.1 != 0.0).map(|b| r.value / b.1),
                })
            })
            .collect();
        let out = crate::repo().join("target/bench");
        let _ = std::fs::create_dir_all(&out);
        let body = json!({"quick": self.quick, "machine": machine, "seconds": elapsed.as_secs_f64(), "rows": rows, "notes": self.notes});
        match std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&body).unwrap_or_default()) {
            Ok(()) => println!("wrote target/bench/results.json"),
            Err(e) => eprintln!("bench: cannot write target/bench/results.json: {e}"),
        }
    }
}

fn fmt(value: f64, unit: &str) -> String {
    match unit {
        "B" => format!("{value:.0} B"),
        "ms" if value < 1.0 => format!("{:.0} µs", value * 1000.0),
        "ms" => format!("{value:.1} ms"),
        "µs" => format!("{value:.1} µs"),
        "/s" => format!("{value:.0}/s"),
        "MiB" => format!("{value:.1} MiB"),
        "rows" => format!("{value:.0}"),
        _ => format!("{value:.3} {unit}"),
    }
}

/// Cores, memory and CPU model of this machine.
fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map_or("unknown CPU", str::trim).to_owned();
    let gib = kib / 1024.0 / 1024.0;
    json!({"cores": cores, "ram_gib": (gib * 10.0).round() / 10.0, "cpu": cpu, "summary": format!("{cores} cores, {gib:.0} GiB RAM, {cpu}")})
}

/// Median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

/// Value at rank ⌊p·n⌋ of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

impl Report {
    /// The largest value among the figures of `section` whose name contains `part`.
    pub fn best(&self, section: &str, part: &str) -> f64 {
        self.rows.iter().filter(|r| r.section == section && r.figure.contains(part)).map(|r| r.value).fold(f64::NAN, f64::max)
    }
}
