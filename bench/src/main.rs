//! `peernotes-bench`: Peernotes' speed and memory, each figure beside a
//! baseline measured in the same run (in-memory Automerge, a raw iroh round
//! trip, automerge-repo over its websocket, the same work without a network).
//! Prints a Markdown table and writes `target/bench/report.md` and
//! `report.json`. Run it from a release build (`make bench`): debug builds are
//! several times slower. No figure here is asserted: targets are reported as
//! met or missed.
//!
//! Usage: peernotes-bench --cli <path to a release `peernotes`> [--out DIR]
//!        [--baseline <bench/automerge-repo dir>] [--quick]
//!        [--only <group>[,<group>…]] (groups: startup, replay, latency, bulk, clownschool, large, devices)

mod baseline;
mod large_note;
mod many_devices;
mod network;
mod replay;
mod report;
mod startup;

use std::path::PathBuf;

use anyhow::Context;
use report::Row;

struct Options {
    cli: PathBuf,
    out: PathBuf,
    baseline: Option<PathBuf>,
    quick: bool,
    /// Run only these groups of rows (for profiling one figure).
    only: Option<Vec<String>>,
}

impl Options {
    fn runs(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == group))
    }
}

const GROUPS: [&str; 7] = [
    "startup",
    "replay",
    "latency",
    "bulk",
    "clownschool",
    "large",
    "devices",
];

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut cli, mut out, mut baseline, mut quick, mut only) =
        (None, PathBuf::from("target/bench"), None, false, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cli" => cli = args.next().map(PathBuf::from),
            "--out" => {
                out = args
                    .next()
                    .map(PathBuf::from)
                    .context("--out needs a directory")?
            }
            "--baseline" => baseline = args.next().map(PathBuf::from),
            "--quick" => quick = true,
            "--only" => {
                let groups: Vec<String> = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect();
                anyhow::ensure!(
                    groups.iter().all(|g| GROUPS.contains(&g.as_str())),
                    "--only takes one or more of {}, separated by commas",
                    GROUPS.join(", ")
                );
                only = Some(groups);
            }
            other => anyhow::bail!("unknown argument `{other}`; see the module docs"),
        }
    }
    Ok(Options {
        cli: cli.context("--cli <path to peernotes> is required")?,
        out,
        baseline,
        quick,
        only,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(startup::FILL) {
        return startup::fill(&args[1..]);
    }
    let options = options()?;
    // Logs only when asked (`PEERNOTES_LOG=info`), on stderr, like the CLI's.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PEERNOTES_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();
    let (edits, notes, changed) = if options.quick {
        (100, 100, 10)
    } else {
        (1000, 1000, 10)
    };

    // First, while this process is small: the child's peak RSS counts pages it
    // shared with this process before it ran `peernotes` (spawning uses vfork).
    if options.runs("startup") {
        startup::run(&options.cli, options.quick, &mut rows)?;
    }
    if options.runs("replay") {
        for trace in ["automerge-paper", "seph-blog1"] {
            replay::run(trace, &mut rows)?;
        }
    }
    let repo = options
        .baseline
        .as_ref()
        .map(|dir| baseline::AutomergeRepo::new(dir.clone()));
    if options.runs("latency") {
        runtime.block_on(network::latency(&mut rows, edits))?;
        if let Some(repo) = &repo {
            // Fewer edits for automerge-repo: each back-to-back one waits out its
            // 100 ms sync throttle (see bench/automerge-repo/README.md).
            baseline::latency_rows(repo, edits.min(200), &mut rows)?;
        }
    }
    if options.runs("bulk") {
        let bulk = runtime.block_on(network::bulk(notes, changed))?;
        let theirs = repo.as_ref().map(|r| r.bulk(notes, changed)).transpose()?;
        baseline::bulk_rows(&bulk, theirs.as_ref(), notes, changed, &mut rows);
    }
    if options.runs("clownschool") {
        runtime.block_on(network::clownschool(&mut rows))?;
    }
    if options.runs("devices") {
        runtime.block_on(many_devices::run(&mut rows))?;
    }
    if options.runs("large") && !options.quick {
        runtime.block_on(large_note::run(&mut rows))?;
    }

    let header = format!(
        "# Peernotes benchmarks\n\nRelease build, this machine ({} cores), loopback; every baseline measured in the same run{}.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if options.quick { ", quick sizes" } else { "" }
    );
    println!("{}", report::markdown(&rows, &header));
    report::write(&options.out, &rows, &header)?;
    eprintln!("wrote {}/report.md and report.json", options.out.display());
    Ok(())
}
