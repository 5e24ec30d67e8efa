//! `peernotes serve`: an always-on peer. It listens for members' devices, keeps
//! connections to the peers it is told about, syncs until SIGINT or SIGTERM, and
//! then closes its connections and flushes the store before it exits.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use peernotes_sync::net::{parse_peer, NetConfig, Transport};
use peernotes_sync::Node;

pub fn run(node: Node, peers: Vec<String>) -> anyhow::Result<()> {
    let peers = peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = NetConfig::load(node.data_dir())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let node = Arc::new(node);
    runtime.block_on(async {
        let net = Transport::bind(node.clone(), &config).await?;
        net.spawn_accept();
        let addr = net.addr();
        {
            // Machine-readable start-up lines: scripts and tests wait for them.
            let mut out = std::io::stdout().lock();
            writeln!(out, "node {}", node.node_id())?;
            for ip in addr.ip_addrs() {
                writeln!(out, "listening {ip}")?;
            }
            out.flush()?;
        }
        tracing::info!(node = %node.node_id(), "serving");
        for peer in peers {
            net.keep_connected(peer);
        }
        // Every other member, found by mDNS or through the relay.
        net.connect_members();
        shutdown_signal().await?;
        tracing::info!("shutting down");
        net.close().await;
        anyhow::Ok(())
    })?;
    drop(runtime);
    let node = Arc::into_inner(node).context("the store is still in use at shutdown")?;
    node.close()?;
    eprintln!("peernotes: stopped; everything is saved");
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
