//! Roles and removal against a running device (Alice, the owner of Team)
//! over iroh on loopback, with a hostile member (Mallory) speaking the real
//! sync protocol through `peernotes_tests::mallory`. Each attack is sent as
//! a well-formed change: signed membership ops Mallory may not make, note
//! edits by a viewer, a removed member's concurrent re-add and its later
//! edits forwarded by another member. After each, Alice's members and notes
//! are what her own rules say, and Bob's honest edit still reaches her.

use std::collections::BTreeSet;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, Value, ROOT};
use peernotes_sync::membership::{device_key, Action, Role};
use peernotes_sync::net::NetConfig;
use peernotes_sync::{NoteId, SpaceId};
use peernotes_tests::mallory::{
    assert_no_panic, eventually, honest_edit_arrives, install_panic_hook, member_ids, Mallory,
    MalloryConn,
};
use peernotes_tests::{device, team, Device};

const ANSWER_WAIT: Duration = Duration::from_secs(5);

struct World {
    alice: Device,
    bob: Device,
    team: SpaceId,
    note: NoteId,
}

/// Alice owns Team, Bob edits it, and a shared note has reached Bob.
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
    World {
        alice,
        bob,
        team,
        note,
    }
}

impl World {
    fn role(&self, node_id: &str) -> Option<Role> {
        self.alice
            .node
            .members(self.team)
            .unwrap()
            .into_iter()
            .find(|m| m.node_id == node_id)
            .map(|m| m.role)
    }

    /// Sends `message` for `doc` and waits until Alice has answered it.
    async fn send(&self, conn: &MalloryConn, doc: &str, message: Vec<u8>) {
        let mark = conn.mark();
        conn.sync(self.team, doc, message).await.unwrap();
        conn.wait_for_after(mark, |_| true, ANSWER_WAIT).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Alice answers and Bob's edit reaches her.
    async fn still_fine(&self, after: &str) {
        honest_edit_arrives(&self.alice, &self.bob, &self.note, after).await;
        assert_no_panic();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_cannot_add_remove_promote_or_rename() {
    install_panic_hook();
    let w = world().await;
    let mallory = Mallory::join_as(&w.alice, w.team, Role::Editor).await;
    let conn = mallory.learn(w.team).await;
    let eve = Mallory::outsider(&w.alice).await;
    let before = member_ids(&w.alice.node, w.team);
    let index = w.team.doc_key();
    let eve_key = device_key(eve.id()).unwrap();
    let alice_key = device_key(w.alice.node.node_id()).unwrap();
    let mallory_key = device_key(mallory.id()).unwrap();
    let attacks = [
        (
            "adding Eve",
            Action::Add {
                member: eve_key,
                role: Role::Owner,
                name: "Eve".into(),
            },
        ),
        ("removing the owner", Action::Remove { member: alice_key }),
        (
            "promoting herself",
            Action::SetRole {
                member: mallory_key,
                role: Role::Owner,
            },
        ),
    ];
    let mut honest_index = mallory.snapshot(&index);
    for (what, action) in attacks {
        mallory.restore(&index, honest_index.fork());
        let op = mallory.sign(w.team, action);
        w.send(&conn, &index, mallory.put_op(w.team, &op)).await;
        assert_eq!(member_ids(&w.alice.node, w.team), before, "after {what}");
        assert_eq!(w.role(mallory.id()), Some(Role::Editor), "after {what}");
        assert_eq!(w.role(w.alice.node.node_id()), Some(Role::Owner));
    }
    // Renaming Bob in the member map spaces kept before signed membership.
    mallory.restore(&index, honest_index);
    let actor = mallory.actor();
    let bob = w.bob.node.node_id().to_string();
    let rename = mallory.edit_as(&index, &actor, |d| {
        let Ok(Some((_, members))) = d.get(ROOT, "members") else {
            panic!("the index has a member map");
        };
        let record = format!(
            r#"{{"node_id":"{bob}","name":"Mallory's puppet","added_by":"{bob}","added_at":1}}"#
        );
        d.put(&members, bob.as_str(), record).unwrap();
    });
    w.send(&conn, &index, rename).await;
    let bob_now = w
        .alice
        .node
        .members(w.team)
        .unwrap()
        .into_iter()
        .find(|m| m.node_id == bob)
        .unwrap();
    assert_eq!(bob_now.name, "Bob", "Mallory renamed Bob");
    // Eve was never let in.
    if let Ok(eve_conn) = eve.try_connect().await {
        let _ = eve_conn.hello(&[w.team]).await;
        assert!(eve_conn.closed_within(Duration::from_secs(5)).await);
        assert!(!eve_conn.kinds().iter().any(|k| k == "Hello"));
    }
    w.still_fine("an editor's membership ops").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_its_edits_are_refused_and_it_may_leave() {
    install_panic_hook();
    let w = world().await;
    let mallory = Mallory::join_as(&w.alice, w.team, Role::Viewer).await;
    let conn = mallory.learn(w.team).await;
    assert_eq!(
        mallory.text(w.note.as_str()).as_deref(),
        Some("shared\n"),
        "a viewer reads the space's notes"
    );
    let actor = mallory.actor();
    let edit = mallory.edit_as(w.note.as_str(), &actor, |d| {
        let Ok(Some((Value::Object(ObjType::Text), text))) = d.get(ROOT, "text") else {
            panic!("a note has text");
        };
        d.splice_text(&text, 0, 0, "viewer was here\n").unwrap();
    });
    w.send(&conn, w.note.as_str(), edit).await;
    assert_eq!(w.alice.node.get(&w.note).unwrap().text, "shared\n");
    // Nor may it file a note into the index.
    let index = w.team.doc_key();
    let honest_index = mallory.snapshot(&index);
    let planted = NoteId::generate();
    let listing = mallory.edit_as(&index, &actor, |d| {
        let Ok(Some((_, notes))) = d.get(ROOT, "notes") else {
            panic!("the index lists notes");
        };
        d.put(&notes, planted.as_str(), 1_i64).unwrap();
    });
    w.send(&conn, &index, listing).await;
    assert_eq!(w.alice.node.space_info(w.team).unwrap().notes, 1);
    w.still_fine("a viewer's edits").await;

    // Leaving is the one thing it writes (on the index as Alice has it).
    mallory.restore(&index, honest_index);
    let leave = mallory.sign(w.team, Action::Leave);
    w.send(&conn, &index, mallory.put_op(w.team, &leave)).await;
    eventually("Mallory to have left", ANSWER_WAIT, || {
        w.role(mallory.id()).is_none()
    })
    .await;
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "a device that left keeps no session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_owner_stays_removed_and_its_later_edits_are_refused_from_anyone() {
    install_panic_hook();
    let w = world().await;
    let mallory = Mallory::join_as(&w.alice, w.team, Role::Owner).await;
    let conn = mallory.learn(w.team).await;
    let index = w.team.doc_key();
    // What Mallory wrote while a member stays.
    let actor = mallory.actor();
    let before_removal = mallory.edit_as(w.note.as_str(), &actor, |d| {
        let Ok(Some((_, text))) = d.get(ROOT, "text") else {
            panic!("a note has text");
        };
        d.splice_text(&text, 0, 0, "Mallory, as a member\n")
            .unwrap();
    });
    w.send(&conn, w.note.as_str(), before_removal).await;
    let with_mallory = "Mallory, as a member\nshared\n";
    assert_eq!(w.alice.node.get(&w.note).unwrap().text, with_mallory);

    // Concurrently with Alice removing her, Mallory (junior owner) makes Eve
    // an owner and promotes herself again.
    let eve = Mallory::outsider(&w.alice).await;
    let re_add = mallory.sign(
        w.team,
        Action::Add {
            member: device_key(eve.id()).unwrap(),
            role: Role::Owner,
            name: "Eve".into(),
        },
    );
    w.alice.node.remove_member(w.team, mallory.id()).unwrap();
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    // Her later edit, made after the removal.
    let after_removal = mallory.edit_as(w.note.as_str(), &actor, |d| {
        let Ok(Some((_, text))) = d.get(ROOT, "text") else {
            panic!("a note has text");
        };
        d.splice_text(&text, 0, 0, "Mallory, removed\n").unwrap();
    });
    let re_add_message = mallory.put_op(w.team, &re_add);

    // She cannot deliver either herself...
    if let Ok(again) = mallory.try_connect().await {
        let _ = again.hello(&[w.team]).await;
        let _ = again.sync(w.team, &index, re_add_message.clone()).await;
        let _ = again
            .sync(w.team, w.note.as_str(), after_removal.clone())
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ...nor through Carol, a member who forwards them.
    // Carol passes on Mallory's own attestations, so what refuses them is
    // the removal, not a missing signature.
    let carol = Mallory::join_as(&w.alice, w.team, Role::Editor).await;
    let carol_conn = carol.learn(w.team).await;
    for (doc, message) in [
        (index.as_str(), re_add_message),
        (w.note.as_str(), after_removal),
    ] {
        let mark = carol_conn.mark();
        carol_conn
            .sync_with(w.team, doc, message, vec![mallory.attest(doc)])
            .await
            .unwrap();
        carol_conn.wait_for_after(mark, |_| true, ANSWER_WAIT).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let members: BTreeSet<String> = member_ids(&w.alice.node, w.team);
    assert!(
        !members.contains(mallory.id()),
        "Mallory is back: {members:?}"
    );
    assert!(!members.contains(eve.id()), "Eve got in: {members:?}");
    assert_eq!(w.role(w.alice.node.node_id()), Some(Role::Owner));
    assert_eq!(w.alice.node.get(&w.note).unwrap().text, with_mallory);
    assert!(
        !carol_conn.is_closed(),
        "forwarding is refused, not punished"
    );
    w.still_fine("a removed owner's concurrent re-add").await;
    // Bob, too, has what she wrote as a member and nothing after.
    eventually(
        "Bob to have Mallory's member-time line",
        ANSWER_WAIT,
        || {
            w.bob.node.get(&w.note).is_ok_and(|n| {
                n.text.contains("Mallory, as a member") && !n.text.contains("Mallory, removed")
            })
        },
    )
    .await;
}

/// Waits for `node` to say it was removed from `space`; returns by whom.
async fn removed_by(node: &peernotes_sync::Node, space: SpaceId) -> String {
    eventually(
        "the device to learn it was removed",
        Duration::from_secs(20),
        || node.space_info(space).is_ok_and(|s| s.removed_by.is_some()),
    )
    .await;
    node.space_info(space).unwrap().removed_by.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_told_by_whom_and_stops_syncing() {
    install_panic_hook();
    let w = world().await;
    let events = w.bob.node.subscribe();
    let alice_name = w
        .alice
        .node
        .members(w.team)
        .unwrap()
        .into_iter()
        .find(|m| m.node_id == w.alice.node.node_id())
        .unwrap()
        .name;

    // Removed while connected: the session that ends tells Bob.
    w.alice
        .node
        .remove_member(w.team, w.bob.node.node_id())
        .unwrap();
    assert_eq!(removed_by(&w.bob.node, w.team).await, alice_name);
    // Events are sent once the lock is released, so wait a moment for it.
    let mut told = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !told && std::time::Instant::now() < deadline {
        told = events.try_iter().any(|e| {
            matches!(e, peernotes_sync::NodeEvent::RemovedFromSpace { space, ref by, .. }
                if space == w.team && *by == alice_name)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(told, "Bob's subscribers heard that he was removed");
    assert!(
        !w.bob
            .node
            .known_devices()
            .unwrap()
            .contains(&w.alice.node.node_id().to_string()),
        "Bob no longer dials Alice for a space he was removed from"
    );
    // Nothing more reaches him.
    w.alice
        .node
        .splice(&w.note, 0, 0, "after Bob left\n")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.bob.node.get(&w.note).unwrap().text, "shared\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_while_away_is_told_when_it_comes_back() {
    install_panic_hook();
    let alice = device(&NetConfig::loopback()).await.unwrap();
    let carol = device(&NetConfig::loopback()).await.unwrap();
    let team = team(&alice.node, &carol.node);
    let note = alice.node.create_in(team, "for Carol\n").unwrap();
    carol.net.keep_connected(alice.net.addr());
    eventually("the note to reach Carol", Duration::from_secs(30), || {
        carol.node.get(&note).is_ok()
    })
    .await;
    // Carol goes away; Alice removes her and writes on.
    let Device {
        node: carol_node,
        net,
        dir: carol_dir,
    } = carol;
    net.close().await;
    alice
        .node
        .remove_member(team, carol_node.node_id())
        .unwrap();
    alice
        .node
        .splice(&note, 0, 0, "after Carol left\n")
        .unwrap();
    // Carol comes back (same data dir, a new transport) and dials Alice.
    let carol_net =
        peernotes_sync::net::Transport::bind(carol_node.clone(), &NetConfig::loopback())
            .await
            .unwrap();
    carol_net.spawn_accept();
    carol_net.keep_connected(alice.net.addr());
    let by = removed_by(&carol_node, team).await;
    assert!(!by.is_empty());
    assert_eq!(carol_node.get(&note).unwrap().text, "for Carol\n");
    drop(carol_dir);
}
