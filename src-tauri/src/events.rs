//! Forwards the `Node`'s events to the window as Tauri events. Owns the event
//! names and payload shapes the UI listens for (`ui/src/ipc.ts` mirrors them).
//! Events are targeted (`{id}` of the note that changed) so the UI reloads only
//! what changed; events the window does not show yet are logged here.

use std::sync::mpsc::Receiver;

use peernotes_sync::{NodeEvent, NoteId};
use serde::Serialize;
use tauri::{AppHandle, Emitter};

/// Emitted when a note was created, edited, trashed or arrived from a peer.
pub const NOTES_CHANGED: &str = "notes-changed";

#[derive(Debug, Clone, Serialize)]
struct NotesChanged {
    id: Option<NoteId>,
}

/// Spawns the thread that relays `events` to the window until the `Node` (the
/// sending side) is dropped.
pub fn forward(app: AppHandle, events: Receiver<NodeEvent>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("node-events".into())
        .spawn(move || {
            for event in events {
                let payload = match event {
                    NodeEvent::NoteChanged { id } => NotesChanged { id: Some(id) },
                    // Not shown in the window yet; keep them visible in the log.
                    NodeEvent::StoreFailed { message } => {
                        tracing::warn!(%message, "store write failed; edits kept in memory");
                        continue;
                    }
                    NodeEvent::ChunkQuarantined { id, error } => {
                        tracing::warn!(note = %id, %error, "a stored chunk was quarantined");
                        continue;
                    }
                    _ => continue,
                };
                if let Err(err) = app.emit(NOTES_CHANGED, &payload) {
                    tracing::warn!(%err, ?payload, "could not emit {NOTES_CHANGED}");
                }
            }
        })?;
    Ok(())
}
