//! Stores written by an earlier release (`tests/data/stores/`) open in this
//! one: every note is there, and a space whose members lived in its index's
//! map is signed by its creator on first open (the creator owner, everyone
//! else editor). Its other members learn the signed members by sync and keep
//! editing; only the owner manages members from then on. Changes made before
//! signing reach the other device signed by their author's device.

use std::path::Path;
use std::time::Duration;

use peernotes_sync::membership::Role;
use peernotes_sync::net::{NetConfig, Transport};
use peernotes_sync::{ListFilter, Node, NodeOptions, SpaceId};
use peernotes_tests::mallory::eventually;

/// A copy of a stored data dir, opened with a transport on loopback.
struct Device {
    node: std::sync::Arc<Node>,
    net: Transport,
    _dir: tempfile::TempDir,
}

async fn open_copy(stored: &str) -> Device {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/stores")
        .join(stored);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let node = std::sync::Arc::new(Node::open(NodeOptions::new(dir.path())).unwrap());
    let net = Transport::bind(node.clone(), &NetConfig::loopback())
        .await
        .unwrap();
    net.spawn_accept();
    Device {
        node,
        net,
        _dir: dir,
    }
}

fn team(node: &Node) -> SpaceId {
    node.find_space("Team").unwrap()
}

fn roles(node: &Node, space: SpaceId) -> Vec<(String, Role)> {
    node.members(space)
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.role))
        .collect()
}

fn texts(node: &Node, space: Option<SpaceId>) -> Vec<String> {
    let mut texts: Vec<String> = node
        .list_in(ListFilter::Active, space)
        .unwrap()
        .into_iter()
        .map(|n| node.get(&n.id).unwrap().text)
        .collect();
    texts.sort();
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_signed_membership_is_adopted_and_keeps_syncing() {
    let ana = open_copy("a183978/ana").await;
    let ben = open_copy("a183978/ben").await;
    let team_a = team(&ana.node);
    assert_eq!(team_a, team(&ben.node), "both have the same Team");

    // Every note is there, as it was.
    let ana_team = texts(&ana.node, Some(team_a));
    let ben_team = texts(&ben.node, Some(team_a));
    assert_eq!(ana_team.len(), 1, "{ana_team:?}");
    assert_eq!(ben_team.len(), 1, "{ben_team:?}");
    let ana_private = texts(&ana.node, Some(ana.node.private_space().unwrap()));
    assert_eq!(ana_private.len(), 2, "{ana_private:?}");

    // Ana created Team: her device signed its members on opening it.
    let mut signed = roles(&ana.node, team_a);
    signed.sort();
    assert!(
        signed.contains(&("Ben".to_string(), Role::Editor)),
        "{signed:?}"
    );
    assert_eq!(
        signed.iter().filter(|(_, r)| *r == Role::Owner).count(),
        1,
        "{signed:?}"
    );
    let ana_member = ana
        .node
        .members(team_a)
        .unwrap()
        .into_iter()
        .find(|m| m.node_id == ana.node.node_id())
        .unwrap();
    assert_eq!(ana_member.role, Role::Owner);
    // Ben's device did not create it: until it syncs it keeps the old rules,
    // with Ana as owner.
    let ben_sees = ben.node.members(team_a).unwrap();
    assert!(ben_sees
        .iter()
        .any(|m| m.node_id == ana.node.node_id() && m.role == Role::Owner));

    // They meet: each gets the other's Team note, and Ben the signed members.
    ben.net.keep_connected(ana.net.addr());
    eventually("the Team notes to cross", Duration::from_secs(60), || {
        texts(&ana.node, Some(team_a)).len() == 2 && texts(&ben.node, Some(team_a)).len() == 2
    })
    .await;
    eventually(
        "Ben to learn the signed members",
        Duration::from_secs(20),
        || {
            let mut theirs = roles(&ben.node, team_a);
            theirs.sort();
            theirs == signed
        },
    )
    .await;
    assert_eq!(
        texts(&ben.node, Some(team_a)),
        texts(&ana.node, Some(team_a))
    );
    assert!(
        !texts(&ben.node, None)
            .iter()
            .any(|t| ana_private.contains(t)),
        "Ana's private note reached Ben"
    );

    // Ben edits as before, but no longer manages members.
    let ben_note = ben.node.list_in(ListFilter::Active, Some(team_a)).unwrap()[0]
        .id
        .clone();
    ben.node
        .splice(&ben_note, 0, 0, "after the upgrade\n")
        .unwrap();
    eventually("Ben's edit to reach Ana", Duration::from_secs(20), || {
        ana.node
            .get(&ben_note)
            .is_ok_and(|n| n.text.starts_with("after the upgrade\n"))
    })
    .await;
    // His note, written before signing, came signed by his device: Ana shows
    // him as its verified author.
    assert_eq!(
        ana.node.summary(&ben_note).unwrap().updated_by.as_deref(),
        Some("Ben")
    );
    let stranger = "ab".repeat(32);
    let refused = ben
        .node
        .add_member(team_a, &stranger, "Stranger", Role::Editor)
        .unwrap_err();
    assert!(refused.to_string().contains("not an owner"), "{refused}");
    ana.node
        .add_member(team_a, &stranger, "Stranger", Role::Viewer)
        .unwrap();
    eventually("Ben to see the new viewer", Duration::from_secs(20), || {
        roles(&ben.node, team_a).contains(&("Stranger".to_string(), Role::Viewer))
    })
    .await;
}
