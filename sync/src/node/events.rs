//! The `Node`'s events: what subscribers (the app, the transport, the CLI)
//! hear about, and how they hear it. Events raised under the state lock wait
//! in its outbox and are sent once the lock is released, so a subscriber that
//! calls back into the `Node` never deadlocks.

use std::sync::mpsc::{channel, Receiver};

use serde::Serialize;

use super::{lock, Node, Shared};
use crate::note::NoteId;
use crate::space::SpaceId;

/// What happened, for subscribers (the app re-renders on these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// A note's text, title or trash state changed on this device;
    /// `by_peer`: the device whose sync message changed it, if one did
    /// (others it syncs with may have it from that device already).
    NoteChanged {
        id: NoteId,
        #[serde(skip)]
        by_peer: Option<String>,
    },
    /// Writing to the store failed; edits stay in memory and are retried.
    StoreFailed { message: String },
    /// Writing to the store works again after `StoreFailed`: everything
    /// pending is saved.
    StoreRecovered,
    /// A space's index (members, notes) changed on this device or from a peer.
    SpaceChanged { space: SpaceId },
    /// A stored chunk could not be decoded and was quarantined.
    ChunkQuarantined { id: NoteId, error: String },
    /// A peer device connected or disconnected (its status may have changed:
    /// ask `Node::status`).
    PeerStatusChanged { peer: String, connected: bool },
    /// How a pairing (by ticket or short code) is going, on either side.
    Pairing { progress: PairingProgress },
    /// A note's document cannot be loaded (it lost its shape, e.g. before
    /// this version refused such changes): it is set aside from sync; its
    /// last text is still shown.
    NoteSetAside { id: NoteId, reason: String },
    /// A peer sent something for a document that was refused (not applied,
    /// not stored, not forwarded): a change that would break the document's
    /// shape, or a document of a space it does not belong to.
    PeerRefused {
        peer: String,
        doc: String,
        reason: String,
    },
    /// An owner of `space` removed this device from it (`by` is the owner's
    /// name): nothing of it syncs any more; what is here stays, read-only.
    RemovedFromSpace {
        space: SpaceId,
        space_name: String,
        by: String,
    },
    /// Where a connected member's cursor is in a note (character offsets). It
    /// vanishes when the peer disconnects (`PeerStatusChanged`).
    PeerPresence {
        peer: String,
        note: NoteId,
        anchor: u32,
        head: u32,
    },
}

/// Steps of a pairing, for a UI to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum PairingProgress {
    /// The joiner is looking for the inviter (mDNS, for a short code).
    LookingForInviter,
    /// The joiner found the inviter and is proving it was invited.
    Exchanging { with: String },
    /// The inviter: a device is presenting an invitation.
    JoinerArrived { joiner: String },
    /// Paired: the joiner is now a member of the space.
    /// `member` is the joiner's node id, `name` the name it goes by.
    Paired {
        space: SpaceId,
        member: String,
        name: String,
    },
    /// Pairing failed; the reason is meant for the user.
    Failed { reason: String },
}

impl Node {
    /// Receives every event from now on.
    pub fn subscribe(&self) -> Receiver<NodeEvent> {
        let (tx, rx) = channel();
        lock(&self.shared.subscribers).push(tx);
        rx
    }

    pub(super) fn send_outbox(&self) {
        send_outbox(&self.shared);
    }

    /// Publishes an event raised outside the Node (by the transport).
    pub(crate) fn publish(&self, event: NodeEvent) {
        lock(&self.shared.state).outbox.push(event);
        self.send_outbox();
    }
}

pub(super) fn send_outbox(shared: &Shared) {
    let events = std::mem::take(&mut lock(&shared.state).outbox);
    if events.is_empty() {
        return;
    }
    let mut subscribers = lock(&shared.subscribers);
    subscribers.retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
}
