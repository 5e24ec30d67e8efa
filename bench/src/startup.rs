//! Row 5: 10,000 and 100,000 notes — the time from starting `peernotes list`
//! to its output, and the process's peak RSS, against the same command on an
//! empty data dir.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use peernotes_sync::{Node, NodeOptions};

use crate::replay::ms;
use crate::report::Row;

/// The argument that makes `peernotes-bench` fill a data dir with notes
/// (`--fill <dir> <count>`) and exit.
pub const FILL: &str = "--fill";

/// `--fill <dir> <count>`: creates `count` short notes in a new data dir.
pub fn fill(args: &[String]) -> anyhow::Result<()> {
    let [dir, count] = args else {
        anyhow::bail!("usage: peernotes-bench --fill <dir> <count>");
    };
    let count: usize = count.parse()?;
    let node = Node::open(NodeOptions::new(dir))?;
    for i in 0..count {
        node.create(&format!(
            "Note {i}\nSome text for note {i}, long enough to have a snippet.\n"
        ))?;
    }
    node.close()?;
    Ok(())
}

/// The store sizes measured (`--quick`: the first only).
const SIZES: [usize; 2] = [10_000, 100_000];

pub fn run(cli: &Path, quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sizes = if quick { &SIZES[..1] } else { &SIZES[..] };
    for &notes in sizes {
        run_one(cli, notes, rows)?;
    }
    Ok(())
}

fn run_one(cli: &Path, notes: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("row 5: {notes} notes…");
    let full = tempfile::tempdir()?;
    // Filled by another process: a child's peak RSS counts the memory of the
    // process that spawned it (Linux carries it over the exec), so this one
    // must stay small.
    let filled = Command::new(std::env::current_exe()?)
        .arg(FILL)
        .arg(full.path())
        .arg(notes.to_string())
        .status()?;
    anyhow::ensure!(filled.success(), "filling the store failed: {filled}");
    let empty = tempfile::tempdir()?;
    Node::open(NodeOptions::new(empty.path()))?.close()?;

    // Warm the page cache and the binary once, as a user's second start would.
    list(cli, full.path())?;
    let (empty_ms, empty_rss) = best_of(3, || list(cli, empty.path()))?;
    let (full_ms, full_rss) = best_of(3, || list(cli, full.path()))?;
    let label = thousands(notes);
    rows.push(
        Row::new(&format!("{label} notes: start to note list"), full_ms, "ms")
            .against("same, empty data dir", empty_ms)
            .target("≤ 300 ms", full_ms <= 300.0),
    );
    rows.push(
        Row::new(
            &format!("{label} notes: peak RSS"),
            full_rss as f64,
            "bytes",
        )
        .against("same, empty data dir", empty_rss as f64)
        .target("≤ 150 MB", full_rss <= 150 * 1024 * 1024),
    );
    Ok(())
}

/// 100000 as "100,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
