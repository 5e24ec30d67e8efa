//! Fuzzing what comes from outside: the sync frame decoder, tickets and short
//! codes as typed or pasted, and the stored-chunk loader. Arbitrary bytes, and
//! valid inputs with bytes flipped, cut or inserted, must give an error, never
//! a panic, and never a large allocation: a counting allocator records the
//! peak heap of every case. `PROPTEST_CASES` sets the cases per property (256
//! here; `make soak` runs 10,000).

use std::path::Path;

use peernotes_sync::pairing::{ShortCode, Ticket};
use peernotes_sync::protocol::frame::{DocHeads, SpaceSummary};
use peernotes_sync::protocol::{Frame, FrameDecoder, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use peernotes_sync::store::{Batch, ChunkKind, NoteRow, NoteWrite, Store};
use peernotes_sync::{Node, NodeOptions, NoteId};
use proptest::prelude::*;

/// The heap every case may use beyond what was live when it started: far above
/// what a 16 MiB frame or a small note needs, far below "unbounded".
const CASE_HEAP_LIMIT: usize = 64 * 1024 * 1024;

#[global_allocator]
static ALLOCATOR: peernotes_tests::heap::Counting = peernotes_tests::heap::Counting;

/// Runs `f` and fails if the heap grew by more than `CASE_HEAP_LIMIT` at any
/// moment while it ran.
fn within_heap_limit<R>(what: &str, f: impl FnOnce() -> R) -> R {
    peernotes_tests::heap::within_heap_limit(what, CASE_HEAP_LIMIT, f)
}

/// A byte string and some damage to do to it.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bits: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Damage::Flip { at, bits }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Damage::Remove { at, len }),
    ];
    prop::collection::vec(one, 1..6)
}

fn apply(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        let at = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
        match d {
            Damage::Flip { at: i, bits } => {
                if !bytes.is_empty() {
                    let i = at(*i, bytes.len());
                    bytes[i] ^= bits;
                }
            }
            Damage::Cut { at: i } => bytes.truncate(at(*i, bytes.len() + 1)),
            Damage::Insert { at: i, bytes: new } => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, new.iter().copied());
            }
            Damage::Remove { at: i, len } => {
                let i = at(*i, bytes.len() + 1);
                let end = (i + len).min(bytes.len());
                bytes.drain(i..end);
            }
        }
    }
    bytes
}

/// One frame of every kind, encoded with its length prefix.
fn valid_frames() -> Vec<u8> {
    let frames = [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            spaces: vec![SpaceSummary {
                space: [1; 16],
                hash: [2; 32],
                changed: None,
            }],
        },
        Frame::Buckets {
            space: [1; 16],
            hashes: vec![[3; 32]; 4],
        },
        Frame::Heads {
            space: [1; 16],
            bucket: 5,
            docs: vec![DocHeads {
                doc: "a note".into(),
                heads: vec![[4; 32]],
            }],
        },
        Frame::Sync {
            space: [1; 16],
            doc: "a note".into(),
            message: vec![0x42, 0, 1, 2],
            attestations: Vec::new(),
        },
        Frame::Document {
            space: [1; 16],
            doc: "a note".into(),
            heads: vec![[5; 32]],
            saved: vec![0x85, 0x6f, 0x4a, 0x83, 9, 9],
            attestations: Vec::new(),
        },
        Frame::Presence {
            doc: "a note".into(),
            payload: vec![7; 20],
        },
        Frame::Goodbye {
            reason: "bye".into(),
        },
        Frame::Removed {
            space: [1; 16],
            ops: vec![vec![3; 40]],
        },
        // The first part of a message in parts, last: damage may make it
        // claim anything.
        Frame::Part {
            total: MAX_FRAME_BYTES as u64 + 100,
            bytes: vec![8; 20],
        },
    ];
    frames.iter().flat_map(|f| f.encode().unwrap()).collect()
}

/// Feeds `wire` to a decoder in pieces of `step` bytes: frames or an error, and
/// never more buffered than one frame's limit.
fn decode_stream(wire: &[u8], step: usize) {
    let mut decoder = FrameDecoder::new();
    for piece in wire.chunks(step.max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

proptest! {
    #[test]
    fn the_frame_decoder_survives_arbitrary_bytes(
        wire in prop::collection::vec(any::<u8>(), 0..4096),
        step in 1..512usize,
    ) {
        within_heap_limit("decoding arbitrary bytes", || {
            decode_stream(&wire, step);
            let _ = Frame::decode(&wire);
        });
    }

    #[test]
    fn the_frame_decoder_survives_damaged_frames(damage in damage(), step in 1..512usize) {
        let wire = apply(valid_frames(), &damage);
        within_heap_limit("decoding damaged frames", || decode_stream(&wire, step));
    }

    #[test]
    fn a_length_prefix_over_the_limit_is_refused_whatever_follows(
        len in (MAX_FRAME_BYTES as u32 + 1)..=u32::MAX,
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut decoder = FrameDecoder::new();
        decoder.push(&len.to_be_bytes());
        decoder.push(&tail);
        prop_assert!(decoder.next_frame().is_err());
    }

    #[test]
    fn ticket_parsing_survives_any_text(text in ".{0,300}") {
        within_heap_limit("parsing a ticket", || {
            let _ = Ticket::decode(&text);
            let _ = Ticket::decode(&format!("peernotes1{text}"));
        });
    }

    #[test]
    fn ticket_parsing_survives_damaged_tickets(damage in damage()) {
        let text = apply(valid_ticket().into_bytes(), &damage);
        within_heap_limit("parsing a damaged ticket", || {
            let _ = Ticket::decode(&String::from_utf8_lossy(&text));
        });
    }

    #[test]
    fn short_code_parsing_survives_any_text(text in ".{0,100}") {
        let _ = ShortCode::parse(&text);
    }

    #[test]
    fn short_code_parsing_survives_damaged_codes(damage in damage()) {
        let text = apply(b"7-amber-falcon".to_vec(), &damage);
        let _ = ShortCode::parse(&String::from_utf8_lossy(&text));
    }
}

fn valid_ticket() -> String {
    Ticket {
        space: [3; 16],
        inviter: [7; 32],
        addrs: vec!["127.0.0.1:4433".parse().unwrap()],
        relay: None,
        secret: [9; 16],
        expires_at: 2_000_000_000,
    }
    .encode()
}

/// A note's stored chunks replaced by damaged ones, loaded by a running Node:
/// it loads what it can or reports the note damaged, and never panics.
#[test]
fn the_chunk_loader_survives_damaged_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    let source = node.create("# A note\n").unwrap();
    // Few and small enough not to be compacted: a note of incremental chunks.
    for i in 0..20 {
        node.splice(&source, 0, 0, &format!("{i} ✓\n")).unwrap();
        node.flush().unwrap();
    }
    let snapshot = node.note_document(&source).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let incremental: Vec<Vec<u8>> = store
        .chunks(source.as_str())
        .unwrap()
        .into_iter()
        .filter(|c| c.kind == ChunkKind::Incremental)
        .map(|c| c.data)
        .collect();
    assert!(incremental.len() >= 20, "{} chunks", incremental.len());
    let space = node.get(&source).unwrap().space.unwrap().to_string();
    let store = std::cell::RefCell::new(store);
    let outcomes = std::cell::RefCell::new([0u32; 2]);
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (damage(), any::<bool>(), any::<prop::sample::Index>());
    runner
        .run(&strategy, |(damage, whole, pick)| {
            let id = NoteId::generate();
            let (snapshot, chunks) = if whole {
                (Some(apply(snapshot.clone(), &damage)), Vec::new())
            } else {
                let mut chunks = incremental.clone();
                let i = pick.index(chunks.len());
                chunks[i] = apply(chunks[i].clone(), &damage);
                (None, chunks)
            };
            write_note(&mut store.borrow_mut(), &id, &space, snapshot, chunks);
            // Loading is allowed to fail (the note is damaged); panicking is not.
            let loaded = within_heap_limit("loading a damaged note", || {
                let loaded = node.note_document(&id).is_ok();
                let _ = node.checkout(&id);
                loaded
            });
            outcomes.borrow_mut()[usize::from(loaded)] += 1;
            Ok(())
        })
        .unwrap();
    let [refused, loaded] = *outcomes.borrow();
    println!("damaged notes: {loaded} loaded (what could be read), {refused} refused");
    assert!(
        refused > 0,
        "the damage never broke a note: the test is too gentle"
    );
    assert!(
        loaded > 0,
        "one damaged chunk must not make a whole note unreadable"
    );
    assert!(
        !node.quarantined().unwrap().is_empty(),
        "damaged chunks are set aside, not dropped"
    );
    // The Node is still usable afterwards.
    node.splice(&source, 0, 0, "still here\n").unwrap();
    node.flush().unwrap();
    assert!(node.get(&source).unwrap().text.starts_with("still here\n"));
    drop(store);
    node.close().unwrap();
    assert_opens(dir.path());
}

fn write_note(
    store: &mut Store,
    id: &NoteId,
    space: &str,
    snapshot: Option<Vec<u8>>,
    chunks: Vec<Vec<u8>>,
) {
    let row = NoteRow {
        id: id.to_string(),
        space_id: space.to_string(),
        heads: Vec::new(),
        title: "damaged".into(),
        snippet: String::new(),
        text: "damaged".into(),
        created_at: 0,
        updated_at: 0,
        trashed_at: None,
        updated_by: String::new(),
        updated_by_unverified: false,
    };
    let write = NoteWrite {
        with_text: true,
        row,
        snapshot,
        chunks,
    };
    store
        .commit(&Batch {
            notes: vec![write],
            ..Batch::default()
        })
        .unwrap();
}

fn assert_opens(dir: &Path) {
    let node = Node::open(NodeOptions::new(dir)).unwrap();
    node.close().unwrap();
}

#[test]
#[should_panic(expected = "allocated")]
fn the_heap_limit_catches_a_large_allocation() {
    within_heap_limit("a deliberate 100 MiB buffer", || {
        std::hint::black_box(vec![1u8; 100 * 1024 * 1024]);
    });
}
