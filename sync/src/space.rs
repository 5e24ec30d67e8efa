//! Spaces: shared notebooks and who may see them.
//!
//! A space's index is one Automerge document: its `name`, its `members` (node id →
//! display name, who added them, when) and its `notes` (note id → when added).
//! Like a note, the index is created once, on one device, by the space's first
//! member; everyone else receives it by sync. Membership is the trust rule: a
//! device syncs a space only with the space's members, and only a member may add
//! another. This module is the model only; it does no I/O.

use std::fmt;
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::note::NoteId;

/// A space's identity: 16 random bytes, written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId([u8; 16]);

impl SpaceId {
    pub fn generate() -> SpaceId {
        SpaceId(*uuid::Uuid::new_v4().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> SpaceId {
        SpaceId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The key its index document is stored under.
    pub fn doc_key(&self) -> String {
        format!("space-{self}")
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for SpaceId {
    type Err = Error;
    fn from_str(s: &str) -> Result<SpaceId> {
        let bad = || Error::Invalid(format!("`{s}` is not a space id (32 hexadecimal digits)"));
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(SpaceId(bytes))
    }
}

impl Serialize for SpaceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SpaceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<SpaceId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A member of a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub name: String,
    /// Node id of the member who added this one (themselves, for the creator).
    pub added_by: String,
    /// Unix milliseconds.
    pub added_at: i64,
}

/// A space's index document.
pub struct Space {
    id: SpaceId,
    doc: AutoCommit,
    members: ObjId,
    notes: ObjId,
    /// Heads already handed to the store (see `Note`'s field of the same name).
    saved: Vec<ChangeHash>,
}

impl Space {
    /// Creates a space whose only member is its creator.
    pub fn create(
        id: SpaceId,
        actor: &ActorId,
        name: &str,
        creator: &str,
        creator_name: &str,
        now_ms: i64,
    ) -> Result<Space> {
        let mut doc = AutoCommit::new().with_actor(actor.clone());
        let fail = |e: automerge::AutomergeError| damaged(&id, e);
        doc.put(ROOT, "name", name).map_err(fail)?;
        let members = doc
            .put_object(ROOT, "members", ObjType::Map)
            .map_err(fail)?;
        let notes = doc.put_object(ROOT, "notes", ObjType::Map).map_err(fail)?;
        let mut space = Space {
            id,
            doc,
            members,
            notes,
            saved: Vec::new(),
        };
        space.put_member(creator, creator_name, creator, now_ms)?;
        space.commit(now_ms);
        Ok(space)
    }

    /// Wraps a loaded index document; everything in it counts as stored.
    pub fn from_doc(id: SpaceId, actor: &ActorId, doc: AutoCommit) -> Result<Space> {
        let mut doc = doc.with_actor(actor.clone());
        let map = |doc: &AutoCommit, key: &str| match doc.get(ROOT, key) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Ok(obj),
            _ => Err(Error::NoteDamaged {
                id: id.to_string(),
                detail: format!("the space's index has no {key}"),
            }),
        };
        let members = map(&doc, "members")?;
        let notes = map(&doc, "notes")?;
        let saved = doc.get_heads();
        Ok(Space {
            id,
            doc,
            members,
            notes,
            saved,
        })
    }

    /// Wraps an index that arrived from a peer: none of it is stored yet.
    pub fn from_remote(id: SpaceId, actor: &ActorId, doc: AutoCommit) -> Result<Space> {
        let mut space = Space::from_doc(id, actor, doc)?;
        space.saved.clear();
        Ok(space)
    }

    pub fn id(&self) -> SpaceId {
        self.id
    }

    pub fn name(&self) -> String {
        match self.doc.get(ROOT, "name") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(name) => name.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Members, in node id order. The map key is the member's identity; a value
    /// whose own `node_id` disagrees with its key is corrected to the key.
    pub fn members(&self) -> Vec<Member> {
        self.doc
            .keys(&self.members)
            .filter_map(|key| self.member(&key))
            .collect()
    }

    /// The member filed under `node_id`, if its value is a member record. A
    /// value that is not one makes nobody a member: whoever can sync a space
    /// is always listed by `members`, so they can be seen and removed.
    pub fn member(&self, node_id: &str) -> Option<Member> {
        match self.doc.get(&self.members, node_id) {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(json) => {
                    serde_json::from_str::<Member>(json).ok().map(|m| Member {
                        node_id: node_id.to_string(),
                        ..m
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub fn is_member(&self, node_id: &str) -> bool {
        self.member(node_id).is_some()
    }

    /// `by` (a member) adds `node_id` under `name`.
    pub fn add_member(&mut self, node_id: &str, name: &str, by: &str, now_ms: i64) -> Result<()> {
        if !self.is_member(by) {
            return Err(Error::Invalid(format!(
                "{} is not a member of space {}, so it cannot add members",
                short(by),
                self.id
            )));
        }
        self.put_member(node_id, name, by, now_ms)?;
        self.commit(now_ms);
        Ok(())
    }

    /// Removes a member: devices stop syncing this space with them.
    pub fn remove_member(&mut self, node_id: &str, now_ms: i64) -> Result<()> {
        // Any value under the key goes, member record or not.
        if !matches!(self.doc.get(&self.members, node_id), Ok(Some(_))) {
            return Err(Error::Invalid(format!(
                "{} is not a member of space {}",
                short(node_id),
                self.id
            )));
        }
        self.doc
            .delete(&self.members, node_id)
            .map_err(|e| damaged(&self.id, e))?;
        self.commit(now_ms);
        Ok(())
    }

    /// The space's notes, in id order.
    pub fn notes(&self) -> Vec<NoteId> {
        self.doc
            .keys(&self.notes)
            .filter_map(|k| k.parse().ok())
            .collect()
    }

    pub fn add_note(&mut self, note: &NoteId, now_ms: i64) -> Result<()> {
        self.add_notes(std::slice::from_ref(note), now_ms)
    }

    /// Adds several notes as one change.
    pub fn add_notes(&mut self, notes: &[NoteId], now_ms: i64) -> Result<()> {
        for note in notes {
            self.doc
                .put(&self.notes, note.as_str(), now_ms)
                .map_err(|e| damaged(&self.id, e))?;
        }
        self.commit(now_ms);
        Ok(())
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The changes made since the last call (or load), for the store.
    pub fn take_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.saved);
        self.saved = self.doc.get_heads();
        bytes
    }

    /// The whole index as one snapshot.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.saved = self.doc.get_heads();
        bytes
    }

    pub fn doc_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    fn put_member(&mut self, node_id: &str, name: &str, by: &str, now_ms: i64) -> Result<()> {
        // One scalar per member: concurrent adds of the same member by two devices
        // resolve to one value instead of racing to create a nested object.
        let member = Member {
            node_id: node_id.to_string(),
            name: name.to_string(),
            added_by: by.to_string(),
            added_at: now_ms,
        };
        let json = serde_json::to_string(&member).expect("a member serialises");
        self.doc
            .put(&self.members, node_id, json)
            .map_err(|e| damaged(&self.id, e))
    }

    fn commit(&mut self, now_ms: i64) {
        self.doc
            .commit_with(CommitOptions::default().with_time(now_ms / 1000));
    }
}

fn short(node_id: &str) -> String {
    node_id.chars().take(8).collect()
}

fn damaged(id: &SpaceId, e: automerge::AutomergeError) -> Error {
    Error::NoteDamaged {
        id: id.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "aa11";
    const BOB: &str = "bb22";
    const MALLORY: &str = "cc33";

    fn space() -> Space {
        Space::create(
            SpaceId::generate(),
            &ActorId::random(),
            "Team",
            ALICE,
            "Alice",
            1,
        )
        .unwrap()
    }

    #[test]
    fn the_creator_is_the_first_member_and_adds_others() {
        let mut s = space();
        assert_eq!(s.name(), "Team");
        assert!(s.is_member(ALICE));
        s.add_member(BOB, "Bob", ALICE, 2).unwrap();
        let bob = s.members().into_iter().find(|m| m.node_id == BOB).unwrap();
        assert_eq!((bob.name.as_str(), bob.added_by.as_str()), ("Bob", ALICE));
        assert!(
            s.add_member(MALLORY, "M", MALLORY, 3).is_err(),
            "a stranger cannot add itself"
        );
        s.remove_member(BOB, 4).unwrap();
        assert!(!s.is_member(BOB));
        assert!(s.remove_member(BOB, 5).is_err());
    }

    #[test]
    fn concurrent_member_and_note_additions_merge() {
        let mut a = space();
        let id = a.id();
        let mut b = Space::from_doc(id, &ActorId::random(), a.doc_mut().fork()).unwrap();
        a.add_member(BOB, "Bob", ALICE, 2).unwrap();
        let (n1, n2) = (NoteId::generate(), NoteId::generate());
        a.add_note(&n1, 3).unwrap();
        b.add_note(&n2, 3).unwrap();
        b.add_member(BOB, "Bobby", ALICE, 3).unwrap();
        a.doc_mut().merge(b.doc_mut()).unwrap();
        let mut notes = vec![n1, n2];
        notes.sort();
        assert_eq!(a.notes(), notes);
        assert_eq!(a.members().len(), 2, "one Bob, whichever name won");
    }

    #[test]
    fn space_ids_round_trip_as_hex() {
        let id = SpaceId::generate();
        assert_eq!(id.to_string().parse::<SpaceId>().unwrap(), id);
        assert!("nope".parse::<SpaceId>().is_err());
        assert!("é".repeat(16).parse::<SpaceId>().is_err());
    }
}
