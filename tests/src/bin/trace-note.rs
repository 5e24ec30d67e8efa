//! Makes a note carrying a whole editing trace's history: one Automerge commit
//! per trace transaction, through the `Node` and its store, as if typed. Prints
//! the note's id. For the end-to-end tests (a note with a long history) and the
//! benchmarks.
//!
//! Usage: trace-note <data-dir> <trace name, e.g. automerge-paper> [transactions]

use anyhow::Context;
use peernotes_sync::{Node, NodeOptions};
use peernotes_tests::load_sequential_trace;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: trace-note <data-dir> <trace> [transactions]";
    let dir = args.next().context(usage)?;
    let name = args.next().context(usage)?;
    let limit: Option<usize> = args.next().map(|n| n.parse()).transpose()?;
    let trace = load_sequential_trace(&name)?;
    let node = Node::open(NodeOptions::new(&dir))?;
    let id = node.create(&trace.start_content)?;
    let count = limit.unwrap_or(trace.txns.len()).min(trace.txns.len());
    for txn in &trace.txns[..count] {
        node.splice_many(&id, &txn.splices())?;
    }
    node.close()?;
    println!("{id}");
    Ok(())
}
