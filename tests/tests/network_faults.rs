//! Three devices, each in its own network namespace, that can reach each other
//! only through seeded lossy forwarders in a middle namespace that does not
//! route (20% loss, 100 ms delay with up to 60 ms jitter, so packets also
//! arrive out of order, and 2% duplicated), all editing one note at once. All
//! converge with every line typed there exactly once. Prints the time to
//! converge and the bytes sent. (Link flaps are in `netns`.)
//!
//! Each device's runtime is created on a thread that entered its namespace, so
//! every socket it opens lives there. Needs root (CI runs as root); if the
//! namespaces are refused, the test fails and says so.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::EndpointAddr;
use peernotes_sync::config::RelayChoice;
use peernotes_sync::net::NetConfig;
use peernotes_sync::{Node, Splice};
use peernotes_tests::lossy::{Faults, LossyLink};
use peernotes_tests::{device, shared_space, Device, Rng};

const LINES_EACH: usize = 40;
const DEVICES: usize = 3;

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "`ip {}` failed (this test needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Namespaces `<prefix>m` (the middle, no routing) and `<prefix>0..2`, each
/// device namespace joined to the middle by a veth on its own subnet.
struct Star {
    prefix: String,
}

impl Star {
    fn new() -> Star {
        let star = Star {
            prefix: format!("pl{}", std::process::id() % 100_000),
        };
        star.teardown();
        let middle = star.ns("m");
        ip(&["netns", "add", &middle]);
        ip(&["-n", &middle, "link", "set", "lo", "up"]);
        for k in 0..DEVICES {
            let ns = star.ns(&k.to_string());
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("port{k}");
            ip(&[
                "link", "add", "veth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &middle,
            ]);
            ip(&[
                "-n",
                &middle,
                "addr",
                "add",
                &format!("{}/24", star.middle_ip(k)),
                "dev",
                &port,
            ]);
            ip(&["-n", &middle, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", star.device_ip(k)),
                "dev",
                "veth0",
            ]);
            ip(&["-n", &ns, "link", "set", "veth0", "up"]);
        }
        star
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn device_ip(&self, k: usize) -> String {
        format!("10.77.{k}.2")
    }

    /// The middle namespace's address on device `k`'s subnet.
    fn middle_ip(&self, k: usize) -> String {
        format!("10.77.{k}.1")
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
    let star = Star::new();
    let runtimes: Vec<tokio::runtime::Runtime> = (0..DEVICES)
        .map(|k| star.runtime_in(&star.ns(&k.to_string())))
        .collect();
    let middle = star.runtime_in(&star.ns("m"));
    let devices: Vec<Arc<Device>> = (0..DEVICES)
        .map(|k| {
            let config = NetConfig {
                bind: format!("{}:0", star.device_ip(k)).parse().unwrap(),
                mdns: false,
                relay: RelayChoice::Off,
            };
            let rt = &runtimes[k];
            Arc::new(
                rt.block_on(rt.spawn(async move { device(&config).await }))
                    .unwrap()
                    .unwrap(),
            )
        })
        .collect();
    let first = &devices[0].node;
    let others: Vec<&Node> = devices[1..].iter().map(|d| &*d.node).collect();
    let space = shared_space("Lossy", first, &others).unwrap();
    let note = first.create_in(space, "start\n").unwrap();

    // Device j is reached through a forwarder in the middle namespace; device i
    // dials it at the middle's address on i's own subnet.
    let mut links = Vec::new();
    for (j, d) in devices.iter().enumerate() {
        let port = d
            .net
            .addr()
            .ip_addrs()
            .next()
            .expect("a direct address")
            .port();
        let to: SocketAddr = format!("{}:{port}", star.device_ip(j)).parse().unwrap();
        let bind: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let link = middle
            .block_on(middle.spawn(LossyLink::start(bind, to, faults, seed + j as u64)))
            .unwrap()
            .unwrap();
        links.push(link);
    }
    for i in 1..DEVICES {
        for j in 0..i {
            let via: SocketAddr = format!("{}:{}", star.middle_ip(i), links[j].addr.port())
                .parse()
                .unwrap();
            let through = EndpointAddr::new(devices[j].net.addr().id).with_ip_addr(via);
            let d = devices[i].clone();
            let _guard = runtimes[i].enter();
            d.net.keep_connected(through);
        }
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    while !devices.iter().all(|d| d.node.get(&note).is_ok()) {
        assert!(
            Instant::now() < deadline,
            "the note never reached every device"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let joined = started.elapsed();

    // All type at once: a line at a random place every 25 ms.
    for n in 0..LINES_EACH {
        for (k, d) in devices.iter().enumerate() {
            // Positions are relative to the state read, as an editor's are:
            // sync may change the note between reading and editing.
            let (text, heads) = d.node.checkout(&note).unwrap();
            let lines = text.lines().count();
            let at_line = rng.below(lines as u64 + 1) as usize;
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
            d.node.splice_many_at(&note, &heads, &[line]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let typed = Instant::now();
    let mut expected = vec!["start".to_string()];
    for k in 0..DEVICES {
        expected.extend((0..LINES_EACH).map(|n| format!("device {k} line {n}")));
    }
    expected.sort();
    loop {
        let texts: Vec<String> = devices
            .iter()
            .map(|d| d.node.get(&note).unwrap().text)
            .collect();
        if texts.iter().all(|t| *t == texts[0]) {
            let mut lines: Vec<String> = texts[0].lines().map(String::from).collect();
            lines.sort();
            if lines.len() >= expected.len() {
                assert_eq!(lines, expected, "converged on the wrong lines");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no convergence in 120 s: {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let converged = typed.elapsed();
    let sent: u64 = devices.iter().map(|d| d.net.activity().bytes_sent()).sum();
    let (packets, dropped, duplicated, link_bytes) = links.iter().fold((0, 0, 0, 0), |acc, l| {
        (
            acc.0 + l.stats.packets.load(Ordering::Relaxed),
            acc.1 + l.stats.dropped.load(Ordering::Relaxed),
            acc.2 + l.stats.duplicated.load(Ordering::Relaxed),
            acc.3 + l.stats.bytes.load(Ordering::Relaxed),
        )
    });
    println!(
        "{DEVICES} devices, {} lines: the note reached all in {joined:.1?}; converged \
         {converged:.1?} after the last edit; sync payload sent {sent} bytes; the links \
         carried {packets} packets ({link_bytes} bytes), dropped {dropped}, duplicated {duplicated}",
        expected.len()
    );
    // The faults were really in the way: the links carried all the traffic.
    assert!(dropped > 0, "no packet was dropped");
    assert!(
        link_bytes >= sent,
        "traffic bypassed the lossy links: {link_bytes} bytes through them, {sent} sent"
    );
    for (d, rt) in devices.into_iter().zip(&runtimes) {
        let d = Arc::try_unwrap(d).ok().expect("no other handle");
        rt.block_on(d.net.close());
    }
    drop(links);
}
