//! The `Node`'s spaces: loading every space index at start-up, the device's
//! private space, creating spaces, and membership. Space indexes are few and
//! small, so all of them stay in memory; their changes go to disk in the same
//! group commit as notes.

use serde::{Deserialize, Serialize};

use super::{now_ms, Node, NodeEvent, State};
use crate::error::{Error, Result};
use crate::membership::Role;
use crate::note::NoteId;
use crate::space::{Member, Space, SpaceId};
use crate::store::SpaceWrite;

/// A space as it appears in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceInfo {
    pub id: SpaceId,
    pub name: String,
    /// The device's own space, synced only to the user's other devices.
    pub private: bool,
    pub members: usize,
    pub notes: usize,
    /// Who removed this device from the space (a name), if someone did:
    /// nothing of it syncs any more.
    pub removed_by: Option<String>,
}

/// A space index in memory and its changes not yet committed.
pub(super) struct OpenSpace {
    pub(super) space: Space,
    pending: Vec<Vec<u8>>,
    /// Incremental chunks in the store since the last snapshot.
    incremental_chunks: usize,
}

impl OpenSpace {
    pub(super) fn new(space: Space, incremental_chunks: usize) -> OpenSpace {
        OpenSpace {
            space,
            pending: Vec::new(),
            incremental_chunks,
        }
    }
}

/// Name of the private space every device starts with.
const PRIVATE_SPACE_NAME: &str = "Private";

impl Node {
    /// Every space, the private one first.
    pub fn spaces(&self) -> Result<Vec<SpaceInfo>> {
        self.with_state(|st| {
            st.require_writer()?;
            st.flush_before_reading();
            let rows = st.store.spaces()?;
            Ok(rows
                .into_iter()
                .filter_map(|row| {
                    let id: SpaceId = row.id.parse().ok()?;
                    let open = st.spaces.get(&id)?;
                    let removed_by = open.space.remover_name(&st.node_id);
                    Some(SpaceInfo {
                        removed_by,
                        id,
                        name: row.name,
                        private: row.private,
                        members: open.space.members().len(),
                        notes: row.notes,
                    })
                })
                .collect())
        })
    }

    /// One space as `spaces` lists it.
    pub fn space_info(&self, space: SpaceId) -> Result<SpaceInfo> {
        self.spaces()?
            .into_iter()
            .find(|s| s.id == space)
            .ok_or_else(|| Error::SpaceNotFound(space.to_string()))
    }

    /// The space new notes go to by default.
    pub fn private_space(&self) -> Result<SpaceId> {
        self.with_state(|st| st.private_space.ok_or(Error::ReadOnly))
    }

    /// Resolves what a user typed: a space's name (ignoring case), the start of
    /// a name, or its id or the start of it — whichever matches first.
    pub fn find_space(&self, typed: &str) -> Result<SpaceId> {
        let typed = typed.trim().to_lowercase();
        if typed.is_empty() {
            return Err(Error::SpaceNotFound(typed));
        }
        self.with_state(|st| {
            let named: Vec<(SpaceId, String)> = st
                .spaces
                .iter()
                .map(|(id, s)| (*id, s.space.name().to_lowercase()))
                .collect();
            type Test<'a> = &'a dyn Fn(&(SpaceId, String)) -> bool;
            let tests: [Test; 3] = [
                &|(_, name)| *name == typed,
                &|(_, name)| name.starts_with(&typed),
                &|(id, _)| id.to_string().starts_with(&typed),
            ];
            for test in tests {
                let matches: Vec<SpaceId> = named
                    .iter()
                    .filter(|s| test(s))
                    .map(|(id, _)| *id)
                    .collect();
                match matches.as_slice() {
                    [] => continue,
                    [id] => return Ok(*id),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "`{typed}` matches {} spaces; use more of the name, or the id \
                             (see `peernotes space list`)",
                            matches.len()
                        )))
                    }
                }
            }
            Err(Error::SpaceNotFound(typed.clone()))
        })
    }

    /// Creates a space with this device as its only member.
    pub fn create_space(&self, name: &str) -> Result<SpaceId> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::Invalid("a space needs a name".into()));
        }
        let id = SpaceId::generate();
        self.with_state(|st| {
            st.require_writer()?;
            let key = st.device_key()?;
            let space = Space::create(id, &st.actor, name, &key, &device_name(), now_ms())?;
            st.spaces.insert(id, OpenSpace::new(space, 0));
            st.dirty_spaces.insert(id);
            st.flush()
        })?;
        Ok(id)
    }

    /// Every other device that is a member of a space this device is in: the
    /// devices to keep in sync with.
    pub fn known_devices(&self) -> Result<Vec<String>> {
        self.with_state(|st| {
            let mut devices: Vec<String> = st
                .spaces
                .values()
                .filter(|open| open.space.is_member(&st.node_id))
                .flat_map(|open| open.space.members())
                .map(|member| member.node_id)
                .filter(|id| *id != st.node_id)
                .collect();
            devices.sort();
            devices.dedup();
            Ok(devices)
        })
    }

    pub fn members(&self, space: SpaceId) -> Result<Vec<Member>> {
        self.with_state(|st| Ok(st.space_mut(space)?.space.members()))
    }

    /// Adds `node_id` (64 hex digits, any case, spaces around ignored) to
    /// `space` under `name` with `role`, as this device (an owner).
    pub fn add_member(&self, space: SpaceId, node_id: &str, name: &str, role: Role) -> Result<()> {
        let node_id = node_id.trim().to_ascii_lowercase();
        if node_id.len() != 64 || !node_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "`{node_id}` is not a node id (64 hexadecimal digits; see `peernotes id`)"
            )));
        }
        let node_id = node_id.as_str();
        self.with_state(|st| {
            st.require_writer()?;
            if st.private_space == Some(space) {
                return Err(Error::Invalid(
                    "the Private space syncs only among your own devices: link one with `peernotes device link`".into(),
                ));
            }
            let key = st.device_key()?;
            st.space_mut(space)?
                .space
                .add_member(node_id, name, role, &key, now_ms())?;
            st.space_changed(space)
        })
    }

    /// Gives a member of `space` another role, as this device (an owner).
    pub fn set_role(&self, space: SpaceId, node_id: &str, role: Role) -> Result<()> {
        let node_id = node_id.trim().to_ascii_lowercase();
        self.with_state(|st| {
            st.require_writer()?;
            let key = st.device_key()?;
            let open = st.space_mut(space)?;
            if !open.space.is_member(&node_id) {
                return Err(Error::Invalid(format!(
                    "{} is not a member of space {}",
                    short(&node_id),
                    open.space.name()
                )));
            }
            open.space.set_role(&node_id, role, &key, now_ms())?;
            st.space_changed(space)
        })
    }

    /// This device leaves `space`: its members stop syncing it with this
    /// device. What it wrote stays theirs; its copy stays here.
    pub fn leave_space(&self, space: SpaceId) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            if st.private_space == Some(space) {
                return Err(Error::Invalid(
                    "a device cannot leave its own private space".into(),
                ));
            }
            let key = st.device_key()?;
            st.space_mut(space)?.space.leave(&key, now_ms())?;
            st.space_changed(space)
        })
    }

    /// Removes a member: this device stops syncing the space with them.
    pub fn remove_member(&self, space: SpaceId, node_id: &str) -> Result<()> {
        let node_id = node_id.trim();
        self.with_state(|st| {
            st.require_writer()?;
            if node_id == st.node_id {
                return Err(Error::Invalid(
                    "this device cannot remove itself from a space".into(),
                ));
            }
            let key = st.device_key()?;
            let now = now_ms();
            let open = st.space_mut(space)?;
            open.space.remove_member(node_id, &key, now)?;
            let notes = open.space.notes();
            if let Some(device) = crate::membership::device_key(node_id) {
                st.vouch_for(&notes, &device, now);
            }
            st.space_changed(space)
        })
    }
}

impl State {
    /// After this device changed a space's index: store it and tell.
    pub(super) fn space_changed(&mut self, space: SpaceId) -> Result<()> {
        self.dirty_spaces.insert(space);
        self.outbox.push(NodeEvent::SpaceChanged { space });
        self.flush()
    }

    /// Vouches, in each of `notes` whose head `device` wrote, for what it
    /// wrote so far (`Note::vouch_for`): members refuse a removed device's
    /// changes unless a member who may write built on them.
    fn vouch_for(&mut self, notes: &[NoteId], device: &[u8; 32], now: i64) {
        for id in notes {
            let open = match self.load(id) {
                Ok(open) => open,
                Err(e) => {
                    tracing::warn!(note = %id, "cannot vouch for a removed member's work: {e}");
                    continue;
                }
            };
            // A vouch is no edit: the note keeps its time and its author.
            if open.note.vouch_for(device, now) {
                self.dirty.insert(id.clone());
                self.outbox.push(NodeEvent::NoteChanged {
                    id: id.clone(),
                    by_peer: None,
                });
            }
        }
    }

    pub(super) fn space_mut(&mut self, id: SpaceId) -> Result<&mut OpenSpace> {
        self.spaces
            .get_mut(&id)
            .ok_or_else(|| Error::SpaceNotFound(id.to_string()))
    }

    /// Loads every space index from the store.
    pub(super) fn load_spaces(&mut self) -> Result<()> {
        for row in self.store.spaces()? {
            let id: SpaceId = row.id.parse()?;
            let (doc, sizes) = self.read_doc(&id.doc_key(), None)?;
            let Some(doc) = doc else {
                tracing::error!(space = %id, "no part of the space's index could be read");
                continue;
            };
            let mut space = match Space::from_doc(id, &self.actor, doc) {
                Ok(space) => space,
                Err(e) => {
                    tracing::error!(space = %id, "the space's index is unreadable; skipping it: {e}");
                    continue;
                }
            };
            // What the index was at the upgrade to signed authorship, for
            // its owners to vouch for its unsigned past (a writer records it).
            if self.key.is_some() {
                let heads = super::encode_heads(&space.heads());
                if let Err(e) = self.store.fill_legacy_heads(&id.doc_key(), &heads) {
                    tracing::warn!(space = %id, "cannot record the index's past: {e}");
                }
            }
            // A space made before signed membership is signed by its creator
            // on first open: the creator owns it, everyone else edits.
            if let Some(key) = self.key {
                match space.adopt(&key, super::now_ms()) {
                    Ok(true) => {
                        tracing::info!(space = %id, "signed the members of a space made by an earlier version");
                        self.dirty_spaces.insert(id);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(space = %id, "cannot sign the space's members: {e}"),
                }
            }
            if row.private {
                self.private_space = Some(id);
            }
            self.spaces
                .insert(id, OpenSpace::new(space, sizes.incremental_chunks));
        }
        for (space, inviter, private) in self.store.invitations()? {
            let space: SpaceId = space.parse()?;
            if !self.spaces.contains_key(&space) {
                self.joining.insert(space, inviter);
                if private {
                    self.linking = Some(space);
                }
            }
        }
        Ok(())
    }

    /// Gives the device its private space on first use, filing into it every
    /// note that has no space yet (notes written before spaces existed).
    pub(super) fn ensure_private_space(&mut self) -> Result<()> {
        if self.private_space.is_some() {
            return Ok(());
        }
        let id = SpaceId::generate();
        let now = now_ms();
        let key = self.device_key()?;
        let mut space = Space::create(
            id,
            &self.actor,
            PRIVATE_SPACE_NAME,
            &key,
            &device_name(),
            now,
        )?;
        let unfiled = self
            .store
            .unfiled_note_ids()?
            .into_iter()
            .map(|id| id.parse())
            .collect::<Result<Vec<_>>>()?;
        space.add_notes(&unfiled, now)?;
        self.store.adopt_private_space(&SpaceWrite {
            id: id.to_string(),
            name: PRIVATE_SPACE_NAME.into(),
            chunks: vec![space.take_incremental()],
            members: recorded_members(&space),
        })?;
        self.spaces.insert(id, OpenSpace::new(space, 1));
        self.private_space = Some(id);
        Ok(())
    }

    /// Records every space's members in the store where they differ from
    /// what it holds (a store from before it recorded them, or one a
    /// version that did not keep them current wrote), so readers need no
    /// index to name them.
    pub(super) fn record_members(&mut self) -> Result<()> {
        let recorded = self.store.space_members()?;
        let differing: Vec<(String, Vec<(String, String)>)> = self
            .spaces
            .iter()
            .map(|(id, open)| (id.to_string(), recorded_members(&open.space)))
            .filter(|(id, members)| recorded.get(id) != Some(members))
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        self.store.write_space_members(&differing)
    }

    /// What the group commit writes for dirty spaces. Changes stay pending until
    /// `spaces_written` confirms the commit.
    pub(super) fn space_writes(&mut self) -> Vec<SpaceWrite> {
        let mut writes = Vec::new();
        for id in &self.dirty_spaces {
            let open = self.spaces.get_mut(id).expect("dirty spaces are loaded");
            let chunk = open.space.take_incremental();
            if !chunk.is_empty() {
                open.pending.push(chunk);
            }
            writes.push(SpaceWrite {
                id: id.to_string(),
                name: open.space.name(),
                chunks: open.pending.clone(),
                members: recorded_members(&open.space),
            });
        }
        writes
    }

    /// After a successful commit: nothing of the written spaces is pending any
    /// more. Returns their ids, for `compact_spaces`.
    pub(super) fn spaces_written(&mut self) -> Vec<SpaceId> {
        let mut written: Vec<SpaceId> =
            std::mem::take(&mut self.dirty_spaces).into_iter().collect();
        for id in &written {
            let open = self.spaces.get_mut(id).expect("dirty spaces are loaded");
            open.incremental_chunks += open.pending.len();
            open.pending.clear();
        }
        // A Private space retired for the person's is gone from the store;
        // its notes, now filed in the person's, are news to the person's
        // other devices.
        if let Some((old, _)) = self.private_switch.take() {
            if let Some(retired) = self.spaces.remove(&old) {
                for id in retired.space.notes() {
                    self.outbox
                        .push(NodeEvent::NoteChanged { id, by_peer: None });
                }
            }
            written.retain(|id| *id != old);
        }
        written
    }

    /// Folds a space's chunks into one snapshot once there are many.
    pub(super) fn compact_spaces(&mut self, ids: &[SpaceId]) -> Result<()> {
        self.compact_spaces_past(ids, super::compaction::COMPACT_AFTER_CHUNKS)
    }

    /// Folds the chunks of each space that has at least `chunks` of them
    /// since its snapshot into one snapshot.
    pub(super) fn compact_spaces_past(&mut self, ids: &[SpaceId], chunks: usize) -> Result<()> {
        for id in ids {
            let open = self.spaces.get_mut(id).expect("written spaces are loaded");
            if open.incremental_chunks < chunks.max(1) {
                continue;
            }
            let key = id.doc_key();
            if let Some(through) = self.store.last_chunk_seq(&key)? {
                let snapshot = open.space.save();
                self.store.compact(&key, &snapshot, through)?;
                open.incremental_chunks = 0;
            }
        }
        Ok(())
    }
}

/// A space's members as the store records them: `(node id, name)`.
fn recorded_members(space: &Space) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = space
        .members()
        .into_iter()
        .map(|m| (m.node_id, m.name))
        .collect();
    members.sort();
    members
}

/// The start of a node id, for messages.
pub(super) fn short(node_id: &str) -> &str {
    node_id.get(..12).unwrap_or(node_id)
}

/// The name this device gives itself in spaces it creates: its host name.
pub fn device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "this device".into())
}
