//! Holding the data dir: one app per data dir, and the hand-over from a
//! `peernotes serve` daemon. At launch the app either opens the data dir,
//! finds its own first window on the control socket (asks it to come to the
//! front and exits), or finds a daemon holding it: then the window opens on a
//! "take over" screen, and taking over asks the daemon to save and stop, opens
//! the data dir, and starts sync here. Once it holds the data dir the app
//! forwards the `Node`'s events, starts the `Network` in the background and
//! serves the control socket, so CLI commands work while the window is open.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use peernotes_sync::control::{Client, Holder, HolderKind, Hooks, Server};
use peernotes_sync::{Error, Network, Node, NodeOptions};
use tauri::{AppHandle, Manager};

use crate::commands::{App, Opened};
use crate::events;

/// How long a launch waits for a short-lived command holding the data dir.
const WAIT_FOR_LOCK: Duration = Duration::from_secs(5);
/// How long a daemon asked to stop may take to save and let go.
const WAIT_FOR_HANDOVER: Duration = Duration::from_secs(30);

/// How a launch found the data dir.
pub enum Launch {
    /// Opened here.
    Open(Node),
    /// The app already has it open; its window was brought to the front.
    Focused,
    /// A daemon holds it: the window offers to take over.
    HeldBy(Holder),
}

/// The control socket while this process holds the data dir.
#[derive(Default)]
pub struct ControlSocket(Mutex<Option<Server>>);

impl ControlSocket {
    /// Stops answering (the socket file is removed).
    pub fn close(&self) {
        drop(self.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Opens the data dir, unless another process holds it. With `take_over`, a
/// daemon holding it is asked to stop first.
pub fn launch(dir: &Path, take_over: bool) -> anyhow::Result<Launch> {
    let deadline = Instant::now() + WAIT_FOR_LOCK;
    loop {
        let in_use = match Node::open(NodeOptions::new(dir)) {
            Ok(node) => return Ok(Launch::Open(node)),
            Err(in_use @ Error::DataDirInUse { .. }) => in_use,
            Err(e) => return Err(e.into()),
        };
        if let Some(client) = Client::connect(dir)? {
            let holder = client.holder().clone();
            match holder.kind {
                HolderKind::App => {
                    client.focus()?;
                    eprintln!(
                        "peernotes-app: Peernotes is already open on {} (pid {}); \
                         its window was brought to the front",
                        dir.display(),
                        holder.pid
                    );
                    return Ok(Launch::Focused);
                }
                HolderKind::Serve if take_over => return Ok(Launch::Open(take_over_from(dir)?)),
                _ => return Ok(Launch::HeldBy(holder)),
            }
        }
        if Instant::now() > deadline {
            return Err(in_use.into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks the daemon holding `dir` to save and stop, then opens `dir` once it
/// has let go. Blocking.
pub fn take_over_from(dir: &Path) -> anyhow::Result<Node> {
    if let Some(client) = Client::connect(dir)? {
        let holder = client.holder().clone();
        client
            .stop()
            .with_context(|| format!("the {} (pid {}) would not stop", holder.kind, holder.pid))?;
        tracing::info!(
            pid = holder.pid,
            "asked the daemon to hand over the data dir"
        );
    }
    let deadline = Instant::now() + WAIT_FOR_HANDOVER;
    loop {
        match Node::open(NodeOptions::new(dir)) {
            Ok(node) => {
                eprintln!(
                    "peernotes-app: took over from the daemon; sync continues in this window"
                );
                return Ok(node);
            }
            Err(in_use @ Error::DataDirInUse { .. }) => {
                if Instant::now() > deadline {
                    return Err(anyhow::Error::from(in_use)
                        .context("the daemon did not let go of the data dir in time"));
                }
            }
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes this process the data dir's holder: the window hears the `Node`'s
/// events, sync starts in the background (it never delays the notes), and
/// the control socket answers CLI commands and later launches.
pub fn hold(app: &AppHandle, node: Node) -> anyhow::Result<()> {
    let node = Arc::new(node);
    events::forward(app.clone(), node.clone(), node.subscribe())?;
    let network = Network::new(node.clone());
    let starting = network.clone();
    tauri::async_runtime::spawn(async move {
        if let Err(e) = starting.start().await {
            tracing::warn!("sync could not start: {e:#}");
        }
    });
    let handle = app.clone();
    let hooks = Hooks {
        focus: Some(Arc::new(move || focus_window(&handle))),
        stop: None,
    };
    // The socket is served on the async runtime: from a command we are on it
    // already; from start-up, enter it.
    let start = || Server::start(network.clone(), HolderKind::App, hooks);
    let server = match tokio::runtime::Handle::try_current() {
        Ok(_) => start(),
        Err(_) => tauri::async_runtime::block_on(async { start() }),
    };
    match server {
        Ok(server) => {
            *app.state::<ControlSocket>()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(server)
        }
        Err(e) => tracing::warn!("CLI commands cannot reach this window: {e}"),
    }
    app.state::<App>().set_opened(Opened { node, network });
    Ok(())
}

/// Brings the window to the front (a later launch asked for it).
fn focus_window(app: &AppHandle) {
    let Some(window) = app.get_webview_window("main") else {
        return;
    };
    let shown = window
        .unminimize()
        .and_then(|()| window.show())
        .and_then(|()| window.set_focus());
    if let Err(e) = shown {
        tracing::warn!("cannot bring the window to the front: {e}");
    }
}
