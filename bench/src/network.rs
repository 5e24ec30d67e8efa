//! Rows 2, 3, 4 and 6: Peernotes devices syncing over real iroh connections on
//! loopback (direct), in this process.
//!
//! - Row 2: keystroke to visible on the peer, over 1,000 single-character edits,
//!   against the round trip of a 16-byte message on a raw iroh connection
//!   between the same kind of endpoints; beside it, what signing and
//!   verifying one attestation (each keystroke's authorship) costs; and the
//!   same keystrokes while the peer types a character every 2 ms into the
//!   same note.
//! - Row 3: the initial sync of 1,000 notes of about 5 KB to an empty member.
//! - Row 4: the reconnect after 10 of them changed on each side while apart.
//! - Row 6: the `clownschool` trace across 3 devices, against the same
//!   transactions applied on one device with no network.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::endpoint::presets;
use iroh::{Endpoint, RelayMode};
use peernotes_sync::authorship::Attestation;
use peernotes_sync::net::{NetConfig, Transport};
use peernotes_sync::{Node, NodeEvent, NodeOptions, NoteId, SpaceId};
use peernotes_tests::{load_concurrent_trace, load_sequential_trace, shared_space, team, Device};

use crate::replay::ms;
use crate::report::{quantile, Row};

async fn device() -> anyhow::Result<Device> {
    peernotes_tests::device(&NetConfig::loopback()).await
}

pub async fn latency(rows: &mut Vec<Row>, edits: usize) -> anyhow::Result<Vec<f64>> {
    eprintln!("row 2: {edits} keystrokes to a peer…");
    let (alice, bob) = (device().await?, device().await?);
    let space = team(&alice.node, &bob.node);
    let start_text = load_sequential_trace("seph-blog1")?
        .end_content
        .chars()
        .take(2000)
        .collect::<String>();
    let note = alice.node.create_in(space, &start_text)?;
    let events = bob.node.subscribe();
    bob.net.connect(alice.net.addr()).await?;
    wait_until(Duration::from_secs(30), || {
        bob.node
            .get(&note)
            .map(|n| n.text == start_text)
            .unwrap_or(false)
    })
    .await?;
    while events.try_recv().is_ok() {}

    let mut samples = Vec::with_capacity(edits);
    let mut length = start_text.chars().count();
    for i in 0..edits {
        let pos = (i * 7919) % (length + 1);
        let started = Instant::now();
        alice.node.splice(&note, pos, 0, "x")?;
        length += 1;
        loop {
            match events.recv_timeout(Duration::from_secs(10)) {
                Ok(NodeEvent::NoteChanged { id, .. }) if id == note => {
                    if bob.node.get(&note)?.text.chars().count() == length {
                        break;
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => anyhow::bail!("edit {i} never reached the peer"),
                Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the peer's events stopped"),
            }
        }
        samples.push(ms(started));
    }
    let both = while_both_type(&alice.node, &bob.node, &note, &events, edits)?;
    let raw = raw_round_trips(edits).await?;
    let (mut lat, mut rtt) = (samples.clone(), raw);
    let (p50, p99) = (quantile(&mut lat, 0.5), quantile(&mut lat, 0.99));
    let (raw50, raw99) = (quantile(&mut rtt, 0.5), quantile(&mut rtt, 0.99));
    rows.push(
        Row::new("keystroke to peer, p50", p50, "ms")
            .against("raw iroh round trip p50", raw50)
            .target("≤ 2× raw + 0.5 ms", p50 <= 2.0 * raw50 + 0.5),
    );
    rows.push(
        Row::new("keystroke to peer, p99", p99, "ms")
            .against("raw iroh round trip p99", raw99)
            .target("≤ 3 ms", p99 <= 3.0),
    );
    let mut both = both;
    let (both50, both99) = (quantile(&mut both, 0.5), quantile(&mut both, 0.99));
    rows.push(
        Row::new(
            "keystroke to peer while the peer types too, p50",
            both50,
            "ms",
        )
        .against("raw iroh round trip p50", raw50)
        .target("≤ 2× raw + 0.5 ms", both50 <= 2.0 * raw50 + 0.5),
    );
    rows.push(
        Row::new(
            "keystroke to peer while the peer types too, p99",
            both99,
            "ms",
        )
        .against("raw iroh round trip p99", raw99)
        .target("≤ 3 ms", both99 <= 3.0),
    );
    // What authorship adds to each keystroke: the sender signs one
    // attestation, the receiver verifies it.
    const SIGNATURES: u32 = 2000;
    let started = Instant::now();
    for i in 0..SIGNATURES {
        let attestation = Attestation::sign(note.as_str(), &[9; 32], vec![[i as u8; 32]]);
        attestation.verify()?;
    }
    let per_keystroke = ms(started) / f64::from(SIGNATURES);
    rows.push(
        Row::new(
            "authorship per keystroke: sign + verify one attestation",
            per_keystroke,
            "ms",
        )
        .against("keystroke to peer p50", p50),
    );
    alice.net.close().await;
    bob.net.close().await;
    Ok(samples)
}

/// Alice's keystrokes to Bob, as in row 2, while Bob types a character every
/// 2 ms into the same note (far faster than a person), from another thread.
fn while_both_type(
    alice: &Node,
    bob: &std::sync::Arc<Node>,
    note: &NoteId,
    events: &std::sync::mpsc::Receiver<NodeEvent>,
    edits: usize,
) -> anyhow::Result<Vec<f64>> {
    let count_x = |node: &Node| -> anyhow::Result<usize> {
        Ok(node.get(note)?.text.chars().filter(|c| *c == 'x').count())
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let typist = {
        let (bob, note, stop) = (bob.clone(), note.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let mut typed = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                bob.splice(&note, typed % 100, 0, "y")?;
                typed += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(typed)
        })
    };
    while events.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(edits);
    let mut expected = count_x(bob)?;
    let result = (|| {
        for i in 0..edits {
            let length = alice.get(note)?.text.chars().count();
            let pos = (i * 7919) % (length + 1);
            let started = Instant::now();
            alice.splice(note, pos, 0, "x")?;
            expected += 1;
            loop {
                match events.recv_timeout(Duration::from_secs(10)) {
                    Ok(NodeEvent::NoteChanged { id, .. }) if id == *note => {
                        if count_x(bob)? == expected {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => anyhow::bail!("edit {i} never reached the peer while it typed"),
                }
            }
            samples.push(ms(started));
        }
        Ok(samples)
    })();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let typed = typist.join().expect("the typist does not panic")?;
    eprintln!("  the peer typed {typed} characters meanwhile");
    result
}

/// Round trips of a 16-byte message on one iroh connection between two
/// endpoints set up like Peernotes' (minimal preset, loopback, no relay).
async fn raw_round_trips(count: usize) -> anyhow::Result<Vec<f64>> {
    const ALPN: &[u8] = b"peernotes-bench/echo";
    let bind = || async {
        Endpoint::builder(presets::Minimal)
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr("127.0.0.1:0")?
            .bind()
            .await
            .map_err(anyhow::Error::from)
    };
    let (server, client) = (bind().await?, bind().await?);
    let server_task = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server
                .accept()
                .await
                .context("the endpoint closed")?
                .await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            let mut buf = [0u8; 16];
            while recv.read_exact(&mut buf).await.is_ok() {
                send.write_all(&buf).await?;
            }
            anyhow::Ok(())
        })
    };
    let conn = client.connect(server.addr(), ALPN).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut samples = Vec::with_capacity(count);
    let mut buf = [0u8; 16];
    for _ in 0..count {
        let started = Instant::now();
        send.write_all(&buf).await?;
        recv.read_exact(&mut buf).await?;
        samples.push(ms(started));
    }
    send.finish().ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
    client.close().await;
    server.close().await;
    Ok(samples)
}

/// What rows 3 and 4 measured, for the report and for comparison.
pub struct Bulk {
    pub initial_ms: f64,
    pub initial_bytes: u64,
    pub saved_bytes: u64,
    pub reconnect_ms: f64,
    pub reconnect_bytes: u64,
}

pub async fn bulk(notes: usize, changed: usize) -> anyhow::Result<Bulk> {
    eprintln!("rows 3–4: {notes} notes of ~5 KB, then {changed} changed on each side…");
    let (alice, bob) = (device().await?, device().await?);
    let space = team(&alice.node, &bob.node);
    let ids = build_notes(&alice.node, space, notes)?;
    let saved_bytes: u64 = ids
        .iter()
        .map(|id| alice.node.note_document(id).map(|d| d.len() as u64))
        .sum::<Result<u64, _>>()?;
    alice.node.flush()?;
    eprintln!("  built {notes} notes; Bob syncs them…");

    let events = bob.node.subscribe();
    let started = Instant::now();
    let driver = bob.net.connect(alice.net.addr()).await?;
    // Notes arrive roughly in order and never leave: check from the first one
    // still missing, every 20 ms, so polling does not compete for the Node.
    let mut arrived = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived < ids.len() {
        if Instant::now() >= deadline {
            let seen: Vec<String> = events
                .try_iter()
                .filter(|e| {
                    matches!(
                        e,
                        NodeEvent::PeerRefused { .. } | NodeEvent::PeerStatusChanged { .. }
                    )
                })
                .map(|e| format!("{e:?}"))
                .collect();
            eprintln!("Bob heard: {seen:?}");
            let missing = ids.iter().filter(|id| bob.node.get(id).is_err()).count();
            let status: Vec<String> = bob
                .node
                .status()?
                .iter()
                .map(|s| format!("{s:?}"))
                .collect();
            anyhow::bail!(
                "initial sync timed out: {missing} of {} notes missing on Bob (the first is \
                 number {arrived}); {} connection(s); Bob's status: {status:?}",
                ids.len(),
                bob.net.activity().connections()
            );
        }
        while arrived < ids.len() && bob.node.get(&ids[arrived]).is_ok() {
            arrived += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial_ms = wait_quiet(&bob.net, started).await;
    let initial_bytes = bob.net.activity().bytes_sent() + bob.net.activity().bytes_received();
    drop(driver);
    bob.net.clone().close().await;

    // Apart: both change `changed` notes, then Bob comes back on a new endpoint.
    for (i, id) in ids.iter().take(changed).enumerate() {
        alice.node.splice(id, 0, 0, &format!("alice {i} "))?;
    }
    for (i, id) in ids.iter().rev().take(changed).enumerate() {
        bob.node.splice(id, 0, 0, &format!("bob {i} "))?;
    }
    let bob_net = Transport::bind(bob.node.clone(), &NetConfig::loopback()).await?;
    bob_net.spawn_accept();
    let started = Instant::now();
    bob_net.connect(alice.net.addr()).await?;
    let first = ids[0].clone();
    let last = ids[ids.len() - 1].clone();
    wait_until(Duration::from_secs(120), || {
        let a = alice
            .node
            .get(&last)
            .map(|n| n.text.starts_with("bob 0 "))
            .unwrap_or(false);
        let b = bob
            .node
            .get(&first)
            .map(|n| n.text.starts_with("alice 0 "))
            .unwrap_or(false);
        a && b
    })
    .await?;
    let reconnect_ms = wait_quiet(&bob_net, started).await;
    let reconnect_bytes = bob_net.activity().bytes_sent() + bob_net.activity().bytes_received();
    bob_net.close().await;
    alice.net.close().await;
    Ok(Bulk {
        initial_ms,
        initial_bytes,
        saved_bytes,
        reconnect_ms,
        reconnect_bytes,
    })
}

/// Notes of about 5 KB with realistic histories: each replays a stretch of
/// seph-blog1's transactions (its own slice of the trace) into a new note.
fn build_notes(node: &Node, space: SpaceId, count: usize) -> anyhow::Result<Vec<NoteId>> {
    let trace = load_sequential_trace("seph-blog1")?;
    let text: Vec<char> = trace.end_content.chars().collect();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let start = (i * 997) % text.len().saturating_sub(5000).max(1);
        let body: String = text[start..(start + 5000).min(text.len())].iter().collect();
        let id = node.create_in(space, &format!("Note {i}\n"))?;
        // Typed in 50 bursts, so each note has a history, not one change.
        let chunk = body.chars().count().div_ceil(50);
        let chars: Vec<char> = body.chars().collect();
        let mut at = format!("Note {i}\n").chars().count();
        for part in chars.chunks(chunk) {
            let s: String = part.iter().collect();
            node.splice(&id, at, 0, &s)?;
            at += part.len();
        }
        ids.push(id);
    }
    Ok(ids)
}

pub async fn clownschool(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let trace = load_concurrent_trace("clownschool")?;
    eprintln!(
        "row 6: clownschool, {} transactions across {} devices…",
        trace.txns.len(),
        trace.num_agents
    );

    // Baseline: the same transactions at the same bases on one device.
    let single = tempfile::tempdir()?;
    let node = Node::open(NodeOptions::new(single.path()))?;
    let space = node.private_space()?;
    let note = node.create_in(space, "")?;
    let (_, created) = node.checkout(&note)?;
    let started = Instant::now();
    trace
        .replay(|_| &node, &note, &created, Duration::ZERO)
        .await?;
    let single_ms = ms(started);
    anyhow::ensure!(
        node.get(&note)?.text == trace.end_content,
        "the single-device replay went wrong"
    );
    node.close()?;

    let mut devices = Vec::new();
    for _ in 0..trace.num_agents {
        devices.push(device().await?);
    }
    let first = devices[0].node.clone();
    let others: Vec<&Node> = devices[1..].iter().map(|d| &*d.node).collect();
    let space = shared_space("Clown school", &first, &others)?;
    let note = first.create_in(space, "")?;
    let (_, created) = first.checkout(&note)?;
    for i in 1..devices.len() {
        for j in 0..i {
            devices[i].net.connect(devices[j].net.addr()).await?;
        }
    }
    let started = Instant::now();
    trace
        .replay(
            |agent| &*devices[agent].node,
            &note,
            &created,
            Duration::from_micros(200),
        )
        .await?;
    wait_until(Duration::from_secs(120), || {
        devices.iter().all(|d| {
            d.node
                .get(&note)
                .map(|n| n.text == trace.end_content)
                .unwrap_or(false)
        })
    })
    .await?;
    let network_ms = ms(started);
    rows.push(
        Row::new(
            "clownschool, 3 devices: until all converge",
            network_ms,
            "ms",
        )
        .against("same on one device, no network", single_ms)
        .target("≤ 1.2× one device", network_ms <= 1.2 * single_ms),
    );
    rows.push(
        Row::new("clownschool, one device, no network", single_ms, "ms")
            .target("≤ 40 s", single_ms <= 40_000.0),
    );
    for d in devices {
        d.net.close().await;
    }
    Ok(())
}

/// Waits until no frame has moved for 200 ms; returns the milliseconds from
/// `started` to the last frame.
async fn wait_quiet(net: &Transport, started: Instant) -> f64 {
    let quiet = Duration::from_millis(200);
    while net.activity().quiet_for() < quiet {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ms(started) - net.activity().quiet_for().as_secs_f64() * 1000.0
}

async fn wait_until(limit: Duration, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
