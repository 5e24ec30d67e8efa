//! Honest sync status: for each member of each shared space, how many of the
//! space's documents that member has not acknowledged at our current heads, and
//! how many it last said it had changes to that we lack. "In sync" means both
//! are zero, from the remembered Automerge sync states — not merely "connected".
//! Also the peer bookkeeping behind it: connected or not, last seen, and the
//! addresses each peer was reached at.

use std::collections::BTreeSet;

use automerge::sync;
use serde::Serialize;

use std::net::SocketAddr;

use super::{Node, NodeEvent, SavedSyncState, State};
use crate::datadir::DataDir;
use crate::error::Result;
use crate::membership::Role;
use crate::space::SpaceId;

/// One member of one space, as this device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub space: SpaceId,
    pub space_name: String,
    pub node_id: String,
    pub name: String,
    /// The node id of the person this device belongs to (its own, unless
    /// another device of that person linked it), and that person's name.
    pub person: String,
    pub person_name: String,
    /// One of this device's person's other devices.
    pub yours: bool,
    /// The member's role in the space.
    pub role: Role,
    /// Whether this device is an owner of the space (so may change the
    /// member's role or remove it).
    pub you_manage: bool,
    /// Connected to this data dir's running writer (app or daemon) now.
    pub connected: bool,
    /// Unix milliseconds of the last connection or disconnection, if any.
    pub last_seen: Option<i64>,
    /// Documents (notes and the space's index) the peer has not acknowledged.
    pub waiting: usize,
    /// Documents the peer last said it had changes to that this device lacks.
    pub incoming: usize,
    pub documents: usize,
}

impl PeerStatus {
    pub fn in_sync(&self) -> bool {
        self.waiting == 0 && self.incoming == 0
    }
}

impl Node {
    /// Every other member of every space, with what it still lacks from us and
    /// what we know we lack from it.
    pub fn status(&self) -> Result<Vec<PeerStatus>> {
        let writer_running = self.is_writer() || DataDir::writer_running(self.data_dir());
        self.with_state(|st| {
            st.flush_before_reading();
            let mut out = Vec::new();
            let space_ids: Vec<SpaceId> = st.spaces.keys().copied().collect();
            for space in space_ids {
                let open = st.spaces.get_mut(&space).expect("listed above");
                // A space this device was removed from (or left) syncs with
                // nobody: it has no peers to report.
                if !open.space.is_member(&st.node_id) {
                    continue;
                }
                let space_name = open.space.name();
                let members = open.space.members();
                let you_manage = open.space.role(&st.node_id) == Some(Role::Owner);
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
                    docs.push((note.to_string(), split_hashes(&heads)));
                }
                let me = st.node_id.clone();
                let my_person = members
                    .iter()
                    .find(|m| m.node_id == me)
                    .map_or_else(|| me.clone(), |m| m.person_id().to_string());
                let names: std::collections::BTreeMap<String, String> = members
                    .iter()
                    .map(|m| (m.node_id.clone(), m.name.clone()))
                    .collect();
                for member in members.iter().filter(|m| m.node_id != me).cloned() {
                    let person = member.person_id().to_string();
                    let person_name = names
                        .get(&person)
                        .cloned()
                        .unwrap_or_else(|| member.name.clone());
                    let mut waiting = 0;
                    let mut incoming = 0;
                    for (doc, heads) in &docs {
                        let saved = st.saved_sync_state(&member.node_id, doc);
                        if !acknowledged(saved.as_ref(), heads) {
                            waiting += 1;
                        }
                        let theirs = saved.map(|s| split_hashes(&s.their_heads));
                        if theirs.is_some_and(|theirs| !we_have(st, space, doc, heads, &theirs)) {
                            incoming += 1;
                        }
                    }
                    let seen = st.store.peer_last_seen(&member.node_id)?;
                    out.push(PeerStatus {
                        space,
                        space_name: space_name.clone(),
                        connected: writer_running && seen.is_some_and(|(_, c)| c),
                        last_seen: seen.map(|(at, _)| at),
                        node_id: member.node_id,
                        name: member.name,
                        yours: person == my_person,
                        person,
                        person_name,
                        role: member.role,
                        you_manage,
                        waiting,
                        incoming,
                        documents: docs.len(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// Records that a peer connected or disconnected now, and tells subscribers.
    /// On connecting, remembers the addresses it was reached at.
    pub fn peer_connected(
        &self,
        node_id: &str,
        connected: bool,
        addrs: &[SocketAddr],
    ) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            let now = super::now_ms();
            st.store.peer_seen(node_id, now, connected)?;
            if !addrs.is_empty() {
                let text: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                st.store.set_peer_addrs(node_id, &text.join(" "), now)?;
            }
            st.outbox.push(NodeEvent::PeerStatusChanged {
                peer: node_id.to_string(),
                connected,
            });
            Ok(())
        })
    }

    /// Where a peer was last reached, to dial it again.
    pub fn remembered_addresses(&self, node_id: &str) -> Vec<SocketAddr> {
        self.with_state(|st| st.store.peer_addrs(node_id))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// A transport is starting: nobody is connected yet. Returns the port it
    /// listened on last time, so members' remembered addresses stay right.
    pub fn transport_starting(&self) -> Result<Option<u16>> {
        self.with_state(|st| {
            st.require_writer()?;
            st.store.peers_disconnected()?;
            Ok(st
                .store
                .meta(LAST_PORT)?
                .and_then(|v| <[u8; 2]>::try_from(v.as_slice()).ok())
                .map(u16::from_be_bytes))
        })
    }

    /// Remembers the port the transport listens on.
    pub fn transport_listening(&self, port: u16) -> Result<()> {
        self.with_state(|st| st.store.set_meta(LAST_PORT, &port.to_be_bytes()))
    }
}

/// Metadata key of the port the transport last listened on.
const LAST_PORT: &str = "last_port";

fn split_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .map(|h| <[u8; 32]>::try_from(h).expect("32-byte chunks"))
        .collect()
}

/// Whether the peer is known to have `heads` of a document, from the
/// remembered sync state's shared heads.
fn acknowledged(saved: Option<&SavedSyncState>, heads: &[[u8; 32]]) -> bool {
    // Unknown heads (a note stored before heads were recorded, or one not here
    // yet) cannot be shown to be acknowledged: count them as waiting.
    if heads.is_empty() {
        return false;
    }
    let Some(state) = saved.and_then(|s| sync::State::decode(&s.state).ok()) else {
        return false;
    };
    let shared: BTreeSet<[u8; 32]> = state.shared_heads.iter().map(|h| h.0).collect();
    heads.iter().all(|h| shared.contains(h))
}

/// Whether this device has every change in `theirs` (the peer's last heads).
fn we_have(
    st: &mut State,
    space: SpaceId,
    doc: &str,
    ours: &[[u8; 32]],
    theirs: &[[u8; 32]],
) -> bool {
    if theirs.iter().all(|h| ours.contains(h)) {
        return true;
    }
    let hashes: Vec<automerge::ChangeHash> =
        theirs.iter().map(|h| automerge::ChangeHash(*h)).collect();
    if doc == space.doc_key() {
        return match st.spaces.get_mut(&space) {
            Some(open) => {
                let doc = open.space.doc_mut();
                hashes
                    .iter()
                    .all(|h| doc.get_change_meta_by_hash(h).is_some())
            }
            None => false,
        };
    }
    let Ok(id) = doc.parse::<crate::note::NoteId>() else {
        return true;
    };
    match st.load(&id) {
        Ok(open) => {
            let doc = open.note.doc_mut();
            hashes
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some())
        }
        Err(_) => false,
    }
}
