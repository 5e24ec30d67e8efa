//! A hostile member against a running device over iroh on loopback: garbage,
//! an absurd length prefix, frames for a space it is not in, a huge bogus sync
//! message and document, 100 connections at once, and a flood of presence.
//! Each bad connection is closed by the device, and after every attack an
//! honest member's edit still arrives: the device stays responsive.

use peernotes_sync::membership::Role;
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::{Endpoint, SecretKey};
use peernotes_sync::net::NetConfig;
use peernotes_sync::net::SYNC_ALPN;
use peernotes_sync::protocol::frame::SpaceSummary;
use peernotes_sync::protocol::{Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use peernotes_sync::SpaceId;
use peernotes_tests::mallory::{eventually, honest_edit_arrives};
use peernotes_tests::{device, team, Device, Rng};

/// How long the device may take to close a bad connection.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Mallory: a raw endpoint whose id Alice lists as a member of `space`.
async fn mallory(alice: &Device, space: SpaceId) -> Endpoint {
    let key = SecretKey::generate();
    alice
        .node
        .add_member(space, &key.public().to_string(), "Mallory", Role::Editor)
        .unwrap();
    peernotes_tests::mallory::loopback_endpoint(key).await
}

/// Opens a sync connection to Alice and writes `bytes` on its stream.
async fn send_raw(from: &Endpoint, alice: &Device, bytes: &[u8]) -> Connection {
    let conn = from.connect(alice.net.addr(), SYNC_ALPN).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // Alice may close the stream before all of it is written: that is the point.
    let _ = send.write_all(bytes).await;
    conn
}

fn frames(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.encode().unwrap()).collect()
}

fn hello(space: SpaceId) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        spaces: vec![SpaceSummary {
            space: *space.as_bytes(),
            hash: [0; 32],
            changed: None,
        }],
    }
}

async fn assert_closed_by_alice(conn: &Connection, attack: &str) {
    let closed = tokio::time::timeout(CLOSE_WITHIN, conn.closed()).await;
    assert!(
        closed.is_ok(),
        "Alice kept the connection open after {attack}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_is_cut_off_and_members_keep_syncing() {
    let (alice, bob) = (
        device(&NetConfig::loopback()).await.unwrap(),
        device(&NetConfig::loopback()).await.unwrap(),
    );
    let space = team(&alice.node, &bob.node);
    let elsewhere = alice.node.create_space("Alice only").unwrap();
    let note = alice.node.create_in(space, "shared\n").unwrap();
    bob.net.keep_connected(alice.net.addr());
    eventually("the note to reach Bob", Duration::from_secs(20), || {
        bob.node.get(&note).is_ok()
    })
    .await;
    let mallory = mallory(&alice, space).await;
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}");

    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    let conn = send_raw(&mallory, &alice, &garbage).await;
    assert_closed_by_alice(&conn, "garbage").await;
    honest_edit_arrives(&alice, &bob, &note, "garbage").await;

    let conn = send_raw(&mallory, &alice, &u32::MAX.to_be_bytes()).await;
    assert_closed_by_alice(&conn, "an absurd length prefix").await;
    honest_edit_arrives(&alice, &bob, &note, "an absurd length").await;

    let unshared = Frame::Buckets {
        space: *elsewhere.as_bytes(),
        hashes: vec![[1; 32]; 64],
    };
    let conn = send_raw(&mallory, &alice, &frames(&[hello(space), unshared])).await;
    assert_closed_by_alice(&conn, "a frame for a space Mallory is not in").await;
    honest_edit_arrives(&alice, &bob, &note, "an unshared space").await;

    let huge = vec![0x42; MAX_FRAME_BYTES - 1024];
    let bogus_sync = Frame::Sync {
        space: *space.as_bytes(),
        doc: note.to_string(),
        message: huge.clone(),
        attestations: Vec::new(),
    };
    let conn = send_raw(&mallory, &alice, &frames(&[hello(space), bogus_sync])).await;
    assert_closed_by_alice(&conn, "a huge bogus sync message").await;
    honest_edit_arrives(&alice, &bob, &note, "a huge sync message").await;

    // A bogus whole document is ignored (the sync protocol takes over), and it
    // must not touch the note it names.
    let bogus_document = Frame::Document {
        space: *space.as_bytes(),
        doc: note.to_string(),
        heads: vec![[3; 32]],
        saved: huge,
        attestations: Vec::new(),
    };
    let conn = send_raw(&mallory, &alice, &frames(&[hello(space), bogus_document])).await;
    honest_edit_arrives(&alice, &bob, &note, "a huge bogus document").await;
    conn.close(0u32.into(), b"done");

    // 100 connections at once, each with a hello.
    let mut many = Vec::new();
    for _ in 0..100 {
        let conn = mallory.connect(alice.net.addr(), SYNC_ALPN).await.unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&frames(&[hello(space)])).await.unwrap();
        many.push((conn, send, recv));
    }
    honest_edit_arrives(&alice, &bob, &note, "100 connections").await;
    assert!(alice.node.list(peernotes_sync::ListFilter::Active).is_ok());
    for (conn, _, _) in many {
        conn.close(0u32.into(), b"done");
    }

    // A flood of presence on one connection.
    let conn = mallory.connect(alice.net.addr(), SYNC_ALPN).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&frames(&[hello(space)])).await.unwrap();
    let flood: Vec<Frame> = (0..20_000u32)
        .map(|i| Frame::Presence {
            doc: note.to_string(),
            payload: i.to_be_bytes().to_vec(),
        })
        .collect();
    send.write_all(&frames(&flood)).await.unwrap();
    honest_edit_arrives(&alice, &bob, &note, "a presence flood").await;
    conn.close(0u32.into(), b"done");

    // Nothing Mallory sent changed the note: only Bob's lines and the original.
    let text = alice.node.get(&note).unwrap().text;
    assert!(text.ends_with("shared\n"), "{text}");
    assert_eq!(text.lines().count(), 8, "{text}");
    mallory.close().await;
}
