//! 10,000 notes: `list` and `search` work, and `peernotes list` stays within its
//! memory budget (peak RSS of the process ≤ 150 MB).

use std::time::Instant;

use peernotes_sync::{ListFilter, Node, NodeOptions};
use peernotes_tests::{children_peak_rss_bytes, load_sequential_trace, peernotes, stdout};

const NOTES: usize = 10_000;
const RSS_BUDGET: u64 = 150 * 1024 * 1024;

#[test]
fn ten_thousand_notes_list_and_search_within_budget() {
    let blog = load_sequential_trace("seph-blog1").unwrap().end_content;
    let chars: Vec<char> = blog.chars().collect();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        for i in 0..NOTES {
            // ~1 KB of real prose per note, from a different place in the post each time.
            let at = (i * 997) % (chars.len() - 1000);
            let body: String = chars[at..at + 1000].iter().collect();
            let marker = if i == 7777 { " zanzibar7777" } else { "" };
            node.create(&format!("Note {i}{marker}\n{body}")).unwrap();
        }
        node.close().unwrap();
    }
    println!("created {NOTES} notes in {:.1?}", started.elapsed());

    let started = Instant::now();
    let output = peernotes(dir.path()).arg("list").output().unwrap();
    let took = started.elapsed();
    let rss = children_peak_rss_bytes();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).lines().count(), NOTES);
    println!(
        "`peernotes list` of {NOTES} notes: {:.1?}, peak RSS {:.1} MB",
        took,
        rss as f64 / 1048576.0
    );
    assert!(
        rss <= RSS_BUDGET,
        "peak RSS {rss} bytes is over the 150 MB budget"
    );

    let output = peernotes(dir.path())
        .args(["search", "zanzibar7777"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let found = stdout(&output);
    assert!(found.contains("Note 7777 zanzibar7777"), "{found}");
    assert_eq!(
        found.lines().count(),
        2,
        "one hit (title line + snippet line): {found}"
    );

    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    assert_eq!(node.list(ListFilter::Active).unwrap().len(), NOTES);
    let hits = node.search("the", 50).unwrap();
    assert_eq!(hits.len(), 50, "a common word fills the result limit");
}
