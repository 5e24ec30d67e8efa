//! Honest sync status: for each member of each shared space, how many of the
//! space's documents that member has not acknowledged at our current heads.
//! "In sync" means every document's heads are among the heads both sides are
//! known to have (the remembered Automerge sync state) — not merely "connected".

use std::collections::BTreeSet;

use automerge::sync;
use serde::Serialize;

use super::{Node, NodeEvent, State};
use crate::error::Result;
use crate::space::SpaceId;

/// One member of one space, as this device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub space: SpaceId,
    pub space_name: String,
    pub node_id: String,
    pub name: String,
    /// Unix milliseconds of the last connection, if there was one.
    pub last_seen: Option<i64>,
    /// Documents (notes and the space's index) the peer has not acknowledged.
    pub waiting: usize,
    pub documents: usize,
}

impl PeerStatus {
    pub fn in_sync(&self) -> bool {
        self.waiting == 0
    }
}

impl Node {
    /// Every other member of every space, with what it still lacks from us.
    pub fn status(&self) -> Result<Vec<PeerStatus>> {
        self.with_state(|st| {
            st.flush()?;
            let mut out = Vec::new();
            let space_ids: Vec<SpaceId> = st.spaces.keys().copied().collect();
            for space in space_ids {
                let open = st.spaces.get_mut(&space).expect("listed above");
                let space_name = open.space.name();
                let members = open.space.members();
                let mut docs: Vec<(String, Vec<[u8; 32]>)> = vec![(
                    space.doc_key(),
                    open.space.heads().iter().map(|h| h.0).collect(),
                )];
                for note in open.space.notes() {
                    let heads = st
                        .store
                        .row(note.as_str())?
                        .map(|r| r.heads)
                        .unwrap_or_default();
                    let heads = heads
                        .chunks_exact(32)
                        .map(|h| <[u8; 32]>::try_from(h).expect("32-byte chunks"))
                        .collect();
                    docs.push((note.to_string(), heads));
                }
                for member in members.into_iter().filter(|m| m.node_id != st.node_id) {
                    let waiting = docs
                        .iter()
                        .filter(|(doc, heads)| !acknowledged(st, &member.node_id, doc, heads))
                        .count();
                    out.push(PeerStatus {
                        space,
                        space_name: space_name.clone(),
                        last_seen: st.store.peer_last_seen(&member.node_id)?,
                        node_id: member.node_id,
                        name: member.name,
                        waiting,
                        documents: docs.len(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// Records that a peer is connected now (the transport calls this).
    /// Records that a peer connected or disconnected now, and tells subscribers.
    pub fn peer_connected(&self, node_id: &str, connected: bool) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            st.store.peer_seen(node_id, super::now_ms())?;
            st.outbox.push(NodeEvent::PeerStatusChanged {
                peer: node_id.to_string(),
                connected,
            });
            Ok(())
        })
    }
}

/// Whether `peer` is known to have `heads` of `doc`.
fn acknowledged(st: &State, peer: &str, doc: &str, heads: &[[u8; 32]]) -> bool {
    let key = (peer.to_string(), doc.to_string());
    let bytes = match st.sync_states.get(&key) {
        Some(bytes) => Some(bytes.clone()),
        None => st.store.sync_state(peer, doc).ok().flatten(),
    };
    // Unknown heads (a note stored before heads were recorded, or one not here
    // yet) cannot be shown to be acknowledged: count them as waiting.
    if heads.is_empty() {
        return false;
    }
    let Some(state) = bytes.and_then(|b| sync::State::decode(&b).ok()) else {
        return false;
    };
    let shared: BTreeSet<[u8; 32]> = state.shared_heads.iter().map(|h| h.0).collect();
    heads.iter().all(|h| shared.contains(h))
}
