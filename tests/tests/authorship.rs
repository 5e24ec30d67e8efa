//! Signed authorship against running devices over iroh on loopback. A
//! member (Mallory, through `peernotes_tests::mallory`) forges changes under
//! another member's actor id — Bob's, with his next sequence number, and
//! Alice's own — sent bare, with her own signature, with an old signature of
//! Bob's replayed, or as a whole new document: Alice refuses each, reports
//! who sent it and whom it claimed, and Bob's sync with her goes on. Honest
//! changes keep their author's signature however they travel: forwarded by a
//! third device, as a whole document to a device that joins later, and
//! "edited by" names the real author there. Changes from before signing
//! reach a new member vouched for by an owner, and show as unverified.

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use peernotes_sync::authorship::Attestation;
use peernotes_sync::membership::{device_key, Role};
use peernotes_sync::net::NetConfig;
use peernotes_sync::protocol::Frame;
use peernotes_sync::{NodeEvent, NoteId, SpaceId};
use peernotes_tests::mallory::{
    assert_no_panic, eventually, honest_edit_arrives, install_panic_hook, Mallory, MalloryConn,
};
use peernotes_tests::{device, team, Device};

const ANSWER_WAIT: Duration = Duration::from_secs(5);

struct World {
    alice: Device,
    bob: Device,
    team: SpaceId,
    note: NoteId,
}

/// Alice owns Team, Bob edits it and has written in the shared note, which
/// has reached Alice.
async fn world() -> World {
    let alice = device(&NetConfig::loopback()).await.unwrap();
    let bob = device(&NetConfig::loopback()).await.unwrap();
    let team = team(&alice.node, &bob.node);
    let note = alice.node.create_in(team, "shared\n").unwrap();
    bob.net.keep_connected(alice.net.addr());
    eventually("the note to reach Bob", Duration::from_secs(60), || {
        bob.node.get(&note).is_ok_and(|n| n.text == "shared\n")
    })
    .await;
    bob.node.splice(&note, 0, 0, "Bob was here\n").unwrap();
    eventually("Bob's line to reach Alice", Duration::from_secs(30), || {
        alice
            .node
            .get(&note)
            .is_ok_and(|n| n.text.contains("Bob was here"))
    })
    .await;
    World {
        alice,
        bob,
        team,
        note,
    }
}

/// The actor a device writes as: its node id's bytes, then 0.
fn actor_of(node_id: &str) -> Vec<u8> {
    let mut actor = device_key(node_id).unwrap().to_vec();
    actor.push(0);
    actor
}

fn insert(doc: &mut AutoCommit, words: &str) {
    let Ok(Some((_, text))) = doc.get(ROOT, "text") else {
        panic!("a note has text");
    };
    doc.splice_text(&text, 0, 0, words).unwrap();
}

/// Sends `frame` and waits until Alice has answered or gone quiet.
async fn send(conn: &MalloryConn, frame: Frame) {
    let mark = conn.mark();
    conn.send(&frame).await.unwrap();
    conn.wait_for_after(mark, |_| true, ANSWER_WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The reasons Alice gave for refusing what `peer` sent, so far.
fn refusals(events: &std::sync::mpsc::Receiver<NodeEvent>, peer: &str) -> Vec<String> {
    events
        .try_iter()
        .filter_map(|e| match e {
            NodeEvent::PeerRefused {
                peer: from, reason, ..
            } if from == peer => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_forged_under_another_members_actor_is_refused_and_sync_goes_on() {
    install_panic_hook();
    let w = world().await;
    let events = w.alice.node.subscribe();
    let mallory = Mallory::join_as(&w.alice, w.team, Role::Editor).await;
    let conn = mallory.learn(w.team).await;
    let doc = w.note.to_string();
    assert!(
        mallory.text(&doc).unwrap().contains("Bob was here"),
        "Mallory holds Bob's changes, so her forgery takes his next number"
    );
    let bob = w.bob.node.node_id().to_string();
    let alice = w.alice.node.node_id().to_string();
    let bobs_old = mallory
        .attestations_seen(&doc)
        .into_iter()
        .find(|a| a.author == device_key(&bob).unwrap())
        .expect("Alice passed on Bob's attestation with his changes");
    let mut honest = mallory.snapshot(&doc);
    let mallorys = || vec![mallory.attest(&doc)];
    let attacks: [(&str, &str, Vec<Attestation>); 4] = [
        ("Bob's, bare", bob.as_str(), Vec::new()),
        ("Bob's, signed by Mallory", bob.as_str(), Vec::new()),
        (
            "Bob's, with his old signature replayed",
            bob.as_str(),
            vec![bobs_old.clone()],
        ),
        ("Alice's own, signed by Mallory", alice.as_str(), Vec::new()),
    ];
    for (what, victim, mut attestations) in attacks {
        mallory.restore(&doc, honest.fork());
        let forged = mallory.edit_as(&doc, &actor_of(victim), |d| insert(d, "FORGED "));
        if what.contains("signed by Mallory") {
            // Over her replica's heads, which now include the forgery.
            attestations = mallorys();
        }
        send(
            &conn,
            Frame::Sync {
                space: *w.team.as_bytes(),
                doc: doc.clone(),
                message: forged,
                attestations,
            },
        )
        .await;
        let text = w.alice.node.get(&w.note).unwrap().text;
        assert!(!text.contains("FORGED"), "{what} was applied: {text:?}");
        let reasons = refusals(&events, mallory.id());
        let claimed = &victim[..12];
        assert!(
            reasons
                .iter()
                .any(|r| r.contains(claimed) && r.contains("did not sign")),
            "{what}: the refusal names the device claimed ({claimed}): {reasons:?}"
        );
    }
    assert!(
        !conn.is_closed(),
        "a refused change is not a protocol error"
    );

    // The same forgery as a whole new note.
    let new = NoteId::generate();
    let mut whole = AutoCommit::new().with_actor(automerge::ActorId::from(actor_of(&bob)));
    let text = whole.put_object(ROOT, "text", ObjType::Text).unwrap();
    whole
        .splice_text(&text, 0, 0, "FORGED note by Bob")
        .unwrap();
    whole.put(ROOT, "created_at", 1).unwrap();
    whole.commit();
    let heads: Vec<[u8; 32]> = whole.get_heads().iter().map(|h| h.0).collect();
    send(
        &conn,
        Frame::Document {
            space: *w.team.as_bytes(),
            doc: new.to_string(),
            heads: heads.clone(),
            saved: whole.save(),
            attestations: vec![Attestation::sign(new.as_str(), &[7; 32], heads)],
        },
    )
    .await;
    assert!(w.alice.node.get(&new).is_err(), "the forged note was taken");

    // Bob's real next change still reaches Alice, and she shows it as his.
    honest_edit_arrives(
        &w.alice,
        &w.bob,
        &w.note,
        "forged changes under Bob's actor",
    )
    .await;
    let view = w.alice.node.get(&w.note).unwrap();
    assert!(!view.text.contains("FORGED"));
    assert_eq!(
        w.alice.node.summary(&w.note).unwrap().updated_by.as_deref(),
        Some("Bob")
    );
    // And Mallory's own, signed, change is taken as hers.
    mallory.restore(&doc, honest);
    let mine = mallory.edit(&doc, |d| insert(d, "Mallory's own "));
    conn.sync(w.team, &doc, mine).await.unwrap();
    eventually("Mallory's signed change", ANSWER_WAIT, || {
        w.alice
            .node
            .get(&w.note)
            .is_ok_and(|n| n.text.contains("Mallory's own"))
    })
    .await;
    assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_travel_with_the_changes_through_a_third_device() {
    install_panic_hook();
    // Carol is connected to Alice; Bob, and later Dave, reach only Carol.
    let alice = device(&NetConfig::loopback()).await.unwrap();
    let bob = device(&NetConfig::loopback()).await.unwrap();
    let carol = device(&NetConfig::loopback()).await.unwrap();
    let space = alice.node.create_space("Team").unwrap();
    for (member, name) in [(&bob, "Bob"), (&carol, "Carol")] {
        alice
            .node
            .add_member(space, member.node.node_id(), name, Role::Editor)
            .unwrap();
    }
    carol.node.join_space(space, alice.node.node_id()).unwrap();
    carol.net.keep_connected(alice.net.addr());
    eventually("Carol to hold Team", Duration::from_secs(60), || {
        carol.node.members(space).is_ok_and(|m| m.len() == 3)
    })
    .await;
    bob.node.join_space(space, carol.node.node_id()).unwrap();
    bob.net.keep_connected(carol.net.addr());
    eventually("Bob to hold Team", Duration::from_secs(60), || {
        bob.node.members(space).is_ok_and(|m| m.len() == 3)
    })
    .await;

    let note = bob.node.create_in(space, "# By Bob\n").unwrap();
    bob.node
        .splice(&note, 0, 0, "more of Bob's words\n")
        .unwrap();
    eventually(
        "Bob's note to reach Alice through Carol",
        Duration::from_secs(60),
        || {
            alice
                .node
                .get(&note)
                .is_ok_and(|n| n.text.contains("more of Bob's words"))
        },
    )
    .await;
    assert_eq!(
        alice.node.summary(&note).unwrap().updated_by.as_deref(),
        Some("Bob")
    );
    assert_eq!(
        bob.net.activity().connections(),
        1,
        "Bob reaches Carol only"
    );

    // Dave, added now, gets the note whole from Carol, with Bob's signature.
    let dave = device(&NetConfig::loopback()).await.unwrap();
    alice
        .node
        .add_member(space, dave.node.node_id(), "Dave", Role::Editor)
        .unwrap();
    eventually("Carol to learn of Dave", Duration::from_secs(60), || {
        carol.node.members(space).is_ok_and(|m| m.len() == 4)
    })
    .await;
    dave.node.join_space(space, carol.node.node_id()).unwrap();
    dave.net.keep_connected(carol.net.addr());
    eventually("Bob's note to reach Dave", Duration::from_secs(60), || {
        dave.node
            .get(&note)
            .is_ok_and(|n| n.text.contains("more of Bob's words"))
    })
    .await;
    assert_eq!(
        dave.node.summary(&note).unwrap().updated_by.as_deref(),
        Some("Bob")
    );
    assert_eq!(
        dave.net.activity().connections(),
        1,
        "Dave reaches Carol only"
    );
    assert_no_panic();
}

/// Closes `device` and opens its data dir again as a store written before
/// changes were signed: its attestations, and what the upgrade records, are
/// taken out and its schema put back to that release's.
async fn reopen_as_before_signing(device: Device) -> Device {
    let Device { node, net, dir } = device;
    net.close().await;
    eventually(
        "the transport to let go of the Node",
        Duration::from_secs(20),
        || std::sync::Arc::strong_count(&node) == 1,
    )
    .await;
    std::sync::Arc::try_unwrap(node)
        .ok()
        .expect("the only handle")
        .close()
        .unwrap();
    let store =
        rusqlite::Connection::open(dir.path().join(peernotes_sync::store::STORE_FILE)).unwrap();
    store
        .execute_batch(
            "DROP TABLE attestations;
             DROP TABLE legacy_heads;
             ALTER TABLE notes DROP COLUMN updated_by_unverified;
             ALTER TABLE invitations DROP COLUMN private;
             DROP INDEX notes_lagging;
             ALTER TABLE notes DROP COLUMN text_heads;
             DROP TABLE space_members;
             PRAGMA user_version = 7;",
        )
        .unwrap();
    drop(store);
    let node = std::sync::Arc::new(
        peernotes_sync::Node::open(peernotes_sync::NodeOptions::new(dir.path())).unwrap(),
    );
    let net = peernotes_sync::net::Transport::bind(node.clone(), &NetConfig::loopback())
        .await
        .unwrap();
    net.spawn_accept();
    Device { node, net, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_before_signing_are_vouched_for_by_an_owner_and_shown_unverified() {
    install_panic_hook();
    // Alice's store holds a change by Carl that no signature proves: as a
    // store of the release before signing would, after Carl left for good.
    let alice = device(&NetConfig::loopback()).await.unwrap();
    let space = alice.node.create_space("Team").unwrap();
    let note = alice.node.create_in(space, "shared\n").unwrap();
    let carl = Mallory::join_as(&alice, space, Role::Editor).await;
    let conn = carl.learn(space).await;
    let words = carl.edit(note.as_str(), |d| insert(d, "Carl's old words "));
    conn.sync(space, note.as_str(), words).await.unwrap();
    eventually("Carl's words to reach Alice", ANSWER_WAIT, || {
        alice
            .node
            .get(&note)
            .is_ok_and(|n| n.text.contains("Carl's old words"))
    })
    .await;
    alice.node.flush().unwrap();
    conn.close();
    carl.close().await;
    let alice = reopen_as_before_signing(alice).await;
    assert_eq!(
        alice.node.summary(&note).unwrap().updated_by.as_deref(),
        Some("Mallory (unverified)"),
        "the upgrade marks what no signature proves"
    );

    // Dave, added after the upgrade, gets the note from Alice: her own
    // changes signed by her, Carl's vouched for by her as an owner.
    let dave = device(&NetConfig::loopback()).await.unwrap();
    alice
        .node
        .add_member(space, dave.node.node_id(), "Dave", Role::Editor)
        .unwrap();
    dave.node.join_space(space, alice.node.node_id()).unwrap();
    dave.net.keep_connected(alice.net.addr());
    eventually("the note to reach Dave", Duration::from_secs(60), || {
        dave.node
            .get(&note)
            .is_ok_and(|n| n.text.contains("Carl's old words"))
    })
    .await;
    assert_eq!(
        dave.node.summary(&note).unwrap().updated_by.as_deref(),
        Some("Mallory (unverified)")
    );
    // Alice's own edit after the upgrade is verified on Dave's device.
    let alice_name = dave
        .node
        .members(space)
        .unwrap()
        .into_iter()
        .find(|m| m.node_id == alice.node.node_id())
        .unwrap()
        .name;
    alice.node.splice(&note, 0, 0, "Alice, now ").unwrap();
    eventually(
        "Alice's edit to reach Dave",
        Duration::from_secs(20),
        || {
            dave.node
                .summary(&note)
                .is_ok_and(|n| n.updated_by.as_deref() == Some(alice_name.as_str()))
        },
    )
    .await;
    assert_no_panic();
}
