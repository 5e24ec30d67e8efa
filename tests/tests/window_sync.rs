//! The app window as a replica: its own Automerge document per open note,
//! synced with the `Node` by Automerge's protocol (`Node::sync_window`). Local
//! edits reach the store; a peer's edits reach the window; concurrent edits
//! merge; the note list says who edited last.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ReadDoc, ROOT};
use peernotes_sync::node::device_actor;
use peernotes_sync::protocol::{Frame, Session};
use peernotes_sync::{ListFilter, Node, NodeOptions, NoteId};
use peernotes_tests::team;

/// The window's side (`editor.ts`) and the sync state the app keeps for it.
struct Window {
    doc: AutoCommit,
    window_state: sync::State,
    app_state: sync::State,
}

impl Window {
    /// Opens a note the way the app does: the whole document, fresh states.
    fn open(node: &Node, id: &NoteId) -> Window {
        let bytes = node.note_document(id).unwrap();
        let mut doc = AutoCommit::load(&bytes).unwrap();
        let mut actor = device_actor(node.node_id(), 1);
        actor.extend_from_slice(&[7; 8]);
        doc.set_actor(ActorId::from(actor));
        Window {
            doc,
            window_state: sync::State::new(),
            app_state: sync::State::new(),
        }
    }

    fn text(&self) -> String {
        let (_, text) = self.doc.get(ROOT, "text").unwrap().unwrap();
        self.doc.text(&text).unwrap()
    }

    fn type_at(&mut self, pos: usize, s: &str) {
        let (_, text) = self.doc.get(ROOT, "text").unwrap().unwrap();
        self.doc.splice_text(&text, pos, 0, s).unwrap();
    }

    /// Sync rounds until neither side has anything to say, as `editor.ts` does.
    fn sync(&mut self, node: &Node, id: &NoteId) {
        for _ in 0..100 {
            let message = self
                .doc
                .sync()
                .generate_sync_message(&mut self.window_state)
                .map(|m| m.encode());
            let reply = node
                .sync_window(id, &mut self.app_state, message.as_deref())
                .unwrap();
            if let Some(reply) = &reply {
                let reply = sync::Message::decode(reply).unwrap();
                self.doc
                    .sync()
                    .receive_sync_message(&mut self.window_state, reply)
                    .unwrap();
            }
            if message.is_none() && reply.is_none() {
                return;
            }
        }
        panic!("window sync never went quiet");
    }
}

fn device() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Node::open(NodeOptions::new(dir.path())).unwrap(), dir)
}

/// One sync session between two Nodes until quiet.
fn peer_sync(a: &Node, b: &Node) {
    let (mut sa, mut sb) = (Session::new(), Session::new());
    a.with_peer(b.node_id(), |r| sa.start(r));
    b.with_peer(a.node_id(), |r| sb.start(r));
    for _ in 0..1000 {
        let to_b: Vec<Frame> = a.with_peer(b.node_id(), |r| {
            std::iter::from_fn(|| sa.poll_transmit(r)).collect()
        });
        let to_a: Vec<Frame> = b.with_peer(a.node_id(), |r| {
            std::iter::from_fn(|| sb.poll_transmit(r)).collect()
        });
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        for frame in to_b {
            b.with_peer(a.node_id(), |r| sb.handle_frame(frame, r))
                .unwrap();
        }
        for frame in to_a {
            a.with_peer(b.node_id(), |r| sa.handle_frame(frame, r))
                .unwrap();
        }
    }
    panic!("peer sync never went quiet");
}

#[test]
fn the_windows_edits_reach_the_store_and_survive_a_reopen() {
    let (node, dir) = device();
    let id = node.create("Groceries\n").unwrap();
    let mut window = Window::open(&node, &id);
    assert_eq!(window.text(), "Groceries\n");
    window.type_at(10, "- apples\n");
    window.sync(&node, &id);
    assert_eq!(node.get(&id).unwrap().text, "Groceries\n- apples\n");
    node.close().unwrap();

    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    assert_eq!(node.get(&id).unwrap().text, "Groceries\n- apples\n");
    let listed = node.list(ListFilter::Active).unwrap();
    assert_eq!(listed[0].updated_by.as_deref(), Some("you"), "{listed:?}");
}

#[test]
fn a_peers_edit_and_an_unsynced_window_edit_merge_on_both() {
    let (alice, _a) = device();
    let (bob, _b) = device();
    let space = team(&alice, &bob);
    let id = alice.create_in(space, "Plan\n").unwrap();
    peer_sync(&alice, &bob);

    // Alice types in her window but it has not synced yet; Bob edits meanwhile.
    let mut window = Window::open(&alice, &id);
    window.type_at(5, "alice\n");
    bob.splice(&id, 0, 0, "# ").unwrap();
    peer_sync(&alice, &bob);
    assert_eq!(
        alice.get(&id).unwrap().text,
        "# Plan\n",
        "the window's edit has not reached the Node yet"
    );

    window.sync(&alice, &id);
    assert_eq!(
        window.text(),
        "# Plan\nalice\n",
        "the window has Bob's edit and its own"
    );
    assert_eq!(alice.get(&id).unwrap().text, "# Plan\nalice\n");
    peer_sync(&alice, &bob);
    assert_eq!(bob.get(&id).unwrap().text, "# Plan\nalice\n");

    // Alice edits again, after everything: Bob's list says she edited last, by
    // the name Bob knows her by.
    window.type_at(0, "!");
    window.sync(&alice, &id);
    peer_sync(&alice, &bob);
    alice.flush().unwrap();
    bob.flush().unwrap();
    let row = bob
        .list(ListFilter::Active)
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
        .unwrap();
    let alice_name = bob
        .members(space)
        .unwrap()
        .into_iter()
        .find(|m| m.node_id == alice.node_id())
        .unwrap()
        .name;
    assert_eq!(row.updated_by, Some(alice_name));
}

#[test]
fn garbage_from_the_window_is_refused_and_changes_nothing() {
    let (node, _dir) = device();
    let id = node.create("Safe\n").unwrap();
    let mut state = sync::State::new();
    let err = node
        .sync_window(&id, &mut state, Some(b"not a sync message"))
        .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
    assert_eq!(node.get(&id).unwrap().text, "Safe\n");
}
