//! Row 1: an editing trace replayed into a note through the durable store
//! (one `Node::splice_many` per trace transaction, group commit on), against
//! the same edits into an in-memory Automerge document (one commit per
//! transaction): time (the median of three runs of each), bytes on disk, time
//! to reopen. Also what checking the
//! whole replayed note's authorship costs (every change vouched for by one
//! signature over its author's latest change), beside loading it.

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ROOT};
use peernotes_sync::authorship::{unvouched, Attestation, ChangeNode};
use peernotes_sync::{Node, NodeOptions, NoteId};
use peernotes_tests::{load_sequential_trace, SequentialTrace};

use crate::report::Row;

/// How many times each replay runs; the rows give the median.
const RUNS: usize = 3;

pub fn run(name: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let trace = load_sequential_trace(name)?;
    eprintln!(
        "row 1: replaying {name} ({} transactions)…",
        trace.txns.len()
    );

    // Baseline: the same edits into one in-memory document, beside the
    // replay through the store, each RUNS times in turn. The document's
    // changes carry a device's actor, as a Node's do, so its authorship can
    // be checked below.
    const KEY: [u8; 32] = [7; 32];
    let author = Attestation::sign("", &KEY, Vec::new()).author;
    let mut memory_runs = Vec::new();
    let mut node_runs = Vec::new();
    let mut replayed = None;
    for _ in 0..RUNS {
        let (took, doc) = replay_in_memory(&trace, &author)?;
        memory_runs.push(took);
        let (took, dir, id) = replay_through_store(&trace)?;
        node_runs.push(took);
        replayed = Some((doc, dir, id));
    }
    let (mut doc, dir, id) = replayed.expect("RUNS > 0");
    let memory_ms = median(&mut memory_runs);
    let node_ms = median(&mut node_runs);
    let saved = doc.save();
    let load_started = Instant::now();
    let mut loaded = AutoCommit::load(&saved)?;
    let memory_load_ms = ms(load_started);

    // Authorship: one attestation over the author's heads vouches for every
    // change, found by walking the dependencies.
    let heads: Vec<[u8; 32]> = loaded.get_heads().iter().map(|h| h.0).collect();
    let attestation = Attestation::sign(name, &KEY, heads);
    let check_started = Instant::now();
    // As a device checks a whole document that arrives: from its changes'
    // metadata, without building each change.
    let changes: Vec<ChangeNode> = loaded
        .get_changes_meta(&[])
        .iter()
        .map(ChangeNode::from)
        .collect();
    let refused = unvouched(name, &changes, &[attestation]);
    let check_ms = ms(check_started);
    anyhow::ensure!(
        refused.is_empty(),
        "the replay's own changes were not vouched for"
    );
    let change_count = changes.len();
    drop(loaded);

    let stored = store_bytes(dir.path());
    let node = Node::open(NodeOptions::new(dir.path()))?;
    node.compact_all()?;
    node.close()?;
    let compacted = store_bytes(dir.path());

    let reopen_started = Instant::now();
    let node = Node::open(NodeOptions::new(dir.path()))?;
    let shown = node.get(&id)?.text;
    let reopen_text_ms = ms(reopen_started);
    let document = node.note_document(&id)?;
    let reopen_doc_ms = ms(reopen_started);
    anyhow::ensure!(shown == trace.end_content, "the stored replay went wrong");
    drop(document);
    node.close()?;

    let ratio = node_ms / memory_ms;
    rows.push(
        Row::new(
            &format!("{name}: replay through the store (median of {RUNS})"),
            node_ms,
            "ms",
        )
        .against("in-memory automerge", memory_ms)
        .target("≤ 1.3× in-memory", ratio <= 1.3),
    );
    rows.push(
        Row::new(
            &format!("{name}: store on disk, before compaction"),
            stored as f64,
            "bytes",
        )
        .against("Automerge save()", saved.len() as f64),
    );
    rows.push(
        Row::new(
            &format!("{name}: store on disk, compacted"),
            compacted as f64,
            "bytes",
        )
        .against("Automerge save()", saved.len() as f64),
    );
    rows.push(
        Row::new(
            &format!("{name}: authorship of all {change_count} changes checked (1 signature)"),
            check_ms,
            "ms",
        )
        .against("Automerge load()", memory_load_ms),
    );
    rows.push(
        Row::new(&format!("{name}: reopen, text shown"), reopen_text_ms, "ms")
            .against("Automerge load()", memory_load_ms),
    );
    rows.push(
        Row::new(
            &format!("{name}: reopen, document loaded"),
            reopen_doc_ms,
            "ms",
        )
        .against("Automerge load()", memory_load_ms),
    );
    Ok(())
}

/// The trace's edits into one in-memory document, one commit per
/// transaction: how long it took, and the document.
fn replay_in_memory(
    trace: &SequentialTrace,
    author: &[u8; 32],
) -> anyhow::Result<(f64, AutoCommit)> {
    let mut actor = author.to_vec();
    actor.push(0);
    let started = Instant::now();
    let mut doc = AutoCommit::new().with_actor(ActorId::from(actor));
    let text = doc.put_object(ROOT, "text", ObjType::Text)?;
    doc.splice_text(&text, 0, 0, &trace.start_content)?;
    doc.commit();
    for txn in &trace.txns {
        for s in txn.splices() {
            doc.splice_text(&text, s.pos, s.delete as isize, &s.insert)?;
        }
        doc.commit();
    }
    let took = ms(started);
    anyhow::ensure!(
        doc.text(&text)? == trace.end_content,
        "the in-memory replay went wrong"
    );
    Ok((took, doc))
}

/// The trace's edits into a note through a Node and its store (one
/// `splice_many` per transaction, group commit on), closed at the end: how
/// long it took, the data dir and the note.
fn replay_through_store(
    trace: &SequentialTrace,
) -> anyhow::Result<(f64, tempfile::TempDir, NoteId)> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let node = Node::open(NodeOptions::new(dir.path()))?;
    let id = node.create(&trace.start_content)?;
    for txn in &trace.txns {
        node.splice_many(&id, &txn.splices())?;
    }
    node.close()?;
    Ok((ms(started), dir, id))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The store's files: the database and its write-ahead log.
fn store_bytes(dir: &std::path::Path) -> u64 {
    ["peernotes.sqlite3", "peernotes.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
