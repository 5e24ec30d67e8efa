//! Real editing traces replayed through the store: the text must come out exact,
//! and stay exact after the data dir is reopened.

use peernotes_sync::{Node, NodeOptions, NoteId};
use peernotes_tests::load_sequential_trace;

fn replay_through_the_store(name: &str) {
    let trace = load_sequential_trace(name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let id = {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = node.create(&trace.start_content).unwrap();
        for txn in &trace.txns {
            // One Automerge commit per trace transaction; the group commit writes them.
            node.splice_many(&id, &txn.splices()).unwrap();
        }
        node.flush().unwrap();
        assert_text(&node, &id, &trace.end_content, "after replay");
        let before = node.store_size();
        node.compact_all().unwrap();
        println!(
            "{name}: {} transactions replayed in {:.1?}; store {} bytes before compaction, {} after",
            trace.txns.len(),
            started.elapsed(),
            before,
            node.store_size()
        );
        node.close().unwrap();
        id
    };
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    assert_text(&node, &id, &trace.end_content, "after reopening");
    assert!(node.quarantined().unwrap().is_empty());
}

/// Both the store's cached text and the Automerge document's text are `expected`.
fn assert_text(node: &Node, id: &NoteId, expected: &str, when: &str) {
    assert_eq!(node.get(id).unwrap().text, expected, "cached text {when}");
    assert_eq!(
        node.checkout(id).unwrap().0,
        expected,
        "document text {when}"
    );
}

#[test]
fn seph_blog1_replayed_through_the_store_ends_with_its_end_content() {
    replay_through_the_store("seph-blog1");
}

#[test]
fn automerge_paper_replayed_through_the_store_ends_with_its_end_content() {
    replay_through_the_store("automerge-paper");
}
