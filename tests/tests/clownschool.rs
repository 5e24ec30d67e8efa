//! The `clownschool` concurrent trace replayed with one device per agent over
//! real iroh connections on loopback: each transaction is applied on its agent's
//! device once that device has (by sync) every parent transaction, against the
//! state the parents define; every device must end with the trace's `endContent`.

use std::time::{Duration, Instant};

use peernotes_sync::net::NetConfig;
use peernotes_sync::Node;
use peernotes_tests::{device, load_concurrent_trace, shared_space};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clownschool_converges_on_every_device_over_iroh() {
    let trace = load_concurrent_trace("clownschool").unwrap();
    let mut devices = Vec::new();
    for _ in 0..trace.num_agents {
        devices.push(device(&NetConfig::loopback()).await.unwrap());
    }
    let first = &devices[0].node;
    let others: Vec<&Node> = devices[1..].iter().map(|d| &*d.node).collect();
    let space = shared_space("Clown school", first, &others).unwrap();
    // The note is created once, on the first device; the trace starts empty.
    let note = first.create_in(space, "").unwrap();
    let (_, created) = first.checkout(&note).unwrap();
    for i in 1..devices.len() {
        for j in 0..i {
            devices[i].net.connect(devices[j].net.addr()).await.unwrap();
        }
    }

    let started = Instant::now();
    trace
        .replay(
            |agent| &*devices[agent].node,
            &note,
            &created,
            Duration::from_millis(1),
        )
        .await
        .unwrap();
    let applied = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, d) in devices.iter().enumerate() {
        let node = &d.node;
        while node.get(&note).map(|n| n.text).ok().as_deref() != Some(trace.end_content.as_str()) {
            assert!(
                Instant::now() < deadline,
                "device {i} never reached endContent"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "clownschool: {} transactions over {} devices applied in {applied:.1?}; all converged after {:.1?}",
        trace.txns.len(),
        devices.len(),
        started.elapsed()
    );
}
