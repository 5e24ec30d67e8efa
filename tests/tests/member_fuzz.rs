//! What a member may send, as property tests: arbitrary well-formed sync
//! messages (any heads, needs, haves and bloom parameters, real or junk
//! changes) and arbitrary Automerge changes to a space index or a note —
//! including a note of a space the member is not in, and documents it makes up
//! — fed to a real `Node` through a `Session` as that member, after an honest
//! first sync. Whatever it sends, the device never panics, its heap never
//! grows past the limit, nothing outside the member's spaces changes (also
//! after a restart), its notes stay loadable, and the member never receives a
//! frame about a note of another space. `PROPTEST_CASES` sets the cases (256
//! here; `make soak` runs 10,000).

use automerge::sync;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ROOT};
use peernotes_sync::membership::Role;
use peernotes_sync::protocol::frame::{DocHeads, DocKey};
use peernotes_sync::protocol::session::bucket_of;
use peernotes_sync::protocol::{Frame, Session};
use peernotes_sync::{ListFilter, Member, Node, NodeOptions, NoteId, SpaceId};
use peernotes_tests::replica::DocReplica;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: peernotes_tests::heap::Counting = peernotes_tests::heap::Counting;

/// The heap one case's attack may use beyond what was live when it started.
const CASE_HEAP_LIMIT: usize = 64 * 1024 * 1024;
const MARKER: &str = "PRIVATE-MARKER-7f3a";

/// Alice's device, Mallory (a member of Team only) with copies of Team's
/// documents, and the open session between them.
struct World {
    alice: Node,
    dir: tempfile::TempDir,
    mallory: String,
    team: SpaceId,
    team_note: NoteId,
    private_note: NoteId,
    private_space: SpaceId,
    replica: DocReplica,
    at_alice: Session,
}

fn world(seed: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::open(NodeOptions::new(dir.path())).unwrap();
    let mut rng = peernotes_tests::Rng::new(seed);
    let mallory: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
    let team = alice.create_space("Team").unwrap();
    alice
        .add_member(team, &mallory, "Mallory", Role::Editor)
        .unwrap();
    let team_note = alice
        .create_in(team, "# Team note\nshared words\n")
        .unwrap();
    let private_note = alice.create(&format!("# Private\n{MARKER}\n")).unwrap();
    let private_space = alice.private_space().unwrap();
    alice.flush().unwrap();
    let mut replica = DocReplica::new(*team.as_bytes(), |_| false);
    let (mut at_alice, mut at_mallory) = (Session::new(), Session::new());
    alice.with_peer(&mallory, |r| at_alice.start(r));
    at_mallory.start(&mut replica);
    for _ in 0..100 {
        let to_mallory: Vec<Frame> = alice.with_peer(&mallory, |r| {
            std::iter::from_fn(|| at_alice.poll_transmit(r)).collect()
        });
        let to_alice: Vec<Frame> =
            std::iter::from_fn(|| at_mallory.poll_transmit(&mut replica)).collect();
        if to_mallory.is_empty() && to_alice.is_empty() {
            break;
        }
        for frame in to_mallory {
            at_mallory.handle_frame(frame, &mut replica).unwrap();
        }
        for frame in to_alice {
            alice
                .with_peer(&mallory, |r| at_alice.handle_frame(frame, r))
                .unwrap();
        }
    }
    assert!(
        replica.docs.contains_key(team_note.as_str()),
        "the honest first sync gave Mallory the team note"
    );
    World {
        alice,
        dir,
        mallory,
        team,
        team_note,
        private_note,
        private_space,
        replica,
        at_alice,
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Index,
    TeamNote,
    PrivateNote,
    PrivateIndex,
    Fresh(u64),
}

#[derive(Debug, Clone, Copy)]
enum RootKey {
    Text,
    Members,
    Notes,
    Name,
    CreatedAt,
    Other,
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Alice,
    Mallory,
    Stranger,
}

#[derive(Debug, Clone, Copy)]
enum Listed {
    TeamNote,
    PrivateNote,
    Junk,
}

#[derive(Debug, Clone)]
enum Val {
    Int(i64),
    Str(String),
    Record(Who, Who),
    Object(ObjType),
}

#[derive(Debug, Clone)]
enum Edit {
    RootPut(RootKey, Val),
    RootDelete(RootKey),
    MemberPut(Who, Val),
    MemberDelete(Who),
    NotePut(Listed, Val),
    NoteDelete(Listed),
    Splice(u16, u8, String),
    InsertObject(u16, ObjType),
}

#[derive(Debug, Clone)]
enum Pick {
    Real(usize),
    Random([u8; 32]),
}

#[derive(Debug, Clone)]
enum Attack {
    /// Edits to Mallory's copy, sent as changes in a sync message.
    Changes(Target, Vec<Edit>),
    /// Edits to Mallory's copy, sent as the whole document.
    Whole(Target, Vec<Edit>),
    /// A hand-made sync message: any heads, needs, bloom and junk changes.
    Raw {
        target: Target,
        heads: Vec<Pick>,
        need: Vec<Pick>,
        bloom: Option<(u32, u32, u32)>,
        junk: Vec<Vec<u8>>,
    },
    /// "I have none of it": asks for a document by a `Heads` frame.
    Ask(Target),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Index),
        Just(Target::TeamNote),
        Just(Target::PrivateNote),
        Just(Target::PrivateIndex),
        any::<u64>().prop_map(Target::Fresh),
    ]
}

fn root_key() -> impl Strategy<Value = RootKey> {
    prop_oneof![
        Just(RootKey::Text),
        Just(RootKey::Members),
        Just(RootKey::Notes),
        Just(RootKey::Name),
        Just(RootKey::CreatedAt),
        Just(RootKey::Other),
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Alice), Just(Who::Mallory), Just(Who::Stranger)]
}

fn listed() -> impl Strategy<Value = Listed> {
    prop_oneof![
        Just(Listed::TeamNote),
        Just(Listed::PrivateNote),
        Just(Listed::Junk)
    ]
}

fn object() -> impl Strategy<Value = ObjType> {
    prop_oneof![Just(ObjType::Map), Just(ObjType::Text), Just(ObjType::List)]
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        any::<i64>().prop_map(Val::Int),
        ".{0,20}".prop_map(Val::Str),
        (who(), who()).prop_map(|(a, b)| Val::Record(a, b)),
        object().prop_map(Val::Object),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (root_key(), val()).prop_map(|(k, v)| Edit::RootPut(k, v)),
        root_key().prop_map(Edit::RootDelete),
        (who(), val()).prop_map(|(w, v)| Edit::MemberPut(w, v)),
        who().prop_map(Edit::MemberDelete),
        (listed(), val()).prop_map(|(l, v)| Edit::NotePut(l, v)),
        listed().prop_map(Edit::NoteDelete),
        (any::<u16>(), any::<u8>(), ".{0,12}").prop_map(|(p, d, t)| Edit::Splice(p, d, t)),
        (any::<u16>(), object()).prop_map(|(p, o)| Edit::InsertObject(p, o)),
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        any::<usize>().prop_map(Pick::Real),
        any::<[u8; 32]>().prop_map(Pick::Random),
    ]
}

fn bloom() -> impl Strategy<Value = Option<(u32, u32, u32)>> {
    let small = 0..64u32;
    let any_param = prop_oneof![0..16u32, Just(u32::MAX), any::<u32>()];
    prop::option::of((small, any_param.clone(), any_param))
}

fn attack() -> impl Strategy<Value = Attack> {
    let edits = || prop::collection::vec(edit(), 1..6);
    prop_oneof![
        (target(), edits()).prop_map(|(t, e)| Attack::Changes(t, e)),
        (target(), edits()).prop_map(|(t, e)| Attack::Whole(t, e)),
        (
            target(),
            prop::collection::vec(pick(), 0..4),
            prop::collection::vec(pick(), 0..4),
            bloom(),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3),
        )
            .prop_map(|(target, heads, need, bloom, junk)| Attack::Raw {
                target,
                heads,
                need,
                bloom,
                junk
            }),
        target().prop_map(Attack::Ask),
    ]
}

impl World {
    fn key(&self, target: Target) -> DocKey {
        match target {
            Target::Index => self.team.doc_key(),
            Target::TeamNote => self.team_note.to_string(),
            Target::PrivateNote => self.private_note.to_string(),
            Target::PrivateIndex => self.private_space.doc_key(),
            Target::Fresh(n) => format!("{n:016x}{:016x}", n.rotate_left(17)),
        }
    }

    fn node_id(&self, who: Who) -> String {
        match who {
            Who::Alice => self.alice.node_id().to_string(),
            Who::Mallory => self.mallory.clone(),
            Who::Stranger => "5".repeat(64),
        }
    }

    /// Mallory's copy of a document (a new one, made up, for documents it
    /// does not have), and its heads before the edits.
    fn copy(&mut self, target: Target) -> (AutoCommit, Vec<ChangeHash>) {
        let key = self.key(target);
        match self.replica.docs.get_mut(&key) {
            Some(doc) => {
                let heads = doc.get_heads();
                (doc.fork(), heads)
            }
            None => {
                let mut doc = AutoCommit::new();
                match target {
                    Target::PrivateIndex => {
                        doc.put_object(ROOT, "members", ObjType::Map).unwrap();
                        doc.put_object(ROOT, "notes", ObjType::Map).unwrap();
                    }
                    _ => {
                        let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
                        doc.splice_text(&text, 0, 0, "made up\n").unwrap();
                    }
                }
                doc.commit();
                (doc, Vec::new())
            }
        }
    }

    fn apply(&self, doc: &mut AutoCommit, edit: &Edit) {
        let root_key = |k: RootKey| match k {
            RootKey::Text => "text",
            RootKey::Members => "members",
            RootKey::Notes => "notes",
            RootKey::Name => "name",
            RootKey::CreatedAt => "created_at",
            RootKey::Other => "other",
        };
        let child = |doc: &AutoCommit, key: &str| -> Option<ObjId> {
            match doc.get(ROOT, key) {
                Ok(Some((automerge::Value::Object(_), id))) => Some(id),
                _ => None,
            }
        };
        let listed = |l: Listed| match l {
            Listed::TeamNote => self.team_note.to_string(),
            Listed::PrivateNote => self.private_note.to_string(),
            Listed::Junk => "not a note id".to_string(),
        };
        // Any edit Automerge itself refuses is simply not made.
        let _ = match edit {
            Edit::RootPut(k, v) => self.put(doc, ROOT, root_key(*k), v),
            Edit::RootDelete(k) => doc.delete(ROOT, root_key(*k)).map(|_| ()),
            Edit::MemberPut(w, v) => match child(doc, "members") {
                Some(members) => self.put(doc, members, &self.node_id(*w), v),
                None => Ok(()),
            },
            Edit::MemberDelete(w) => match child(doc, "members") {
                Some(members) => doc.delete(&members, self.node_id(*w).as_str()),
                None => Ok(()),
            },
            Edit::NotePut(l, v) => match child(doc, "notes") {
                Some(notes) => self.put(doc, notes, &listed(*l), v),
                None => Ok(()),
            },
            Edit::NoteDelete(l) => match child(doc, "notes") {
                Some(notes) => doc.delete(&notes, listed(*l).as_str()),
                None => Ok(()),
            },
            Edit::Splice(pos, del, text) => match child(doc, "text") {
                Some(obj) => {
                    let len = doc.length(&obj);
                    let pos = usize::from(*pos) % (len + 1);
                    let del = (usize::from(*del) % 8).min(len - pos) as isize;
                    doc.splice_text(&obj, pos, del, text)
                }
                None => Ok(()),
            },
            Edit::InsertObject(pos, kind) => match child(doc, "text") {
                Some(obj) => {
                    let pos = usize::from(*pos) % (doc.length(&obj) + 1);
                    doc.insert_object(&obj, pos, *kind).map(|_| ())
                }
                None => Ok(()),
            },
        };
    }

    fn put(
        &self,
        doc: &mut AutoCommit,
        obj: ObjId,
        key: &str,
        value: &Val,
    ) -> Result<(), automerge::AutomergeError> {
        match value {
            Val::Int(n) => doc.put(&obj, key, *n),
            Val::Str(s) => doc.put(&obj, key, s.as_str()),
            Val::Record(named, by) => {
                let record = serde_json::to_string(&Member {
                    node_id: self.node_id(*named),
                    name: "planted".into(),
                    added_by: self.node_id(*by),
                    added_at: 1,
                    role: Role::Editor,
                    person: String::new(),
                })
                .unwrap();
                doc.put(&obj, key, record)
            }
            Val::Object(kind) => doc.put_object(&obj, key, *kind).map(|_| ()),
        }
    }

    /// The frames one attack sends.
    fn frames(&mut self, attack: &Attack) -> Vec<Frame> {
        let space = *self.team.as_bytes();
        match attack {
            Attack::Changes(target, edits) | Attack::Whole(target, edits) => {
                let (mut doc, before) = self.copy(*target);
                for edit in edits {
                    self.apply(&mut doc, edit);
                }
                doc.commit();
                let key = self.key(*target);
                if matches!(attack, Attack::Whole(..)) {
                    return vec![Frame::Document {
                        space,
                        doc: key,
                        heads: doc.get_heads().iter().map(|h| h.0).collect(),
                        saved: doc.save(),
                        attestations: Vec::new(),
                    }];
                }
                let changes: Vec<Vec<u8>> = doc
                    .get_changes(&before)
                    .into_iter()
                    .map(|mut c| c.bytes().to_vec())
                    .collect();
                let message = sync::Message {
                    heads: doc.get_heads(),
                    need: Vec::new(),
                    have: vec![sync::Have::default()],
                    changes: changes.into(),
                    flags: None,
                    version: sync::MessageVersion::V1,
                };
                vec![Frame::Sync {
                    space,
                    doc: key,
                    message: message.encode(),
                    attestations: Vec::new(),
                }]
            }
            Attack::Raw {
                target,
                heads,
                need,
                bloom,
                junk,
            } => {
                let real: Vec<ChangeHash> = self
                    .replica
                    .docs
                    .values_mut()
                    .flat_map(|d| d.get_changes(&[]).into_iter().map(|c| c.hash()))
                    .collect();
                let hash = |p: &Pick| match p {
                    Pick::Real(i) if !real.is_empty() => real[i % real.len()],
                    Pick::Real(_) => ChangeHash([1; 32]),
                    Pick::Random(h) => ChangeHash(*h),
                };
                let have = match bloom {
                    Some((entries, bits_per_entry, probes)) => {
                        let mut bytes = Vec::new();
                        for n in [entries, bits_per_entry, probes] {
                            peernotes_tests::mallory::uleb128(&mut bytes, u64::from(*n));
                        }
                        let bits = (u64::from(*entries) * u64::from(*bits_per_entry)).div_ceil(8);
                        bytes.extend(vec![0xa5; bits.min(1 << 20) as usize]);
                        match sync::BloomFilter::try_from(bytes.as_slice()) {
                            Ok(bloom) => vec![sync::Have {
                                last_sync: Vec::new(),
                                bloom,
                            }],
                            Err(_) => Vec::new(),
                        }
                    }
                    None => Vec::new(),
                };
                let message = sync::Message {
                    heads: heads.iter().map(hash).collect(),
                    need: need.iter().map(hash).collect(),
                    have,
                    changes: junk.clone().into(),
                    flags: None,
                    version: sync::MessageVersion::V1,
                };
                vec![Frame::Sync {
                    space,
                    doc: self.key(*target),
                    message: message.encode(),
                    attestations: Vec::new(),
                }]
            }
            Attack::Ask(target) => {
                let doc = self.key(*target);
                vec![Frame::Heads {
                    space,
                    bucket: bucket_of(&doc) as u8,
                    docs: vec![DocHeads {
                        doc,
                        heads: Vec::new(),
                    }],
                }]
            }
        }
    }
}

/// What Alice shows of everything outside Team, to compare before and after.
fn outside_team(alice: &Node, world: &World) -> (String, Vec<Member>, usize) {
    let private = alice.get(&world.private_note).unwrap().text;
    let members = alice.members(world.private_space).unwrap();
    let spaces = alice.spaces().unwrap().len();
    (private, members, spaces)
}

proptest! {
    #[test]
    fn nothing_a_member_sends_hurts_the_device_or_reaches_past_its_spaces(
        seed in any::<u64>(),
        attacks in prop::collection::vec(attack(), 1..5),
    ) {
        let mut world = world(seed);
        let before = outside_team(&world.alice, &world);
        let frames: Vec<Frame> = attacks.iter().flat_map(|a| world.frames(a)).collect();
        let mallory = world.mallory.clone();
        let private_keys = [world.private_note.to_string(), world.private_space.doc_key()];
        let sent = peernotes_tests::heap::within_heap_limit("a member's frames", CASE_HEAP_LIMIT, || {
            let mut sent = Vec::new();
            for frame in frames {
                // A protocol error ends the session; that is allowed.
                let _ = world
                    .alice
                    .with_peer(&mallory, |r| world.at_alice.handle_frame(frame, r));
                let out: Vec<Frame> = world.alice.with_peer(&mallory, |r| {
                    std::iter::from_fn(|| world.at_alice.poll_transmit(r)).take(10_000).collect()
                });
                sent.extend(out);
            }
            sent
        });
        for frame in &sent {
            if let Frame::Sync { doc, .. } | Frame::Document { doc, .. } = frame {
                prop_assert!(!private_keys.contains(doc), "Mallory was sent {doc}");
            }
            if let Frame::Heads { docs, .. } = frame {
                prop_assert!(docs.iter().all(|d| !private_keys.contains(&d.doc)));
            }
        }
        world.alice.flush().unwrap();
        prop_assert_eq!(&outside_team(&world.alice, &world), &before);
        prop_assert!(world.alice.list(ListFilter::Active).is_ok());
        prop_assert!(world.alice.checkout(&world.team_note).is_ok(), "the team note still loads");
        prop_assert!(world.alice.members(world.team).is_ok());

        // And after a restart: every space is still there, every note loads.
        let World { alice, dir, team, team_note, .. } = world;
        drop(alice);
        let alice = Node::open(NodeOptions::new(dir.path())).unwrap();
        prop_assert_eq!(alice.spaces().unwrap().len(), before.2);
        prop_assert!(alice.members(team).is_ok());
        prop_assert!(alice.checkout(&team_note).is_ok());
        let private = alice.list(ListFilter::Active).unwrap();
        prop_assert!(private.iter().any(|n| n.snippet.contains(MARKER) || n.title.contains("Private")));
    }
}
