//! `peernotes serve`: an always-on peer. It listens for members' devices, keeps
//! connections to the peers it is told about, answers CLI commands on the data
//! dir's control socket, syncs until SIGINT or SIGTERM (or a `stop` request,
//! when the app takes over), and then closes its connections and flushes the
//! store before it exits.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use peernotes_sync::control::{HolderKind, Hooks, Server};
use peernotes_sync::network::CLOSE_LIMIT_COMMAND;
use peernotes_sync::{Network, Node, NodeEvent, PeerAddr};

use crate::output;
use tokio::sync::Notify;

pub fn run(node: Node, peers: Vec<String>) -> anyhow::Result<()> {
    let peers = peers
        .iter()
        .map(|p| p.parse::<PeerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let node = Arc::new(node);
    tell_removals(&node)?;
    let network = Network::new(node.clone());
    runtime.block_on(async {
        network.start().await?;
        let stop = Arc::new(Notify::new());
        let hooks = Hooks {
            focus: None,
            stop: Some(stop.clone()),
        };
        let control = match Server::start(network.clone(), HolderKind::Serve, hooks) {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::warn!("CLI commands cannot reach this daemon: {e}");
                None
            }
        };
        {
            // Machine-readable start-up lines: scripts and tests wait for them.
            let mut out = std::io::stdout().lock();
            writeln!(out, "node {}", node.node_id())?;
            for ip in network.listening() {
                writeln!(out, "listening {ip}")?;
            }
            out.flush()?;
        }
        tracing::info!(node = %node.node_id(), "serving");
        for peer in &peers {
            network.keep_connected(peer)?;
        }
        tokio::select! {
            signal = shutdown_signal() => signal?,
            () = stop.notified() => tracing::info!("asked to stop over the control socket"),
        }
        tracing::info!("shutting down");
        drop(control);
        network.close_within(CLOSE_LIMIT_COMMAND).await;
        anyhow::Ok(())
    })?;
    drop(runtime);
    drop(network);
    let node = Arc::into_inner(node).context("the store is still in use at shutdown")?;
    node.close()?;
    eprintln!("peernotes: stopped; everything is saved");
    Ok(())
}

/// Says on stderr when an owner removes this device from a space.
fn tell_removals(node: &Node) -> anyhow::Result<()> {
    let events = node.subscribe();
    std::thread::Builder::new()
        .name("peernotes-removals".into())
        .spawn(move || {
            for event in events {
                if let NodeEvent::RemovedFromSpace { space_name, by, .. } = event {
                    eprintln!(
                        "peernotes: you were removed from {} by {}; it no longer syncs",
                        output::printable(&space_name),
                        output::printable(&by)
                    );
                }
            }
        })
        .context("cannot start the event thread")?;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
