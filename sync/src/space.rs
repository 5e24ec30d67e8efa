//! Spaces: shared notebooks and who may see them.
//!
//! A space's index is one Automerge document: its `name`, its `notes` (note id →
//! when added) and its `log`: the space's signed membership ops (`membership`),
//! each under its hash, never removed. Like a note, the index is created once,
//! on one device, by the space's creator; everyone else receives it by sync.
//! Membership is the trust rule: a device syncs a space only with the members
//! the log's rules compute, and only an owner adds, removes or changes roles.
//!
//! Spaces made before signed membership keep their members in a `members` map
//! (node id → record) that any member could rewrite. Until the space's creator
//! signs them (`adopt`: the creator becomes owner, everyone else editor), such
//! a space works as it did. This module is the model only; it does no I/O.

use std::fmt;
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::membership::{self, Action, DeviceKey, Log, Op, Role};
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

/// A member of a space, as the space's membership says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub name: String,
    /// Node id of the member who granted its role (itself, for the creator).
    pub added_by: String,
    /// Unix milliseconds (0 when not known).
    pub added_at: i64,
    /// In a space whose members are not signed yet (made before signed
    /// membership), the creator is the owner and everyone else an editor.
    #[serde(default = "legacy_role")]
    pub role: Role,
    /// Node id of the person this device belongs to: the device that joined
    /// first (itself, unless another device of the person linked it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub person: String,
}

impl Member {
    /// The node id of the person this device belongs to (its own when no
    /// other device of a person linked it).
    pub fn person_id(&self) -> &str {
        if self.person.is_empty() {
            &self.node_id
        } else {
            &self.person
        }
    }
}

fn legacy_role() -> Role {
    Role::Editor
}

/// A space's index document, and its membership log.
pub struct Space {
    id: SpaceId,
    doc: AutoCommit,
    members: ObjId,
    notes: ObjId,
    /// The map of signed membership ops (hex hash → op), once there is one.
    log_obj: Option<ObjId>,
    log: Log,
    /// Heads already handed to the store (see `Note`'s field of the same name).
    saved: Vec<ChangeHash>,
}

impl Space {
    /// Creates a space whose only member is its creator, as owner.
    pub fn create(
        id: SpaceId,
        actor: &ActorId,
        name: &str,
        creator_key: &[u8; 32],
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
        let log_obj = doc.put_object(ROOT, "log", ObjType::Map).map_err(fail)?;
        let mut space = Space {
            id,
            doc,
            members,
            notes,
            log_obj: Some(log_obj),
            log: Log::new(*id.as_bytes()),
            saved: Vec::new(),
        };
        let root = Op::sign(
            *id.as_bytes(),
            creator_key,
            Vec::new(),
            Action::Create {
                name: creator_name.to_string(),
            },
        );
        space.record(root)?;
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
        let log_obj = map(&doc, "log").ok();
        let saved = doc.get_heads();
        let mut space = Space {
            id,
            doc,
            members,
            notes,
            log_obj,
            log: Log::new(*id.as_bytes()),
            saved,
        };
        space.read_log();
        Ok(space)
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

    /// The node id of the device that created the space: the one whose
    /// actor made the index's `members` map, which no change may remake.
    pub fn creator(&self) -> Option<String> {
        match &self.members {
            ObjId::Id(_, actor, _) => actor.to_bytes().get(..32).map(membership::hex),
            ObjId::Root => None,
        }
    }

    /// Whether the space's members are not signed yet: it was made before
    /// signed membership and its creator has not adopted it (`adopt`).
    pub fn is_legacy(&self) -> bool {
        self.log.is_empty()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Members, in node id order.
    pub fn members(&self) -> Vec<Member> {
        if self.is_legacy() {
            return self.legacy_members();
        }
        self.log
            .membership()
            .members
            .values()
            .map(|m| Member {
                node_id: membership::node_id(&m.device),
                name: m.name.clone(),
                added_by: membership::node_id(&m.granted_by),
                added_at: 0,
                role: m.role,
                person: membership::node_id(&m.person),
            })
            .collect()
    }

    pub fn member(&self, node_id: &str) -> Option<Member> {
        if self.is_legacy() {
            return self.legacy_member(node_id);
        }
        let device = membership::device_key(node_id)?;
        let m = self.log.membership().members.get(&device)?;
        Some(Member {
            node_id: node_id.to_string(),
            name: m.name.clone(),
            added_by: membership::node_id(&m.granted_by),
            added_at: 0,
            role: m.role,
            person: membership::node_id(&m.person),
        })
    }

    pub fn is_member(&self, node_id: &str) -> bool {
        self.role(node_id).is_some()
    }

    pub fn role(&self, node_id: &str) -> Option<Role> {
        self.role_in(&self.log, node_id)
    }

    /// The role `node_id` holds by `log` (this space's log, or one that
    /// `check_ops` extended).
    pub fn role_in(&self, log: &Log, node_id: &str) -> Option<Role> {
        if log.is_empty() {
            return self.legacy_member(node_id).map(|m| m.role);
        }
        let device = membership::device_key(node_id)?;
        log.membership().role(&device)
    }

    /// Whether `node_id` is or ever was a member, by the signed log.
    pub fn ever_member(&self, node_id: &str) -> bool {
        membership::device_key(node_id).is_some_and(|device| self.log.names(&device))
    }

    /// Who removed `node_id` (itself, if it left), if it was a member and is
    /// no more.
    pub fn removed_by(&self, node_id: &str) -> Option<String> {
        let device = membership::device_key(node_id)?;
        self.log
            .removed_by(&device)
            .map(|d| membership::node_id(&d))
    }

    /// The name of the member who removed `node_id`, if another member did
    /// (the start of its node id when it has no name).
    pub fn remover_name(&self, node_id: &str) -> Option<String> {
        let by = self.removed_by(node_id).filter(|by| by != node_id)?;
        Some(
            self.member(&by)
                .map(|m| m.name)
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| short(&by)),
        )
    }

    /// Adds `node_id` under `name` with `role`, signed by `key` (this
    /// device, which must be an owner). In a space whose members are not
    /// signed yet, any member adds, as before.
    pub fn add_member(
        &mut self,
        node_id: &str,
        name: &str,
        role: Role,
        key: &[u8; 32],
        now_ms: i64,
    ) -> Result<()> {
        let by = membership::node_id(&signer(key));
        if self.is_legacy() {
            if !self.is_member(&by) {
                return Err(Error::Invalid(format!(
                    "{} is not a member of space {}, so it cannot add members",
                    short(&by),
                    self.id
                )));
            }
            self.put_legacy_member(node_id, name, &by, now_ms)?;
            self.commit(now_ms);
            return Ok(());
        }
        let member = device(node_id)?;
        self.act(
            key,
            Action::Add {
                member,
                role,
                name: name.to_string(),
            },
            now_ms,
        )
    }

    /// Gives a member another role (as `key`, an owner).
    pub fn set_role(
        &mut self,
        node_id: &str,
        role: Role,
        key: &[u8; 32],
        now_ms: i64,
    ) -> Result<()> {
        self.require_signed()?;
        let member = device(node_id)?;
        self.act(key, Action::SetRole { member, role }, now_ms)
    }

    /// Removes a member: devices stop syncing this space with them, and
    /// refuse what they author from now on.
    pub fn remove_member(&mut self, node_id: &str, key: &[u8; 32], now_ms: i64) -> Result<()> {
        if self.is_legacy() {
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
            return Ok(());
        }
        let member = device(node_id)?;
        self.act(key, Action::Remove { member }, now_ms)
    }

    /// Links `node_id` as one more device of this device's (`key`'s) person,
    /// with this device's role, shown as `name`.
    pub fn link_device(
        &mut self,
        node_id: &str,
        name: &str,
        key: &[u8; 32],
        now_ms: i64,
    ) -> Result<()> {
        self.require_signed()?;
        let me = membership::node_id(&signer(key));
        let role = self.role_in(&self.log, &me).ok_or_else(|| {
            Error::Invalid(format!("this device is not a member of space {}", self.id))
        })?;
        let device = device(node_id)?;
        self.act(
            key,
            Action::Link {
                device,
                role,
                name: name.to_string(),
            },
            now_ms,
        )
    }

    /// This device (`key`) leaves the space.
    pub fn leave(&mut self, key: &[u8; 32], now_ms: i64) -> Result<()> {
        self.require_signed()?;
        self.act(key, Action::Leave, now_ms)
    }

    /// Signs the members of a space made before signed membership, if this
    /// device created it: the creator becomes its owner and everyone else an
    /// editor. Returns whether it did.
    pub fn adopt(&mut self, key: &[u8; 32], now_ms: i64) -> Result<bool> {
        let me = membership::node_id(&signer(key));
        if !self.is_legacy() || self.creator().as_deref() != Some(me.as_str()) {
            return Ok(false);
        }
        let members = self.legacy_members();
        let my_name = members
            .iter()
            .find(|m| m.node_id == me)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if self.log_obj.is_none() {
            let obj = self
                .doc
                .put_object(ROOT, "log", ObjType::Map)
                .map_err(|e| damaged(&self.id, e))?;
            self.log_obj = Some(obj);
        }
        let root = Op::sign(
            *self.id.as_bytes(),
            key,
            Vec::new(),
            Action::Create { name: my_name },
        );
        self.record(root)?;
        for member in members.iter().filter(|m| m.node_id != me) {
            let Some(device) = membership::device_key(&member.node_id) else {
                continue;
            };
            let add = Action::Add {
                member: device,
                role: Role::Editor,
                name: member.name.clone(),
            };
            let op = Op::sign(*self.id.as_bytes(), key, self.log.heads(), add);
            self.record(op)?;
        }
        self.commit(now_ms);
        Ok(true)
    }

    /// Takes in ops from elsewhere (a peer telling this device it was
    /// removed): those that go in are recorded in the index. Returns how many.
    pub fn receive_ops(&mut self, ops: Vec<Op>, now_ms: i64) -> Result<usize> {
        let mut added = 0;
        for op in in_causal_order(ops) {
            if self.log.contains(&op.hash()) {
                continue;
            }
            if self.accepts_root(&op) && self.record(op).is_ok() {
                added += 1;
            }
        }
        if added > 0 {
            self.commit(now_ms);
        }
        Ok(added)
    }

    /// Whether `ops` (membership ops a remote change puts into the index)
    /// would all go into the log: each verifies, its parents are in the log
    /// or among them, its own past allows it, and a root is the creator's.
    /// Returns the log they would make.
    pub fn check_ops(&self, ops: Vec<Op>) -> std::result::Result<Log, String> {
        let mut log = self.log.clone();
        for op in in_causal_order(ops) {
            if !self.accepts_root(&op) {
                return Err(
                    "creates the space's membership as another device than its creator".into(),
                );
            }
            log.insert(op).map_err(|e| e.to_string())?;
        }
        Ok(log)
    }

    /// Reads ops the index holds that the log does not have yet (after a
    /// remote change was merged).
    pub fn read_log(&mut self) {
        let Some(obj) = self.log_obj.clone() else {
            if let Ok(Some((Value::Object(ObjType::Map), obj))) = self.doc.get(ROOT, "log") {
                self.log_obj = Some(obj);
                return self.read_log();
            }
            return;
        };
        let mut ops = Vec::new();
        for key in self.doc.keys(&obj).collect::<Vec<_>>() {
            let Ok(Some((Value::Scalar(v), _))) = self.doc.get(&obj, key.as_str()) else {
                continue;
            };
            if let ScalarValue::Bytes(bytes) = v.as_ref() {
                match Op::from_bytes(bytes) {
                    Ok(op) if !self.log.contains(&op.hash()) => ops.push(op),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(space = %self.id, "skipping a membership op: {e}"),
                }
            }
        }
        for op in in_causal_order(ops) {
            if !self.accepts_root(&op) {
                tracing::warn!(space = %self.id, "skipping a root op not by the space's creator");
                continue;
            }
            if let Err(e) = self.log.insert(op) {
                tracing::warn!(space = %self.id, "skipping a membership op: {e}");
            }
        }
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

    fn require_signed(&self) -> Result<()> {
        if self.is_legacy() {
            return Err(Error::Invalid(format!(
                "the members of space {} are not signed yet: its creator's device signs \
                 them when it next opens the space with this version of Peernotes",
                self.id
            )));
        }
        Ok(())
    }

    /// Signs `action` by `key` on the log's heads, and records it.
    fn act(&mut self, key: &[u8; 32], action: Action, now_ms: i64) -> Result<()> {
        let op = Op::sign(*self.id.as_bytes(), key, self.log.heads(), action);
        self.record(op).map_err(|e| match e {
            Error::Invalid(why) => Error::Invalid(
                why.replace("a membership op refused: its author", "this device")
                    .replace("a membership op refused: it", "that"),
            ),
            other => other,
        })?;
        self.commit(now_ms);
        Ok(())
    }

    /// Inserts an op into the log and puts it into the index.
    fn record(&mut self, op: Op) -> Result<()> {
        let hash = op.hash();
        let bytes = op.to_bytes();
        self.log.insert(op)?;
        let obj = self
            .log_obj
            .clone()
            .expect("a signed space has its log map");
        self.doc
            .put(&obj, membership::hex(&hash), ScalarValue::Bytes(bytes))
            .map_err(|e| damaged(&self.id, e))
    }

    /// A root op counts only if the space's creator made it.
    fn accepts_root(&self, op: &Op) -> bool {
        !matches!(op.action(), Action::Create { .. })
            || self.creator().as_deref() == Some(membership::node_id(op.author()).as_str())
    }

    fn legacy_members(&self) -> Vec<Member> {
        self.doc
            .keys(&self.members)
            .filter_map(|key| self.legacy_member(&key))
            .collect()
    }

    /// The member filed under `node_id` in the index's `members` map (spaces
    /// made before signed membership), if its value is a member record.
    fn legacy_member(&self, node_id: &str) -> Option<Member> {
        let record = match self.doc.get(&self.members, node_id) {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(json) => serde_json::from_str::<Member>(json).ok()?,
                _ => return None,
            },
            _ => return None,
        };
        let role = if self.creator().as_deref() == Some(node_id) {
            Role::Owner
        } else {
            Role::Editor
        };
        Some(Member {
            node_id: node_id.to_string(),
            role,
            person: node_id.to_string(),
            ..record
        })
    }

    fn put_legacy_member(
        &mut self,
        node_id: &str,
        name: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<()> {
        // One scalar per member: concurrent adds of the same member by two devices
        // resolve to one value instead of racing to create a nested object.
        let member = Member {
            node_id: node_id.to_string(),
            name: name.to_string(),
            added_by: by.to_string(),
            added_at: now_ms,
            role: Role::Editor,
            person: String::new(),
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

/// The device a secret key signs as.
fn signer(key: &[u8; 32]) -> DeviceKey {
    ed25519_dalek::SigningKey::from_bytes(key)
        .verifying_key()
        .to_bytes()
}

fn device(node_id: &str) -> Result<DeviceKey> {
    membership::device_key(node_id).ok_or_else(|| {
        Error::Invalid(format!(
            "`{node_id}` is not a node id (64 hexadecimal digits; see `peernotes id`)"
        ))
    })
}

/// Ops ordered so that each comes after those of its parents among them
/// (ops whose parents never arrive keep their place at the end).
fn in_causal_order(ops: Vec<Op>) -> Vec<Op> {
    let hashes: std::collections::HashSet<_> = ops.iter().map(Op::hash).collect();
    let mut placed = std::collections::HashSet::new();
    let mut ordered = Vec::with_capacity(ops.len());
    let mut rest = ops;
    loop {
        let before = rest.len();
        let mut still = Vec::new();
        for op in rest {
            let ready = op
                .parents()
                .iter()
                .all(|p| !hashes.contains(p) || placed.contains(p));
            if ready {
                placed.insert(op.hash());
                ordered.push(op);
            } else {
                still.push(op);
            }
        }
        rest = still;
        if rest.is_empty() || rest.len() == before {
            ordered.extend(rest);
            return ordered;
        }
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

    const ALICE: [u8; 32] = [1; 32];
    const BOB: [u8; 32] = [2; 32];
    const MALLORY: [u8; 32] = [3; 32];

    fn id(key: &[u8; 32]) -> String {
        membership::node_id(&signer(key))
    }

    fn actor(key: &[u8; 32]) -> ActorId {
        let mut bytes = signer(key).to_vec();
        bytes.push(0);
        ActorId::from(bytes)
    }

    fn space() -> Space {
        Space::create(
            SpaceId::generate(),
            &actor(&ALICE),
            "Team",
            &ALICE,
            "Alice",
            1,
        )
        .unwrap()
    }

    #[test]
    fn the_creator_owns_the_space_and_only_owners_manage_it() {
        let mut s = space();
        assert_eq!(s.name(), "Team");
        assert_eq!(s.creator(), Some(id(&ALICE)));
        assert_eq!(s.role(&id(&ALICE)), Some(Role::Owner));
        s.add_member(&id(&BOB), "Bob", Role::Editor, &ALICE, 2)
            .unwrap();
        let bob = s.member(&id(&BOB)).unwrap();
        assert_eq!((bob.name.as_str(), bob.role), ("Bob", Role::Editor));
        assert_eq!(bob.added_by, id(&ALICE));
        let err = s
            .add_member(&id(&MALLORY), "M", Role::Owner, &BOB, 3)
            .unwrap_err();
        assert!(err.to_string().contains("not an owner"), "{err}");
        assert!(s
            .add_member(&id(&MALLORY), "M", Role::Owner, &MALLORY, 3)
            .is_err());
        s.remove_member(&id(&BOB), &ALICE, 4).unwrap();
        assert!(!s.is_member(&id(&BOB)));
        assert_eq!(s.removed_by(&id(&BOB)), Some(id(&ALICE)));
        assert!(s.remove_member(&id(&BOB), &ALICE, 5).is_err());
        assert!(s.leave(&ALICE, 6).is_err(), "the last owner stays");
    }

    #[test]
    fn the_log_survives_a_save_and_syncs_with_the_index() {
        let mut a = space();
        a.add_member(&id(&BOB), "Bob", Role::Viewer, &ALICE, 2)
            .unwrap();
        let sid = a.id();
        let mut b =
            Space::from_doc(sid, &actor(&BOB), AutoCommit::load(&a.save()).unwrap()).unwrap();
        assert_eq!(b.role(&id(&BOB)), Some(Role::Viewer));
        let (n1, n2) = (NoteId::generate(), NoteId::generate());
        a.add_note(&n1, 3).unwrap();
        b.add_note(&n2, 3).unwrap();
        a.set_role(&id(&BOB), Role::Editor, &ALICE, 4).unwrap();
        a.doc_mut().merge(b.doc_mut()).unwrap();
        b.doc_mut().merge(a.doc_mut()).unwrap();
        b.read_log();
        let mut notes = vec![n1, n2];
        notes.sort();
        assert_eq!(a.notes(), notes);
        assert_eq!(b.role(&id(&BOB)), Some(Role::Editor));
    }

    #[test]
    fn a_legacy_space_is_adopted_by_its_creator_only() {
        // A space as the previous version made it: members in a map.
        let mut doc = AutoCommit::new().with_actor(actor(&ALICE));
        doc.put(ROOT, "name", "Old").unwrap();
        let members = doc.put_object(ROOT, "members", ObjType::Map).unwrap();
        doc.put_object(ROOT, "notes", ObjType::Map).unwrap();
        for (key, name) in [(&ALICE, "Alice"), (&BOB, "Bob")] {
            let record = Member {
                node_id: id(key),
                name: name.into(),
                added_by: id(&ALICE),
                added_at: 1,
                role: Role::Editor,
                person: String::new(),
            };
            let json = serde_json::to_string(&record).unwrap();
            doc.put(&members, id(key), json).unwrap();
        }
        doc.commit();
        let sid = SpaceId::generate();
        let saved = doc.save();
        let mut bobs =
            Space::from_doc(sid, &actor(&BOB), AutoCommit::load(&saved).unwrap()).unwrap();
        assert!(bobs.is_legacy());
        assert_eq!(bobs.role(&id(&ALICE)), Some(Role::Owner));
        assert_eq!(bobs.role(&id(&BOB)), Some(Role::Editor));
        assert!(!bobs.adopt(&BOB, 2).unwrap(), "only the creator signs");
        let mut alices =
            Space::from_doc(sid, &actor(&ALICE), AutoCommit::load(&saved).unwrap()).unwrap();
        assert!(alices.adopt(&ALICE, 2).unwrap());
        assert!(!alices.is_legacy());
        assert_eq!(alices.member(&id(&BOB)).unwrap().name, "Bob");
        bobs.doc_mut().merge(alices.doc_mut()).unwrap();
        bobs.read_log();
        assert!(!bobs.is_legacy());
        assert_eq!(bobs.role(&id(&ALICE)), Some(Role::Owner));
        assert_eq!(bobs.role(&id(&BOB)), Some(Role::Editor));
    }

    #[test]
    fn space_ids_round_trip_as_hex() {
        let id = SpaceId::generate();
        assert_eq!(id.to_string().parse::<SpaceId>().unwrap(), id);
        assert!("nope".parse::<SpaceId>().is_err());
        assert!("é".repeat(16).parse::<SpaceId>().is_err());
    }
}
