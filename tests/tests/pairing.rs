//! Pairing by ticket through the CLI, on loopback: the right ticket brings the
//! space and its notes; a wrong secret is refused on both sides and spends
//! nothing; an expired ticket is refused.

use std::path::Path;

use peernotes_sync::pairing::Ticket;
use peernotes_tests::{cli, invite, peernotes, stderr, stdout};

fn join(data: &Path, ticket: &str) -> std::process::Output {
    peernotes(data)
        .args(["join", ticket, "--name", "Bob"])
        .output()
        .unwrap()
}

#[test]
fn a_ticket_brings_the_space_and_a_wrong_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let space = cli(&a, &["space", "create", "Book club"]);
    cli(&a, &["new", "--space", "book", "# Chapter 1\n"]);
    cli(&a, &["new", "--space", "book", "# Chapter 2\n"]);
    let (mut inviter, ticket) = invite(&a, &["--space", "book"]);

    let mut forged = Ticket::decode(&ticket).unwrap();
    forged.secret[0] ^= 1;
    let refused = join(&b, &forged.encode());
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        stderr(&refused).contains("secret is wrong"),
        "{}",
        stderr(&refused)
    );

    let joined = join(&b, &ticket);
    assert!(joined.status.success(), "{joined:?}");
    assert_eq!(stdout(&joined).trim(), space);
    assert!(
        stderr(&joined).contains("with 2 note(s)"),
        "{}",
        stderr(&joined)
    );
    let status = inviter.wait().unwrap();
    assert!(
        status.success(),
        "invite exits once the joiner has the space: {status}"
    );

    let titles = cli(&b, &["list"]);
    assert!(
        titles.contains("Chapter 1") && titles.contains("Chapter 2"),
        "{titles}"
    );
    let b_id = cli(&b, &["id"]);
    let members = cli(&a, &["space", "members", "book"]);
    assert!(
        members.contains(&b_id) && members.contains("Bob"),
        "{members}"
    );
}

#[test]
fn an_expired_ticket_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(&a, &["space", "create", "Team"]);
    let (mut inviter, ticket) = invite(&a, &["--space", "team", "--minutes", "0"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let refused = join(&b, &ticket);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("expired"), "{}", stderr(&refused));
    let status = inviter.wait().unwrap();
    assert!(!status.success(), "the inviter reports that nobody joined");
    assert!(cli(&b, &["list"]).is_empty());
}
