//! The CLI while another process holds the data dir: every writing command
//! goes through the `peernotes serve` daemon's control socket and prints what
//! it prints without one; the effects reach a paired device; invite and join
//! run in the daemons; the socket refuses garbage, oversized, half-written and
//! wrong-version requests and keeps serving; a stale socket left by a killed
//! daemon is no obstacle.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use peernotes_sync::control::{self, Envelope, Request, Response};
use peernotes_tests::daemon::{eventually_shows, serve, stop};
use peernotes_tests::{cli, invite, peernotes, run_with_stdin, stderr, stdout};

/// Runs a CLI command that must succeed; returns its whole output.
fn run(data: &Path, args: &[&str]) -> Output {
    let output = peernotes(data).args(args).output().unwrap();
    assert!(output.status.success(), "peernotes {args:?}: {output:?}");
    output
}

/// What the same commands print on a device with no daemon and on one whose
/// daemon runs, with ids (which differ) replaced.
fn transcript(data: &Path, import_dir: &Path) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut keep = |output: &Output, ids: &[&str]| {
        let mut out = stdout(output);
        let mut err = stderr(output);
        for id in ids {
            out = out.replace(id, "<id>");
            err = err.replace(id, "<id>");
        }
        lines.push((out, err));
    };
    let space = run(data, &["space", "create", "Team"]);
    let space_id = stdout(&space).trim().to_string();
    keep(&space, &[&space_id]);
    let new = run(data, &["new", "--space", "Team", "first line"]);
    let note = stdout(&new).trim().to_string();
    let short = note[..8].to_string();
    keep(&new, &[&note]);
    let mut edit = peernotes(data);
    edit.args(["edit", "--stdin", &note[..8]]);
    let edited = run_with_stdin(edit, b"first line\nsecond line\n");
    assert!(edited.status.success(), "{edited:?}");
    keep(&edited, &[&short]);
    keep(&run(data, &["rm", &short]), &[&short]);
    keep(&run(data, &["restore", &short]), &[&short]);
    keep(
        &run(data, &["import", import_dir.to_str().unwrap()]),
        &[import_dir.to_str().unwrap()],
    );
    let member = "b".repeat(64);
    keep(
        &run(
            data,
            &["space", "add-member", "Team", &member, "--name", "Bee"],
        ),
        &[],
    );
    keep(
        &run(data, &["space", "remove-member", "Team", &member]),
        &[],
    );
    let listed = run(data, &["space", "list"]);
    assert!(stdout(&listed).contains("Team"), "{listed:?}");
    let logged = run(data, &["log", &short]);
    assert!(stdout(&logged).lines().count() >= 2, "{logged:?}");
    // A missing note is the same error, and the same exit code, either way.
    let missing = peernotes(data).args(["rm", "ffffffff"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    keep(&missing, &[]);
    lines
}

#[test]
fn every_writing_command_works_through_a_running_daemon_and_prints_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (alone, held) = (tmp.path().join("alone"), tmp.path().join("held"));
    let vault = tmp.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::write(vault.join("One.md"), "One\nfrom the vault").unwrap();
    std::fs::write(vault.join("Two.md"), "Two\nfrom the vault").unwrap();
    cli(&alone, &["init"]);
    cli(&held, &["init"]);

    let without = transcript(&alone, &vault);
    let daemon = serve(&held, None);
    let with = transcript(&held, &vault);
    assert_eq!(with, without, "output differs with the daemon running");

    // The daemon did the writing: status names it, and the notes are there.
    let status = cli(&held, &["status"]);
    assert!(
        status.contains("Held by the `peernotes serve` daemon"),
        "{status}"
    );
    let listed = cli(&held, &["list"]);
    for title in ["first line", "One", "Two"] {
        assert!(listed.contains(title), "{title} missing: {listed}");
    }
    // A second daemon is refused, naming the first.
    let second = peernotes(&held).arg("serve").output().unwrap();
    assert_eq!(second.status.code(), Some(4), "{second:?}");
    assert!(
        stderr(&second).contains("`peernotes serve` daemon already syncs"),
        "{second:?}"
    );
    stop(daemon);
    assert!(cli(&held, &["list"]).contains("first line"));
}

#[test]
fn invite_and_join_run_in_the_daemons_and_edits_through_them_reach_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(&a, &["space", "create", "Team"]);
    let note = cli(&a, &["new", "--space", "Team", "shared"]);
    cli(&b, &["init"]);
    let sa = serve(&a, None);
    let sb = serve(&b, None);

    // Both commands go through the daemons: neither binds a network itself.
    let (inviter, ticket) = invite(&a, &["--space", "Team"]);
    let joined = run(&b, &["join", &ticket, "--name", "Bee"]);
    assert!(
        stderr(&joined).contains("“Team” is here with 1 note(s)."),
        "{joined:?}"
    );
    let invited = inviter.wait_with_output().unwrap();
    assert!(invited.status.success(), "{invited:?}");
    assert!(
        stderr(&invited).contains("Done: the new member has the space."),
        "{invited:?}"
    );
    eventually_shows(&b, &note, "shared");

    // An edit through A's daemon reaches B's daemon at once, and back.
    let mut edit = peernotes(&a);
    edit.args(["edit", "--stdin", &note]);
    assert!(run_with_stdin(edit, b"shared\nfrom A\n").status.success());
    eventually_shows(&b, &note, "shared\nfrom A\n");
    let from_b = cli(&b, &["new", "--space", "Team", "made on B"]);
    eventually_shows(&a, &from_b, "made on B");
    cli(&b, &["rm", &from_b]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(&a, &["list", "--trash"]).contains("made on B") {
        assert!(Instant::now() < deadline, "the trash never reached A");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(sb);
    stop(sa);
}

/// Sends raw bytes on the control socket and reads one answer.
fn exchange(socket: &Path, bytes: &[u8]) -> Response {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    control::read_message(&mut stream)
        .unwrap()
        .expect("an answer")
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

fn failure(response: Response) -> String {
    match response {
        Response::Failed { message, exit_code } => {
            assert_ne!(exit_code, 0);
            message
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn bad_requests_on_the_control_socket_get_an_error_and_the_daemon_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    cli(&data, &["init"]);
    let daemon = serve(&data, None);
    let socket = control::socket_path(&data);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the socket is readable by others");

    // A slow client holding a half-written request does not block others.
    let mut slow = UnixStream::connect(&socket).unwrap();
    slow.write_all(&framed(b"{\"version\":1,")[..10]).unwrap();

    let garbage = failure(exchange(&socket, &framed(b"\xff\x00 not json")));
    assert!(
        garbage.contains("not a Peernotes control message"),
        "{garbage}"
    );
    let unknown = failure(exchange(
        &socket,
        &framed(br#"{"version":1,"request":{"op":"format-disk"}}"#),
    ));
    assert!(
        unknown.contains("not a Peernotes control message"),
        "{unknown}"
    );
    let huge = (control::MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes();
    let oversized = failure(exchange(&socket, &huge));
    assert!(oversized.contains("over the limit"), "{oversized}");
    let cut = failure(exchange(&socket, &framed(b"{\"version\":1}")[..8]));
    assert!(cut.contains("cut short"), "{cut}");
    let future = Envelope {
        version: control::VERSION + 1,
        request: Request::PrivateSpace,
    };
    let version = failure(exchange(&socket, &control::encode(&future).unwrap()));
    assert!(version.contains("control protocol"), "{version}");

    // Still serving, the slow client included: it is cut off in time.
    let id = cli(&data, &["new", "still here"]);
    eventually_shows(&data, &id, "still here");
    slow.set_read_timeout(Some(control::REQUEST_TIMEOUT * 3))
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let late: Response = control::read_message(&mut answer.as_slice())
        .unwrap()
        .expect("the slow client got an answer");
    assert!(failure(late).contains("did not arrive"));
    stop(daemon);
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_no_obstacle() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    cli(&data, &["init"]);
    let mut daemon = serve(&data, None);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert!(
        control::socket_path(&data).exists(),
        "the socket was left behind"
    );

    // Nobody answers on it: the CLI opens the data dir itself, and, holding
    // the lock, removes the socket.
    let id = cli(&data, &["new", "after the crash"]);
    assert_eq!(cli(&data, &["show", &id]), "after the crash");
    assert!(
        !control::socket_path(&data).exists(),
        "the stale socket stayed"
    );
    // A stale socket is also no obstacle to the next daemon.
    std::os::unix::net::UnixListener::bind(control::socket_path(&data)).unwrap();
    // The next daemon replaces it and serves.
    let daemon = serve(&data, None);
    cli(&data, &["rm", &id]);
    assert!(cli(&data, &["list", "--trash"]).contains("after the crash"));
    stop(daemon);
    assert!(
        !control::socket_path(&data).exists(),
        "a clean stop removes the socket"
    );
}
