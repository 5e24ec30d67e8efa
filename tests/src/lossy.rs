//! A user-space UDP forwarder that loses, delays, reorders and duplicates
//! packets, seeded so a failing run can be replayed. This machine's kernel has
//! no `netem`; QUIC runs over UDP, so this is where faults are made.
//!
//! A `LossyLink` listens on one address and forwards to one destination. Each
//! client (source address) gets its own upstream socket, so replies find their
//! way back. Faults apply both ways.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::Rng;

/// What happens to each packet.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Chance a packet is dropped.
    pub loss: f64,
    /// Every packet waits this long...
    pub delay: Duration,
    /// ...plus up to this much more, at random (which also reorders them).
    pub jitter: Duration,
    /// Chance a packet is sent twice.
    pub duplicate: f64,
}

/// What a link did, both ways together.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
}

pub struct LossyLink {
    /// Where clients send: the destination, as seen through the faults.
    pub addr: SocketAddr,
    pub stats: Arc<LinkStats>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.iter().for_each(JoinHandle::abort);
    }
}

struct Shaper {
    faults: Faults,
    rng: Mutex<Rng>,
    stats: Arc<LinkStats>,
}

impl Shaper {
    /// Sends `packet` from `socket` to `to` (or not, or twice, later).
    fn send(self: &Arc<Self>, socket: &Arc<UdpSocket>, packet: Vec<u8>, to: SocketAddr) {
        let (drop_it, twice, wait) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let mut chance = |p: f64| (rng.below(1_000_000) as f64) < p * 1_000_000.0;
            let drop_it = chance(self.faults.loss);
            let twice = chance(self.faults.duplicate);
            let jitter = self.faults.jitter.as_micros() as u64;
            let wait = self.faults.delay + Duration::from_micros(rng.below(jitter + 1));
            (drop_it, twice, wait)
        };
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        if drop_it {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if twice {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = socket.send_to(&packet, to).await;
            if twice {
                let _ = socket.send_to(&packet, to).await;
            }
        });
    }
}

impl LossyLink {
    /// Starts forwarding to `to` with `faults`, seeded by `seed`, listening on
    /// `bind` (an address with port 0).
    pub async fn start(
        bind: SocketAddr,
        to: SocketAddr,
        faults: Faults,
        seed: u64,
    ) -> std::io::Result<LossyLink> {
        let listener = Arc::new(UdpSocket::bind(bind).await?);
        let addr = listener.local_addr()?;
        let stats = Arc::new(LinkStats::default());
        let shaper = Arc::new(Shaper {
            faults,
            rng: Mutex::new(Rng::new(seed)),
            stats: stats.clone(),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let replies = tasks.clone();
        let task = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, client)) = listener.recv_from(&mut buf).await {
                let upstream = match upstreams.get(&client) {
                    Some(upstream) => upstream.clone(),
                    None => {
                        let Ok(socket) = UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).await
                        else {
                            continue;
                        };
                        let socket = Arc::new(socket);
                        upstreams.insert(client, socket.clone());
                        // Replies from the destination go back to this client.
                        let (back, listener, shaper) =
                            (socket.clone(), listener.clone(), shaper.clone());
                        let reply = tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                                shaper.send(&listener, buf[..n].to_vec(), client);
                            }
                        });
                        replies
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(reply);
                        socket
                    }
                };
                shaper.send(&upstream, buf[..n].to_vec(), to);
            }
        });
        tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        Ok(LossyLink { addr, stats, tasks })
    }
}
