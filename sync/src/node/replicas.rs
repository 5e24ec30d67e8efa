//! The `Node`'s documents as the sync protocol sees them, for one remote peer
//! (`protocol::Replicas`). A peer sees only the spaces it is a member of (and a
//! space this device is joining, only with its inviter), and within a space
//! only the notes this device's own store files under it: whatever a space's
//! index lists, a note of another space is neither described, sent nor
//! changed. Everything received passes admission (`admit`) before it touches a
//! document; what does not is refused (reported by the session, which goes
//! on). Documents still arriving are held per peer, at most
//! `MAX_INCOMING_PER_PEER`, and dropped when that peer's last connection
//! closes. Received changes are committed by the group commit, like local ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ObjType, ReadDoc, Value, ROOT};

use super::admit::{admit, changes_in, Shape};
use super::attest;
use super::cache::ArrivedWhole;
use super::preload::{Loaded, Preloaded};
use super::spaces::OpenSpace;
use super::{decode_heads, lock, now_ms, Node, NodeEvent, OpenNote, SavedSyncState, State};
use crate::authorship::{Attestation, ChangeNode, DeviceKey};
use crate::error::{Error, Result};
use crate::membership::{self, Log, Role as MemberRole};
use crate::note::{Note, NoteId};
use crate::protocol::frame::{hashes, DocKey, Hash, SpaceKey};
use crate::protocol::{Replicas, SavedDocument};
use crate::space::{Space, SpaceId};
use crate::store::ChunkKind;

/// Most documents that may be arriving (not yet whole) from one peer at once.
pub const MAX_INCOMING_PER_PEER: usize = 10_000;

/// This device's documents, as one peer may see them.
pub struct PeerReplicas<'a> {
    st: &'a mut State,
    peer: String,
    /// The document of the frame being handled, loaded ahead (`preload`).
    preloaded: Option<Preloaded>,
}

impl Node {
    /// Runs `f` with this device's documents as `peer` (a node id) may see them,
    /// to drive a `protocol::Session`.
    pub fn with_peer<R>(&self, peer: &str, f: impl FnOnce(&mut PeerReplicas<'_>) -> R) -> R {
        self.with_peer_preloaded(peer, None, f)
    }

    /// `with_peer`, for handling a frame whose document was loaded ahead.
    pub fn with_peer_preloaded<R>(
        &self,
        peer: &str,
        preloaded: Option<Preloaded>,
        f: impl FnOnce(&mut PeerReplicas<'_>) -> R,
    ) -> R {
        let result = {
            let mut st = lock(&self.shared.state);
            let mut replicas = PeerReplicas {
                st: &mut st,
                peer: peer.to_string(),
                preloaded,
            };
            f(&mut replicas)
        };
        self.send_outbox();
        self.shared.wake.notify_one();
        result
    }

    /// The space a note belongs to, from memory or its row (never loading
    /// its document).
    pub fn space_of(&self, id: &NoteId) -> Result<SpaceId> {
        self.with_state(|st| {
            st.note_space(id)?
                .ok_or_else(|| Error::NoteNotFound(id.to_string()))
        })
    }

    /// Whether `peer` may see `note` now: the note is in memory (in use on
    /// this device) and in a space both are members of. Costs no load.
    pub fn shares_open_note(&self, peer: &str, note: &NoteId) -> bool {
        let mut st = lock(&self.shared.state);
        let Some(space) = st.open.peek(note).map(|open| open.space) else {
            return false;
        };
        let replicas = PeerReplicas {
            st: &mut st,
            peer: peer.to_string(),
            preloaded: None,
        };
        replicas.shared_spaces().contains(space.as_bytes())
    }

    /// Forgets what `peer` was sending that had not become a note or space
    /// yet: its last connection closed.
    pub(crate) fn drop_incoming_from(&self, peer: &str) {
        lock(&self.shared.state).incoming.remove(peer);
    }

    /// Accepts an invitation to `space` from `inviter`: this device syncs the space
    /// with the inviter until the space's index (and so its member list) arrives.
    pub fn join_space(&self, space: SpaceId, inviter: &str) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            if !st.spaces.contains_key(&space) {
                st.store
                    .add_invitation(&space.to_string(), inviter, false)?;
                st.joining.insert(space, inviter.to_string());
            }
            Ok(())
        })
    }
}

impl PeerReplicas<'_> {
    /// The document `key` of `space`, creating an empty incoming one for a
    /// document this device does not have yet.
    fn doc_mut(
        &mut self,
        space: SpaceId,
        key: &str,
    ) -> std::result::Result<&mut AutoCommit, String> {
        if key == space.doc_key() {
            if !self.st.spaces.contains_key(&space) {
                return self.incoming(space, key);
            }
            let open = self.st.spaces.get_mut(&space).expect("checked above");
            return Ok(open.space.doc_mut());
        }
        let id: NoteId = key.parse().map_err(|e: Error| e.to_string())?;
        match self.st.note_space(&id).map_err(|e| e.to_string())? {
            None => self.incoming(space, key),
            // Checked before loading: a note of another space is never touched.
            Some(theirs) if theirs != space => {
                Err(format!("note {} does not belong to that space", id.short()))
            }
            Some(_) if self.st.set_aside.contains(&id) => Err(format!(
                "note {} is damaged and set aside from sync",
                id.short()
            )),
            Some(_) => {
                match self.st.load(&id) {
                    Ok(_) => {}
                    Err(Error::NoteDamaged { detail, .. }) => {
                        // Set aside by name: never loaded again for sync, so
                        // it costs no session anything; its last text shows.
                        tracing::error!(note = %id, "setting a damaged note aside from sync: {detail}");
                        self.st.set_aside.insert(id.clone());
                        self.st.outbox.push(NodeEvent::NoteSetAside {
                            id: id.clone(),
                            reason: detail.clone(),
                        });
                        return Err(format!("note {} is damaged: {detail}", id.short()));
                    }
                    Err(e) => return Err(e.to_string()),
                }
                let open = self.st.open.get_mut(&id).expect("just loaded");
                Ok(open.note.doc_mut())
            }
        }
    }

    /// Whether `key` names a document of `space` in this device's own store
    /// (its index, or a note filed under it), or none that is stored yet.
    fn belongs(&self, space: SpaceId, key: &str) -> bool {
        if key == space.doc_key() {
            return true;
        }
        let Ok(id) = key.parse::<NoteId>() else {
            return false;
        };
        match self.st.note_space(&id) {
            Ok(Some(theirs)) => theirs == space,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// A document arriving in `space`. Keyed by space too, so what arrives in one
    /// space can never seed or merge into a document of another.
    fn incoming(
        &mut self,
        space: SpaceId,
        key: &str,
    ) -> std::result::Result<&mut AutoCommit, String> {
        let from_peer = self.st.incoming.entry(self.peer.clone()).or_default();
        let slot = (space, key.to_string());
        if !from_peer.contains_key(&slot) && from_peer.len() >= MAX_INCOMING_PER_PEER {
            return Err(format!(
                "over {MAX_INCOMING_PER_PEER} documents are arriving from this device at once"
            ));
        }
        Ok(from_peer.entry(slot).or_default())
    }

    /// Takes an arriving document out of this peer's slots.
    fn take_incoming(&mut self, slot: &(SpaceId, String)) -> Option<AutoCommit> {
        let from_peer = self.st.incoming.get_mut(&self.peer)?;
        let doc = from_peer.remove(slot);
        if from_peer.is_empty() {
            self.st.incoming.remove(&self.peer);
        }
        doc
    }

    /// Turns an incoming document that became whole into a note or a space.
    /// `arrived_whole`: the bytes the document arrived in, if it came in one
    /// `Document` frame (a note then stores them as they are).
    fn promote(
        &mut self,
        space: SpaceId,
        key: &str,
        arrived_whole: Option<ArrivedWhole>,
    ) -> std::result::Result<(), String> {
        let slot = (space, key.to_string());
        let Some(doc) = self.st.incoming.get(&self.peer).and_then(|m| m.get(&slot)) else {
            return Ok(());
        };
        let has = |name: &str, kind: ObjType| matches!(doc.get(ROOT, name), Ok(Some((Value::Object(k), _))) if k == kind);
        let now = now_ms();
        if key == space.doc_key() {
            if !(has("members", ObjType::Map) && has("notes", ObjType::Map)) {
                return Ok(());
            }
            let doc = self.take_incoming(&slot).expect("checked above");
            let index =
                Space::from_remote(space, &self.st.actor, doc).map_err(|e| e.to_string())?;
            self.st.spaces.insert(space, OpenSpace::new(index, 0));
            self.st.dirty_spaces.insert(space);
            self.st.joining.remove(&space);
            if self.st.linking == Some(space) {
                self.st.adopt_linked_private(space);
            }
            return Ok(());
        }
        if !has("text", ObjType::Text) {
            return Ok(());
        }
        let doc = self.take_incoming(&slot).expect("checked above");
        let id: NoteId = key.parse().map_err(|e: Error| e.to_string())?;
        let note = match &arrived_whole {
            // Everything in it is in the bytes that will be stored as they came.
            Some(_) => Note::from_doc(id.clone(), &self.st.actor, doc),
            None => Note::from_remote(id.clone(), &self.st.actor, doc),
        }
        .map_err(|e| e.to_string())?;
        let created_at = note.created_at();
        self.st
            .insert_open(OpenNote {
                note,
                space,
                created_at,
                updated_at: now,
                pending: Vec::new(),
                arrived_whole,
                snapshot_bytes: 0,
                incremental_bytes: 0,
                incremental_chunks: 0,
                text_written_at: None,
            })
            .map_err(|e| e.to_string())?;
        self.st.dirty.insert(id.clone());
        self.st.outbox.push(NodeEvent::NoteChanged {
            id,
            by_peer: Some(self.peer.clone()),
        });
        Ok(())
    }

    /// Records that the peer changed `doc`: marks it for the group commit, tells
    /// the app, and turns an arriving document that became whole into a note.
    fn remote_change(
        &mut self,
        space: SpaceId,
        doc: &str,
        arrived_whole: Option<ArrivedWhole>,
    ) -> std::result::Result<(), String> {
        if doc == space.doc_key() {
            let me = self.st.node_id.clone();
            if let Some(open) = self.st.spaces.get_mut(&space) {
                let was_removed = open.space.remover_name(&me).is_some();
                open.space.read_log();
                self.st.dirty_spaces.insert(space);
                // The removal may arrive as an ordinary change of the log, not
                // only as a notice: either way this device's user is told.
                if let Some(by) = open.space.remover_name(&me).filter(|_| !was_removed) {
                    tracing::warn!(space = %space, by = %by, "this device was removed from the space");
                    let space_name = open.space.name();
                    self.st.outbox.push(NodeEvent::RemovedFromSpace {
                        space,
                        space_name,
                        by,
                    });
                }
                // Relay it to the other members this device is connected to.
                self.st.outbox.push(NodeEvent::SpaceChanged { space });
            }
        } else if let Ok(id) = doc.parse::<NoteId>() {
            if let Some(open) = self.st.open.get_mut(&id) {
                open.updated_at = now_ms();
                self.st.dirty.insert(id.clone());
                self.st.outbox.push(NodeEvent::NoteChanged {
                    id,
                    by_peer: Some(self.peer.clone()),
                });
            }
        }
        self.promote(space, doc, arrived_whole)
    }

    /// A note that is not in memory and is stored as one snapshot: its stored
    /// bytes are the whole document, with no need to load and save it again.
    /// (Were they damaged, the peer refuses them and falls back to syncing.)
    /// (The caller has checked that the note belongs to the space asked about.)
    fn stored_snapshot(&mut self, key: &str) -> Option<(Vec<u8>, Vec<Hash>)> {
        let id: NoteId = key.parse().ok()?;
        if self.st.open.contains(&id) {
            return None;
        }
        let (_, heads) = self.st.store.space_and_heads(id.as_str()).ok()??;
        if heads.is_empty() {
            return None;
        }
        let mut chunks = self.st.store.chunks(id.as_str()).ok()?;
        match chunks.as_slice() {
            [only] if only.kind == ChunkKind::Snapshot => {
                chunks.pop().map(|c| (c.data, decode_heads(&heads)))
            }
            _ => None,
        }
    }

    /// A note's heads without loading it when the store knows them; `None` for
    /// a note this device files under another space (whatever `space`'s index
    /// says), which the peer is not told about.
    fn note_heads(&mut self, space: SpaceId, id: &NoteId) -> Option<Vec<Hash>> {
        if self.st.set_aside.contains(id) {
            return None;
        }
        if let Some(open) = self.st.open.get_mut(id) {
            return (open.space == space).then(|| hashes(&open.note.heads()));
        }
        let slot = (space, id.to_string());
        if let Some(doc) = self
            .st
            .incoming
            .get_mut(&self.peer)
            .and_then(|m| m.get_mut(&slot))
        {
            return Some(hashes(&doc.get_heads()));
        }
        match self.st.store.space_and_heads(id.as_str()) {
            Ok(Some((theirs, _))) if self.st.parse_space(&theirs) != Some(space) => None,
            Ok(Some((_, heads))) if !heads.is_empty() => Some(decode_heads(&heads)),
            Ok(Some(_)) => match self.st.load(id) {
                Ok(open) => Some(hashes(&open.note.heads())),
                Err(e) => {
                    tracing::warn!(note = %id, "cannot read heads: {e}");
                    Some(Vec::new())
                }
            },
            Ok(None) => Some(Vec::new()),
            Err(e) => {
                tracing::warn!(note = %id, "cannot read heads: {e}");
                None
            }
        }
    }

    /// Refuses `changes` for `key` unless they keep its document's shape,
    /// each new one is vouched for by the device its actor names
    /// (`offered` or kept attestations), every membership op they carry goes
    /// into the space's log, and their authors may write them
    /// (`check_authors`). Returns what to note once the changes are applied.
    fn admit(
        &mut self,
        space: SpaceId,
        key: &str,
        changes: &[automerge::Change],
        offered: &[Attestation],
    ) -> std::result::Result<Admitted, String> {
        let shape = if key == space.doc_key() {
            Shape::Index
        } else {
            Shape::Note
        };
        let nodes: Vec<ChangeNode> = changes.iter().map(ChangeNode::from).collect();
        let target = self.doc_mut(space, key)?;
        let admitted = admit(target, shape, changes)?;
        let new = attest::new_to(target, &nodes);
        let admitted_now = Admitted {
            newer: self.vouch(space, key, &new, offered)?,
            new,
        };
        // A space still being joined has no members known here yet: its
        // index is checked whole when it is promoted.
        let Some(open) = self.st.spaces.get(&space) else {
            return Ok(admitted_now);
        };
        let extended;
        let log = if admitted.ops.is_empty() {
            open.space.log()
        } else {
            extended = open.space.check_ops(admitted.ops)?;
            &extended
        };
        check_authors(&open.space, log, &nodes, &admitted.log_only)?;
        Ok(admitted_now)
    }

    /// Once admitted changes were given to `key`'s document: keeps the
    /// attestations that vouched for them, and notes which wait there for
    /// their dependencies.
    fn admitted(
        &mut self,
        space: SpaceId,
        key: &str,
        admitted: Admitted,
    ) -> std::result::Result<(), String> {
        let waiting = self.st.waiting.remove(key).unwrap_or_default();
        let target = self.doc_mut(space, key)?;
        let waiting = attest::still_waiting(waiting, target, &admitted.new);
        if !waiting.is_empty() {
            self.st.waiting.insert(key.to_string(), waiting);
        }
        self.st.keep_newer(key, admitted.newer);
        Ok(())
    }

    /// The devices that may vouch for `space`'s changes from before signing
    /// (legacy attestations): its owners; for a space still being joined,
    /// the inviter this device is joining through.
    fn legacy_vouchers(&self, space: SpaceId) -> BTreeSet<DeviceKey> {
        match self.st.spaces.get(&space) {
            Some(open) => open
                .space
                .members()
                .into_iter()
                .filter(|m| m.role == MemberRole::Owner)
                .filter_map(|m| membership::device_key(&m.node_id))
                .collect(),
            None => membership::device_key(&self.peer).into_iter().collect(),
        }
    }

    /// Whether this device is an owner of `space`, and so vouches for its
    /// changes from before signing.
    fn owns(&self, space: SpaceId) -> bool {
        self.st.spaces.get(&space).is_some_and(|open| {
            open.space.role_in(open.space.log(), &self.st.node_id) == Some(MemberRole::Owner)
        })
    }

    /// Refuses `new` (changes of `key` new here) unless their authors, or
    /// for changes from before signing an owner of `space`, vouched for them
    /// (`State::check_authorship`). Returns the offered attestations to keep
    /// once they are applied.
    fn vouch(
        &mut self,
        space: SpaceId,
        key: &str,
        new: &[ChangeNode],
        offered: &[Attestation],
    ) -> std::result::Result<Vec<Attestation>, String> {
        let vouchers = self.legacy_vouchers(space);
        let vouched = self
            .st
            .check_authorship(key, new, offered, &|d| vouchers.contains(d))?;
        if vouched.legacy > 0 {
            tracing::info!(peer = %self.peer, doc = key, count = vouched.legacy, "accepted changes from before signing, vouched for by an owner");
        }
        Ok(vouched.newer)
    }

    /// For each space this device has removed the peer from (not one it
    /// left): the space and its membership log, in causal order, for a
    /// `Frame::Removed` that tells the peer.
    pub fn removal_notices(&self) -> Vec<(SpaceKey, Vec<Vec<u8>>)> {
        self.st
            .spaces
            .iter()
            .filter(|(_, open)| open.space.remover_name(&self.peer).is_some())
            .map(|(id, open)| {
                let ops = open.space.log().ops().map(|op| op.to_bytes()).collect();
                (*id.as_bytes(), ops)
            })
            .collect()
    }
}

impl Replicas for PeerReplicas<'_> {
    fn peer_offers(&mut self, spaces: &BTreeSet<SpaceKey>) {
        let peer = self.peer.clone();
        self.st.join_offered(&peer, spaces);
    }

    fn receive_removal(&mut self, space: &SpaceKey, ops: &[Vec<u8>]) -> bool {
        let id = SpaceId::from_bytes(*space);
        let me = self.st.node_id.clone();
        let Some(open) = self.st.spaces.get_mut(&id) else {
            return false;
        };
        if !open.space.is_member(&me) {
            return false;
        }
        let ops: Vec<membership::Op> = ops
            .iter()
            .filter_map(|bytes| membership::Op::from_bytes(bytes).ok())
            .collect();
        if let Err(e) = open.space.receive_ops(ops, now_ms()) {
            tracing::warn!(space = %id, "cannot take in a removal notice: {e}");
            return false;
        }
        let Some(by_name) = open.space.remover_name(&me) else {
            return false;
        };
        tracing::warn!(space = %id, by = %by_name, "this device was removed from the space");
        let space_name = open.space.name();
        self.st.dirty_spaces.insert(id);
        self.st.outbox.push(NodeEvent::RemovedFromSpace {
            space: id,
            space_name,
            by: by_name,
        });
        self.st.outbox.push(NodeEvent::SpaceChanged { space: id });
        true
    }

    fn shared_spaces(&self) -> BTreeSet<SpaceKey> {
        let mut shared: BTreeSet<SpaceKey> = self
            .st
            .spaces
            .iter()
            .filter(|(_, open)| {
                open.space.is_member(&self.peer) && open.space.is_member(&self.st.node_id)
            })
            .map(|(id, _)| *id.as_bytes())
            .collect();
        shared.extend(
            self.st
                .joining
                .iter()
                .filter(|(_, inviter)| **inviter == self.peer)
                .map(|(id, _)| *id.as_bytes()),
        );
        shared
    }

    fn docs(&mut self, space: &SpaceKey) -> BTreeMap<DocKey, Vec<Hash>> {
        let id = SpaceId::from_bytes(*space);
        let key = id.doc_key();
        let mut docs = BTreeMap::new();
        let Some(open) = self.st.spaces.get_mut(&id) else {
            let heads = self
                .st
                .incoming
                .get_mut(&self.peer)
                .and_then(|m| m.get_mut(&(id, key.clone())))
                .map(|doc| hashes(&doc.get_heads()))
                .unwrap_or_default();
            docs.insert(key, heads);
            return docs;
        };
        docs.insert(key, hashes(&open.space.heads()));
        for note in open.space.notes() {
            if let Some(heads) = self.note_heads(id, &note) {
                docs.insert(note.to_string(), heads);
            }
        }
        docs
    }

    fn index_key(&self, space: &SpaceKey) -> Option<DocKey> {
        Some(SpaceId::from_bytes(*space).doc_key())
    }

    fn generate_sync_message(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
    ) -> Option<(sync::Message, Vec<Attestation>)> {
        // Membership can change during a session: check it for every message.
        if !self.shared_spaces().contains(space) {
            return None;
        }
        let target = match self.doc_mut(SpaceId::from_bytes(*space), doc) {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(peer = %self.peer, doc, "not syncing: {e}");
                return None;
            }
        };
        let message = target.sync().generate_sync_message(state)?;
        if message.changes.is_empty() {
            return Some((message, Vec::new()));
        }
        let authors = attest::authors_in(message.changes.iter());
        let owner = self.owns(SpaceId::from_bytes(*space));
        let attestations = self.st.attestations_for(doc, authors.as_ref(), owner);
        Some((message, attestations))
    }

    fn receive_sync_message(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
        message: sync::Message,
        attestations: &[Attestation],
    ) -> std::result::Result<(), String> {
        if !self.shared_spaces().contains(space) {
            return Err("this device no longer shares that space with you".into());
        }
        let space = SpaceId::from_bytes(*space);
        if !self.belongs(space, doc) {
            return Err(format!("{doc} is not a document of that space"));
        }
        let mut changes = Vec::new();
        for chunk in message.changes.iter() {
            changes.extend(changes_in(self.doc_mut(space, doc)?, chunk)?);
        }
        let admitted = self.admit(space, doc, &changes, attestations)?;
        let target = self.doc_mut(space, doc)?;
        let before = target.get_heads();
        target
            .sync()
            .receive_sync_message(state, message)
            .map_err(|e| e.to_string())?;
        let changed = target.get_heads() != before;
        self.admitted(space, doc, admitted)?;
        if changed {
            self.remote_change(space, doc, None)?;
        }
        Ok(())
    }

    fn saved_document(&mut self, space: &SpaceKey, doc: &DocKey) -> Option<SavedDocument> {
        if !self.shared_spaces().contains(space) {
            return None;
        }
        let space = SpaceId::from_bytes(*space);
        if !self.belongs(space, doc) {
            return None;
        }
        let (saved, heads) = match self.stored_snapshot(doc) {
            Some(stored) => stored,
            None => match self.doc_mut(space, doc) {
                Ok(target) => (target.save(), hashes(&target.get_heads())),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, doc, "not sending: {e}");
                    return None;
                }
            },
        };
        let authors = attest::authors_in([saved.as_slice()]);
        let mine = self.st.own_device();
        if authors
            .as_ref()
            .is_none_or(|a| mine.is_some_and(|m| a.contains(&m)))
            && !self.st.has_own_attestation(doc)
        {
            // Changes of this device from before it signed them: it signs
            // its latest one now, which needs the document loaded.
            if let Err(e) = self.doc_mut(space, doc) {
                tracing::warn!(peer = %self.peer, doc, "not sending: {e}");
                return None;
            }
        }
        let attestations = self
            .st
            .attestations_for(doc, authors.as_ref(), self.owns(space));
        Some(SavedDocument {
            saved,
            heads,
            attestations,
        })
    }

    fn receive_document(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        saved: &[u8],
        attestations: &[Attestation],
    ) -> std::result::Result<Option<Vec<Hash>>, String> {
        if !self.shared_spaces().contains(space) {
            return Err("this device no longer shares that space with you".into());
        }
        let space = SpaceId::from_bytes(*space);
        if !self.belongs(space, doc) {
            return Err(format!("{doc} is not a document of that space"));
        }
        let key = doc;
        let loaded = match Preloaded::take_for(&mut self.preloaded, space.as_bytes(), key, saved) {
            Some(loaded) => loaded?,
            None => Loaded::from_saved(space, key, saved)?,
        };
        let Loaded {
            doc: mut whole,
            nodes,
            shape,
            text,
        } = loaded;
        let mut arrived_whole = None;
        let before = self.doc_mut(space, key)?.get_heads();
        let admitted = if before.is_empty() {
            // New here: checked by its shape and its authors, kept as loaded,
            // and its bytes kept for the store.
            shape?;
            let newer = self.vouch(space, key, &nodes, attestations)?;
            if let Some(open) = self.st.spaces.get(&space) {
                check_authors(&open.space, open.space.log(), &nodes, &[])?;
            }
            let heads = whole.get_heads();
            let target = self.doc_mut(space, key)?;
            let actor = target.get_actor().clone();
            *target = whole.with_actor(actor);
            arrived_whole = Some(ArrivedWhole {
                bytes: saved.to_vec(),
                text: text.map(|text| (heads, text)),
            });
            // Whole, nothing of it waits for dependencies.
            Admitted {
                newer,
                new: Vec::new(),
            }
        } else {
            let changes = self.doc_mut(space, key)?.get_changes_added(&mut whole);
            let admitted = self.admit(space, key, &changes, attestations)?;
            let target = self.doc_mut(space, key)?;
            target.apply_changes(changes).map_err(|e| e.to_string())?;
            admitted
        };
        self.admitted(space, key, admitted)?;
        let after = self.doc_mut(space, key)?.get_heads();
        if after == before {
            return Ok(None);
        }
        self.remote_change(space, doc, arrived_whole)?;
        Ok(Some(hashes(&after)))
    }

    fn load_sync_state(&mut self, _space: &SpaceKey, doc: &DocKey) -> sync::State {
        self.st
            .saved_sync_state(&self.peer, doc)
            .and_then(|saved| sync::State::decode(&saved.state).ok())
            .unwrap_or_default()
    }

    fn save_sync_state(&mut self, _space: &SpaceKey, doc: &DocKey, state: &sync::State) {
        let their_heads = match &state.their_heads {
            Some(heads) => heads.iter().flat_map(|h| h.0).collect(),
            // Not heard from them in this session yet: keep what we knew.
            None => self
                .st
                .saved_sync_state(&self.peer, doc)
                .map(|saved| saved.their_heads)
                .unwrap_or_default(),
        };
        self.st.sync_states.insert(
            (self.peer.clone(), doc.clone()),
            SavedSyncState {
                state: state.encode(),
                their_heads,
            },
        );
    }
}

/// What `admit` found: the attestations to keep once the changes are
/// applied, and the changes new here.
struct Admitted {
    newer: Vec<Attestation>,
    new: Vec<ChangeNode>,
}

/// Refuses changes whose author may not write them. A change's author is the
/// device its actor names (its first 32 bytes). An editor or owner may write
/// anything admission allows; any device may put signed ops into an index's
/// log (`log_only`), since each op is checked by the log's rules. A change by
/// anyone else — a viewer, a removed device — counts only when a change in
/// the same set by an editor or owner depends on it: written while its author
/// still could, and forwarded with later work built on it.
fn check_authors(
    space: &Space,
    log: &Log,
    changes: &[ChangeNode],
    log_only: &[bool],
) -> std::result::Result<(), String> {
    let writes = |change: &ChangeNode| {
        change.actor.get(..32).is_some_and(|device| {
            space
                .role_in(log, &membership::hex(device))
                .is_some_and(|role| role >= MemberRole::Editor)
        })
    };
    let by_hash: HashMap<Hash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash, i))
        .collect();
    let mut vouched: Vec<bool> = changes.iter().map(writes).collect();
    let mut stack: Vec<usize> = (0..changes.len()).filter(|i| vouched[*i]).collect();
    while let Some(i) = stack.pop() {
        for dep in &changes[i].deps {
            if let Some(&j) = by_hash.get(dep) {
                if !vouched[j] {
                    vouched[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    for (i, change) in changes.iter().enumerate() {
        if vouched[i] || log_only.get(i).copied().unwrap_or(false) {
            continue;
        }
        let author = change.actor.get(..32).map(membership::hex);
        let who = match author.as_deref().and_then(|a| space.role_in(log, a)) {
            Some(MemberRole::Viewer) => "a viewer",
            Some(_) => "a member",
            None => "a device that is not a member",
        };
        return Err(format!(
            "change {} is by {who} of the space ({}), who may not write it",
            hex_prefix(&change.hash),
            author
                .as_deref()
                .map_or("no device", |a| a.get(..12).unwrap_or(a)),
        ));
    }
    Ok(())
}

fn hex_prefix(bytes: &[u8]) -> String {
    membership::hex(&bytes[..4.min(bytes.len())])
}
