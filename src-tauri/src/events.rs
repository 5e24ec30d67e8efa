//! Forwards the `Node`'s events to the window as Tauri events. Owns the event
//! names and payload shapes the UI listens for (`ui/src/ipc.ts` mirrors them).
//! Events are targeted (`{id}` of the note that changed) so the UI reloads only
//! what changed.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use peernotes_sync::{Node, NodeEvent, NoteId};
use serde::Serialize;
use tauri::{AppHandle, Emitter};

/// A note was created, edited, trashed or arrived from a peer.
pub const NOTES_CHANGED: &str = "notes-changed";
/// A space's name, members or notes changed.
pub const SPACES_CHANGED: &str = "spaces-changed";
/// A peer connected or disconnected.
pub const PEERS_CHANGED: &str = "peers-changed";
/// How a pairing is going.
pub const PAIRING: &str = "pairing";
/// Writing to the store failed; edits are kept in memory and retried.
pub const STORE_PROBLEM: &str = "store-problem";
/// Writing to the store works again; everything pending is saved.
pub const STORE_RECOVERED: &str = "store-recovered";
/// An owner removed this device from a space (`RemovedFromSpace`).
pub const REMOVED_FROM_SPACE: &str = "removed-from-space";
/// Where a member's cursor is in a note.
pub const PRESENCE: &str = "presence";
/// A member left: its cursors vanish.
pub const PRESENCE_GONE: &str = "presence-gone";

#[derive(Debug, Clone, Serialize)]
struct Presence {
    note: NoteId,
    peer: String,
    name: String,
    color: String,
    anchor: u32,
    head: u32,
}

#[derive(Debug, Clone, Serialize)]
struct PresenceGone {
    peer: String,
}

#[derive(Debug, Clone, Serialize)]
struct NotesChanged {
    id: Option<NoteId>,
}

#[derive(Debug, Clone, Serialize)]
struct PeersChanged {
    peer: String,
    connected: bool,
}

#[derive(Debug, Clone, Serialize)]
struct StoreProblem {
    message: String,
}

/// Payload of `removed-from-space`.
#[derive(Debug, Clone, Serialize)]
struct RemovedFromSpace {
    space: String,
    space_name: String,
    by: String,
}

/// Spawns the thread that relays `events` to the window until the `Node` (the
/// sending side) is dropped.
pub fn forward(
    app: AppHandle,
    node: Arc<Node>,
    events: Receiver<NodeEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("node-events".into())
        .spawn(move || {
            for event in events {
                let sent = match event {
                    NodeEvent::NoteChanged { id, .. } => {
                        app.emit(NOTES_CHANGED, NotesChanged { id: Some(id) })
                    }
                    NodeEvent::SpaceChanged { space } => app.emit(SPACES_CHANGED, space),
                    NodeEvent::PeerStatusChanged { peer, connected } => {
                        if !connected {
                            let gone = PresenceGone { peer: peer.clone() };
                            if let Err(err) = app.emit(PRESENCE_GONE, gone) {
                                tracing::warn!(%err, "could not emit {PRESENCE_GONE}");
                            }
                        }
                        app.emit(PEERS_CHANGED, PeersChanged { peer, connected })
                    }
                    NodeEvent::PeerPresence {
                        peer,
                        note,
                        anchor,
                        head,
                    } => {
                        let name = member_name(&node, &note, &peer);
                        let color = colour_of(&peer);
                        let presence = Presence {
                            note,
                            peer,
                            name,
                            color,
                            anchor,
                            head,
                        };
                        app.emit(PRESENCE, presence)
                    }
                    NodeEvent::Pairing { progress } => app.emit(PAIRING, progress),
                    NodeEvent::StoreFailed { message } => {
                        tracing::warn!(%message, "store write failed; edits kept in memory");
                        app.emit(STORE_PROBLEM, StoreProblem { message })
                    }
                    NodeEvent::RemovedFromSpace {
                        space,
                        space_name,
                        by,
                    } => {
                        tracing::warn!(%space, %by, "this device was removed from a space");
                        app.emit(
                            REMOVED_FROM_SPACE,
                            RemovedFromSpace {
                                space: space.to_string(),
                                space_name,
                                by,
                            },
                        )
                    }
                    NodeEvent::StoreRecovered => {
                        tracing::info!("store writes work again; everything pending is saved");
                        app.emit(STORE_RECOVERED, ())
                    }
                    NodeEvent::ChunkQuarantined { id, error } => {
                        tracing::warn!(note = %id, %error, "a stored chunk was quarantined");
                        let message = format!(
                            "Part of note “{}” could not be read and was set aside: {error}",
                            id.short()
                        );
                        app.emit(STORE_PROBLEM, StoreProblem { message })
                    }
                    NodeEvent::NoteSetAside { id, reason } => {
                        tracing::warn!(note = %id, %reason, "a damaged note was set aside from sync");
                        let message = format!(
                            "Note “{}” is damaged and no longer syncs; its last text is kept: {reason}",
                            id.short()
                        );
                        app.emit(STORE_PROBLEM, StoreProblem { message })
                    }
                    // Refusals are logged by the transport, not shown: a
                    // hostile peer could flood the window with them.
                    _ => Ok(()),
                };
                if let Err(err) = sent {
                    tracing::warn!(%err, "could not emit an event to the window");
                }
            }
        })?;
    Ok(())
}

/// The name a member goes by in the note's space (the start of its id if none).
fn member_name(node: &Node, note: &NoteId, peer: &str) -> String {
    node.space_of(note)
        .and_then(|space| node.members(space))
        .ok()
        .and_then(|members| members.into_iter().find(|m| m.node_id == peer))
        .map(|m| m.name)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| peer.chars().take(8).collect())
}

/// A stable colour per member, as CSS: the hue comes from its node id.
fn colour_of(peer: &str) -> String {
    let hue = peer
        .bytes()
        .fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u32))
        % 360;
    format!("hsl({hue}, 70%, 45%)")
}
