//! `peernotes-app`, the desktop window: opens the `Node` for the data dir, then
//! serves the UI's commands (`commands`) and forwards the `Node`'s events to it
//! (`events`). It owns no note state and no logic: everything a note is or does
//! lives in `peernotes-sync`, so the app and the CLI behave alike.
//!
//! Start-up order matters: the data dir is opened (by `holding::launch`)
//! *before* the window exists, so a command never runs against a half-open
//! store. When a `peernotes serve` daemon holds it instead, the window opens
//! first and commands answer `held` until the user takes over. One app per
//! data dir, and the hand-over, are `holding`'s. If the data
//! dir cannot be opened (the store is damaged, ...) the reason goes to stderr
//! and the process exits non-zero.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod events;
mod holding;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context};
use holding::{ControlSocket, Launch};
use peernotes_sync::DataDir;
use tauri::Manager;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
Usage: peernotes-app [--data-dir DIR] [--take-over]

Opens the Peernotes window on the notes in DIR. Without --data-dir the data dir
is $PEERNOTES_DATA, else the platform default (the same one `peernotes` uses).
If the app is already open on DIR, its window comes to the front instead.
If a `peernotes serve` daemon holds DIR, the window offers to take over.
--take-over: take over from such a daemon at once (it saves and stops, and
sync continues in the window).";

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
    let (node, held_by) = match holding::launch(&data_dir, args.take_over)? {
        Launch::Open(node) => (Some(node), None),
        Launch::Focused => return Ok(()),
        Launch::HeldBy(holder) => (None, Some(holder)),
    };
    let node = Mutex::new(node);

    tauri::Builder::default()
        .manage(commands::App::new(data_dir, held_by))
        .manage(ControlSocket::default())
        .invoke_handler(tauri::generate_handler![
            commands::device_state,
            commands::take_over,
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
            commands::set_role,
            commands::network_status,
            commands::invite,
            commands::invite_device,
            commands::remove_device,
            commands::cancel_invite,
            commands::join,
            commands::set_presence,
        ])
        .setup(move |app| {
            let opened = node.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(node) = opened {
                holding::hold(app.handle(), node)?;
            }
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("the Peernotes window could not start")?
        .run(|app, event| {
            // Tauri ends the process without dropping managed state, so flush here:
            // an edit made just before closing the window must not wait for a timer.
            if let tauri::RunEvent::Exit = event {
                app.state::<ControlSocket>().close();
                if let Some(opened) = app.state::<commands::App>().opened() {
                    tauri::async_runtime::block_on(opened.network.close());
                    if let Err(err) = opened.node.flush() {
                        eprintln!("peernotes-app: the last edits could not be saved: {err}");
                    }
                }
            }
        });
    Ok(())
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
