//! A person's several devices. A device links another as one more device of
//! its person (`link_device`; pairing with a link invitation does it): the
//! new device is admitted to every space the person is in, with the role
//! the linking device holds there, and takes the person's Private space as
//! its own once it arrives, filing its own private notes there
//! (`adopt_linked_private`). From then on the person's devices keep each
//! other in step: each links its siblings into spaces it joins later
//! (`link_siblings`, run by the group commit when a space changed), and a
//! device joins what a sibling's hello says they share (`join_offered`). A
//! device that is or was ever named in a space's log (removed, left) is
//! never linked into it again automatically: a removal stays final. Revoking
//! a lost device (`remove_device`) removes it alone; the person's other
//! devices keep their access.

use std::collections::BTreeSet;

use super::spaces::short;
use super::{now_ms, Node, NodeEvent, State};
use crate::error::{Error, Result};
use crate::protocol::frame::SpaceKey;
use crate::space::{Member, SpaceId};

/// Most spaces one sibling's hello makes this device start joining.
const MAX_OFFERED_JOINS: usize = 1024;

/// A person's devices: linking one more, listing them, revoking one.
impl Node {
    /// Links `node_id` as one more device of this device's person, shown as
    /// `name`: in every space this device is a member of (its Private space
    /// too), with this device's role there. The new device then joins each
    /// (`join_space`) through this one. Returns the spaces it was linked in.
    pub fn link_device(&self, node_id: &str, name: &str) -> Result<Vec<SpaceId>> {
        let node_id = node_id.trim().to_ascii_lowercase();
        if crate::membership::device_key(&node_id).is_none() {
            return Err(Error::Invalid(format!(
                "`{node_id}` is not a node id (64 hexadecimal digits; see `peernotes id`)"
            )));
        }
        self.with_state(|st| {
            st.require_writer()?;
            if node_id == st.node_id {
                return Err(Error::Invalid("a device cannot link itself".into()));
            }
            let key = st.device_key()?;
            let me = st.node_id.clone();
            let now = now_ms();
            let mut linked = Vec::new();
            let spaces: Vec<SpaceId> = st.spaces.keys().copied().collect();
            for space in spaces {
                let open = st.spaces.get_mut(&space).expect("listed above");
                if !open.space.is_member(&me) || open.space.is_member(&node_id) {
                    continue;
                }
                open.space.link_device(&node_id, name, &key, now)?;
                st.dirty_spaces.insert(space);
                st.outbox.push(NodeEvent::SpaceChanged { space });
                linked.push(space);
            }
            st.flush()?;
            Ok(linked)
        })
    }

    /// This device's person's devices (this one among them), as its Private
    /// space lists them.
    pub fn devices(&self) -> Result<Vec<Member>> {
        self.with_state(|st| {
            let private = st
                .private_space
                .ok_or_else(|| Error::Invalid("this device has no Private space yet".into()))?;
            let person = st.person().unwrap_or_else(|| st.node_id.clone());
            Ok(st.spaces[&private]
                .space
                .members()
                .into_iter()
                .filter(|m| m.person_id() == person)
                .collect())
        })
    }

    /// Revokes `node_id`, another device of this device's person (a lost
    /// laptop), in every space it is a member of: alone; the person's other
    /// devices keep their access. Returns the spaces it was removed from.
    pub fn remove_device(&self, node_id: &str) -> Result<Vec<SpaceId>> {
        let node_id = node_id.trim().to_ascii_lowercase();
        if node_id == self.node_id() {
            return Err(Error::Invalid(
                "that is this device; revoke it from another of your devices".into(),
            ));
        }
        if !self.devices()?.iter().any(|d| d.node_id == node_id) {
            return Err(Error::Invalid(format!(
                "{} is not one of your devices (see `peernotes device list`)",
                short(&node_id)
            )));
        }
        let spaces: Vec<SpaceId> = self.with_state(|st| {
            Ok(st
                .spaces
                .iter()
                .filter(|(_, open)| open.space.is_member(&node_id))
                .map(|(id, _)| *id)
                .collect())
        })?;
        for space in &spaces {
            self.remove_member(*space, &node_id)?;
        }
        Ok(spaces)
    }

    /// Accepts a link invitation: `space` is the Private space of the person
    /// this device now belongs to, synced with `inviter` until it arrives,
    /// when it becomes this device's Private space.
    pub fn join_as_device(&self, space: SpaceId, inviter: &str) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            if st.private_space == Some(space) {
                return Err(Error::Invalid(
                    "this device is already one of that person's devices".into(),
                ));
            }
            if !st.spaces.contains_key(&space) {
                st.store.add_invitation(&space.to_string(), inviter, true)?;
                st.joining.insert(space, inviter.to_string());
                st.linking = Some(space);
            }
            Ok(())
        })
    }
}

impl State {
    /// The person this device belongs to, by its Private space.
    fn person(&self) -> Option<String> {
        let private = self.spaces.get(&self.private_space?)?;
        let me = private.space.member(&self.node_id)?;
        Some(me.person_id().to_string())
    }

    /// The other current devices of this device's person.
    fn siblings(&self) -> Vec<Member> {
        let (Some(person), Some(private)) = (
            self.person(),
            self.private_space.and_then(|id| self.spaces.get(&id)),
        ) else {
            return Vec::new();
        };
        private
            .space
            .members()
            .into_iter()
            .filter(|m| m.node_id != self.node_id && m.person_id() == person)
            .collect()
    }

    /// Whether `peer` is another current device of this device's person.
    pub(super) fn is_sibling(&self, peer: &str) -> bool {
        self.siblings().iter().any(|m| m.node_id == peer)
    }

    /// Links this device's siblings into every space it is a member of and
    /// they never were (run before a group commit that writes spaces).
    pub(super) fn link_siblings(&mut self) {
        let Some(key) = self.key else { return };
        let siblings = self.siblings();
        if siblings.is_empty() {
            return;
        }
        let now = now_ms();
        let me = self.node_id.clone();
        let private = self.private_space;
        // Only the spaces that changed can have gained a member this person's
        // devices lack, unless the person gained a device: then all of them.
        let scope: Vec<SpaceId> = if private.is_some_and(|p| self.dirty_spaces.contains(&p)) {
            self.spaces.keys().copied().collect()
        } else {
            self.dirty_spaces.iter().copied().collect()
        };
        let mut linked = Vec::new();
        for id in scope {
            let Some(open) = self.spaces.get_mut(&id) else {
                continue;
            };
            if Some(id) == private || !open.space.is_member(&me) || open.space.is_legacy() {
                continue;
            }
            for sibling in &siblings {
                if open.space.ever_member(&sibling.node_id) {
                    continue;
                }
                match open
                    .space
                    .link_device(&sibling.node_id, &sibling.name, &key, now)
                {
                    Ok(()) => linked.push(id),
                    Err(e) => {
                        tracing::warn!(space = %id, device = %short(&sibling.node_id), "cannot link a device of this person: {e}");
                    }
                }
            }
        }
        for id in linked {
            tracing::info!(space = %id, "linked this person's other devices");
            self.dirty_spaces.insert(id);
            self.outbox.push(NodeEvent::SpaceChanged { space: id });
        }
    }

    /// A sibling's hello named `spaces` as shared with this device: joins,
    /// through it, those this device does not have yet.
    pub(super) fn join_offered(&mut self, peer: &str, spaces: &BTreeSet<SpaceKey>) {
        if self.key.is_none() {
            return;
        }
        if !self.is_sibling(peer) {
            // The inviter's first hello comes before its Private space has
            // arrived here; it is not yet known as a sibling.
            // Kept only from the device this one is being linked by.
            let from_inviter = self
                .linking
                .and_then(|space| self.joining.get(&space))
                .is_some_and(|inviter| inviter == peer);
            if from_inviter {
                self.offered_while_linking = Some((peer.to_string(), spaces.clone()));
            }
            return;
        }
        let new: Vec<SpaceId> = spaces
            .iter()
            .map(|key| SpaceId::from_bytes(*key))
            .filter(|id| !self.spaces.contains_key(id) && !self.joining.contains_key(id))
            .take(MAX_OFFERED_JOINS)
            .collect();
        for id in new {
            if let Err(e) = self.store.add_invitation(&id.to_string(), peer, false) {
                tracing::warn!(space = %id, "cannot join a space of this person: {e}");
                continue;
            }
            tracing::info!(space = %id, via = %short(peer), "joining a space of this person");
            self.joining.insert(id, peer.to_string());
        }
    }

    /// The person's Private space (`new`, just arrived) becomes this
    /// device's: the notes of its own Private space are filed under it, and
    /// the group commit retires the old one.
    pub(super) fn adopt_linked_private(&mut self, new: SpaceId) {
        self.linking = None;
        let Some(old) = self.private_space.filter(|old| *old != new) else {
            return;
        };
        let me = self.node_id.clone();
        let notes = self
            .spaces
            .get(&old)
            .map(|o| o.space.notes())
            .unwrap_or_default();
        let Some(open) = self.spaces.get_mut(&new) else {
            return;
        };
        if !open.space.is_member(&me) {
            tracing::warn!(space = %new, "the person's Private space does not list this device; keeping it as a space");
            return;
        }
        if let Err(e) = open.space.add_notes(&notes, now_ms()) {
            tracing::warn!(space = %new, "cannot file this device's notes in its person's Private space: {e}");
            return;
        }
        for (_, note) in self.open.iter_mut() {
            if note.space == old {
                note.space = new;
            }
        }
        tracing::info!(space = %new, notes = notes.len(), "took the person's Private space as this device's");
        self.private_space = Some(new);
        self.private_switch = Some((old, new));
        self.dirty_spaces.insert(new);
        self.outbox.push(NodeEvent::SpaceChanged { space: new });
        self.outbox.push(NodeEvent::SpaceChanged { space: old });
        if let Some((peer, spaces)) = self.offered_while_linking.take() {
            self.join_offered(&peer, &spaces);
        }
    }
}
