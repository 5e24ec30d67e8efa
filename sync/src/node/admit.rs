//! Admission: whether changes from a peer may be applied to a note or a space
//! index, decided before they touch the document.
//!
//! Automerge lets a change replace any key of a document, including the
//! objects Peernotes relies on: a note's `text`, an index's `members` and
//! `notes`. One such change would make a note unloadable or send honest edits
//! into an orphaned object, make a space vanish, or plant a member record
//! `members()` cannot read (so a device could sync and appear nowhere). So
//! every remote change is read op by op against the shape its document must
//! keep, and a change set with any op outside that shape is refused whole:
//!
//! - **Note**: the root holds `text` (a Text object, made once, by the change
//!   that creates the note) and scalars (`created_at`, `trashed_at`); the text
//!   holds characters and marks, never objects.
//! - **Space index**: the root holds `members` and `notes` (maps, made once,
//!   by the change that creates the space), `log` (a map, made once, by the
//!   space's creator) and scalars (`name`); `members` (spaces made before
//!   signed membership) maps a node id to a JSON member record naming that
//!   node id (removing a member deletes its key); `notes` maps a note id to a
//!   number, and a note once listed stays listed (trash is the note's own
//!   business); `log` maps an op's hash (hex) to that signed membership op,
//!   and an op once there stays. The ops a change set puts are returned, for
//!   the space's log to check (`Space::check_ops`) before anything is applied.
//!
//! A whole document that arrives for a document this device does not have yet
//! is checked by its final shape instead (`check_shape`): everything in it
//! comes from that one sender, so only what it ends up as matters, and that
//! costs one pass over its values rather than decoding its whole history.
//! Pure functions; no I/O.

use std::collections::HashSet;

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{AutoCommit, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::membership::{self, Op};
use crate::note::NoteId;
use crate::space::Member;

/// Which shape a document must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Note,
    Index,
}

/// Longest member record accepted (a name is at most 100 characters).
const MAX_MEMBER_RECORD: usize = 4096;

/// The objects of `target` that remote changes may write into, and what kind
/// each is.
struct Objects {
    /// (counter, actor bytes) of an object, and its role.
    known: Vec<(u64, Vec<u8>, Role)>,
    /// Root keys already holding the objects a shape makes once.
    made: HashSet<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Text,
    Members,
    Notes,
    Log,
}

impl Objects {
    fn of(target: &AutoCommit, shape: Shape) -> Objects {
        let mut objects = Objects {
            known: Vec::new(),
            made: HashSet::new(),
        };
        let slots: &[(&'static str, ObjType, Role)] = match shape {
            Shape::Note => &[("text", ObjType::Text, Role::Text)],
            Shape::Index => &[
                ("members", ObjType::Map, Role::Members),
                ("notes", ObjType::Map, Role::Notes),
                ("log", ObjType::Map, Role::Log),
            ],
        };
        for (key, kind, role) in slots {
            if let Ok(Some((value, id))) = target.get(ROOT, *key) {
                objects.made.insert(key);
                if let (Value::Object(k), ObjId::Id(counter, actor, _)) = (value, id) {
                    if k == *kind {
                        objects
                            .known
                            .push((counter, actor.to_bytes().to_vec(), *role));
                    }
                }
            }
        }
        objects
    }

    fn role(&self, obj: &ObjectId) -> Option<Role> {
        let ObjectId::Id(OpId(counter, actor)) = obj else {
            return None;
        };
        self.known
            .iter()
            .find(|(c, a, _)| c == counter && a.as_slice() == actor.to_bytes())
            .map(|(_, _, role)| *role)
    }
}

/// What admitted changes do besides keeping the shape.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    /// The membership ops they put into an index's log.
    pub(super) ops: Vec<Op>,
    /// For each change, whether it only puts ops into the log (what a member
    /// that may not edit may still do: leave).
    pub(super) log_only: Vec<bool>,
}

/// Checks every op of `changes` (in causal order) against the shape `target`
/// must keep. `Err` names the first op outside it.
pub(super) fn admit(
    target: &AutoCommit,
    shape: Shape,
    changes: &[Change],
) -> Result<Admitted, String> {
    let mut objects = Objects::of(target, shape);
    let mut creator = index_creator(target);
    let mut admitted = Admitted::default();
    let ops = &mut admitted.ops;
    for change in changes {
        let expanded = change.decode();
        let mut log_only = !expanded.operations.is_empty();
        for (i, op) in expanded.operations.iter().enumerate() {
            log_only &= objects.role(&op.obj) == Some(Role::Log);
            let id = OpId(
                expanded.start_op.get() + i as u64,
                expanded.actor_id.clone(),
            );
            let step = Step {
                shape,
                creator: &mut creator,
                ops,
            };
            admit_op(&mut objects, step, op, id)
                .map_err(|e| format!("change {} {e}", short_hash(change)))?;
        }
        admitted.log_only.push(log_only);
    }
    Ok(admitted)
}

/// What admitting one op may need besides the objects.
struct Step<'a> {
    shape: Shape,
    /// The node id bytes of the index's creator (the actor that made
    /// `members`), once known.
    creator: &'a mut Option<Vec<u8>>,
    ops: &'a mut Vec<Op>,
}

/// The node id bytes of the device that made an index's `members` map.
fn index_creator(doc: &AutoCommit) -> Option<Vec<u8>> {
    match doc.get(ROOT, "members") {
        Ok(Some((_, ObjId::Id(_, actor, _)))) => actor.to_bytes().get(..32).map(<[u8]>::to_vec),
        _ => None,
    }
}

fn admit_op(
    objects: &mut Objects,
    step: Step<'_>,
    op: &automerge::legacy::Op,
    id: OpId,
) -> Result<(), String> {
    let shape = step.shape;
    let key = match &op.key {
        Key::Map(key) => Some(key.as_str()),
        Key::Seq(_) => None,
    };
    if op.obj == ObjectId::Root {
        let key = key.ok_or("writes a sequence position into the document's root")?;
        let slot = match (shape, key) {
            (Shape::Note, "text") => Some(("text", ObjType::Text, Role::Text)),
            (Shape::Index, "members") => Some(("members", ObjType::Map, Role::Members)),
            (Shape::Index, "notes") => Some(("notes", ObjType::Map, Role::Notes)),
            (Shape::Index, "log") => Some(("log", ObjType::Map, Role::Log)),
            _ => None,
        };
        let by = id.1.to_bytes().get(..32).map(<[u8]>::to_vec);
        if let (Some((name, ..)), OpType::Make(_)) = (slot, &op.action) {
            if name == "members" && step.creator.is_none() {
                *step.creator = by.clone();
            }
            // Only the space's creator makes its log (a space made before
            // signed membership is signed by its creator, nobody else).
            if name == "log" && (step.creator.is_none() || *step.creator != by) {
                return Err(
                    "makes the space's membership log as another device than its creator".into(),
                );
            }
        }
        return match (slot, &op.action) {
            // The creating change makes each object once.
            (Some((name, kind, role)), OpType::Make(made))
                if *made == kind && !objects.made.contains(name) =>
            {
                objects.made.insert(name);
                objects.known.push((id.0, id.1.to_bytes().to_vec(), role));
                Ok(())
            }
            (Some((name, ..)), _) => Err(format!("replaces the document's `{name}`")),
            (None, OpType::Put(_) | OpType::Delete) => Ok(()),
            (None, _) => Err(format!("puts an object under the root key `{key}`")),
        };
    }
    match (objects.role(&op.obj), &op.action) {
        (Some(Role::Text), OpType::Put(_) | OpType::Delete)
        | (Some(Role::Text), OpType::MarkBegin(_) | OpType::MarkEnd(_)) => Ok(()),
        (Some(Role::Text), _) => Err("puts an object into a note's text".into()),
        (Some(Role::Members), _) if objects.made.contains("log") => {
            Err("writes the member map of a space whose members are signed".into())
        }
        (Some(Role::Members), OpType::Delete) => Ok(()),
        (Some(Role::Members), OpType::Put(ScalarValue::Str(record))) => {
            let node_id = key.ok_or("writes a position into the member map")?;
            member_record(node_id, record)
        }
        (Some(Role::Members), _) => {
            Err("puts something other than a member record into members".into())
        }
        (Some(Role::Notes), OpType::Delete) => Err("removes a note from the space's index".into()),
        (
            Some(Role::Notes),
            OpType::Put(ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_)),
        ) => match key.map(str::parse::<NoteId>) {
            Some(Ok(_)) => Ok(()),
            _ => Err("lists something other than a note id in notes".into()),
        },
        (Some(Role::Notes), _) => Err("puts something other than a time into notes".into()),
        (Some(Role::Log), OpType::Put(ScalarValue::Bytes(bytes))) => {
            let key = key.ok_or("writes a position into the membership log")?;
            let signed = Op::from_bytes(bytes).map_err(|e| format!("puts a bad op: {e}"))?;
            if membership::hex(&signed.hash()) != key {
                return Err("files a membership op under another hash".into());
            }
            step.ops.push(signed);
            Ok(())
        }
        (Some(Role::Log), OpType::Delete) => {
            Err("removes an op from the space's membership log".into())
        }
        (Some(Role::Log), _) => Err("puts something other than a signed op into the log".into()),
        (None, _) => Err("writes into an object that is not part of the document".into()),
    }
}

/// A member record must read back as one, for the node id it is filed under.
fn member_record(node_id: &str, record: &str) -> Result<(), String> {
    if record.len() > MAX_MEMBER_RECORD {
        return Err("puts an oversized member record".into());
    }
    match serde_json::from_str::<Member>(record) {
        Ok(member) if member.node_id == node_id => Ok(()),
        Ok(_) => Err("files a member record under another node id".into()),
        Err(_) => Err("puts something other than a member record into members".into()),
    }
}

/// Checks a whole document that is new here: the shape it ends up in.
pub(super) fn check_shape(doc: &AutoCommit, shape: Shape) -> Result<(), String> {
    let object = |key: &str, kind: ObjType| match doc.get(ROOT, key) {
        Ok(Some((Value::Object(k), id))) if k == kind => Ok(id),
        _ => Err(format!("a document whose `{key}` is not a {kind:?}")),
    };
    let slots: &[&str] = match shape {
        Shape::Note => &["text"],
        Shape::Index => &["members", "notes", "log"],
    };
    for key in doc.keys(ROOT) {
        let is_object = matches!(doc.get(ROOT, key.as_str()), Ok(Some((Value::Object(_), _))));
        if is_object && !slots.contains(&key.as_str()) {
            return Err(format!("a document with an object under `{key}`"));
        }
    }
    match shape {
        Shape::Note => {
            let text = object("text", ObjType::Text)?;
            // An object in a text reads as U+FFFC in its string: only a text
            // with one is worth the look at every element.
            let may_hold_object = doc
                .text(&text)
                .map_or(true, |text| text.contains('\u{fffc}'));
            if may_hold_object
                && doc
                    .values(&text)
                    .any(|(value, _)| matches!(value, Value::Object(_)))
            {
                return Err("a note whose text holds an object".into());
            }
        }
        Shape::Index => {
            let members = object("members", ObjType::Map)?;
            for node_id in doc.keys(&members) {
                match doc.get(&members, node_id.as_str()) {
                    Ok(Some((Value::Scalar(v), _))) => match v.as_ref() {
                        ScalarValue::Str(record) => member_record(&node_id, record)?,
                        _ => return Err("an index whose members hold a non-record".into()),
                    },
                    _ => return Err("an index whose members hold a non-record".into()),
                }
            }
            if let Ok(Some((_, log))) = doc.get(ROOT, "log") {
                let log = object("log", ObjType::Map).map(|_| log)?;
                let made_by = match &log {
                    ObjId::Id(_, actor, _) => actor.to_bytes().get(..32).map(<[u8]>::to_vec),
                    ObjId::Root => None,
                };
                if made_by.is_none() || made_by != index_creator(doc) {
                    return Err(
                        "an index whose membership log another device than its creator made".into(),
                    );
                }
                for key in doc.keys(&log) {
                    let Ok(Some((Value::Scalar(v), _))) = doc.get(&log, key.as_str()) else {
                        return Err("an index whose log holds an object".into());
                    };
                    let ScalarValue::Bytes(bytes) = v.as_ref() else {
                        return Err("an index whose log holds something other than ops".into());
                    };
                    let op = Op::from_bytes(bytes)
                        .map_err(|e| format!("an index with a bad op: {e}"))?;
                    if membership::hex(&op.hash()) != key {
                        return Err("an index filing an op under another hash".into());
                    }
                }
            }
            let notes = object("notes", ObjType::Map)?;
            for note in doc.keys(&notes) {
                if note.parse::<NoteId>().is_err() {
                    return Err("an index listing something other than a note id".into());
                }
                if !matches!(
                    doc.get(&notes, note.as_str()),
                    Ok(Some((Value::Scalar(_), _)))
                ) {
                    return Err("an index whose notes hold an object".into());
                }
            }
        }
    }
    Ok(())
}

fn short_hash(change: &Change) -> String {
    change.hash().0[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The changes in whole documents or change chunks, as a sync message or a
/// `Document` frame carries them (already vetted for size).
pub(super) fn changes_in(target: &mut AutoCommit, chunk: &[u8]) -> Result<Vec<Change>, String> {
    // A document chunk's type byte follows the magic and checksum.
    if chunk.get(8) == Some(&0) {
        let mut whole = super::decode::strict_load(chunk)?;
        return Ok(target.get_changes_added(&mut whole));
    }
    super::decode::split_changes(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn note() -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.put_object(ROOT, "text", ObjType::Text).unwrap();
        doc.put(ROOT, "created_at", 1).unwrap();
        doc.commit();
        doc
    }

    /// What `edit` does to a fork of `base`, as changes.
    fn changes(base: &mut AutoCommit, edit: impl FnOnce(&mut AutoCommit)) -> Vec<Change> {
        let heads = base.get_heads();
        let mut fork = base.fork();
        edit(&mut fork);
        fork.commit();
        fork.get_changes(&heads)
    }

    #[test]
    fn honest_note_edits_and_creation_are_admitted() {
        let mut base = note();
        let typed = changes(&mut base, |d| {
            let text = d.get(ROOT, "text").unwrap().unwrap().1;
            d.splice_text(&text, 0, 0, "hello").unwrap();
            d.put(ROOT, "trashed_at", 5).unwrap();
        });
        admit(&base, Shape::Note, &typed).unwrap();
        let creation = note().get_changes(&[]);
        admit(&AutoCommit::new(), Shape::Note, &creation).unwrap();
    }

    #[test]
    fn replacing_a_notes_text_is_refused() {
        let mut base = note();
        let scalar = changes(&mut base, |d| d.put(ROOT, "text", 0).unwrap());
        assert!(admit(&base, Shape::Note, &scalar).is_err());
        let fresh = changes(&mut base, |d| {
            d.put_object(ROOT, "text", ObjType::Text).unwrap();
        });
        assert!(admit(&base, Shape::Note, &fresh).is_err());
        let nested = changes(&mut base, |d| {
            let text = d.get(ROOT, "text").unwrap().unwrap().1;
            d.insert_object(&text, 0, ObjType::Map).unwrap();
        });
        assert!(admit(&base, Shape::Note, &nested).is_err());
        // Creating the text twice in one new note is refused too.
        let twice = changes(&mut AutoCommit::new(), |d| {
            d.put_object(ROOT, "text", ObjType::Text).unwrap();
            d.put_object(ROOT, "text", ObjType::Text).unwrap();
        });
        assert!(admit(&AutoCommit::new(), Shape::Note, &twice).is_err());
    }

    #[test]
    fn a_new_whole_document_is_checked_by_its_shape() {
        check_shape(&note(), Shape::Note).unwrap();
        let mut scalar = note();
        scalar.put(ROOT, "text", 0).unwrap();
        assert!(check_shape(&scalar, Shape::Note).is_err());
        let mut nested = note();
        let text = nested.get(ROOT, "text").unwrap().unwrap().1;
        nested.insert_object(&text, 0, ObjType::Map).unwrap();
        assert!(check_shape(&nested, Shape::Note).is_err());
        let mut index = AutoCommit::new();
        let members = index.put_object(ROOT, "members", ObjType::Map).unwrap();
        index.put_object(ROOT, "notes", ObjType::Map).unwrap();
        check_shape(&index, Shape::Index).unwrap();
        index.put(&members, "bb", 0).unwrap();
        assert!(check_shape(&index, Shape::Index).is_err());

        // A space as this version creates it, with its signed log.
        let key = [7u8; 32];
        let mut actor = ed25519_dalek::SigningKey::from_bytes(&key)
            .verifying_key()
            .to_bytes()
            .to_vec();
        actor.push(0);
        let id = crate::space::SpaceId::generate();
        let actor = automerge::ActorId::from(actor);
        let mut space = crate::space::Space::create(id, &actor, "Team", &key, "Ana", 1).unwrap();
        let mut saved = AutoCommit::load(&space.save()).unwrap();
        check_shape(&saved, Shape::Index).unwrap();
        // Its log made by another device than the creator is refused.
        let mut forged = saved
            .fork()
            .with_actor(automerge::ActorId::from(vec![9u8; 33]));
        forged.delete(ROOT, "log").unwrap();
        forged.put_object(ROOT, "log", ObjType::Map).unwrap();
        assert!(check_shape(&forged, Shape::Index).is_err());
    }

    #[test]
    fn a_member_map_holds_only_member_records_under_their_own_ids() {
        let mut base = AutoCommit::new();
        let members = base.put_object(ROOT, "members", ObjType::Map).unwrap();
        base.put_object(ROOT, "notes", ObjType::Map).unwrap();
        base.commit();
        let record = |id: &str| {
            serde_json::to_string(&Member {
                node_id: id.into(),
                name: "Bob".into(),
                added_by: "aa".into(),
                added_at: 1,
                role: crate::membership::Role::Editor,
                person: String::new(),
            })
            .unwrap()
        };
        let good = changes(&mut base, |d| d.put(&members, "bb", record("bb")).unwrap());
        admit(&base, Shape::Index, &good).unwrap();
        let zero = changes(&mut base, |d| d.put(&members, "bb", 0).unwrap());
        assert!(admit(&base, Shape::Index, &zero).is_err());
        let elsewhere = changes(&mut base, |d| d.put(&members, "bb", record("cc")).unwrap());
        assert!(admit(&base, Shape::Index, &elsewhere).is_err());
        let scalar = changes(&mut base, |d| d.put(ROOT, "members", 0).unwrap());
        assert!(admit(&base, Shape::Index, &scalar).is_err());
        let notes = changes(&mut base, |d| d.put(ROOT, "notes", "x").unwrap());
        assert!(admit(&base, Shape::Index, &notes).is_err());
    }
}
