//! Row 5: 10,000 notes — the time from starting `peernotes list` to its output,
//! and the process's peak RSS, against the same command on an empty data dir.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use peernotes_sync::{Node, NodeOptions};

use crate::replay::ms;
use crate::report::Row;

const NOTES: usize = 10_000;

pub fn run(cli: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("row 5: {NOTES} notes…");
    let full = tempfile::tempdir()?;
    let node = Node::open(NodeOptions::new(full.path()))?;
    for i in 0..NOTES {
        node.create(&format!(
            "Note {i}\nSome text for note {i}, long enough to have a snippet.\n"
        ))?;
    }
    node.close()?;
    let empty = tempfile::tempdir()?;
    Node::open(NodeOptions::new(empty.path()))?.close()?;

    // Warm the page cache and the binary once, as a user's second start would.
    list(cli, full.path())?;
    let (empty_ms, empty_rss) = best_of(3, || list(cli, empty.path()))?;
    let (full_ms, full_rss) = best_of(3, || list(cli, full.path()))?;
    rows.push(
        Row::new("10,000 notes: start to note list", full_ms, "ms")
            .against("same, empty data dir", empty_ms)
            .target("≤ 300 ms", full_ms <= 300.0),
    );
    rows.push(
        Row::new("10,000 notes: peak RSS", full_rss as f64, "bytes")
            .against("same, empty data dir", empty_rss as f64)
            .target("≤ 150 MB", full_rss <= 150 * 1024 * 1024),
    );
    Ok(())
}

/// Runs `peernotes list` and returns (wall ms, peak RSS bytes of that child).
fn list(cli: &Path, dir: &Path) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let child = Command::new(cli)
        .arg("--data-dir")
        .arg(dir)
        .arg("list")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // wait4 gives this child's own rusage (RUSAGE_CHILDREN would keep the max
    // over every child so far).
    let mut status = 0;
    // SAFETY: plain syscalls on our own child; the struct is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = ms(started);
    anyhow::ensure!(
        waited == pid && status == 0,
        "peernotes list failed ({status})"
    );
    std::mem::forget(child);
    Ok((elapsed, usage.ru_maxrss as u64 * 1024))
}

fn best_of(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<(f64, u64)>,
) -> anyhow::Result<(f64, u64)> {
    let mut best = (f64::MAX, 0);
    for _ in 0..runs {
        let (t, rss) = f()?;
        if t < best.0 {
            best = (t, rss);
        }
    }
    Ok(best)
}
