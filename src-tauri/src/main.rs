//! `peernotes-app`, the desktop window: opens the `Node` for the data dir, then
//! serves the UI's commands (`commands`) and forwards the `Node`'s events to it
//! (`events`). It owns no note state and no logic: everything a note is or does
//! lives in `peernotes-sync`, so the app and the CLI behave alike.
//!
//! Start-up order matters: the `Node` is opened *before* the window exists, so a
//! command can never run against a half-open store. One app per data dir: a
//! second launch finds the first on the data dir's control socket, brings its
//! window to the front and exits. A `peernotes serve` daemon holding the data
//! dir is named, and with `--take-over` asked to flush and stop so the window
//! can open. If the data dir cannot be opened otherwise (the store is damaged,
//! ...) the reason goes to stderr and the process exits non-zero.
//!
//! Once the window exists the app starts the `Network` in the background (the
//! window never waits for it) and serves the control socket, so every CLI
//! command works while the window is open.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod events;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use peernotes_sync::control::{Client, HolderKind, Hooks, Server};
use peernotes_sync::node::Window;
use peernotes_sync::{DataDir, Error, Network, Node, NodeOptions};
use tauri::Manager;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
Usage: peernotes-app [--data-dir DIR] [--take-over]

Opens the Peernotes window on the notes in DIR. Without --data-dir the data dir
is $PEERNOTES_DATA, else the platform default (the same one `peernotes` uses).
If the app is already open on DIR, its window comes to the front instead.
--take-over: if a `peernotes serve` daemon holds DIR, ask it to save and stop,
and sync in the window instead.";

/// How long a launch waits for a short-lived command holding the data dir.
const WAIT_FOR_LOCK: Duration = Duration::from_secs(5);
/// How long a daemon asked to stop may take to save and let go.
const WAIT_FOR_HANDOVER: Duration = Duration::from_secs(30);

/// The control socket while the window is open.
struct ControlSocket(Mutex<Option<Server>>);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peernotes-app: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let data_dir = DataDir::resolve(args.data_dir)?;
    tracing::info!(data_dir = %data_dir.display(), "opening node");
    let Some(node) = open_or_hand_over(&data_dir, args.take_over)? else {
        return Ok(());
    };
    let node = Arc::new(node);
    let node_events = node.subscribe();
    let network = Network::new(node.clone());
    let app_state = commands::App {
        node: node.clone(),
        network: network.clone(),
        window: Window::new(),
    };

    tauri::Builder::default()
        .manage(app_state)
        .manage(ControlSocket(Mutex::new(None)))
        .invoke_handler(tauri::generate_handler![
            commands::list_notes,
            commands::get_note,
            commands::search_notes,
            commands::create_note,
            commands::trash_note,
            commands::restore_note,
            commands::load_note_doc,
            commands::sync_note,
            commands::close_note_doc,
            commands::device_id,
            commands::list_spaces,
            commands::create_space,
            commands::list_members,
            commands::remove_member,
            commands::network_status,
            commands::invite,
            commands::cancel_invite,
            commands::join,
            commands::set_presence,
        ])
        .setup(move |app| {
            events::forward(app.handle().clone(), node.clone(), node_events)?;
            // Sync starts once the window exists: it never delays the notes.
            let starting = network.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = starting.start().await {
                    tracing::warn!("sync could not start: {e:#}");
                }
            });
            let handle = app.handle().clone();
            let hooks = Hooks {
                focus: Some(Arc::new(move || focus_window(&handle))),
                stop: None,
            };
            let server = tauri::async_runtime::block_on(async {
                Server::start(network.clone(), HolderKind::App, hooks)
            });
            match server {
                Ok(server) => {
                    *app.state::<ControlSocket>()
                        .0
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(server)
                }
                Err(e) => tracing::warn!("CLI commands cannot reach this window: {e}"),
            }
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("the Peernotes window could not start")?
        .run(|app, event| {
            // Tauri ends the process without dropping managed state, so flush here:
            // an edit made just before closing the window must not wait for a timer.
            if let tauri::RunEvent::Exit = event {
                let control = app.state::<ControlSocket>();
                drop(control.0.lock().unwrap_or_else(|e| e.into_inner()).take());
                let state = app.state::<commands::App>();
                tauri::async_runtime::block_on(state.network.close());
                if let Err(err) = state.node.flush() {
                    eprintln!("peernotes-app: the last edits could not be saved: {err}");
                }
            }
        });
    Ok(())
}

/// Opens the data dir, unless the app already has it open (its window is
/// brought to the front: `Ok(None)`) or a daemon holds it (named; with
/// `take_over` asked to stop first).
fn open_or_hand_over(dir: &Path, take_over: bool) -> anyhow::Result<Option<Node>> {
    let mut deadline = Instant::now() + WAIT_FOR_LOCK;
    let mut asked_to_stop = false;
    loop {
        let in_use = match Node::open(NodeOptions::new(dir)) {
            Ok(node) => {
                if asked_to_stop {
                    eprintln!(
                        "peernotes-app: took over from the daemon; sync continues in this window"
                    );
                }
                return Ok(Some(node));
            }
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
                    return Ok(None);
                }
                HolderKind::Serve if take_over => {
                    if !asked_to_stop {
                        client.stop()?;
                        asked_to_stop = true;
                        deadline = Instant::now() + WAIT_FOR_HANDOVER;
                    }
                }
                kind => bail!(
                    "{} is held by the {kind} (pid {}), which syncs it in the background; \
                     run `peernotes-app --take-over` to have it save and stop and sync \
                     in the window instead",
                    dir.display(),
                    holder.pid
                ),
            }
        }
        if Instant::now() > deadline {
            return Err(in_use.into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Brings the window to the front (a second launch asked for it).
fn focus_window(app: &tauri::AppHandle) {
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

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    data_dir: Option<PathBuf>,
    take_over: bool,
}

/// `Ok(None)` for `--help`; otherwise the flags given.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--take-over" => parsed.take_over = true,
            "--data-dir" => match args.next() {
                Some(dir) => parsed.data_dir = Some(PathBuf::from(dir)),
                None => bail!("--data-dir needs a directory\n\n{USAGE}"),
            },
            _ => match arg.strip_prefix("--data-dir=") {
                Some(dir) => parsed.data_dir = Some(PathBuf::from(dir)),
                None => bail!("unexpected argument `{arg}`\n\n{USAGE}"),
            },
        }
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Args>> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn dir(path: &str) -> Option<Args> {
        Some(Args {
            data_dir: Some(PathBuf::from(path)),
            take_over: false,
        })
    }

    #[test]
    fn data_dir_flag_is_read_in_both_spellings() {
        assert_eq!(parse(&[]).unwrap(), Some(Args::default()));
        assert_eq!(parse(&["--data-dir", "/tmp/a"]).unwrap(), dir("/tmp/a"));
        assert_eq!(parse(&["--data-dir=/tmp/b"]).unwrap(), dir("/tmp/b"));
        assert_eq!(parse(&["--help"]).unwrap(), None);
        let taking = parse(&["--take-over"]).unwrap().unwrap();
        assert!(taking.take_over);
    }

    #[test]
    fn unknown_arguments_are_refused_with_usage() {
        let err = parse(&["--verbose"]).unwrap_err().to_string();
        assert!(err.contains("unexpected argument `--verbose`"), "{err}");
        assert!(err.contains("Usage:"), "{err}");
        assert!(parse(&["--data-dir"]).is_err());
    }
}
