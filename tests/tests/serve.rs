//! Two devices on loopback pair with a ticket; two `peernotes serve` processes
//! then keep them in sync: a note in the shared space reaches the other device; both stopped, both edit the same note, both restarted: the
//! merged text is on both and no edit is lost (they find each other again at
//! the addresses they remembered); SIGTERM stops them cleanly.

use std::path::Path;
use std::time::{Duration, Instant};

use peernotes_tests::daemon::{eventually_shows, serve, stop};
use peernotes_tests::{cli, invite, peernotes, run_with_stdin};

#[test]
fn two_daemons_sync_and_merge_edits_made_while_both_were_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a_id = cli(&a, &["id"]);
    cli(&a, &["space", "create", "Team"]);
    let note = cli(&a, &["new", "--space", "Team", "one\ntwo\n"]);
    // Pair with a ticket, as people do; the joiner leaves with the note.
    let (inviter, ticket) = invite(&a, &["--space", "Team"]);
    cli(&b, &["join", &ticket, "--name", "B"]);
    let invited = inviter.wait_with_output().unwrap();
    assert!(invited.status.success(), "{invited:?}");
    assert_eq!(cli(&b, &["show", &note]), "one\ntwo");

    let sa = serve(&a, None);
    let sb = serve(&b, Some(format!("{a_id}@{}", sa.listening)));
    eventually_shows(&b, &note, "one\ntwo\n");
    // Status reads while the daemon runs, and is honest once B has acknowledged.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cli(&a, &["status"]);
        if status.contains("in sync") && status.contains("connected") {
            assert!(status.contains("Team") && status.contains("B"), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never reported B connected and in sync: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(sb);
    stop(sa);
    let status = cli(&a, &["status"]);
    assert!(status.contains("last seen"), "stopped, yet: {status}");

    let edit = |data: &Path, text: &str| {
        let mut cmd = peernotes(data);
        cmd.args(["edit", "--stdin", &note]);
        let output = run_with_stdin(cmd, text.as_bytes());
        assert!(output.status.success(), "{output:?}");
    };
    edit(&a, "A one\ntwo\n");
    edit(&b, "one\ntwo\nthree B\n");

    // Restarted with no addresses given: they dial where they last met.
    let sa = serve(&a, None);
    let sb = serve(&b, None);
    let merged = "A one\ntwo\nthree B\n";
    eventually_shows(&a, &note, merged);
    eventually_shows(&b, &note, merged);
    stop(sb);
    stop(sa);
    // Stopped cleanly means saved: the merge is there without any daemon running.
    assert_eq!(cli(&a, &["show", &note]), merged.trim_end());
}
