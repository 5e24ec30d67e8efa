//! Three devices, each in its own network namespace, all editing one note at
//! once under network faults; all converge on exactly the lines typed, and the
//! time to converge and the bytes sent are printed.
//!
//! - Lossy: they reach each other only through seeded UDP forwarders in a
//!   middle namespace that does not route (20% loss, 100 ms delay with up to
//!   60 ms jitter, so packets also arrive out of order, and 2% duplicated).
//! - Flapping: they share a bridge, and their links go down and up again and
//!   again (`ip link set … down/up`) while they type.
//!
//! Each device's runtime is created on a thread that entered its namespace, so
//! every socket it opens lives there. Needs root (CI runs as root); if the
//! namespaces are refused, the test fails and says so.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::EndpointAddr;
use peernotes_sync::config::RelayChoice;
use peernotes_sync::net::NetConfig;
use peernotes_sync::{Node, NoteId, Splice};
use peernotes_tests::lossy::{Faults, LossyLink};
use peernotes_tests::{device, ip, shared_space, Device, Rng};

const LINES_EACH: usize = 40;
const DEVICES: usize = 3;

/// Namespaces `<prefix>m` (the middle) and `<prefix>0..2`, one per device,
/// each joined to the middle by a veth (`veth0` on the device's side). Routed:
/// each device on its own subnet, the middle not forwarding between them.
/// Bridged: the middle's ports on one bridge, all devices on one subnet.
struct Star {
    prefix: String,
    bridged: bool,
}

impl Star {
    fn new(bridged: bool) -> Star {
        let star = Star {
            prefix: format!(
                "p{}{}",
                if bridged { "b" } else { "l" },
                std::process::id() % 100_000
            ),
            bridged,
        };
        star.teardown();
        let middle = star.ns("m");
        ip(&["netns", "add", &middle]);
        ip(&["-n", &middle, "link", "set", "lo", "up"]);
        if bridged {
            ip(&["-n", &middle, "link", "add", "br0", "type", "bridge"]);
            ip(&["-n", &middle, "link", "set", "br0", "up"]);
        }
        for k in 0..DEVICES {
            let ns = star.ns(&k.to_string());
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("port{k}");
            ip(&[
                "link", "add", "veth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &middle,
            ]);
            if bridged {
                ip(&["-n", &middle, "link", "set", &port, "master", "br0"]);
            } else {
                let middle_ip = format!("{}/24", star.middle_ip(k));
                ip(&["-n", &middle, "addr", "add", &middle_ip, "dev", &port]);
            }
            ip(&["-n", &middle, "link", "set", &port, "up"]);
            let device_ip = format!("{}/24", star.device_ip(k));
            ip(&["-n", &ns, "addr", "add", &device_ip, "dev", "veth0"]);
            ip(&["-n", &ns, "link", "set", "veth0", "up"]);
        }
        star
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn device_ip(&self, k: usize) -> String {
        if self.bridged {
            format!("10.78.0.{}", k + 1)
        } else {
            format!("10.77.{k}.2")
        }
    }

    /// The middle namespace's address on device `k`'s subnet (routed only).
    fn middle_ip(&self, k: usize) -> String {
        format!("10.77.{k}.1")
    }

    /// Takes device `k`'s link down or up.
    fn link(&self, k: usize, up: bool) {
        let ns = self.ns(&k.to_string());
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "veth0",
            if up { "up" } else { "down" },
        ]);
    }

    fn teardown(&self) {
        for name in ["m", "0", "1", "2"] {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.ns(name)])
                .output();
        }
    }

    /// A runtime whose threads (and so every socket they open) live in `ns`.
    fn runtime_in(&self, ns: &str) -> tokio::runtime::Runtime {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns with a valid namespace fd affects only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// One device per namespace, members of one space with one note in it.
struct Team {
    runtimes: Vec<tokio::runtime::Runtime>,
    devices: Vec<Arc<Device>>,
    note: NoteId,
}

impl Team {
    fn new(star: &Star) -> Team {
        let runtimes: Vec<tokio::runtime::Runtime> = (0..DEVICES)
            .map(|k| star.runtime_in(&star.ns(&k.to_string())))
            .collect();
        let devices: Vec<Arc<Device>> = (0..DEVICES)
            .map(|k| {
                let config = NetConfig {
                    bind: format!("{}:0", star.device_ip(k)).parse().unwrap(),
                    mdns: false,
                    relay: RelayChoice::Off,
                };
                let rt = &runtimes[k];
                let bound = rt.block_on(rt.spawn(async move { device(&config).await }));
                Arc::new(bound.unwrap().unwrap())
            })
            .collect();
        let first = &devices[0].node;
        let others: Vec<&Node> = devices[1..].iter().map(|d| &*d.node).collect();
        let space = shared_space("Faults", first, &others).unwrap();
        let note = first.create_in(space, "start\n").unwrap();
        Team {
            runtimes,
            devices,
            note,
        }
    }

    fn port(&self, k: usize) -> u16 {
        let addr = self.devices[k].net.addr();
        let port = addr.ip_addrs().next().expect("a direct address").port();
        port
    }

    /// Device `i` keeps a connection to `to` (device `j`'s id at `at`).
    fn keep_connected(&self, i: usize, j: usize, at: SocketAddr) {
        let to = EndpointAddr::new(self.devices[j].net.addr().id).with_ip_addr(at);
        let _guard = self.runtimes[i].enter();
        self.devices[i].net.keep_connected(to);
    }

    /// Waits until every device has the note; returns how long that took.
    fn wait_for_the_note(&self, deadline: Instant) -> Duration {
        let started = Instant::now();
        while !self.devices.iter().all(|d| d.node.get(&self.note).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "the note never reached every device"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// All type at once: a line at a random place, each every 25 ms.
    fn type_lines(&self, rng: &mut Rng) {
        for n in 0..LINES_EACH {
            for (k, d) in self.devices.iter().enumerate() {
                // Positions are relative to the state read, as an editor's are:
                // sync may change the note between reading and editing.
                let (text, heads) = d.node.checkout(&self.note).unwrap();
                let at_line = rng.below(text.lines().count() as u64 + 1) as usize;
                let at: usize = text
                    .lines()
                    .take(at_line)
                    .map(|l| l.chars().count() + 1)
                    .sum();
                let line = Splice {
                    pos: at,
                    delete: 0,
                    insert: format!("device {k} line {n}\n"),
                };
                d.node.splice_many_at(&self.note, &heads, &[line]).unwrap();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until all hold the same text with exactly the typed lines;
    /// returns how long that took.
    fn wait_converged(&self, deadline: Instant) -> Duration {
        let started = Instant::now();
        let mut expected = vec!["start".to_string()];
        for k in 0..DEVICES {
            expected.extend((0..LINES_EACH).map(|n| format!("device {k} line {n}")));
        }
        expected.sort();
        loop {
            let texts: Vec<String> = self
                .devices
                .iter()
                .map(|d| d.node.get(&self.note).unwrap().text)
                .collect();
            if texts.iter().all(|t| *t == texts[0]) {
                let mut lines: Vec<String> = texts[0].lines().map(String::from).collect();
                lines.sort();
                if lines.len() >= expected.len() {
                    assert_eq!(lines, expected, "converged on the wrong lines");
                    return started.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no convergence in time: {texts:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn bytes_sent(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| d.net.activity().bytes_sent())
            .sum()
    }

    fn close(self) {
        for (d, rt) in self.devices.into_iter().zip(&self.runtimes) {
            let d = Arc::try_unwrap(d).ok().expect("no other handle");
            rt.block_on(d.net.close());
        }
    }
}

#[test]
fn three_devices_converge_through_loss_delay_reordering_and_duplicates() {
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}");
    let faults = Faults {
        loss: 0.20,
        delay: Duration::from_millis(100),
        jitter: Duration::from_millis(60),
        duplicate: 0.02,
    };
    let star = Star::new(false);
    let team = Team::new(&star);
    let middle = star.runtime_in(&star.ns("m"));
    // Device j is reached through a forwarder in the middle namespace; device i
    // dials it at the middle's address on i's own subnet.
    let mut links = Vec::new();
    for j in 0..DEVICES {
        let to: SocketAddr = format!("{}:{}", star.device_ip(j), team.port(j))
            .parse()
            .unwrap();
        let bind: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let link = middle.spawn(LossyLink::start(bind, to, faults, seed + j as u64));
        links.push(middle.block_on(link).unwrap().unwrap());
    }
    for i in 1..DEVICES {
        for (j, link) in links.iter().enumerate().take(i) {
            let via = format!("{}:{}", star.middle_ip(i), link.addr.port());
            team.keep_connected(i, j, via.parse().unwrap());
        }
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let joined = team.wait_for_the_note(deadline);
    team.type_lines(&mut rng);
    let converged = team.wait_converged(deadline);
    let sent = team.bytes_sent();
    let total = |f: fn(&LossyLink) -> &AtomicU64| -> u64 {
        links.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
    };
    let packets = total(|l| &l.stats.packets);
    let dropped = total(|l| &l.stats.dropped);
    let duplicated = total(|l| &l.stats.duplicated);
    let link_bytes = total(|l| &l.stats.bytes);
    println!(
        "lossy: {DEVICES} devices, {} lines: the note reached all in {joined:.1?}; converged \
         {converged:.1?} after the last edit; sync payload sent {sent} bytes; the links \
         carried {packets} packets ({link_bytes} bytes), dropped {dropped}, duplicated {duplicated}",
        1 + DEVICES * LINES_EACH
    );
    // The faults were really in the way: the links carried all the traffic.
    // (On one shared network iroh finds the direct path and bypasses them.)
    assert!(dropped > 0, "no packet was dropped");
    assert!(
        link_bytes >= sent,
        "traffic bypassed the lossy links: {link_bytes} bytes through them, {sent} sent"
    );
    team.close();
    drop(links);
}

#[test]
fn three_devices_converge_while_their_links_flap() {
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}");
    let star = Arc::new(Star::new(true));
    let team = Team::new(&star);
    for i in 1..DEVICES {
        for j in 0..i {
            let at = format!("{}:{}", star.device_ip(j), team.port(j));
            team.keep_connected(i, j, at.parse().unwrap());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let joined = team.wait_for_the_note(deadline);

    // While all type, and for 3 s after, one link at a time goes down for
    // 0.1-0.5 s, then up for 0.05-0.25 s, over and over.
    let typing = Arc::new(AtomicBool::new(true));
    let flapper = {
        let (star, typing) = (star.clone(), typing.clone());
        let mut rng = Rng::new(seed ^ 0x5eed);
        std::thread::spawn(move || {
            let (mut flaps, mut last_up) = (0, Instant::now());
            while typing.load(Ordering::Relaxed) {
                let k = rng.below(DEVICES as u64) as usize;
                star.link(k, false);
                std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
                star.link(k, true);
                last_up = Instant::now();
                flaps += 1;
                std::thread::sleep(Duration::from_millis(50 + rng.below(200)));
            }
            (flaps, last_up)
        })
    };
    team.type_lines(&mut rng);
    std::thread::sleep(Duration::from_secs(3));
    typing.store(false, Ordering::Relaxed);
    let (flaps, last_up) = flapper.join().unwrap();
    team.wait_converged(deadline);
    let converged = last_up.elapsed();
    println!(
        "flapping: {DEVICES} devices, {} lines, {flaps} link flaps: the note reached all in \
         {joined:.1?}; converged {converged:.1?} after the last link came back up; sync \
         payload sent {} bytes",
        1 + DEVICES * LINES_EACH,
        team.bytes_sent()
    );
    assert!(flaps >= 5, "only {flaps} flaps: the test did not test");
    team.close();
}
