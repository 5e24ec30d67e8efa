//! A child process for the crash test: edits notes in a loop through `Node` and
//! prints `committed <n>` after each group commit it has seen succeed. The test
//! kills it with SIGKILL at random moments and checks that every reported edit
//! survived.
//!
//! Usage: crash-child <data-dir> <run> <journal-note-id>

use std::io::Write;

use peernotes_sync::{Node, NodeOptions, NoteId};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: crash-child <data-dir> <run> <journal-note-id>"
    );
    let (dir, run, journal): (&str, u64, NoteId) = (&args[1], args[2].parse()?, args[3].parse()?);
    let node = Node::open(NodeOptions::new(dir))?;
    let id = node.create(&format!("run {run}\n"))?;
    node.flush()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "note {id}")?;
    out.flush()?;
    for i in 1u64.. {
        let end = node.get(&id)?.text.chars().count();
        node.splice(&id, end, 0, &format!("line {i}\n"))?;
        let end = node.get(&journal)?.text.chars().count();
        node.splice(&journal, end, 0, &format!("r{run} {i}\n"))?;
        // Flush at varying intervals so kills land in edits, commits and compactions.
        if i % (1 + run % 4) == 0 {
            node.flush()?;
            writeln!(out, "committed {i}")?;
            out.flush()?;
        }
    }
    Ok(())
}
