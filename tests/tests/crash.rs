//! Crash safety, with SIGKILL at random moments:
//! - a child process editing and compacting notes: after each kill the store
//!   opens and every edit the child reported as committed is there;
//! - a `peernotes serve` receiving a note by sync: after each kill the store
//!   opens, never holds less than before, and the next start resumes the sync.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use peernotes_sync::{Node, NodeOptions, NoteId};
use peernotes_tests::{share_with_cli_device, Rng};

/// Kills per run of `make test`; `make soak` raises it with PEERNOTES_CRASH_RUNS.
const DEFAULT_RUNS: u64 = 30;

struct Run {
    /// The run's number: kills during start-up leave gaps, so it is not an index.
    run: u64,
    note: NoteId,
    committed: u64,
}

#[test]
fn every_committed_edit_survives_sigkill() {
    let runs = peernotes_tests::count_from_env("PEERNOTES_CRASH_RUNS", DEFAULT_RUNS);
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}, {runs} runs");
    let dir = tempfile::tempdir().unwrap();
    let journal = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = node.create("journal\n").unwrap();
        node.close().unwrap();
        id
    };
    let mut finished: Vec<Run> = Vec::new();
    let mut kills_during_edits = 0;
    let mut edits_committed = 0;
    for run in 0..runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
            .arg(dir.path())
            .arg(run.to_string())
            .arg(journal.as_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Most kills land while the child edits, commits and compacts: wait until it
        // has started, then a random moment. Every fifth kill lands anywhere,
        // start-up included.
        let mut seen = Vec::new();
        let during_start_up = rng.below(5) == 0;
        if !during_start_up {
            let first = lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("run {run}: the child never started: {e}"));
            seen.push(first);
            kills_during_edits += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "run {run}: the child exited by itself: {status}"
        );
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        let note = seen
            .iter()
            .find_map(|l| l.strip_prefix("note "))
            .map(|id| id.parse::<NoteId>().unwrap());
        let committed = seen
            .iter()
            .filter_map(|l| l.strip_prefix("committed "))
            .map(|n| n.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        edits_committed += committed;
        if let Some(note) = note {
            finished.push(Run {
                run,
                note,
                committed,
            });
        }
        check_store(dir.path(), &journal, &finished, seed);
    }
    println!("{runs} kills, {kills_during_edits} of them while editing; {edits_committed} edits committed and checked");
    assert!(
        edits_committed > 0,
        "no edit was ever committed before a kill: the test is not testing"
    );
}

/// Opens the store as the next process would and checks every reported edit.
fn check_store(dir: &Path, journal: &NoteId, runs: &[Run], seed: u64) {
    let node = Node::open(NodeOptions::new(dir))
        .unwrap_or_else(|e| panic!("seed {seed}: the store does not open after a kill: {e}"));
    let journal_text = node.checkout(journal).unwrap().0;
    for r in runs {
        let run = r.run;
        let (text, _) = node.checkout(&r.note).unwrap();
        let cached = node.get(&r.note).unwrap().text;
        assert_eq!(
            text, cached,
            "seed {seed}: cached text differs from the document"
        );
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(format!("run {run}").as_str()));
        // Every committed line, in order; anything after them must be the next lines.
        for (i, line) in (1..).zip(lines) {
            assert_eq!(line, format!("line {i}"), "seed {seed}: run {run} garbled");
        }
        let present = text.lines().count() as u64 - 1;
        assert!(
            present >= r.committed,
            "seed {seed}: run {run} reported {} edits committed but only {present} survived",
            r.committed
        );
        if r.committed > 0 {
            let needle = format!("r{run} {}\n", r.committed);
            assert!(
                journal_text.contains(&needle),
                "seed {seed}: journal lost `{needle}`"
            );
        }
    }
    assert!(
        node.quarantined().unwrap().is_empty(),
        "seed {seed}: chunks were quarantined"
    );
    node.close().unwrap();
}

/// A `peernotes serve` receiving a note that a member keeps appending to is
/// killed with SIGKILL at random moments (during incoming sync, its group
/// commits and the compactions they trigger). After each kill its store opens
/// with nothing quarantined, holds a state the member really had (the lines in
/// order, none garbled), and never less than after the previous kill; the
/// next start resumes the sync, and at the end it catches up completely.
#[test]
fn a_daemon_killed_during_incoming_sync_keeps_what_it_stored_and_resumes() {
    use peernotes_sync::net::NetConfig;

    let runs = peernotes_tests::count_from_env("PEERNOTES_CRASH_RUNS", DEFAULT_RUNS);
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}, {runs} runs");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let alice = runtime
        .block_on(peernotes_tests::device(&NetConfig::loopback()))
        .unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let bob_data = bob_dir.path().join("bob");
    let (space, connect) = share_with_cli_device(&alice.node, &alice.net.addr(), &bob_data);
    let note = alice.node.create_in(space, "start\n").unwrap();

    // Alice appends a line every 2 ms for as long as the runs last.
    let typing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let typist = {
        let (node, note, typing) = (alice.node.clone(), note.clone(), typing.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while typing.load(std::sync::atomic::Ordering::Relaxed) {
                let end = node.get(&note).unwrap().text.chars().count();
                node.splice(&note, end, 0, &format!("line {n}\n")).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };

    let mut stored_before = 0;
    let mut kills_with_the_note = 0;
    for run in 0..runs {
        let mut child = peernotes_tests::peernotes(&bob_data)
            .args(["serve", "--connect", &connect])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Listening: from here on it syncs. Kill it at a random moment.
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("listening ") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50 + rng.below(700)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "run {run}: serve exited by itself: {status}"
        );

        let bob = Node::open(NodeOptions::new(&bob_data))
            .unwrap_or_else(|e| panic!("seed {seed} run {run}: the store does not open: {e}"));
        assert!(
            bob.quarantined().unwrap().is_empty(),
            "seed {seed} run {run}: chunks were quarantined"
        );
        if let Ok(stored) = bob.checkout(&note) {
            kills_with_the_note += 1;
            let text = stored.0;
            assert_eq!(text, bob.get(&note).unwrap().text, "cached text differs");
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("start"), "seed {seed} run {run}");
            let mut count = 0;
            for (i, line) in lines.enumerate() {
                assert_eq!(line, format!("line {i}"), "seed {seed} run {run}: garbled");
                count += 1;
            }
            assert!(
                count >= stored_before,
                "seed {seed} run {run}: {stored_before} lines were stored, now {count}"
            );
            stored_before = count;
        }
        bob.close().unwrap();
    }
    typing.store(false, std::sync::atomic::Ordering::Relaxed);
    let typed = typist.join().unwrap();
    let want = alice.node.get(&note).unwrap().text;

    // Sync resumes: one more start catches up with everything Alice typed.
    let mut child = peernotes_tests::peernotes(&bob_data)
        .args(["serve", "--connect", &connect])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let bob = Node::open(NodeOptions {
            read_only: true,
            ..NodeOptions::new(&bob_data)
        })
        .unwrap();
        if bob.get(&note).map(|n| n.text == want).unwrap_or(false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: the daemon never caught up after the kills"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    println!(
        "serve: {runs} kills during incoming sync, {kills_with_the_note} with the note stored \
         ({stored_before} of Alice's lines at the last kill); {typed} lines typed in all, \
         all of them there after a restart"
    );
    assert!(
        kills_with_the_note > 0,
        "the note never reached the daemon before a kill"
    );
}
