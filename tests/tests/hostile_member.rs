//! A hostile member, Mallory, against a running device (Alice) over iroh on
//! loopback, speaking the real sync protocol through `peernotes_tests::mallory`.
//! Mallory is a member of the space she attacks, so every frame she sends is
//! one the device must take seriously; what she sends is crafted: bloom
//! filters that cost billions of probes or divide by zero, decompression
//! bombs, index changes that list private notes, invisible members or break
//! the index's shape, note changes that replace `text`, floods of heads from a
//! connection that never reads, 10,000 documents that never become whole,
//! presence for notes she cannot see, 100 connections at once. Plus the CLI
//! printing what a member wrote (titles, names) to a terminal.
//!
//! For every attack: Alice lists her notes within 5 s during and after it, an
//! honest edit by Bob still reaches her, nothing Mallory sent is stored or
//! shown, the members are unchanged, and nothing panicked anywhere in the
//! process. A counting allocator measures the heap where the attack is memory.

use peernotes_sync::membership::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, Value, ROOT};
use peernotes_sync::net::{NetConfig, Transport};
use peernotes_sync::protocol::frame::DocHeads;
use peernotes_sync::protocol::session::{bucket_of, BUCKETS};
use peernotes_sync::protocol::Frame;
use peernotes_sync::store::{ChunkKind, Store};
use peernotes_sync::{ListFilter, Node, NodeEvent, NodeOptions, NoteId, SpaceId};
use peernotes_tests::mallory::{
    answer_time, assert_no_panic, carries_changes, empty_heads_message, eventually, frames_mention,
    gigabyte_bomb, honest_edit_arrives, install_panic_hook, junk_change, member_ids, raw_bloom,
    raw_sync_message, reopen, responsive, Mallory, MalloryConn, RawHave,
};
use peernotes_tests::{device, peernotes, stderr, stdout, team, Device, Rng};

// ---- Heap ------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: peernotes_tests::heap::Counting = peernotes_tests::heap::Counting;

/// How much the heap may grow while an attack runs: far above what honest
/// sync of these notes needs, far below "inflates whatever it is sent".
const HEAP_LIMIT: usize = 64 << 20;

/// The heap's peak growth from when it was created.
struct Heap(peernotes_tests::heap::Watch);

impl Heap {
    fn watch() -> Heap {
        Heap(peernotes_tests::heap::Watch::start())
    }

    fn growth(&self) -> usize {
        self.0.growth()
    }

    fn assert_within_limit(&self, attack: &str) {
        self.assert_within(attack, HEAP_LIMIT);
    }

    fn assert_within(&self, attack: &str, limit: usize) {
        let grew = self.growth();
        println!(
            "heap grew by {} MiB at its peak during {attack}",
            grew >> 20
        );
        assert!(
            grew <= limit,
            "the heap grew by {} MiB during {attack} (limit {} MiB)",
            grew >> 20,
            limit >> 20
        );
    }
}

// ---- The world: Alice, Bob, their Team and a shared note --------------------

struct World {
    alice: Device,
    bob: Device,
    team: SpaceId,
    /// The shared note Bob keeps editing.
    note: NoteId,
    /// The note's text before any attack.
    original: String,
    /// Bob's lines, oldest first (each written at the top).
    bob_lines: Vec<String>,
    /// Who must be Team's members.
    members: BTreeSet<String>,
}

async fn world() -> World {
    world_from(device(&NetConfig::loopback()).await.unwrap(), |_, _, _| {}).await
}

/// Alice (`alice`) and Bob in a Team with a shared note "shared\n", which
/// `prepare` may add to on Alice's side before Bob connects; returns once the
/// note reached Bob as Alice has it.
async fn world_from(alice: Device, prepare: impl FnOnce(&Node, SpaceId, &NoteId)) -> World {
    let bob = device(&NetConfig::loopback()).await.unwrap();
    let team = team(&alice.node, &bob.node);
    let note = alice.node.create_in(team, "shared\n").unwrap();
    prepare(&alice.node, team, &note);
    let original = alice.node.get(&note).unwrap().text;
    bob.net.keep_connected(alice.net.addr());
    eventually("the note to reach Bob", Duration::from_secs(60), || {
        bob.node.get(&note).is_ok_and(|n| n.text == original)
    })
    .await;
    let members = [alice.node.node_id(), bob.node.node_id()]
        .map(String::from)
        .into();
    World {
        alice,
        bob,
        team,
        note,
        original,
        bob_lines: Vec::new(),
        members,
    }
}

impl World {
    /// Mallory, added to Team by Alice.
    async fn mallory(&mut self) -> Mallory {
        let mallory = Mallory::join(&self.alice, self.team).await;
        self.members.insert(mallory.id().to_string());
        mallory
    }

    fn expected_text(&self) -> String {
        let mut text: String = self.bob_lines.iter().rev().map(String::as_str).collect();
        text.push_str(&self.original);
        text
    }

    /// After an attack: Alice answers, Bob's edit arrives, the note holds only
    /// what Alice and Bob wrote, the members are who they were.
    async fn still_fine(&mut self, after: &str) {
        responsive(&self.alice.node, &format!("after {after}")).await;
        let line = honest_edit_arrives(&self.alice, &self.bob, &self.note, after).await;
        self.bob_lines.push(line);
        self.assert_intact(after);
        assert_no_panic();
    }

    fn assert_intact(&self, after: &str) {
        let text = self.alice.node.get(&self.note).unwrap().text;
        assert_eq!(
            text,
            self.expected_text(),
            "the shared note holds something Mallory sent ({after})"
        );
        assert_eq!(
            member_ids(&self.alice.node, self.team),
            self.members,
            "Team's members changed ({after})"
        );
    }
}

/// The object under ROOT `key` of a document.
fn obj(doc: &AutoCommit, key: &str) -> ObjId {
    match doc.get(ROOT, key) {
        Ok(Some((Value::Object(_), id))) => id,
        other => panic!("{key} is not an object: {other:?}"),
    }
}

/// How long to wait for Alice's answer to a change Mallory sent: she answers
/// at once when she applies it; when she refuses it she may say nothing.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

fn is_sync_for(frame: &Frame, doc: &str) -> bool {
    matches!(frame, Frame::Sync { doc: d, .. } if d == doc)
}

// ---- The harness itself -----------------------------------------------------

#[test]
fn raw_sync_messages_decode_as_written() {
    let (hash, change) = junk_change("junk");
    let (_, other) = junk_change("more");
    let have = [
        RawHave {
            last_sync: vec![[1; 32]],
            bloom: raw_bloom(3, 10, 7),
        },
        RawHave {
            last_sync: vec![],
            bloom: vec![],
        },
    ];
    let raw = raw_sync_message(&[hash, [2; 32]], &[[3; 32]], &have, &[change, other]);
    let message = automerge::sync::Message::decode(&raw).expect("automerge decodes it");
    assert_eq!(message.heads.len(), 2);
    assert_eq!(message.heads[0].0, hash);
    assert_eq!(message.need.len(), 1);
    assert_eq!(message.have.len(), 2);
    assert_eq!(message.have[0].last_sync.len(), 1);
    assert_eq!(message.changes.len(), 2);
    assert_eq!(
        message.encode(),
        raw,
        "automerge writes it back byte for byte"
    );

    // Blooms automerge itself would never write still decode: that is the attack.
    for bloom in [raw_bloom(10, 10, u32::MAX), raw_bloom(10, 0, 7)] {
        let have = [RawHave {
            last_sync: vec![],
            bloom,
        }];
        let raw = raw_sync_message(&[], &[], &have, &[]);
        let message = automerge::sync::Message::decode(&raw).expect("automerge decodes it");
        assert_eq!(message.encode(), raw);
    }

    // A small bomb is a well-formed compressed chunk that automerge inflates
    // (and then refuses: zeros are no change).
    let bomb = peernotes_tests::mallory::compressed_change_bomb(1 << 20);
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    assert!(AutoCommit::load(&bomb).is_err());
}

/// Proves the harness speaks the protocol: Mallory learns Team by syncing
/// honestly, her honest edit arrives at Alice, and Alice's edit arrives at her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_syncs_honestly_both_ways() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let conn = mallory.learn(w.team).await;
    assert!(
        mallory.has(w.note.as_str()),
        "Mallory learned the shared note: {:?}",
        conn.kinds()
    );
    assert_eq!(mallory.text(w.note.as_str()).unwrap(), w.original);
    assert!(conn.bytes_received() > 0);

    let message = mallory.edit(w.note.as_str(), |d| {
        let text = obj(d, "text");
        d.splice_text(&text, 0, 0, "Mallory, honestly\n").unwrap();
    });
    conn.sync(w.team, w.note.as_str(), message).await.unwrap();
    eventually(
        "Mallory's honest edit to reach Alice",
        Duration::from_secs(10),
        || {
            w.alice
                .node
                .get(&w.note)
                .is_ok_and(|n| n.text.starts_with("Mallory, honestly\n"))
        },
    )
    .await;

    let mark = conn.mark();
    w.alice.node.splice(&w.note, 0, 0, "Alice\n").unwrap();
    let pushed = conn
        .wait_for_after(
            mark,
            |f| matches!(f, Frame::Sync { doc, message, .. } if *doc == w.note.as_str() && carries_changes(message)),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        pushed.is_some(),
        "Alice pushed her edit: {:?}",
        conn.kinds()
    );
    eventually(
        "Alice's edit in Mallory's replica",
        Duration::from_secs(10),
        || {
            mallory
                .text(w.note.as_str())
                .is_some_and(|t| t.starts_with("Alice\nMallory, honestly\n"))
        },
    )
    .await;
    assert!(!conn.is_closed());

    w.original = w.alice.node.get(&w.note).unwrap().text;
    w.still_fine("honest sync through the harness").await;
}

// ---- 1, 2: bloom filters ----------------------------------------------------

/// Probes per bloom lookup in the first attack. `u32::MAX` would make every
/// lookup build a 16 GiB vector on this 23 GB machine; 2^26 (256 MiB, 67
/// million probes) freezes just as surely, boundedly. Only once a device
/// refuses it does the test send `u32::MAX` too.
const MANY_PROBES: u32 = 1 << 26;
/// How many of the note's changes the bloom is asked about (those after the
/// `last_sync` Mallory names): each costs one full probe run.
const PROBED_CHANGES: usize = 32;

/// A sync message for `note` whose `have` bloom has `bloom`, naming as
/// last synced the heads `PROBED_CHANGES` changes back.
fn bloom_attack(mallory: &Mallory, note: &NoteId, bloom: Vec<u8>) -> Vec<u8> {
    let hashes = mallory.change_hashes(note.as_str());
    assert!(hashes.len() > PROBED_CHANGES, "{} changes", hashes.len());
    let base = hashes[hashes.len() - 1 - PROBED_CHANGES];
    let have = [RawHave {
        last_sync: vec![base],
        bloom,
    }];
    raw_sync_message(&[base], &[], &have, &[])
}

/// A note with a few hundred changes, as Mallory learns it.
async fn world_with_a_long_history() -> (World, Mallory, MalloryConn) {
    let alice = device(&NetConfig::loopback()).await.unwrap();
    let mut w = world_from(alice, |node, _, note| {
        for _ in 0..300 {
            node.splice(note, 0, 0, ".").unwrap();
        }
    })
    .await;
    let mallory = w.mallory().await;
    let honest = mallory.learn(w.team).await;
    assert!(mallory.has(w.note.as_str()), "{:?}", honest.kinds());
    (w, mallory, honest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bloom_filter_with_millions_of_probes_does_not_freeze_the_device() {
    install_panic_hook();
    let (mut w, mallory, _honest) = world_with_a_long_history().await;

    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    let message = bloom_attack(&mallory, &w.note, raw_bloom(10, 10, MANY_PROBES));
    conn.sync(w.team, w.note.as_str(), message).await.unwrap();
    // Measure the whole freeze (the test's runtime cannot end before it does).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = answer_time(&w.alice.node, Duration::from_secs(120)).await;
    println!("with {MANY_PROBES} probes over {PROBED_CHANGES} changes, list() took {took:?}");
    let took = took.expect("Alice answered within 120 s");
    assert!(
        took < Duration::from_secs(5),
        "Alice froze for {:.1} s over one {}-probe bloom filter",
        took.as_secs_f64(),
        MANY_PROBES
    );

    // Refused: then the real thing, u32::MAX probes, must be refused too.
    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    let message = bloom_attack(&mallory, &w.note, raw_bloom(10, 10, u32::MAX));
    conn.sync(w.team, w.note.as_str(), message).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    responsive(&w.alice.node, "after a u32::MAX-probe bloom").await;

    w.still_fine("bloom filters with millions and billions of probes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bloom_filter_with_zero_bits_per_entry_does_not_panic() {
    install_panic_hook();
    let (mut w, mallory, _honest) = world_with_a_long_history().await;

    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    let message = bloom_attack(&mallory, &w.note, raw_bloom(10, 0, 7));
    conn.sync(w.team, w.note.as_str(), message).await.unwrap();
    conn.quiet(Duration::from_millis(500), Duration::from_secs(5))
        .await;
    responsive(&w.alice.node, "after a zero-bit bloom").await;

    w.still_fine("a bloom filter with zero bits per entry")
        .await;
}

// ---- 3: decompression bombs -------------------------------------------------

/// Sends `frame` after a hello on a new connection, waits until Alice has
/// dealt with it (closed the session, or answered about `doc`), and checks the
/// heap stayed within the limit meanwhile.
async fn bomb(w: &mut World, mallory: &Mallory, frame: Frame, doc: &str, attack: &str) {
    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    conn.wait_for(|f| matches!(f, Frame::Hello { .. }), Duration::from_secs(5))
        .await;
    let heap = Heap::watch();
    let started = Instant::now();
    let _ = conn.send(&frame).await;
    // Until Alice has dealt with it, how long does listing take?
    let mut slowest = Duration::ZERO;
    let answered = loop {
        let took = answer_time(&w.alice.node, Duration::from_secs(30))
            .await
            .unwrap_or(Duration::MAX);
        slowest = slowest.max(took);
        let answered = conn.frames().iter().any(|f| is_sync_for(f, doc));
        if answered || conn.is_closed() || started.elapsed() > Duration::from_secs(20) {
            break answered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "{attack}: Alice {} after {:.1} s; the slowest list() meanwhile took {:.1} s",
        if answered {
            "answered about the document"
        } else if conn.is_closed() {
            "closed the session"
        } else {
            "said nothing"
        },
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    heap.assert_within_limit(attack);
    assert!(
        slowest < Duration::from_secs(5),
        "Alice took {:.1} s to list her notes during {attack}",
        slowest.as_secs_f64()
    );
    w.still_fine(attack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_change_bomb_in_a_sync_message_stays_within_the_heap_limit() {
    install_panic_hook();
    let bomb_bytes = gigabyte_bomb().to_vec();
    println!("a 1 GiB bomb is {} bytes", bomb_bytes.len());
    let mut w = world().await;
    let mallory = w.mallory().await;
    let message = raw_sync_message(&[], &[], &[], &[bomb_bytes]);
    let frame = Frame::Sync {
        space: *w.team.as_bytes(),
        doc: w.note.to_string(),
        message,
        attestations: Vec::new(),
    };
    let note = w.note.to_string();
    bomb(
        &mut w,
        &mallory,
        frame,
        &note,
        "a 1 GiB change bomb in a sync message",
    )
    .await;
    assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_bomb_sent_as_a_new_document_stays_within_the_heap_limit() {
    install_panic_hook();
    let bomb_bytes = gigabyte_bomb().to_vec();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let new = NoteId::generate();
    let frame = Frame::Document {
        space: *w.team.as_bytes(),
        doc: new.to_string(),
        heads: vec![[7; 32]],
        saved: bomb_bytes,
        attestations: Vec::new(),
    };
    bomb(
        &mut w,
        &mallory,
        frame,
        new.as_str(),
        "a 1 GiB bomb as a new document",
    )
    .await;
    assert!(w.alice.node.get(&new).is_err(), "the bomb became a note");
    let listed = w.alice.node.list(ListFilter::Active).unwrap();
    assert!(listed.iter().all(|n| n.id != new));
    assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_bomb_sent_as_the_shared_note_stays_within_the_heap_limit() {
    install_panic_hook();
    let bomb_bytes = gigabyte_bomb().to_vec();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let frame = Frame::Document {
        space: *w.team.as_bytes(),
        doc: w.note.to_string(),
        heads: vec![[7; 32]],
        saved: bomb_bytes,
        attestations: Vec::new(),
    };
    let note = w.note.to_string();
    bomb(
        &mut w,
        &mallory,
        frame,
        &note,
        "a 1 GiB bomb as the shared note",
    )
    .await;
    assert_no_panic();
}

// ---- 4: reading another space's notes ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_read_private_notes_by_listing_them_in_a_shared_space() {
    install_panic_hook();
    // Alice's private notes, stored before her device goes online: one as
    // exactly one snapshot, one as incremental chunks (neither in memory once
    // she restarts), and one open in memory, just edited.
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, chunks) = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let snapshot = node.create("Private\nsecret-7c1f-snapshot\n").unwrap();
        node.splice(&snapshot, 0, 0, "# ").unwrap();
        node.compact_all().unwrap();
        let chunks = node.create("Private\nsecret-7c1f-chunks\n").unwrap();
        node.flush().unwrap();
        node.splice(&chunks, 0, 0, "# ").unwrap();
        node.close().unwrap();
        (snapshot, chunks)
    };
    {
        let store = Store::open_read_only(dir.path()).unwrap();
        let kinds = |id: &NoteId| -> Vec<ChunkKind> {
            store
                .chunks(id.as_str())
                .unwrap()
                .iter()
                .map(|c| c.kind)
                .collect()
        };
        assert_eq!(kinds(&snapshot), vec![ChunkKind::Snapshot]);
        let incremental = kinds(&chunks);
        assert!(
            !incremental.is_empty() && incremental.iter().all(|k| *k == ChunkKind::Incremental),
            "{incremental:?}"
        );
    }
    let node = Arc::new(Node::open(NodeOptions::new(dir.path())).unwrap());
    let net = Transport::bind(node.clone(), &NetConfig::loopback())
        .await
        .unwrap();
    net.spawn_accept();
    let alice = Device { node, net, dir };
    let memory = alice.node.create("Private\nsecret-7c1f-memory\n").unwrap();
    alice.node.splice(&memory, 0, 0, "# ").unwrap();
    let private = [
        (snapshot, "secret-7c1f-snapshot"),
        (chunks, "secret-7c1f-chunks"),
        (memory, "secret-7c1f-memory"),
    ];

    let mut w = world_from(alice, |_, _, _| {}).await;
    let mallory = w.mallory().await;
    let honest = mallory.learn(w.team).await;

    // Mallory lists the private notes in Team's index.
    let index = w.team.doc_key();
    let message = mallory.edit(&index, |d| {
        let notes = obj(d, "notes");
        for (id, _) in &private {
            d.put(&notes, id.as_str(), 1_i64).unwrap();
        }
    });
    let mark = honest.mark();
    honest.sync(w.team, &index, message).await.unwrap();
    honest
        .wait_for_after(mark, |f| is_sync_for(f, &index), ANSWER_WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Then asks for them: by heads (she has none of them)...
    let mut by_bucket: BTreeMap<usize, Vec<DocHeads>> = BTreeMap::new();
    for (id, _) in &private {
        by_bucket
            .entry(bucket_of(id.as_str()))
            .or_default()
            .push(DocHeads {
                doc: id.to_string(),
                heads: vec![],
            });
    }
    let heads: Vec<Frame> = by_bucket
        .into_iter()
        .map(|(bucket, docs)| Frame::Heads {
            space: *w.team.as_bytes(),
            bucket: bucket as u8,
            docs,
        })
        .collect();
    let asking = mallory.connect().await;
    asking.hello(&[w.team]).await.unwrap();
    let _ = asking.send_all(&heads).await;
    asking
        .quiet(Duration::from_secs(1), Duration::from_secs(10))
        .await;
    // ...and by the sync protocol, from an empty document.
    let mut conns = vec![honest, asking];
    for (id, _) in &private {
        let conn = mallory.connect().await;
        conn.hello(&[w.team]).await.unwrap();
        let _ = conn.sync(w.team, id.as_str(), empty_heads_message()).await;
        conn.quiet(Duration::from_millis(700), Duration::from_secs(5))
            .await;
        conns.push(conn);
    }

    let mut leaks = Vec::new();
    for (c, conn) in conns.iter().enumerate() {
        let frames = conn.frames();
        for (id, marker) in &private {
            for frame in &frames {
                match frame {
                    Frame::Document { doc, .. } if doc == id.as_str() => {
                        leaks.push(format!("connection {c}: a Document frame of {marker}"))
                    }
                    Frame::Sync { doc, message, .. }
                        if doc == id.as_str() && carries_changes(message) =>
                    {
                        leaks.push(format!(
                            "connection {c}: a Sync frame with changes of {marker}"
                        ))
                    }
                    _ => {}
                }
            }
            if frames_mention(&frames, marker) {
                leaks.push(format!("connection {c}: the text {marker}"));
            }
        }
    }
    println!("what reached Mallory: {leaks:#?}");
    assert!(
        leaks.is_empty(),
        "Alice's private notes reached Mallory: {leaks:#?}"
    );
    w.still_fine("asking for private notes").await;
}

// ---- 5: a member nobody can see ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_add_a_member_nobody_can_see() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let honest = mallory.learn(w.team).await;
    let eve = Mallory::outsider(&w.alice).await;

    // An integer where a member's JSON belongs: `members()` skips it, but the
    // key is in the map.
    let index = w.team.doc_key();
    let message = mallory.edit(&index, |d| {
        let members = obj(d, "members");
        d.put(&members, eve.id(), 0_i64).unwrap();
    });
    let mark = honest.mark();
    honest.sync(w.team, &index, message).await.unwrap();
    honest
        .wait_for_after(mark, |f| is_sync_for(f, &index), ANSWER_WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let listed = member_ids(&w.alice.node, w.team);
    assert_eq!(
        listed, w.members,
        "members() lists exactly Alice, Bob, Mallory"
    );
    match eve.try_connect().await {
        Err(e) => println!("Eve's connection was refused outright: {e:#}"),
        Ok(conn) => {
            let _ = conn.hello(&[w.team]).await;
            let closed = conn.closed_within(Duration::from_secs(5)).await;
            let frames = conn.kinds();
            println!("Eve got {frames:?}; closed within 5 s: {closed}");
            assert!(
                !frames.iter().any(|k| k == "Hello"),
                "Alice greeted Eve, whom her member list does not show: {frames:?}"
            );
            assert!(closed, "Alice kept Eve's connection open");
        }
    }
    w.still_fine("an invisible member").await;
}

// ---- 6: one change that breaks a space or a note ----------------------------

/// After a change Mallory sent on `honest`: her session goes on (a later edit
/// by Alice in `other` reaches her connection), and Alice is fine.
async fn session_goes_on(w: &mut World, honest: &MalloryConn, other: &NoteId, after: &str) {
    w.still_fine(after).await;
    assert!(
        !honest.is_closed(),
        "Alice closed Mallory's session over {after}"
    );
    let line = format!("Alice, after {after}\n");
    let mark = honest.mark();
    w.alice.node.splice(other, 0, 0, &line).unwrap();
    let pushed = honest
        .wait_for_after(
            mark,
            |f| matches!(f, Frame::Sync { doc, message, .. } if *doc == other.as_str() && carries_changes(message)),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        pushed.is_some(),
        "Alice's edit of another note did not reach Mallory after {after}"
    );
}

/// Team's notes as its index lists them on `node`, counted through `status`
/// (documents per member = the index plus its notes).
fn index_notes(node: &Node, space: SpaceId) -> usize {
    let status = node.status().unwrap();
    let row = status
        .iter()
        .find(|p| p.space == space)
        .expect("the space is listed with a member");
    row.documents - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_cannot_break_a_space_index() {
    install_panic_hook();
    let mut w = world().await;
    let other = w.alice.node.create_in(w.team, "other\n").unwrap();
    let mallory = w.mallory().await;
    let honest = mallory.learn(w.team).await;
    assert!(mallory.has(other.as_str()), "{:?}", honest.kinds());
    let index = w.team.doc_key();
    assert_eq!(index_notes(&w.alice.node, w.team), 2);

    for key in ["members", "notes"] {
        let message = mallory.edit(&index, |d| {
            d.put(ROOT, key, "pwned").unwrap();
        });
        let mark = honest.mark();
        honest.sync(w.team, &index, message).await.unwrap();
        honest
            .wait_for_after(mark, |f| is_sync_for(f, &index), ANSWER_WAIT)
            .await;
        let after = format!("`{key}` replaced with a string");
        session_goes_on(&mut w, &honest, &other, &after).await;
        assert_eq!(index_notes(&w.alice.node, w.team), 2, "{after}");
    }

    let members = w.members.clone();
    let (team, note, expected) = (w.team, w.note.clone(), w.expected_text());
    let (node, _dir) = reopen(w.alice).await;
    let spaces = node.spaces().unwrap();
    assert!(
        spaces.iter().any(|s| s.id == team),
        "Team is gone after a restart: {spaces:?}"
    );
    assert_eq!(member_ids(&node, team), members, "after a restart");
    assert_eq!(index_notes(&node, team), 2, "after a restart");
    let listed: BTreeSet<NoteId> = node
        .list(ListFilter::Active)
        .unwrap()
        .into_iter()
        .filter(|n| n.space == Some(team))
        .map(|n| n.id)
        .collect();
    assert_eq!(listed, BTreeSet::from([note.clone(), other]));
    assert_eq!(node.get(&note).unwrap().text, expected);
    node.splice(&note, 0, 0, "after a restart\n").unwrap();
    assert_eq!(
        node.get(&note).unwrap().text,
        format!("after a restart\n{expected}")
    );
    assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_cannot_break_a_note() {
    install_panic_hook();
    let mut w = world().await;
    let second = w.alice.node.create_in(w.team, "second\n").unwrap();
    let other = w.alice.node.create_in(w.team, "other\n").unwrap();
    let mallory = w.mallory().await;
    let honest = mallory.learn(w.team).await;
    assert!(
        mallory.has(second.as_str()) && mallory.has(other.as_str()),
        "{:?}",
        honest.kinds()
    );
    let second_text = w.alice.node.get(&second).unwrap().text;

    // The shared note's `text` becomes a string.
    let message = mallory.edit(w.note.as_str(), |d| {
        d.put(ROOT, "text", "pwned").unwrap();
    });
    let mark = honest.mark();
    honest.sync(w.team, w.note.as_str(), message).await.unwrap();
    honest
        .wait_for_after(mark, |f| is_sync_for(f, w.note.as_str()), ANSWER_WAIT)
        .await;
    session_goes_on(&mut w, &honest, &other, "`text` replaced with a string").await;
    w.alice.node.splice(&w.note, 0, 0, "Alice\n").unwrap();
    w.original = format!("Alice\n{}", w.expected_text());
    w.bob_lines.clear();
    w.assert_intact("Alice edits after `text` was replaced");

    // The second note's `text` becomes a fresh, empty Text with Mallory's words.
    let message = mallory.edit(second.as_str(), |d| {
        let text = d.put_object(ROOT, "text", ObjType::Text).unwrap();
        d.splice_text(&text, 0, 0, "pwned").unwrap();
    });
    let mark = honest.mark();
    honest.sync(w.team, second.as_str(), message).await.unwrap();
    honest
        .wait_for_after(mark, |f| is_sync_for(f, second.as_str()), ANSWER_WAIT)
        .await;
    session_goes_on(&mut w, &honest, &other, "`text` replaced with a new Text").await;
    assert_eq!(w.alice.node.get(&second).unwrap().text, second_text);
    w.alice.node.splice(&second, 0, 0, "Alice\n").unwrap();
    assert_eq!(
        w.alice.node.get(&second).unwrap().text,
        format!("Alice\n{second_text}")
    );
    let second_text = format!("Alice\n{second_text}");

    let (note, expected) = (w.note.clone(), w.expected_text());
    let (node, _dir) = reopen(w.alice).await;
    let mut broken = Vec::new();
    for (which, id, text) in [
        ("the note whose `text` became a string", &note, expected),
        (
            "the note whose `text` became a new Text",
            &second,
            second_text,
        ),
    ] {
        let shown = node.get(id).unwrap().text;
        if shown != text {
            broken.push(format!("{which} shows {shown:?}"));
        }
        match node.splice(id, 0, 0, "after a restart\n") {
            Err(e) => broken.push(format!("{which} cannot be edited: {e}")),
            Ok(()) => {
                let shown = node.get(id).unwrap().text;
                if shown != format!("after a restart\n{text}") {
                    broken.push(format!("{which}, edited, shows {shown:?}"));
                }
            }
        }
    }
    println!("after a restart: {broken:#?}");
    assert!(broken.is_empty(), "after a restart: {broken:#?}");
    assert_no_panic();
}

// ---- 7: amplification --------------------------------------------------------

/// The notes of the space Mallory floods: a few, of random CJK text (it
/// compresses least per character, so they are cheap to create in a debug
/// build), each a few hundred KiB as a saved document.
const AMPLIFY_NOTES: usize = 8;
const AMPLIFY_NOTE_CHARS: usize = 128 * 1024;
/// Rounds of heads (one frame per bucket each) Mallory sends: each round
/// asks for every document whole again.
const AMPLIFY_ROUNDS: usize = 100;
/// What answering a flood of heads may hold in memory: a few frames in
/// flight and the connection's windows (today it holds every answer, ~1.8 MiB
/// per round, for as long as the member does not read).
const AMPLIFY_HEAP_LIMIT: usize = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_heads_from_a_member_that_never_reads_keeps_the_heap_bounded() {
    install_panic_hook();
    let mut w = world().await;
    // A space of Alice's and Mallory's (Bob need not sync megabytes first).
    let archive = w.alice.node.create_space("Archive").unwrap();
    let mut rng = Rng::new(7);
    let mut ids = vec![archive.doc_key()];
    for _ in 0..AMPLIFY_NOTES {
        let text: String = (0..AMPLIFY_NOTE_CHARS)
            .map(|_| char::from_u32(0x4e00 + rng.below(0x5000) as u32).unwrap())
            .collect();
        ids.push(w.alice.node.create_in(archive, &text).unwrap().to_string());
    }
    w.alice.node.compact_all().unwrap();
    let mallory = Mallory::join(&w.alice, archive).await;

    // Every document of the space by bucket, each with empty heads.
    let mut docs: Vec<Vec<DocHeads>> = vec![Vec::new(); BUCKETS];
    for id in ids {
        docs[bucket_of(&id)].push(DocHeads {
            doc: id,
            heads: vec![],
        });
    }
    let round: Vec<u8> = docs
        .into_iter()
        .enumerate()
        .flat_map(|(bucket, docs)| {
            Frame::Heads {
                space: *archive.as_bytes(),
                bucket: bucket as u8,
                docs,
            }
            .encode()
            .unwrap()
        })
        .collect();

    let conn = Arc::new(mallory.connect_unread().await);
    conn.hello(&[archive]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heap = Heap::watch();
    let received_before = w.alice.net.activity().bytes_received();
    let started = Instant::now();
    let flood = {
        let conn = conn.clone();
        let round = round.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            for _ in 0..AMPLIFY_ROUNDS {
                if conn.send_raw(&round).await.is_err() {
                    break;
                }
                sent += round.len() as u64;
            }
            sent
        })
    };
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        slowest = slowest.max(responsive(&w.alice.node, "during a flood of heads").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = flood.await.unwrap();
    // Until Alice has read all of it (or stopped reading: closed the session).
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.alice.net.activity().bytes_received() < received_before + sent
        && !conn.is_closed()
        && Instant::now() < deadline
    {
        slowest = slowest.max(responsive(&w.alice.node, "during a flood of heads").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} heads frames ({} KiB) in {:.1} s; Alice read {} KiB of them; slowest list() {:?}; \
         Mallory's session: {}",
        AMPLIFY_ROUNDS * BUCKETS,
        sent >> 10,
        started.elapsed().as_secs_f64(),
        (w.alice.net.activity().bytes_received() - received_before) >> 10,
        slowest,
        conn.end_reason().unwrap_or_else(|| "open".into())
    );
    heap.assert_within("a flood of heads never read", AMPLIFY_HEAP_LIMIT);
    w.still_fine("a flood of heads never read").await;
    conn.close();
    assert_no_panic();
}

// ---- 8: incoming slots ------------------------------------------------------

const INCOMING_FLOOD: usize = 10_050;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_that_never_become_whole_do_not_stop_new_notes_arriving() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let conn = Arc::new(mallory.connect().await);
    conn.hello(&[w.team]).await.unwrap();

    // One change that makes a map and no `text`, as 10,050 new documents.
    let (hash, change) = junk_change("junk");
    let message = raw_sync_message(&[hash], &[], &[], &[change]);
    let frames: Vec<Vec<u8>> = (0..INCOMING_FLOOD)
        .map(|_| {
            Frame::Sync {
                space: *w.team.as_bytes(),
                doc: NoteId::generate().to_string(),
                message: message.clone(),
                attestations: Vec::new(),
            }
            .encode()
            .unwrap()
        })
        .collect();
    let started = Instant::now();
    let flood = {
        let conn = conn.clone();
        tokio::spawn(async move {
            for batch in frames.chunks(500) {
                if conn.send_raw(&batch.concat()).await.is_err() {
                    break;
                }
            }
        })
    };
    while !flood.is_finished() {
        responsive(&w.alice.node, "during a flood of new documents").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flood.await.unwrap();
    conn.quiet(Duration::from_secs(1), Duration::from_secs(60))
        .await;
    println!(
        "{INCOMING_FLOOD} new documents sent in {:.1} s; Alice answered {} frames; session {}",
        started.elapsed().as_secs_f64(),
        conn.frame_count(),
        if conn.is_closed() { "closed" } else { "open" }
    );
    conn.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.alice
        .node
        .remove_member(w.team, mallory.id())
        .expect("Alice removes Mallory");
    w.members.remove(mallory.id());

    let fresh = w.bob.node.create_in(w.team, "Bob's new note\n").unwrap();
    eventually(
        "Bob's new note to reach Alice after 10,000 abandoned documents",
        Duration::from_secs(20),
        || w.alice.node.get(&fresh).is_ok(),
    )
    .await;
    w.still_fine("10,000 documents that never became whole")
        .await;
}

// ---- 9: presence --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_for_notes_outside_the_shared_spaces_is_dropped() {
    install_panic_hook();
    let mut w = world().await;
    let private = w.alice.node.create("Alice's own\n").unwrap();
    let random = NoteId::generate();
    let mallory = w.mallory().await;
    let events = w.alice.node.subscribe();
    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    conn.wait_for(|f| matches!(f, Frame::Hello { .. }), Duration::from_secs(5))
        .await;
    // A cursor (postcard: two varints), for a private note, a random id, and
    // last the shared note, which must come through: it proves the frames
    // are well formed and were handled in order.
    let presence = |doc: &NoteId| Frame::Presence {
        doc: doc.to_string(),
        payload: vec![3, 5],
    };
    conn.send_all(&[presence(&private), presence(&random), presence(&w.note)])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut control_at = None;
    while Instant::now() < deadline
        && control_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(1))
    {
        while let Ok(event) = events.try_recv() {
            if let NodeEvent::PeerPresence { note, .. } = event {
                if note == w.note && control_at.is_none() {
                    control_at = Some(Instant::now());
                }
                seen.push(note);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        control_at.is_some(),
        "presence in the shared note never came through: {seen:?}"
    );
    assert!(
        !seen.contains(&private) && !seen.contains(&random),
        "presence for a note Mallory cannot see came through: {seen:?}"
    );
    w.still_fine("presence for notes outside Team").await;
}

/// A frame that breaks the protocol ends the session, and the device says why
/// before it closes the connection: its goodbye arrives, naming the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_gets_a_goodbye_that_says_why() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let conn = mallory.connect().await;
    conn.hello(&[w.team]).await.unwrap();
    conn.wait_for(|f| matches!(f, Frame::Hello { .. }), Duration::from_secs(5))
        .await
        .expect("Alice's hello");
    let mark = conn.mark();
    // Heads for a bucket that does not exist.
    conn.send(&Frame::Heads {
        space: *w.team.as_bytes(),
        bucket: BUCKETS as u8,
        docs: Vec::new(),
    })
    .await
    .unwrap();
    let goodbye = conn
        .wait_for_after(
            mark,
            |f| matches!(f, Frame::Goodbye { .. }),
            Duration::from_secs(5),
        )
        .await;
    match goodbye {
        Some(Frame::Goodbye { reason }) => {
            assert!(reason.contains("bucket out of range"), "{reason}")
        }
        other => panic!("no goodbye before the connection closed: {other:?}"),
    }
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "the connection stayed open"
    );
    w.still_fine("a protocol error").await;
}

// ---- 10: connections ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_keep_a_hundred_connections_open() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let heap = Heap::watch();
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        match mallory.try_connect().await {
            Ok(conn) => {
                let _ = conn.hello(&[w.team]).await;
                conns.push(conn);
            }
            Err(_) => refused += 1,
        }
    }
    responsive(&w.alice.node, "with 100 connections from one member").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = conns.iter().filter(|c| !c.is_closed()).count();
    println!(
        "{open} of 100 connections still open after 3 s ({refused} refused); heap grew {} MiB",
        heap.growth() >> 20
    );
    assert!(open <= 8, "{open} of Mallory's 100 connections stayed open");
    w.still_fine("100 connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_closes_its_open_connection_within_two_seconds() {
    install_panic_hook();
    let mut w = world().await;
    let mallory = w.mallory().await;
    let conn = mallory.learn(w.team).await;
    assert!(!conn.is_closed());
    w.alice.node.remove_member(w.team, mallory.id()).unwrap();
    w.members.remove(mallory.id());
    let started = Instant::now();
    let closed = conn.closed_within(Duration::from_secs(2)).await;
    println!(
        "Mallory's connection {} {:.1} s after her removal",
        if closed { "closed" } else { "was still open" },
        started.elapsed().as_secs_f64()
    );
    assert!(closed, "Mallory's connection stayed open after her removal");
    w.still_fine("removing Mallory").await;
}

// ---- 11: the CLI and what members wrote ----------------------------------------

const ESCAPES: &str = "\x1b]0;pwned\x07\x1b[31m";
const EVE: &str = "e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7";

/// A data dir whose notes, space and member carry terminal escape sequences,
/// as a member could have written them.
fn escaped_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    node.create(&format!("{ESCAPES}Red title\nbody with \x1b[2J a clear\n"))
        .unwrap();
    let team = node.create_space(&format!("Team{ESCAPES}")).unwrap();
    node.add_member(team, EVE, &format!("{ESCAPES}Eve"), Role::Editor)
        .unwrap();
    node.create_in(team, &format!("{ESCAPES}Shared title\nbody\n"))
        .unwrap();
    node.close().unwrap();
    dir
}

fn has_control_bytes(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b) || bytes.contains(&0x07)
}

fn no_escape_bytes(what: &str, bytes: &[u8]) {
    assert!(
        !has_control_bytes(bytes),
        "{what} printed raw control bytes: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn cli_listings_print_escape_sequences_from_titles_and_names_escaped() {
    install_panic_hook();
    let dir = escaped_data_dir();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["list"], &["Red title", "Shared title"]),
        (&["search", "body"], &["Red title"]),
        (&["space", "list"], &["Team"]),
        (&["space", "members", "Team"], &["Eve"]),
        (&["status"], &["Eve", "Team"]),
    ];
    let mut wrong = Vec::new();
    for (args, visible) in cases {
        let output = peernotes(dir.path()).args(args).output().unwrap();
        let what = format!("peernotes {}", args.join(" "));
        assert!(output.status.success(), "{what}: {output:?}");
        let out = stdout(&output);
        for v in visible {
            assert!(out.contains(v), "{what} does not show {v:?}: {out:?}");
        }
        for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            if has_control_bytes(bytes) {
                wrong.push(format!(
                    "{what} ({stream}): {:?}",
                    String::from_utf8_lossy(bytes)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "raw control bytes printed: {wrong:#?}");
    assert_no_panic();
}

/// Runs `cmd` with its standard output on a new pseudo-terminal, as a user
/// in a terminal would; returns its exit status and what reached the terminal.
fn on_a_terminal(mut cmd: std::process::Command) -> (std::process::ExitStatus, Vec<u8>) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the ints we pass.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both descriptors are fresh and owned here alone.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    };
    cmd.stdout(std::process::Stdio::from(slave))
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn peernotes");
    drop(cmd); // our copy of the terminal's slave side
    let reader = std::thread::spawn(move || {
        let mut master = master;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child's side is closed and everything was read.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let status = child.wait().unwrap();
    (status, reader.join().unwrap())
}

#[test]
fn cli_show_on_a_terminal_prints_no_raw_escape_bytes() {
    install_panic_hook();
    let dir = escaped_data_dir();
    let id = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = node
            .list(ListFilter::Active)
            .unwrap()
            .into_iter()
            .find(|n| n.title.contains("Red title"))
            .unwrap()
            .id;
        node.close().unwrap();
        id
    };
    let mut cmd = peernotes(dir.path());
    cmd.args(["show", id.as_str()]);
    let (status, shown) = on_a_terminal(cmd);
    assert!(status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&shown).contains("Red title"));
    no_escape_bytes("peernotes show (on a terminal)", &shown);
    assert_no_panic();
}

#[test]
fn cli_status_survives_members_with_short_or_non_ascii_keys() {
    install_panic_hook();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    let team = node.create_space("Team").unwrap();
    let mut added = Vec::new();
    for key in ["é", "ab", "aéééé"] {
        match node.add_member(team, key, "", Role::Editor) {
            Ok(()) => added.push(key),
            Err(e) => println!("add_member({key:?}) refused: {e}"),
        }
    }
    node.close().unwrap();
    println!("accepted as members: {added:?}");
    for args in [&["status"][..], &["space", "members", "Team"][..]] {
        let output = peernotes(dir.path()).args(args).output().unwrap();
        let what = format!("peernotes {}", args.join(" "));
        assert!(
            !stderr(&output).contains("panicked"),
            "{what} panicked: {}",
            stderr(&output)
        );
        assert!(output.status.success(), "{what}: {output:?}");
    }
    assert_no_panic();
}
