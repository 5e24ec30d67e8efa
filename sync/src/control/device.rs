//! `Device`: what a shell may ask of a device's notes and spaces, whether it
//! holds the data dir itself (`Node`) or reaches the process that does over
//! the control socket (`Client`). The CLI runs each writing command against a
//! `&dyn Device`, so its output and exit codes are the same either way.

use std::path::Path;

use crate::error::Result;
use crate::membership::Role;
use crate::node::{Heads, Node, SpaceInfo};
use crate::note::{ChangeInfo, NoteId};
use crate::space::{Member, SpaceId};
use crate::vault::{self, ImportReport};

pub trait Device {
    /// The note a typed id (or the start of one) names.
    fn find(&self, typed: &str) -> Result<NoteId>;
    /// The space a typed name or id names.
    fn find_space(&self, typed: &str) -> Result<SpaceId>;
    fn private_space(&self) -> Result<SpaceId>;
    /// Creates a note in `space`; it is saved when this returns.
    fn create_in(&self, space: SpaceId, text: &str) -> Result<NoteId>;
    /// A note's text and the state it is at, to edit it elsewhere.
    fn checkout(&self, id: &NoteId) -> Result<(String, Heads)>;
    /// Replaces the text edited from `base`, merging whatever happened since;
    /// saved when this returns. False if nothing changed.
    fn replace_text_since(&self, id: &NoteId, base: &Heads, text: &str) -> Result<bool>;
    fn trash(&self, id: &NoteId) -> Result<()>;
    fn restore(&self, id: &NoteId) -> Result<()>;
    fn history(&self, id: &NoteId, limit: usize) -> Result<Vec<ChangeInfo>>;
    /// Imports every `.md` file under `dir` (a path the device can read).
    fn import(&self, dir: &Path, skip_invalid: bool) -> Result<ImportReport>;
    /// Compacts every note; the store's size before and after, in bytes.
    fn compact(&self) -> Result<(u64, u64)>;
    /// Every space, the private one first.
    fn spaces(&self) -> Result<Vec<SpaceInfo>>;
    fn members(&self, space: SpaceId) -> Result<Vec<Member>>;
    fn create_space(&self, name: &str) -> Result<SpaceId>;
    fn add_member(&self, space: SpaceId, node_id: &str, name: &str, role: Role) -> Result<()>;
    fn set_role(&self, space: SpaceId, node_id: &str, role: Role) -> Result<()>;
    fn remove_member(&self, space: SpaceId, node_id: &str) -> Result<()>;
    fn leave_space(&self, space: SpaceId) -> Result<()>;
    fn join_space(&self, space: SpaceId, inviter: &str) -> Result<()>;
    /// This device's person's devices (this one among them).
    fn devices(&self) -> Result<Vec<Member>>;
    /// Revokes one of them in every space; returns those spaces.
    fn remove_device(&self, node_id: &str) -> Result<Vec<SpaceId>>;
}

impl Device for Node {
    fn find(&self, typed: &str) -> Result<NoteId> {
        Node::find(self, typed)
    }

    fn find_space(&self, typed: &str) -> Result<SpaceId> {
        Node::find_space(self, typed)
    }

    fn private_space(&self) -> Result<SpaceId> {
        Node::private_space(self)
    }

    fn create_in(&self, space: SpaceId, text: &str) -> Result<NoteId> {
        let id = Node::create_in(self, space, text)?;
        self.flush()?;
        Ok(id)
    }

    fn checkout(&self, id: &NoteId) -> Result<(String, Heads)> {
        Node::checkout(self, id)
    }

    fn replace_text_since(&self, id: &NoteId, base: &Heads, text: &str) -> Result<bool> {
        let changed = Node::replace_text_since(self, id, base, text)?;
        if changed {
            self.flush()?;
        }
        Ok(changed)
    }

    fn trash(&self, id: &NoteId) -> Result<()> {
        Node::trash(self, id)?;
        self.flush()
    }

    fn restore(&self, id: &NoteId) -> Result<()> {
        Node::restore(self, id)?;
        self.flush()
    }

    fn history(&self, id: &NoteId, limit: usize) -> Result<Vec<ChangeInfo>> {
        Node::history(self, id, limit)
    }

    fn import(&self, dir: &Path, skip_invalid: bool) -> Result<ImportReport> {
        vault::import(self, dir, skip_invalid)
    }

    fn compact(&self) -> Result<(u64, u64)> {
        let before = self.store_size();
        self.compact_all()?;
        Ok((before, self.store_size()))
    }

    fn spaces(&self) -> Result<Vec<SpaceInfo>> {
        Node::spaces(self)
    }

    fn members(&self, space: SpaceId) -> Result<Vec<Member>> {
        Node::members(self, space)
    }

    fn create_space(&self, name: &str) -> Result<SpaceId> {
        Node::create_space(self, name)
    }

    fn add_member(&self, space: SpaceId, node_id: &str, name: &str, role: Role) -> Result<()> {
        Node::add_member(self, space, node_id, name, role)
    }

    fn set_role(&self, space: SpaceId, node_id: &str, role: Role) -> Result<()> {
        Node::set_role(self, space, node_id, role)
    }

    fn remove_member(&self, space: SpaceId, node_id: &str) -> Result<()> {
        Node::remove_member(self, space, node_id)
    }

    fn leave_space(&self, space: SpaceId) -> Result<()> {
        Node::leave_space(self, space)
    }

    fn join_space(&self, space: SpaceId, inviter: &str) -> Result<()> {
        Node::join_space(self, space, inviter)
    }

    fn devices(&self) -> Result<Vec<Member>> {
        Node::devices(self)
    }

    fn remove_device(&self, node_id: &str) -> Result<Vec<SpaceId>> {
        Node::remove_device(self, node_id)
    }
}
