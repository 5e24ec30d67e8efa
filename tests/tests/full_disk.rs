//! A full disk: the data dir on a small tmpfs that the test mounts itself.
//! Writes fail with a clear error while the Node stays up and keeps every edit
//! in memory; nothing saved earlier is lost; once space is freed, the pending
//! edits are written without anyone asking. The CLI says the disk is full. A
//! `peernotes serve` whose disk fills while edits arrive stays up and stores
//! them once space is freed.
//!
//! Needs root to mount (CI runs as root). If mounting is refused, the test
//! fails and says so; it never skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peernotes_sync::{Node, NodeEvent, NodeOptions};
use peernotes_tests::share_with_cli_device;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs failed ({status}): this test needs root"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk to the last byte with a file, returned for freeing later.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0xAB; 64 * 1024];
        loop {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        // Whatever fits in a smaller write too.
        while file.write_all(&[0xAB; 512]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_loses_nothing_and_recovers() {
    let disk = SmallDisk::mount("8m");
    let data = disk.path().join("data");
    let node = Node::open(NodeOptions::new(&data)).unwrap();
    let events = node.subscribe();
    let saved = node.create("# Saved before\nthis must survive\n").unwrap();
    node.flush().unwrap();

    let filler = disk.fill();
    // Edits are taken in memory; writing them fails, clearly.
    let mut typed = String::new();
    let mut failure = None;
    for i in 0..200 {
        let line = format!("typed while full {i}\n");
        node.splice(&saved, 0, 0, &line).unwrap();
        typed.insert_str(0, &line);
        if let Err(e) = node.flush() {
            println!("edit {i} could not be written: {e}");
            failure = Some(e.to_string());
            break;
        }
    }
    let failure = failure.expect("a write failed once the disk was full");
    assert!(failure.contains("is full"), "unclear error: {failure}");
    assert!(
        failure.contains("everything saved before is intact"),
        "{failure}"
    );
    let reported = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(2)).ok())
        .any(|e| matches!(e, NodeEvent::StoreFailed { .. }));
    assert!(reported, "the app is told the store failed");
    // Still up: reads work (from what was saved) and more edits are accepted.
    let listed = node.list(peernotes_sync::ListFilter::Active).unwrap();
    assert!(listed.iter().any(|n| n.id == saved), "the list still loads");
    assert!(node.search("survive", 10).is_ok(), "search still works");
    assert!(node.status().is_ok(), "status still works");
    node.splice(&saved, 0, 0, "one more\n").unwrap();
    typed.insert_str(0, "one more\n");
    assert!(node.get(&saved).unwrap().text.starts_with(&typed));

    // The CLI, on another data dir on the same full disk, says so plainly.
    let cli_data = disk.path().join("cli");
    let output = peernotes_tests::peernotes(&cli_data)
        .args(["new", "hello"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = peernotes_tests::stderr(&output);
    println!("the CLI on the full disk: {stderr}");
    assert!(
        stderr.contains("full") || stderr.contains("No space left"),
        "unclear CLI error: {stderr}"
    );

    // Space is freed: the flusher retries on its own, and everything lands.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reader = Node::open(NodeOptions {
            read_only: true,
            ..NodeOptions::new(&data)
        })
        .unwrap();
        let stored = reader.get(&saved).unwrap().text;
        if stored.starts_with(&typed) {
            println!("written {:?} after space was freed", freed.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edits made while full were not written after space was freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(2)).ok())
        .any(|e| matches!(e, NodeEvent::StoreRecovered));
    assert!(recovered, "the app is told saving works again");
    node.close().unwrap();

    let node = Node::open(NodeOptions::new(&data)).unwrap();
    let text = node.get(&saved).unwrap().text;
    assert!(text.starts_with(&typed), "{text}");
    assert!(
        text.ends_with("# Saved before\nthis must survive\n"),
        "{text}"
    );
    assert_eq!(node.checkout(&saved).unwrap().0, text);
    assert!(node.quarantined().unwrap().is_empty());
    node.close().unwrap();
}

/// `peernotes serve` on a data dir whose disk fills while a member's edits
/// arrive: it keeps running, and once space is freed what arrived is stored.
#[test]
fn a_daemon_on_a_full_disk_stays_up_and_stores_what_arrived_once_space_is_freed() {
    use peernotes_sync::net::NetConfig;

    let disk = SmallDisk::mount("8m");
    let bob_data = disk.path().join("bob");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let alice = runtime
        .block_on(peernotes_tests::device(&NetConfig::loopback()))
        .unwrap();
    let (space, connect) = share_with_cli_device(&alice.node, &alice.net.addr(), &bob_data);
    let note = alice.node.create_in(space, "# Saved before\n").unwrap();
    let mut serve = peernotes_tests::peernotes(&bob_data)
        .args(["serve", "--connect", &connect])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stored = |want: &str| {
        Node::open(NodeOptions {
            read_only: true,
            ..NodeOptions::new(&bob_data)
        })
        .ok()
        .and_then(|bob| bob.get(&note).ok())
        .is_some_and(|n| n.text == want)
    };
    wait_for("the note to reach the daemon", || {
        stored("# Saved before\n")
    });

    let filler = disk.fill();
    for i in 0..50 {
        alice
            .node
            .splice(&note, 0, 0, &format!("sent while full {i}\n"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        serve.try_wait().unwrap().is_none(),
        "the daemon exited when its disk filled"
    );
    let want = alice.node.get(&note).unwrap().text;
    assert!(!stored(&want), "the disk was not full after all");

    std::fs::remove_file(&filler).unwrap();
    wait_for("what arrived while full to be stored", || stored(&want));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert!(
        serve.wait().unwrap().success(),
        "the daemon did not stop cleanly"
    );
    runtime.block_on(alice.net.close());
}

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
