//! `peernotes-app`, the desktop window: opens the `Node` for the data dir, then
//! serves the UI's commands (`commands`) and forwards the `Node`'s events to it
//! (`events`). It owns no note state and no logic: everything a note is or does
//! lives in `peernotes-sync`, so the app and the CLI behave alike.
//!
//! Start-up order matters: the `Node` is opened *before* the window exists, so a
//! command can never run against a half-open store. If the data dir cannot be
//! opened (another process holds it, the store is damaged, ...) the reason goes
//! to stderr and the process exits non-zero.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod events;
mod network;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use peernotes_sync::{DataDir, Node, NodeOptions};
use tauri::Manager;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
Usage: peernotes-app [--data-dir DIR]

Opens the Peernotes window on the notes in DIR. Without --data-dir the data dir
is $PEERNOTES_DATA, else the platform default (the same one `peernotes` uses).";

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
    let Some(flag) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let data_dir = DataDir::resolve(flag)?;
    tracing::info!(data_dir = %data_dir.display(), "opening node");
    let node = Arc::new(Node::open(NodeOptions::new(data_dir))?);
    let node_events = node.subscribe();
    let network = Arc::new(network::Network::default());
    let app_state = commands::App {
        node: node.clone(),
        network: network.clone(),
        windows: Mutex::new(HashMap::new()),
    };

    tauri::Builder::default()
        .manage(app_state)
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
            network.start(node);
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("the Peernotes window could not start")?
        .run(|app, event| {
            // Tauri ends the process without dropping managed state, so flush here:
            // an edit made just before closing the window must not wait for a timer.
            if let tauri::RunEvent::Exit = event {
                let state = app.state::<commands::App>();
                state.network.close();
                if let Err(err) = state.node.flush() {
                    eprintln!("peernotes-app: the last edits could not be saved: {err}");
                }
            }
        });
    Ok(())
}

/// `Ok(None)` for `--help`; otherwise the `--data-dir` flag, if given.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Option<PathBuf>>> {
    let mut data_dir = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--data-dir" => match args.next() {
                Some(dir) => data_dir = Some(PathBuf::from(dir)),
                None => bail!("--data-dir needs a directory\n\n{USAGE}"),
            },
            _ => match arg.strip_prefix("--data-dir=") {
                Some(dir) => data_dir = Some(PathBuf::from(dir)),
                None => bail!("unexpected argument `{arg}`\n\n{USAGE}"),
            },
        }
    }
    Ok(Some(data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Option<PathBuf>>> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn data_dir_flag_is_read_in_both_spellings() {
        assert_eq!(parse(&[]).unwrap(), Some(None));
        assert_eq!(
            parse(&["--data-dir", "/tmp/a"]).unwrap(),
            Some(Some(PathBuf::from("/tmp/a")))
        );
        assert_eq!(
            parse(&["--data-dir=/tmp/b"]).unwrap(),
            Some(Some(PathBuf::from("/tmp/b")))
        );
        assert_eq!(parse(&["--help"]).unwrap(), None);
    }

    #[test]
    fn unknown_arguments_are_refused_with_usage() {
        let err = parse(&["--verbose"]).unwrap_err().to_string();
        assert!(err.contains("unexpected argument `--verbose`"), "{err}");
        assert!(err.contains("Usage:"), "{err}");
        assert!(parse(&["--data-dir"]).is_err());
    }
}
