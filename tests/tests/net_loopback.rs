//! Real iroh connections on loopback between `Node`s: a member's notes arrive,
//! live edits follow, and a device that shares no space is turned away before it
//! receives anything.

use peernotes_sync::membership::Role;
use std::time::{Duration, Instant};

use peernotes_sync::net::{NetConfig, Transport};
use peernotes_sync::protocol::{Frame, MAX_FRAME_BYTES};
use peernotes_sync::{ListFilter, Node, NoteId};
use peernotes_tests::{device, team, Device};

async fn loopback() -> Device {
    device(&NetConfig::loopback()).await.unwrap()
}

/// Polls `check` until it holds, for at most ten seconds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text_of(node: &Node, id: &NoteId) -> Option<String> {
    node.get(id).ok().map(|n| n.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_notes_and_live_edits_arrive_over_iroh() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    let note = alice.node.create_in(team, "# Plan\n").unwrap();

    bob.net.connect(alice.net.addr()).await.unwrap();
    eventually("the note to reach Bob", || {
        text_of(&bob.node, &note).as_deref() == Some("# Plan\n")
    })
    .await;

    alice.node.splice(&note, 7, 0, "live edit\n").unwrap();
    eventually("Alice's live edit to reach Bob", || {
        text_of(&bob.node, &note).as_deref() == Some("# Plan\nlive edit\n")
    })
    .await;
    bob.node.splice(&note, 0, 0, "B ").unwrap();
    eventually("Bob's edit to reach Alice", || {
        text_of(&alice.node, &note).as_deref() == Some("B # Plan\nlive edit\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_shares_no_space_gets_nothing() {
    let (alice, carol) = (loopback().await, loopback().await);
    let team = alice.node.create_space("Team").unwrap();
    alice.node.create_in(team, "# Secret plan\n").unwrap();
    // Carol claims to join, but Alice never added her.
    carol.node.join_space(team, alice.node.node_id()).unwrap();

    let driver = carol.net.connect(alice.net.addr()).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "Alice should close the connection at once");
    assert!(carol.node.list(ListFilter::Active).unwrap().is_empty());
    assert!(
        carol.node.members(team).is_err(),
        "not even the space's index arrived"
    );
}

/// A member's device that sends `bytes` on a sync connection to `alice`, then
/// waits for Alice to close it. Returns whether she did.
async fn hostile_member_sends(
    alice: &Device,
    team: peernotes_sync::SpaceId,
    bytes: Vec<u8>,
) -> bool {
    use iroh::endpoint::presets;
    let key = iroh::SecretKey::generate();
    alice
        .node
        .add_member(team, &key.public().to_string(), "Mallory", Role::Editor)
        .unwrap();
    let endpoint = iroh::Endpoint::builder(presets::Minimal)
        .secret_key(key)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    let conn = endpoint
        .connect(alice.net.addr(), peernotes_sync::net::SYNC_ALPN)
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&bytes).await.unwrap();
    // Alice answers with her hello, then must hang up on the garbage.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
    })
    .await
    .is_ok();
    endpoint.close().await;
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_absurd_frames_close_that_connection_only() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    let note = alice.node.create_in(team, "# Plan\n").unwrap();
    bob.net.connect(alice.net.addr()).await.unwrap();
    eventually("Bob to sync", || text_of(&bob.node, &note).is_some()).await;

    let mut absurd = u32::MAX.to_be_bytes().to_vec();
    absurd.extend_from_slice(&[0; 64]);
    assert!(
        hostile_member_sends(&alice, team, absurd).await,
        "an absurd length closes it"
    );
    let mut garbage = 40u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 40]);
    assert!(
        hostile_member_sends(&alice, team, garbage).await,
        "garbage closes it"
    );
    let claims_a_terabyte = Frame::Part {
        total: 1 << 40,
        bytes: vec![0; 1024],
    };
    assert!(
        hostile_member_sends(&alice, team, claims_a_terabyte.encode().unwrap()).await,
        "a part of a message over the limit closes it"
    );

    // Bob's connection is untouched: live edits still arrive.
    alice.node.splice(&note, 7, 0, "still here\n").unwrap();
    eventually("Alice's edit to reach Bob after the attacks", || {
        text_of(&bob.node, &note).as_deref() == Some("# Plan\nstill here\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_connected_receives_nothing_more() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    let note = alice.node.create_in(team, "shared\n").unwrap();
    bob.net.connect(alice.net.addr()).await.unwrap();
    eventually("Bob to sync", || text_of(&bob.node, &note).is_some()).await;
    alice.node.splice(&note, 0, 0, "live ").unwrap();
    eventually("a live edit while Bob is a member", || {
        text_of(&bob.node, &note).as_deref() == Some("live shared\n")
    })
    .await;

    alice.node.remove_member(team, bob.node.node_id()).unwrap();
    alice.node.splice(&note, 0, 0, "secret ").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        text_of(&bob.node, &note).as_deref(),
        Some("live shared\n"),
        "nothing after removal, though still connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_connected_members_live() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    bob.net.connect(alice.net.addr()).await.unwrap();
    eventually("the space to reach Bob", || bob.node.members(team).is_ok()).await;

    let carol = "c".repeat(64);
    alice
        .node
        .add_member(team, &carol, "Carol", Role::Editor)
        .unwrap();
    eventually(
        "Carol's membership to reach Bob without a reconnect",
        || {
            let members = bob.node.members(team).unwrap();
            members.iter().any(|m| m.node_id == carol)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_with_much_to_send_each_do_not_block_each_other() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    bob.net.connect(alice.net.addr()).await.unwrap();
    eventually("the space to reach Bob", || bob.node.members(team).is_ok()).await;
    bob.net.close().await;

    // Apart, each writes ~3 MB of notes, far more than a stream's window.
    let body = "words that fill a note with something to send. ".repeat(200);
    for i in 0..300 {
        alice
            .node
            .create_in(team, &format!("# Alice {i}\n{body}"))
            .unwrap();
        bob.node
            .create_in(team, &format!("# Bob {i}\n{body}"))
            .unwrap();
    }
    let bob_net = Transport::bind(bob.node.clone(), &NetConfig::loopback())
        .await
        .unwrap();
    bob_net.connect(alice.net.addr()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while alice.node.list(ListFilter::Active).unwrap().len() < 600
        || bob.node.list(ListFilter::Active).unwrap().len() < 600
    {
        assert!(Instant::now() < deadline, "the exchange stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_larger_than_a_frame_arrives_whole() {
    let (alice, bob) = (loopback().await, loopback().await);
    let team = team(&alice.node, &bob.node);
    // CJK characters that look random: its save hardly compresses, so it
    // takes more than one frame, in as few characters as can do that.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let text: String = (0..10_500_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from_u32(0x4e00 + (seed % 20_000) as u32).expect("a CJK character")
        })
        .collect();
    let note = alice.node.create_in(team, &text).unwrap();
    alice.node.flush().unwrap();
    let saved = alice.node.note_document(&note).unwrap().len();
    assert!(saved > MAX_FRAME_BYTES, "{saved} bytes fit in one frame");

    bob.net.connect(alice.net.addr()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while bob.node.get(&note).map(|n| n.text.len()).ok() != Some(text.len()) {
        assert!(Instant::now() < deadline, "the large note did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bob.node.get(&note).unwrap().text == text);
    let received = bob.net.activity().bytes_received() as usize;
    assert!(
        received < saved + saved / 10,
        "sent whole, once: {received} bytes for a save of {saved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_full_mesh_a_change_reaches_each_device_once() {
    let (alice, bob, carol) = (loopback().await, loopback().await, loopback().await);
    let space =
        peernotes_tests::shared_space("Three", &alice.node, &[&bob.node, &carol.node]).unwrap();
    let note = alice.node.create_in(space, "# Three\n").unwrap();
    bob.net.keep_connected(alice.net.addr());
    carol.net.keep_connected(alice.net.addr());
    eventually("the note to reach both", || {
        text_of(&bob.node, &note).is_some() && text_of(&carol.node, &note).is_some()
    })
    .await;
    carol.net.keep_connected(bob.net.addr());
    eventually("every pair to connect", || {
        [&alice, &bob, &carol]
            .iter()
            .all(|d| d.net.activity().connections() == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let received = |d: &Device| d.net.activity().bytes_received();
    let sent = |d: &Device| d.net.activity().bytes_sent();
    let (bob_sent, carol_received) = (sent(&bob), received(&carol));
    let mut text = "# Three\n".to_string();
    for i in 0..30 {
        alice.node.splice(&note, text.len(), 0, "x").unwrap();
        text.push('x');
        eventually(&format!("keystroke {i} to reach both"), || {
            text_of(&bob.node, &note).as_deref() == Some(text.as_str())
                && text_of(&carol.node, &note).as_deref() == Some(text.as_str())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob_sent = sent(&bob) - bob_sent;
    let carol_received = received(&carol) - carol_received;
    // Bob only acknowledges what Alice sent: he relays none of it to Carol,
    // who has it from Alice.
    assert!(
        bob_sent * 2 < carol_received,
        "Bob sent {bob_sent} bytes while Carol received {carol_received}"
    );
}
