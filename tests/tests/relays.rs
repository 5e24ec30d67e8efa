//! Relays: a self-hosted `iroh-relay` (started in this process on 127.0.0.1)
//! lets two devices that know only each other's id and the relay's URL pair and
//! sync; and a configured relay that cannot be reached does not hold up sync
//! between devices that can reach each other directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::EndpointAddr;
use iroh_relay::server::{RelayConfig, Server, ServerConfig};
use peernotes_sync::config::RelayChoice;
use peernotes_sync::net::{ticket_inviter, NetConfig};
use peernotes_sync::pairing::Offer;
use peernotes_sync::{Node, NodeEvent, NoteId, PairingProgress};
use peernotes_tests::{device, team};

fn relay_config(url: &str) -> NetConfig {
    NetConfig {
        relay: RelayChoice::parse(url).unwrap(),
        ..NetConfig::loopback()
    }
}

/// Polls `check` until it holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn text_of(node: &Node, id: &NoteId) -> Option<String> {
    node.get(id).ok().map(|n| n.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_that_know_only_ids_and_the_relay_pair_and_sync_through_it() {
    let mut config = ServerConfig::default();
    config.relay = Some(RelayConfig::new(
        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let relay = Server::spawn(config).await.expect("start the relay");
    let url = format!("http://{}", relay.http_addr().expect("an HTTP address"));
    let config = relay_config(&url);
    let (alice, bob) = (
        device(&config).await.unwrap(),
        device(&config).await.unwrap(),
    );
    let space = alice.node.create_space("Team").unwrap();
    let note = alice.node.create_in(space, "# Over the relay\n").unwrap();

    // The ticket names the inviter by id and relay only: no IP address.
    let offer = Arc::new(Offer::generate(space, i64::MAX).unwrap());
    alice.net.offer(offer.clone()).unwrap();
    let inviter = *alice.net.addr().id.as_bytes();
    let ticket = offer.ticket(inviter, vec![], Some(url.clone())).unwrap();
    let inviter_addr = ticket_inviter(&ticket).unwrap();
    assert_eq!(inviter_addr.ip_addrs().count(), 0);
    assert_eq!(inviter_addr.relay_urls().count(), 1);

    let events = bob.node.subscribe();
    bob.net
        .pair(&ticket, "Bob")
        .await
        .expect("pair through the relay");
    bob.net.connect(inviter_addr).await.unwrap();
    eventually("the note to reach Bob", Duration::from_secs(20), || {
        text_of(&bob.node, &note).as_deref() == Some("# Over the relay\n")
    })
    .await;
    alice.node.splice(&note, 0, 0, "Live: ").unwrap();
    eventually("a live edit to reach Bob", Duration::from_secs(20), || {
        text_of(&bob.node, &note).as_deref() == Some("Live: # Over the relay\n")
    })
    .await;
    // The app follows pairing and peers through the Node's events.
    let events: Vec<NodeEvent> = events.try_iter().collect();
    let alice_id = alice.node.node_id().to_string();
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::Pairing { progress: PairingProgress::Paired { space: s, .. } } if *s == space
        )),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::PeerStatusChanged { peer, connected: true } if *peer == alice_id
        )),
        "{events:?}"
    );
    let relayed = relay.metrics().server.bytes_recv.get();
    eprintln!("the relay carried {relayed} bytes");
    assert!(relayed > 0, "nothing went through the relay");
    alice.net.close().await;
    bob.net.close().await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_does_not_delay_a_direct_sync() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = relay_config(&format!("http://{closed}"));
    let started = Instant::now();
    let (alice, bob) = (
        device(&config).await.unwrap(),
        device(&config).await.unwrap(),
    );
    let space = team(&alice.node, &bob.node);
    let note = alice.node.create_in(space, "# Offline\n").unwrap();
    let direct = EndpointAddr::new(alice.net.addr().id)
        .with_ip_addr(*alice.net.addr().ip_addrs().next().unwrap());
    bob.net.connect(direct).await.unwrap();
    // Generous on purpose: a relay or DNS timeout would take this long or more;
    // the figure printed is what to compare with the 1 s target.
    eventually("the first sync", Duration::from_secs(5), || {
        text_of(&bob.node, &note).as_deref() == Some("# Offline\n")
    })
    .await;
    eprintln!(
        "start to first completed sync with an unreachable relay configured: {} ms",
        started.elapsed().as_millis()
    );
    alice.net.close().await;
    bob.net.close().await;
}
