//! The large-note row: a 50 MB note syncs to an empty member over a real
//! iroh connection on loopback, beside what Automerge alone takes to load
//! the same note's save in memory (what the receiver cannot avoid).
//!
//! The note's text is seph-blog1's final text over and over, each copy
//! numbered, so it compresses like prose. It is created on one device in
//! this process, written to its store, and then the other connects.

use std::time::{Duration, Instant};

use peernotes_sync::net::NetConfig;
use peernotes_tests::{load_sequential_trace, team};

use crate::replay::ms;
use crate::report::Row;

/// How long the note is, in bytes of Markdown.
const NOTE_BYTES: usize = 50 * 1000 * 1000;

pub async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("large note: a 50 MB note to an empty peer…");
    let text = prose(NOTE_BYTES)?;
    let net = NetConfig::loopback();
    let (alice, bob) = (
        peernotes_tests::device(&net).await?,
        peernotes_tests::device(&net).await?,
    );
    let space = team(&alice.node, &bob.node);
    let id = alice.node.create_in(space, &text)?;
    alice.node.flush()?;
    let saved = alice.node.note_document(&id)?;
    let started = Instant::now();
    let _loaded = automerge::AutoCommit::load(&saved)?;
    let load_ms = ms(started);
    drop(_loaded);
    eprintln!(
        "  saved {:.1} MB, loaded in {load_ms:.0} ms; Bob syncs it…",
        saved.len() as f64 / 1e6
    );

    let started = Instant::now();
    let _driver = bob.net.connect(alice.net.addr()).await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let arrived = bob
            .node
            .get(&id)
            .map(|note| note.text.len() == text.len())
            .unwrap_or(false);
        if arrived {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the 50 MB note did not reach Bob within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sync_ms = ms(started);
    let bytes = bob.net.activity().bytes_sent() + bob.net.activity().bytes_received();
    bob.net.clone().close().await;
    alice.net.clone().close().await;

    rows.push(
        Row::new("50 MB note to an empty peer", sync_ms, "ms")
            .against("Automerge load of its save, in memory", load_ms),
    );
    rows.push(
        Row::new("50 MB note to an empty peer: bytes", bytes as f64, "bytes")
            .against("its saved size", saved.len() as f64)
            .target(
                "≤ 1.1× its saved size",
                bytes as f64 <= 1.1 * saved.len() as f64,
            ),
    );
    Ok(())
}

/// About `len` bytes of prose: a blog post's text, copy after numbered copy.
fn prose(len: usize) -> anyhow::Result<String> {
    let post = load_sequential_trace("seph-blog1")?.end_content;
    let mut text = String::with_capacity(len + post.len());
    let mut copy = 0;
    while text.len() < len {
        copy += 1;
        text.push_str(&format!("\n## Copy {copy}\n\n"));
        text.push_str(&post);
    }
    Ok(text)
}
