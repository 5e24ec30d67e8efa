//! Spaces as a user meets them: every device starts with a private space that
//! holds its notes, spaces can be created and filled, and membership is kept
//! across restarts.

use peernotes_sync::membership::Role;
use peernotes_sync::{exit_code, Node, NodeOptions};
use peernotes_tests::{peernotes, stderr, stdout};

const BOB: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

#[test]
fn a_new_device_keeps_its_notes_in_its_private_space() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    let private = node.private_space().unwrap();
    let id = node.create("# Mine\n").unwrap();
    assert_eq!(node.get(&id).unwrap().space, Some(private));
    let spaces = node.spaces().unwrap();
    assert_eq!(spaces.len(), 1);
    assert!(spaces[0].private);
    assert_eq!((spaces[0].notes, spaces[0].members), (1, 1));
    let members = node.members(private).unwrap();
    assert_eq!(members[0].node_id, node.node_id());
    node.close().unwrap();

    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    assert_eq!(
        node.private_space().unwrap(),
        private,
        "the private space survives a restart"
    );
    assert_eq!(node.spaces().unwrap().len(), 1, "and is not created twice");
}

#[test]
fn notes_from_before_spaces_are_filed_into_the_private_space() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let ids = vec![node.create("one").unwrap(), node.create("two").unwrap()];
        node.close().unwrap();
        ids
    };
    // Make the store look like one written before spaces existed.
    let conn = rusqlite::Connection::open(dir.path().join("peernotes.sqlite3")).unwrap();
    conn.execute_batch(
        "UPDATE notes SET space_id = '';
         DELETE FROM spaces;
         DELETE FROM chunks WHERE note_id LIKE 'space-%';",
    )
    .unwrap();
    drop(conn);

    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    let private = node.private_space().unwrap();
    for id in &ids {
        assert_eq!(node.get(id).unwrap().space, Some(private));
        assert_eq!(node.checkout(id).unwrap().0.len(), 3, "the note is intact");
    }
    assert_eq!(node.spaces().unwrap()[0].notes, 2);
}

#[test]
fn members_are_added_removed_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let team = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let team = node.create_space("Team notes").unwrap();
        assert_eq!(
            node.find_space("team").unwrap(),
            team,
            "a name prefix finds it"
        );
        assert_eq!(node.find_space(&team.to_string()[..6]).unwrap(), team);
        node.add_member(team, BOB, "Bob", Role::Editor).unwrap();
        let note = node.create_in(team, "# Plan\n").unwrap();
        assert_eq!(node.get(&note).unwrap().space, Some(team));
        node.close().unwrap();
        team
    };
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    let members = node.members(team).unwrap();
    let bob = members
        .iter()
        .find(|m| m.node_id == BOB)
        .expect("Bob is remembered");
    assert_eq!(
        (bob.name.as_str(), bob.added_by.as_str()),
        ("Bob", node.node_id())
    );
    let info = node
        .spaces()
        .unwrap()
        .into_iter()
        .find(|s| s.id == team)
        .unwrap();
    assert_eq!((info.notes, info.members, info.private), (1, 2, false));

    node.remove_member(team, BOB).unwrap();
    assert!(node.members(team).unwrap().iter().all(|m| m.node_id != BOB));
    assert!(node.remove_member(team, node.node_id()).is_err());
    assert!(node.find_space("nothing like it").is_err());
}

#[test]
fn the_cli_creates_spaces_files_notes_and_lists_members() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = peernotes(&data)
        .args(["space", "create", "Book", "club"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let space = stdout(&created).trim().to_string();
    assert_eq!(space.len(), 32);

    let new = peernotes(&data)
        .args(["new", "--space", "book club", "# Chapter 3"])
        .output()
        .unwrap();
    assert!(new.status.success(), "{new:?}");
    let note = stdout(&new).trim().to_string();
    let shown = peernotes(&data)
        .args(["show", "--json", &note])
        .output()
        .unwrap();
    assert!(stdout(&shown).contains(&space), "{}", stdout(&shown));

    let list = stdout(&peernotes(&data).args(["space", "list"]).output().unwrap());
    assert!(
        list.contains("Private") && list.contains("Book club"),
        "{list}"
    );

    let me = stdout(&peernotes(&data).arg("id").output().unwrap())
        .trim()
        .to_string();
    let members = stdout(
        &peernotes(&data)
            .args(["space", "members", "book"])
            .output()
            .unwrap(),
    );
    assert!(
        members.contains(&me) && members.contains("(this device)"),
        "{members}"
    );

    let myself = peernotes(&data)
        .args(["space", "remove-member", "book", &me])
        .output()
        .unwrap();
    assert_eq!(myself.status.code(), Some(exit_code::USAGE), "{myself:?}");
    assert!(stderr(&myself).contains("cannot remove itself"));

    let unknown = peernotes(&data)
        .args(["new", "--space", "chess", "x"])
        .output()
        .unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(exit_code::NOT_FOUND),
        "{unknown:?}"
    );
    assert!(stderr(&unknown).contains("no space matches `chess`"));
}
