//! A running peer that a test can edit through: opens a `Node`, listens with the
//! data dir's network settings (`config.toml` and `PEERNOTES_*`), keeps in touch
//! with every member it knows, and takes commands on stdin, one per line:
//!
//! - `append <note> <text>`: appends the text as a line to the note (id or the
//!   start of one);
//! - `text <note>`: prints `text <JSON string>` with the note's text;
//! - `cursor <note> <offset>`: shows connected members a cursor at that offset;
//! - `prepend-lines <note> <count> <ms>`: from now on, in the background, puts
//!   `bob line <i>` lines at the top of the note, one every `ms`;
//! - `quit`: closes connections, flushes and exits.
//!
//! It prints `ready <node id>` once listening. Usage: live-peer <data-dir>

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::Context;
use peernotes_sync::net::{NetConfig, Transport};
use peernotes_sync::{Node, NodeOptions};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: live-peer <data-dir>")?;
    let node = Arc::new(Node::open(NodeOptions::new(&dir))?);
    let config = NetConfig::load(node.data_dir())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let net = runtime.block_on(async {
        let net = Transport::bind(node.clone(), &config).await?;
        net.spawn_accept();
        net.connect_members();
        anyhow::Ok(net)
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", node.node_id())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (command, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match command {
            "append" => {
                let (note, text) = rest.split_once(' ').context("append <note> <text>")?;
                let id = node.find(note)?;
                let end = node.get(&id)?.text.chars().count();
                node.splice(&id, end, 0, &format!("{text}\n"))?;
                node.flush()?;
                writeln!(out, "ok")?;
            }
            "text" => {
                let id = node.find(rest)?;
                writeln!(out, "text {}", serde_json::to_string(&node.get(&id)?.text)?)?;
            }
            "cursor" => {
                let (note, offset) = rest.split_once(' ').context("cursor <note> <offset>")?;
                let offset: usize = offset.trim().parse()?;
                net.share_presence(&node.find(note)?, offset, offset)?;
                writeln!(out, "ok")?;
            }
            "prepend-lines" => {
                let mut words = rest.split_whitespace();
                let (Some(note), Some(count), Some(pause)) =
                    (words.next(), words.next(), words.next())
                else {
                    anyhow::bail!("prepend-lines <note> <count> <ms>");
                };
                let (id, count, pause): (_, u32, u64) =
                    (node.find(note)?, count.parse()?, pause.parse()?);
                let node = node.clone();
                std::thread::spawn(move || {
                    for i in 0..count {
                        if let Err(e) = node.splice(&id, 0, 0, &format!("bob line {i}\n")) {
                            eprintln!("live-peer: prepend failed: {e}");
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(pause));
                    }
                });
                writeln!(out, "ok")?;
            }
            "quit" => break,
            other => anyhow::bail!("unknown command `{other}`"),
        }
        out.flush()?;
    }
    runtime.block_on(net.close());
    drop(runtime);
    Arc::into_inner(node)
        .context("the node is still in use")?
        .close()?;
    Ok(())
}
