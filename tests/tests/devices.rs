//! A person's several devices, over iroh on loopback. Ana links her laptop:
//! it is admitted to every space she is in (her Private space too) with her
//! role there, as a device of her person, and gets her notes. Bob, another
//! person, sees the laptop as Ana's and takes its edits. Ana revokes the
//! laptop: it is told, what it writes afterwards is refused by everyone, and
//! Ana herself keeps her access. Nobody else can join a Private space.
//!
//! The second scenario links by ticket, as the app and `peernotes device
//! link` do: the laptop takes Ana's Private space as its own (its own earlier
//! private notes move there), and a space Ana joins afterwards reaches the
//! laptop with no further step. A revoked laptop is not linked again.

use std::sync::Arc;
use std::time::Duration;

use peernotes_sync::membership::Role;
use peernotes_sync::net::NetConfig;
use peernotes_sync::network::{InviteBy, Network};
use peernotes_sync::{Node, NodeOptions, SpaceId};
use peernotes_tests::device;
use peernotes_tests::mallory::{assert_no_panic, eventually, install_panic_hook};

const WAIT: Duration = Duration::from_secs(60);

fn person_of(node: &peernotes_sync::Node, space: SpaceId, device: &str) -> Option<String> {
    node.members(space)
        .ok()?
        .into_iter()
        .find(|m| m.node_id == device)
        .map(|m| m.person)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_gets_its_persons_spaces_and_is_revoked_alone() {
    install_panic_hook();
    let ana = device(&NetConfig::loopback()).await.unwrap();
    let bob = device(&NetConfig::loopback()).await.unwrap();
    let laptop = device(&NetConfig::loopback()).await.unwrap();
    let (ana_id, laptop_id) = (
        ana.node.node_id().to_string(),
        laptop.node.node_id().to_string(),
    );
    // Bob owns Team; Ana is an editor of it and has a private note.
    let team = bob.node.create_space("Team").unwrap();
    bob.node
        .add_member(team, &ana_id, "Ana", Role::Editor)
        .unwrap();
    ana.node.join_space(team, bob.node.node_id()).unwrap();
    ana.net.keep_connected(bob.net.addr());
    let shared = bob.node.create_in(team, "# Plans\n").unwrap();
    let private = ana.node.private_space().unwrap();
    let diary = ana.node.create("# Diary\nonly mine\n").unwrap();
    eventually("Ana to have Team", WAIT, || ana.node.get(&shared).is_ok()).await;

    // Nobody else joins a Private space.
    let refused = ana
        .node
        .add_member(private, bob.node.node_id(), "Bob", Role::Editor)
        .unwrap_err();
    assert!(refused.to_string().contains("own devices"), "{refused}");

    // Ana links her laptop: in both spaces, as herself.
    let mut linked = ana.node.link_device(&laptop_id, "laptop").unwrap();
    linked.sort();
    let mut expected = vec![private, team];
    expected.sort();
    assert_eq!(linked, expected);
    for space in [private, team] {
        laptop.node.join_space(space, &ana_id).unwrap();
    }
    laptop.net.keep_connected(ana.net.addr());
    eventually("the laptop to get Ana's spaces and notes", WAIT, || {
        laptop
            .node
            .get(&diary)
            .is_ok_and(|n| n.text.contains("only mine"))
            && laptop.node.get(&shared).is_ok()
            && person_of(&laptop.node, team, &laptop_id).is_some()
    })
    .await;
    let devices: Vec<String> = ana
        .node
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.node_id)
        .collect();
    assert!(
        devices.contains(&ana_id) && devices.contains(&laptop_id),
        "{devices:?}"
    );
    assert_eq!(
        laptop
            .node
            .members(team)
            .unwrap()
            .iter()
            .find(|m| m.node_id == laptop_id)
            .map(|m| m.role),
        Some(Role::Editor),
        "the laptop has Ana's role"
    );

    // Bob sees the laptop as Ana's, and takes its edits.
    eventually("Bob to learn of the laptop", WAIT, || {
        person_of(&bob.node, team, &laptop_id).as_deref() == Some(ana_id.as_str())
    })
    .await;
    laptop.net.keep_connected(bob.net.addr());
    laptop
        .node
        .splice(&shared, 0, 0, "from the laptop\n")
        .unwrap();
    eventually("the laptop's edit to reach Bob", WAIT, || {
        bob.node
            .get(&shared)
            .is_ok_and(|n| n.text.contains("from the laptop"))
    })
    .await;
    // The diary never reached Bob.
    assert!(bob.node.get(&diary).is_err());

    // The laptop is lost: Ana revokes it, alone.
    let mut removed = ana.node.remove_device(&laptop_id).unwrap();
    removed.sort();
    assert_eq!(removed, expected);
    eventually("the laptop to learn it was removed", WAIT, || {
        [private, team].iter().all(|s| {
            laptop
                .node
                .space_info(*s)
                .is_ok_and(|i| i.removed_by.is_some())
        })
    })
    .await;
    eventually("Bob to see the laptop go", WAIT, || {
        person_of(&bob.node, team, &laptop_id).is_none()
    })
    .await;
    laptop
        .node
        .splice(&shared, 0, 0, "after the loss\n")
        .unwrap();
    ana.node.splice(&shared, 0, 0, "Ana, still here\n").unwrap();
    eventually("Ana's edit to reach Bob", WAIT, || {
        bob.node
            .get(&shared)
            .is_ok_and(|n| n.text.contains("Ana, still here"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (who, node) in [("Ana", &ana.node), ("Bob", &bob.node)] {
        let text = node.get(&shared).unwrap().text;
        assert!(
            !text.contains("after the loss"),
            "{who} took the lost laptop's edit: {text:?}"
        );
    }
    assert!(ana
        .node
        .members(team)
        .unwrap()
        .iter()
        .any(|m| m.node_id == ana_id));
    assert_no_panic();
}

/// A device with the whole network the app and the CLI run: it connects to
/// every member of its spaces by itself. On loopback, no mDNS, no relay.
async fn networked() -> (Arc<Node>, Arc<Network>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "bind = \"127.0.0.1:0\"\nmdns = false\nrelay = \"off\"\n",
    )
    .unwrap();
    let node = Arc::new(Node::open(NodeOptions::new(dir.path())).unwrap());
    let net = Network::new(node.clone());
    net.start().await.unwrap();
    (node, net, dir)
}

/// `owner` invites `joiner` into `space` by ticket; the joiner redeems it.
async fn pair(owner: &Network, space: SpaceId, joiner: &Network, name: &str) {
    let ticket = owner
        .invite(space, 10, InviteBy::Ticket)
        .unwrap()
        .ticket
        .unwrap();
    let joined = joiner.join(&ticket, name, |_| {}).await.unwrap();
    assert!(!joined.linked);
    assert_eq!(joined.space, space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_by_ticket_takes_the_private_space_and_follows_later_spaces() {
    install_panic_hook();
    let (ana, ana_net, _a) = networked().await;
    let (laptop, laptop_net, laptop_dir) = networked().await;
    let (carol, carol_net, _c) = networked().await;
    let laptop_id = laptop.node_id().to_string();
    let diary = ana.create("# Diary\nonly mine\n").unwrap();
    let jotted = laptop
        .create("# Jotted on the laptop\nbefore linking\n")
        .unwrap();
    let (ana_private, old_private) = (
        ana.private_space().unwrap(),
        laptop.private_space().unwrap(),
    );
    assert_ne!(ana_private, old_private);

    // Ana is already in Carol's Early space when she links the laptop.
    let early = carol.create_space("Early").unwrap();
    let agenda = carol.create_in(early, "# Agenda\n").unwrap();
    pair(&carol_net, early, &ana_net, "Ana").await;
    eventually("Ana to have Early", WAIT, || ana.get(&agenda).is_ok()).await;

    // Ana links the laptop with a ticket.
    let ticket = ana_net
        .invite_device(10, InviteBy::Ticket)
        .unwrap()
        .ticket
        .unwrap();
    let joined = laptop_net.join(&ticket, "laptop", |_| {}).await.unwrap();
    assert!(joined.linked, "the laptop is told it was linked");
    assert_eq!(joined.space, ana_private);
    eventually("the laptop to take Ana's Private space", WAIT, || {
        laptop.private_space().ok() == Some(ana_private)
            && laptop
                .get(&diary)
                .is_ok_and(|n| n.text.contains("only mine"))
    })
    .await;
    let moved = laptop.get(&jotted).unwrap();
    assert_eq!(
        moved.space,
        Some(ana_private),
        "its own private note moved along"
    );
    assert!(moved.text.contains("before linking"));
    assert!(
        laptop.spaces().unwrap().iter().all(|s| s.id != old_private),
        "the laptop's old Private space is gone"
    );
    eventually("Ana to get the laptop's note", WAIT, || {
        ana.get(&jotted).is_ok_and(|n| n.space == Some(ana_private))
    })
    .await;
    assert!(ana
        .devices()
        .unwrap()
        .iter()
        .any(|d| d.node_id == laptop_id));
    eventually(
        "the laptop to get the space Ana was in already",
        WAIT,
        || laptop.get(&agenda).is_ok(),
    )
    .await;

    // Carol shares a space with Ana, later: the laptop follows by itself.
    let book = carol.create_space("Book club").unwrap();
    let chapter = carol.create_in(book, "# Chapter 1\n").unwrap();
    pair(&carol_net, book, &ana_net, "Ana").await;
    eventually("the laptop to follow Ana into the book club", WAIT, || {
        laptop.get(&chapter).is_ok()
            && carol
                .members(book)
                .is_ok_and(|m| m.iter().any(|m| m.node_id == laptop_id))
    })
    .await;
    laptop.splice(&chapter, 0, 0, "from the laptop\n").unwrap();
    eventually("the laptop's edit to reach Carol", WAIT, || {
        carol
            .get(&chapter)
            .is_ok_and(|n| n.text.contains("from the laptop"))
    })
    .await;

    // Revoked, the laptop is not linked into anything again: not into the
    // spaces it was removed from, not into a space Ana joins afterwards.
    ana.remove_device(&laptop_id).unwrap();
    eventually("the laptop to learn it was removed", WAIT, || {
        [ana_private, book]
            .iter()
            .all(|s| laptop.space_info(*s).is_ok_and(|i| i.removed_by.is_some()))
    })
    .await;
    // Revoking vouches for what the laptop wrote before: that is no edit of
    // Ana's, and the list does not say so.
    let listed = ana.list(peernotes_sync::ListFilter::Active).unwrap();
    let jot = listed.iter().find(|n| n.id == jotted).unwrap();
    assert_ne!(jot.updated_by.as_deref(), Some("you"), "{jot:?}");
    let later = carol.create_space("Later").unwrap();
    pair(&carol_net, later, &ana_net, "Ana").await;
    ana.splice(&chapter, 0, 0, "Ana, after the loss\n").unwrap();
    eventually("Ana's edit to reach Carol", WAIT, || {
        carol
            .get(&chapter)
            .is_ok_and(|n| n.text.contains("Ana, after the loss"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for space in [ana_private, early, book, later] {
        assert!(
            !ana.members(space)
                .unwrap()
                .iter()
                .any(|m| m.node_id == laptop_id),
            "the revoked laptop is a member of {space} again"
        );
    }
    assert!(!ana
        .devices()
        .unwrap()
        .iter()
        .any(|d| d.node_id == laptop_id));
    for net in [&ana_net, &laptop_net, &carol_net] {
        net.close().await;
    }
    drop((laptop_net, laptop));
    // What the laptop took on survives a restart.
    let reopened = Node::open(NodeOptions::new(laptop_dir.path())).unwrap();
    assert_eq!(reopened.private_space().unwrap(), ana_private);
    assert_eq!(reopened.get(&jotted).unwrap().space, Some(ana_private));
    assert!(reopened
        .spaces()
        .unwrap()
        .iter()
        .all(|s| s.id != old_private));
    assert_no_panic();
}
