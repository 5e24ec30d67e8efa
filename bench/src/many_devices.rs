//! The many-devices rows: 20 devices in one space, every one connected to
//! every other over iroh on loopback, in this process. One device types; for
//! each keystroke, how long until all 19 others show it, and how many bytes
//! all devices together sent for it — beside the same keystrokes between two
//! devices alone (the time to the one peer, and nineteen times its bytes).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peernotes_sync::net::NetConfig;
use peernotes_sync::{Node, NodeEvent, NoteId};
use peernotes_tests::{shared_space, Device};

use crate::replay::ms;
use crate::report::{quantile, Row};

/// Devices in the space.
const DEVICES: usize = 20;
/// Keystrokes typed by the first device.
const KEYSTROKES: usize = 200;
/// Time between keystrokes once the last one arrived everywhere (a fast typist).
const PAUSE: Duration = Duration::from_millis(20);

pub async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("many devices: {DEVICES} devices in one space, {KEYSTROKES} keystrokes…");
    let pair = typing(2).await?;
    let many = typing(DEVICES).await?;
    let others = (DEVICES - 1) as f64;
    let (mut pair_ms, mut many_ms) = (pair.arrivals, many.arrivals);
    let (pair50, pair99) = (quantile(&mut pair_ms, 0.5), quantile(&mut pair_ms, 0.99));
    let (many50, many99) = (quantile(&mut many_ms, 0.5), quantile(&mut many_ms, 0.99));
    rows.push(
        Row::new("20 devices: keystroke to all 19 others, p50", many50, "ms")
            .against("to one peer, two devices alone", pair50),
    );
    rows.push(
        Row::new("20 devices: keystroke to all 19 others, p99", many99, "ms")
            .against("to one peer, two devices alone", pair99)
            .target("≤ 50 ms", many99 <= 50.0),
    );
    let single = pair.bytes_per_keystroke;
    rows.push(
        Row::new(
            "20 devices: bytes sent per keystroke, all devices",
            many.bytes_per_keystroke,
            "bytes",
        )
        .against("19 × two devices alone", others * single)
        .target(
            "≤ 1.5× 19 × two devices alone",
            many.bytes_per_keystroke <= 1.5 * others * single,
        ),
    );
    Ok(())
}

/// What one run of keystrokes measured.
struct Typing {
    /// Per keystroke, milliseconds until every other device showed it.
    arrivals: Vec<f64>,
    /// Bytes all devices sent while typing, per keystroke.
    bytes_per_keystroke: f64,
}

/// `count` devices in one space, all connected to each other; the first
/// types `KEYSTROKES` characters.
async fn typing(count: usize) -> anyhow::Result<Typing> {
    let net = NetConfig::loopback();
    let mut devices = Vec::with_capacity(count);
    for _ in 0..count {
        devices.push(peernotes_tests::device(&net).await?);
    }
    let nodes: Vec<&Node> = devices.iter().map(|d| d.node.as_ref()).collect();
    let space = shared_space("Everyone", nodes[0], &nodes[1..])?;
    let note = devices[0].node.create_in(space, "# Notes for everyone\n")?;
    // Each joins through the owner, which has the space's index; then every
    // pair connects.
    for device in &devices[1..] {
        device.net.keep_connected(devices[0].net.addr());
    }
    wait_for_all(&devices[1..], Duration::from_secs(120), |node| {
        node.get(&note).is_ok() && node.members(space).is_ok_and(|m| m.len() == count)
    })
    .await?;
    for (i, device) in devices.iter().enumerate().skip(1) {
        for earlier in &devices[1..i] {
            device.net.keep_connected(earlier.net.addr());
        }
    }
    let links = count * (count - 1) / 2;
    let all_linked = || {
        devices
            .iter()
            .map(|d| d.net.activity().connections())
            .sum::<usize>()
            >= 2 * links
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_linked() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {count} devices did not all connect to each other"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the connections' first exchanges finish.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, watchers): (Vec<Arc<AtomicUsize>>, Vec<_>) = devices[1..]
        .iter()
        .map(|d| watch_length(d.node.clone(), note.clone(), stop.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let sent =
        |devices: &[Device]| -> u64 { devices.iter().map(|d| d.net.activity().bytes_sent()).sum() };
    let before = sent(&devices);
    let typist = &devices[0].node;
    let mut length = typist.get(&note)?.text.chars().count();
    let mut arrivals = Vec::with_capacity(KEYSTROKES);
    let typed = (|| {
        for i in 0..KEYSTROKES {
            let started = Instant::now();
            typist.splice(&note, length, 0, if i % 10 == 9 { " " } else { "x" })?;
            length += 1;
            let deadline = started + Duration::from_secs(10);
            while seen.iter().any(|s| s.load(Ordering::SeqCst) < length) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "keystroke {i} did not reach all {} other devices",
                    count - 1
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            arrivals.push(ms(started));
            std::thread::sleep(PAUSE);
        }
        anyhow::Ok(())
    })();
    // Whatever the keystrokes still set moving (acknowledgements).
    std::thread::sleep(Duration::from_millis(300));
    let bytes = sent(&devices) - before;
    stop.store(true, Ordering::SeqCst);
    for watcher in watchers {
        let _ = watcher.join();
    }
    typed?;
    for device in &devices {
        device.net.clone().close().await;
    }
    Ok(Typing {
        arrivals,
        bytes_per_keystroke: bytes as f64 / KEYSTROKES as f64,
    })
}

/// The length of `note`'s text on `node`, kept current by a thread that
/// reads it after each change event, until `stop` is set.
fn watch_length(
    node: Arc<Node>,
    note: NoteId,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Arc<AtomicUsize>, std::thread::JoinHandle<()>)> {
    let length = Arc::new(AtomicUsize::new(node.get(&note)?.text.chars().count()));
    let events = node.subscribe();
    let shown = length.clone();
    let watcher = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(NodeEvent::NoteChanged { id, .. }) if id == note => {
                    if let Ok(view) = node.get(&note) {
                        shown.store(view.text.chars().count(), Ordering::SeqCst);
                    }
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    Ok((length, watcher))
}

async fn wait_for_all(
    devices: &[Device],
    limit: Duration,
    check: impl Fn(&Node) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !devices.iter().all(|d| check(&d.node)) {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
