//! The automerge-repo baseline (`bench/automerge-repo/baseline.mjs`, run with
//! node): the same scenarios as rows 2–4, on automerge-repo 2.x with its
//! websocket network adapter and node filesystem storage, on loopback. Also
//! the rows that compare Peernotes with it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use serde_json::Value;

use crate::network::Bulk;
use crate::report::Row;

pub struct AutomergeRepo {
    dir: PathBuf,
}

impl AutomergeRepo {
    pub fn new(dir: PathBuf) -> AutomergeRepo {
        AutomergeRepo { dir }
    }

    /// Runs one scenario and returns the JSON it printed.
    fn run(&self, args: &[&str]) -> anyhow::Result<Value> {
        eprintln!("automerge-repo: {}…", args.join(" "));
        let output = Command::new("node")
            .current_dir(&self.dir)
            .arg("baseline.mjs")
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("cannot run node for the automerge-repo baseline")?;
        anyhow::ensure!(
            output.status.success(),
            "baseline.mjs {} failed",
            args.join(" ")
        );
        serde_json::from_slice(&output.stdout).context("baseline.mjs printed no JSON")
    }

    /// Keystroke latency, back to back and paced (150 ms apart). Each
    /// back-to-back edit costs automerge-repo's 100 ms sync throttle, so this
    /// takes `edits` × (0.1 + 0.15) s.
    pub fn latency(&self, edits: usize) -> anyhow::Result<Value> {
        self.run(&[
            "latency",
            "--edits",
            &edits.to_string(),
            "--paced-ms",
            "150",
        ])
    }

    /// The reconnect scenario, which first runs the initial sync and reports it
    /// too (under `results.initial_sync`).
    pub fn bulk(&self, notes: usize, changed: usize) -> anyhow::Result<Value> {
        let traces = self
            .dir
            .join("../../tests/data/traces")
            .canonicalize()
            .context("the traces are missing from tests/data/traces")?;
        let traces = traces.to_string_lossy().to_string();
        self.run(&[
            "reconnect",
            "--notes",
            &notes.to_string(),
            "--changed",
            &changed.to_string(),
            "--traces",
            &traces,
        ])
    }
}

/// A number at `path` (keys separated by '.') in `value`.
pub fn number(value: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

pub fn latency_rows(repo: &AutomergeRepo, edits: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let value = repo.latency(edits)?;
    let ours = |name: &str| rows.iter().find(|r| r.row == name).map(|r| r.peernotes);
    let (Some(p50), Some(p99)) = (
        ours("keystroke to peer, p50"),
        ours("keystroke to peer, p99"),
    ) else {
        return Ok(());
    };
    for (label, key) in [
        ("back to back", "results.back_to_back"),
        ("paced 150 ms", "results.paced"),
    ] {
        if let Some(theirs) = number(&value, &format!("{key}.p50_ms")) {
            rows.push(
                Row::new(
                    &format!("keystroke to peer, p50 (vs automerge-repo, {label})"),
                    p50,
                    "ms",
                )
                .against("automerge-repo", theirs),
            );
        }
        if let Some(theirs) = number(&value, &format!("{key}.p99_ms")) {
            rows.push(
                Row::new(
                    &format!("keystroke to peer, p99 (vs automerge-repo, {label})"),
                    p99,
                    "ms",
                )
                .against("automerge-repo", theirs),
            );
        }
    }
    Ok(())
}

pub fn bulk_rows(
    ours: &Bulk,
    theirs: Option<&Value>,
    notes: usize,
    changed: usize,
    rows: &mut Vec<Row>,
) {
    let initial_time = number_or(theirs, "results.initial_sync.ms_repo_open_to_all_synced");
    let initial_bytes = number_or(
        theirs,
        "results.initial_sync.wire_bytes_at_all_synced.total",
    );
    let reconnect_time = number_or(theirs, "results.ms_repo_open_to_both_synced");
    let reconnect_bytes = number_or(theirs, "results.wire_bytes_at_both_synced.total");

    let label = format!("initial sync of {notes} notes (~5 KB)");
    let mut row = Row::new(&format!("{label}: time"), ours.initial_ms, "ms");
    row = match initial_time {
        Some(t) => row.against("automerge-repo", t).target(
            "≤ 1.4 s and ≤ 1/10 of automerge-repo",
            ours.initial_ms <= 1400.0 && ours.initial_ms <= t / 10.0,
        ),
        None => row.target("≤ 1.4 s", ours.initial_ms <= 1400.0),
    };
    rows.push(row);
    let bytes = ours.initial_bytes as f64;
    let saved = ours.saved_bytes as f64;
    rows.push(
        Row::new(&format!("{label}: bytes on the wire"), bytes, "bytes")
            .against("the notes' saved size", saved)
            .target("≤ 1.1× saved size", bytes <= 1.1 * saved),
    );
    if let Some(b) = initial_bytes {
        rows.push(
            Row::new(
                &format!("{label}: bytes on the wire (vs automerge-repo)"),
                bytes,
                "bytes",
            )
            .against("automerge-repo", b),
        );
    }

    let label = format!("reconnect, {changed} of {notes} changed on each side");
    let mut row = Row::new(&format!("{label}: time"), ours.reconnect_ms, "ms");
    if let Some(t) = reconnect_time {
        row = row.against("automerge-repo", t);
    }
    rows.push(row.target("≤ 100 ms", ours.reconnect_ms <= 100.0));
    let rbytes = ours.reconnect_bytes as f64;
    rows.push(
        Row::new(&format!("{label}: bytes"), rbytes, "bytes")
            .against("initial sync bytes", bytes)
            .target("≤ 20 KB", rbytes <= 20_000.0),
    );
    if let Some(b) = reconnect_bytes {
        rows.push(
            Row::new(
                &format!("{label}: bytes (vs automerge-repo)"),
                rbytes,
                "bytes",
            )
            .against("automerge-repo", b)
            .target("fewer than automerge-repo", rbytes < b),
        );
    }
}

fn number_or(value: Option<&Value>, path: &str) -> Option<f64> {
    value.and_then(|v| number(v, path))
}
