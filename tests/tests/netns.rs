//! Two devices on their own LAN: two network namespaces joined by a bridge (in a
//! third namespace), with no route anywhere else. They pair with a short code
//! found over mDNS, a wrong code fails on both sides, and after the link goes
//! down and both edit, bringing it back up converges them.
//!
//! Needs root (CI runs as root). If the kernel or the privileges refuse the
//! namespaces, the test fails and says so; it never skips.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use peernotes_tests::{ip, peernotes_bin, stderr, stdout};

/// The namespaces and links of one test, removed when dropped.
struct Lan {
    prefix: String,
}

const SUBNET: &str = "10.201.0";

impl Lan {
    fn new() -> Lan {
        let prefix = format!("pn{}", std::process::id() % 100_000);
        let lan = Lan { prefix };
        lan.teardown();
        let hub = lan.ns("h");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, side) in ["a", "b"].iter().enumerate() {
            let ns = lan.ns(side);
            ip(&["netns", "add", &ns]);
            ip(&[
                "link",
                "add",
                "veth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &format!("port-{side}"),
                "netns",
                &hub,
            ]);
            ip(&[
                "-n",
                &hub,
                "link",
                "set",
                &format!("port-{side}"),
                "master",
                "br0",
            ]);
            ip(&["-n", &hub, "link", "set", &format!("port-{side}"), "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SUBNET}.{}/24", i + 1),
                "dev",
                "veth0",
            ]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            lan.link(side, true);
        }
        lan
    }

    fn ns(&self, side: &str) -> String {
        format!("{}{side}", self.prefix)
    }

    fn addr(&self, side: &str) -> String {
        format!("{SUBNET}.{}:0", if side == "a" { 1 } else { 2 })
    }

    /// Takes a side's link down or up; up also restores the multicast route
    /// mDNS needs (the kernel drops it with the link).
    fn link(&self, side: &str, up: bool) {
        let ns = self.ns(side);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "veth0",
            if up { "up" } else { "down" },
        ]);
        if up {
            ip(&["-n", &ns, "route", "replace", "224.0.0.0/4", "dev", "veth0"]);
        }
    }

    /// A command run inside a side's namespace, with mDNS on and no relay.
    fn command(&self, side: &str, program: &Path, data: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(side)])
            .arg(program)
            .env("PEERNOTES_DATA", data)
            .env("PEERNOTES_BIND", self.addr(side))
            .env("PEERNOTES_MDNS", "on")
            .env("PEERNOTES_RELAY", "off")
            .env_remove("EDITOR")
            .env_remove("VISUAL");
        cmd
    }

    fn teardown(&self) {
        for side in ["a", "b", "h"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(side)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn cli(data: &Path, args: &[&str]) -> String {
    let output = Command::new(peernotes_bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("PEERNOTES_MDNS", "off")
        .env("PEERNOTES_RELAY", "off")
        .output()
        .unwrap();
    assert!(output.status.success(), "peernotes {args:?}: {output:?}");
    stdout(&output).trim().to_string()
}

/// Starts `peernotes invite --code` in side a; returns it and its code.
fn invite(lan: &Lan, data: &Path) -> (Child, String) {
    let mut child = lan
        .command("a", &peernotes_bin(), data)
        .args(["invite", "--space", "Team", "--code", "--minutes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = loop {
        let line = lines.next().expect("invite printed a code").unwrap();
        if let Some(code) = line.strip_prefix("code ") {
            break code.to_string();
        }
    };
    (child, code)
}

fn join(lan: &Lan, data: &Path, code: &str) -> Output {
    lan.command("b", &peernotes_bin(), data)
        .args(["join", "--code", code, "--name", "Bob"])
        .output()
        .unwrap()
}

/// A `live-peer` in one namespace, driven line by line.
struct LivePeer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl LivePeer {
    fn start(lan: &Lan, side: &str, data: &Path) -> LivePeer {
        let mut child = lan
            .command(side, Path::new(env!("CARGO_BIN_EXE_live-peer")), data)
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "live-peer said {line:?}");
        LivePeer {
            child,
            input,
            output,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "live-peer died after `{command}`");
        line.trim_end().to_string()
    }

    fn text(&mut self, note: &str) -> String {
        let line = self.ask(&format!("text {note}"));
        serde_json::from_str(line.strip_prefix("text ").expect("a text line")).unwrap()
    }

    fn append(&mut self, note: &str, text: &str) {
        assert_eq!(self.ask(&format!("append {note} {text}")), "ok");
    }

    fn quit(mut self) {
        writeln!(self.input, "quit").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "live-peer exited with {status}");
    }
}

/// Waits until `check` holds for both peers' texts, or panics with them.
fn wait_for(
    a: &mut LivePeer,
    b: &mut LivePeer,
    note: &str,
    what: &str,
    check: impl Fn(&str, &str) -> bool,
) {
    let started = Instant::now();
    loop {
        let (text_a, text_b) = (a.text(note), b.text(note));
        if check(&text_a, &text_b) {
            eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what} did not happen within 90 s:\nA: {text_a:?}\nB: {text_b:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pair_by_short_code_on_a_lan_then_converge_after_a_link_flap() {
    let lan = Lan::new();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(&a, &["space", "create", "Team"]);
    let note = cli(&a, &["new", "--space", "Team", "Shopping list\n"]);
    cli(&b, &["init"]);

    // A wrong code fails on both sides, and burns the code.
    let (inviter, code) = invite(&lan, &a);
    let nameplate = code.split('-').next().unwrap();
    let wrong = if code.ends_with("-zinc") {
        "amber-acorn"
    } else {
        "amber-zinc"
    };
    let refused = join(&lan, &b, &format!("{nameplate}-{wrong}"));
    assert!(
        !refused.status.success(),
        "a wrong code was accepted: {refused:?}"
    );
    assert!(
        stderr(&refused).contains("code is wrong"),
        "{}",
        stderr(&refused)
    );
    let inviter_out = inviter.wait_with_output().unwrap();
    assert!(
        !inviter_out.status.success(),
        "the inviter did not fail: {inviter_out:?}"
    );
    assert!(
        stderr(&inviter_out).contains("different code"),
        "{}",
        stderr(&inviter_out)
    );
    let spaces_b = cli(&b, &["space", "list"]);
    assert!(
        !spaces_b.contains("Team"),
        "a wrong code let B in: {spaces_b}"
    );

    // The right code pairs and brings the note.
    let started = Instant::now();
    let (inviter, code) = invite(&lan, &a);
    let joined = join(&lan, &b, &code);
    assert!(joined.status.success(), "join failed: {}", stderr(&joined));
    eprintln!(
        "paired by short code over mDNS in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let inviter_out = inviter.wait_with_output().unwrap();
    assert!(inviter_out.status.success(), "{}", stderr(&inviter_out));
    assert_eq!(cli(&b, &["show", &note]), "Shopping list");

    // Live sync, then a partition with edits on both sides, then healing.
    let mut peer_a = LivePeer::start(&lan, "a", &a);
    let mut peer_b = LivePeer::start(&lan, "b", &b);
    peer_a.append(&note, "- milk");
    wait_for(
        &mut peer_a,
        &mut peer_b,
        &note,
        "live edit reached B",
        |x, y| x == y && y.contains("milk"),
    );
    lan.link("a", false);
    peer_a.append(&note, "- bread (from A)");
    peer_b.append(&note, "- eggs (from B)");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !peer_b.text(&note).contains("bread"),
        "an edit crossed a downed link"
    );
    lan.link("a", true);
    wait_for(
        &mut peer_a,
        &mut peer_b,
        &note,
        "converged after the link came back",
        |x, y| {
            x == y
                && x.contains("bread (from A)")
                && x.contains("eggs (from B)")
                && x.contains("milk")
        },
    );
    peer_a.quit();
    peer_b.quit();
}
