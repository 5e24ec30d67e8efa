//! The transport: an iroh endpoint speaking `peernotes/1`, one connection per
//! remote device, each driving a `protocol::Session` against the `Node`. It moves
//! bytes and nothing else: what to send is the session's business.
//!
//! A connection from a device that shares no space with us is closed before a
//! single frame is written. Local changes are pushed to every open session as
//! they happen. Endpoints are configured explicitly: no relays and no address
//! lookups unless asked for, so nothing is sent anywhere but to the peers dialled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::endpoint::{presets, Connection, SendStream};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::node::{now_ms, Node, NodeEvent};
use crate::pairing::{
    decode_message, encode_message, Offer, PairRequest, PairResponse, Ticket, MAX_PAIR_MESSAGE,
    PAIR_ALPN,
};
use crate::protocol::{FrameDecoder, Replicas, Session};
use crate::space::SpaceId;

/// ALPN of the sync protocol.
pub const SYNC_ALPN: &[u8] = b"peernotes/1";
/// Environment variable with the address to bind (e.g. `127.0.0.1:0`).
pub const BIND_ENV: &str = "PEERNOTES_BIND";
const READ_BUFFER: usize = 64 * 1024;
/// How long a pairing exchange may take before the inviter hangs up.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Local changes queued per connection before it falls behind and is closed.
const CHANGE_BACKLOG: usize = 4096;

/// Where and how the endpoint listens.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bind: SocketAddr,
}

impl NetConfig {
    /// Loopback only: for tests and for trying things on one machine.
    pub fn loopback() -> NetConfig {
        NetConfig {
            bind: "127.0.0.1:0".parse().expect("a valid address"),
        }
    }

    /// `PEERNOTES_BIND` if set, else every interface on a random port.
    pub fn from_env() -> anyhow::Result<NetConfig> {
        let bind = match std::env::var(BIND_ENV) {
            Ok(addr) => addr
                .parse()
                .with_context(|| format!("{BIND_ENV}={addr} is not an address like 127.0.0.1:0"))?,
            Err(_) => "0.0.0.0:0".parse().expect("a valid address"),
        };
        Ok(NetConfig { bind })
    }
}

/// A bound endpoint serving the `Node`. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Transport {
    endpoint: Endpoint,
    node: Arc<Node>,
    changes: broadcast::Sender<(SpaceId, String)>,
    /// The invitation this device is offering, if any.
    offer: Arc<Mutex<Option<Arc<Offer>>>>,
    activity: Arc<Activity>,
    /// Dropped with the last clone: tells the change forwarder to stop.
    _alive: Arc<()>,
}

/// How busy the transport is, for commands that run until sync goes quiet.
#[derive(Debug)]
pub struct Activity {
    connections: AtomicUsize,
    last_frame: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Sync connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Time since a frame was last sent or received.
    pub fn quiet_for(&self) -> Duration {
        self.last_frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// Counts a connection for as long as it lives.
struct ConnectionGuard(Arc<Activity>);

impl ConnectionGuard {
    fn new(activity: Arc<Activity>) -> ConnectionGuard {
        activity.connections.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        ConnectionGuard(activity)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Transport {
    pub async fn bind(node: Arc<Node>, config: &NetConfig) -> anyhow::Result<Transport> {
        let secret = SecretKey::from_bytes(&node.secret_key()?);
        let endpoint = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .alpns(vec![SYNC_ALPN.to_vec(), PAIR_ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr(config.bind)
            .with_context(|| format!("cannot use {} as the address to listen on", config.bind))?
            .bind()
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let alive = Arc::new(());
        forward_local_changes(
            Arc::downgrade(&node),
            Arc::downgrade(&alive),
            node.subscribe(),
            changes.clone(),
        );
        Ok(Transport {
            endpoint,
            node,
            changes,
            offer: Arc::new(Mutex::new(None)),
            _alive: alive,
            activity: Arc::new(Activity {
                connections: AtomicUsize::new(0),
                last_frame: Mutex::new(Instant::now()),
            }),
        })
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Starts offering an invitation: joiners presenting its ticket are let in.
    pub fn offer(&self, offer: Arc<Offer>) {
        *self.offer.lock().unwrap_or_else(|e| e.into_inner()) = Some(offer);
    }

    /// Redeems a ticket with its inviter: on success this device is a member and
    /// will receive the space by sync. Returns the space's name.
    pub async fn pair(&self, ticket: &Ticket, name: &str) -> anyhow::Result<String> {
        if now_ms() / 1000 > ticket.expires_at {
            anyhow::bail!("the ticket has expired; ask for a new one");
        }
        let inviter = iroh::EndpointId::from_bytes(&ticket.inviter)
            .context("the ticket's inviter id is damaged")?;
        let mut addr = EndpointAddr::new(inviter);
        for ip in &ticket.addrs {
            addr = addr.with_ip_addr(*ip);
        }
        let conn = self
            .endpoint
            .connect(addr, PAIR_ALPN)
            .await
            .context("cannot reach the inviter: is `peernotes invite` still running there?")?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let request = PairRequest {
            secret: ticket.secret,
            name: name.to_string(),
        };
        send.write_all(&encode_message(&request)).await?;
        send.finish().ok();
        let response: PairResponse = read_pair_message(&mut recv).await?;
        conn.close(0u32.into(), b"done");
        match response {
            PairResponse::Welcome { space_name } => {
                self.node
                    .join_space(ticket.space_id(), &ticket.inviter_id())?;
                Ok(space_name)
            }
            PairResponse::Refused { reason } => anyhow::bail!("the inviter refused: {reason}"),
        }
    }

    /// This endpoint's id and the addresses peers can dial.
    pub fn addr(&self) -> EndpointAddr {
        self.endpoint.addr()
    }

    /// Accepts connections until the endpoint closes.
    pub fn spawn_accept(&self) -> JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let node = self.node.clone();
        let changes = self.changes.clone();
        let offer = self.offer.clone();
        let activity = self.activity.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let node = node.clone();
                let changes = changes.subscribe();
                let offer = offer.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let activity = activity.clone();
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::debug!("incoming connection failed: {e}");
                            return;
                        }
                    };
                    let result = if conn.alpn() == PAIR_ALPN {
                        match offer {
                            None => {
                                conn.close(2u32.into(), b"not inviting anyone now");
                                Ok(())
                            }
                            Some(offer) => tokio::time::timeout(
                                PAIRING_TIMEOUT,
                                answer_pairing(node, conn, offer),
                            )
                            .await
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("pairing timed out"))),
                        }
                    } else {
                        drive(node, conn, false, changes, activity).await
                    };
                    if let Err(e) = result {
                        tracing::info!("connection ended: {e:#}");
                    }
                });
            }
        })
    }

    /// Dials a peer and syncs with it until either side closes.
    pub async fn connect(
        &self,
        peer: EndpointAddr,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let conn = self
            .endpoint
            .connect(peer.clone(), SYNC_ALPN)
            .await
            .with_context(|| format!("cannot reach {}", peer.id))?;
        let node = self.node.clone();
        let changes = self.changes.subscribe();
        let activity = self.activity.clone();
        activity.touch();
        Ok(tokio::spawn(drive(node, conn, true, changes, activity)))
    }

    /// Keeps a connection to `peer` open: dials, syncs until the connection ends,
    /// and dials again after a pause that doubles from 100 ms to 30 s (reset
    /// after a connection that lasted).
    pub fn keep_connected(&self, peer: EndpointAddr) -> JoinHandle<()> {
        let transport = self.clone();
        tokio::spawn(async move {
            let mut pause = RECONNECT_MIN;
            loop {
                let started = tokio::time::Instant::now();
                match transport.connect(peer.clone()).await {
                    Ok(driver) => match driver.await {
                        Ok(Ok(())) => {
                            tracing::info!(peer = %peer.id.fmt_short(), "connection closed")
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer.id.fmt_short(), "connection ended: {e:#}")
                        }
                        Err(e) => tracing::warn!("connection task failed: {e}"),
                    },
                    Err(e) => tracing::info!("{e:#}"),
                }
                if started.elapsed() > RECONNECT_MAX {
                    pause = RECONNECT_MIN;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        })
    }

    /// Closes every connection and the endpoint.
    pub async fn close(self) {
        self.endpoint.close().await;
    }
}

/// Parses a peer written as `<node id>@<ip:port>`.
pub fn parse_peer(s: &str) -> anyhow::Result<EndpointAddr> {
    let (id, addr) = s
        .split_once('@')
        .with_context(|| format!("`{s}` is not a peer: write it as <node id>@<ip:port>"))?;
    let id: iroh::EndpointId = id
        .parse()
        .with_context(|| format!("`{id}` is not a node id (64 hexadecimal digits)"))?;
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("`{addr}` is not an address like 192.168.1.20:4433"))?;
    Ok(EndpointAddr::new(id).with_ip_addr(addr))
}

/// Relays the Node's change events to the connections as `(space, doc key)`,
/// on a thread (the Node's event channel blocks), until the transport is gone.
fn forward_local_changes(
    node: Weak<Node>,
    alive: Weak<()>,
    events: std::sync::mpsc::Receiver<NodeEvent>,
    changes: broadcast::Sender<(SpaceId, String)>,
) {
    std::thread::Builder::new()
        .name("peernotes-net-changes".into())
        .spawn(move || {
            for event in events {
                if alive.upgrade().is_none() {
                    break;
                }
                let Some(node) = node.upgrade() else { break };
                let change = match event {
                    NodeEvent::NoteChanged { id } => match node.space_of(&id) {
                        Ok(space) => (space, id.to_string()),
                        Err(_) => continue,
                    },
                    NodeEvent::SpaceChanged { space } => (space, space.doc_key()),
                    _ => continue,
                };
                // No receivers just means no connection is open.
                let _ = changes.send(change);
            }
        })
        .expect("cannot start the change forwarder");
}

/// Runs one connection: membership check, then frames in, frames out.
async fn drive(
    node: Arc<Node>,
    conn: Connection,
    initiator: bool,
    mut changes: broadcast::Receiver<(SpaceId, String)>,
    activity: Arc<Activity>,
) -> anyhow::Result<()> {
    let peer = conn.remote_id().to_string();
    let span = tracing::info_span!("peer", peer = &peer[..8]);
    let _guard = span.enter();
    if node.with_peer(&peer, |r| r.shared_spaces().is_empty()) {
        tracing::info!("closing: shares no space with us");
        conn.close(1u32.into(), b"not a member of a shared space");
        return Ok(());
    }
    let (send, mut recv) = if initiator {
        conn.open_bi().await?
    } else {
        conn.accept_bi().await?
    };
    let _counted = ConnectionGuard::new(activity.clone());
    node.peer_seen(&peer)?;
    // Writing has its own task, so this loop always keeps reading: two peers that
    // both have more to send than the stream window cannot block each other.
    let (out, writer) = spawn_writer(send, activity.clone());
    let mut session = Session::new();
    node.with_peer(&peer, |r| session.start(r));
    queue_out(&mut session, &out)?;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        tokio::select! {
            read = recv.read(&mut buf) => {
                let Some(n) = read? else { break };
                activity.touch();
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame()? {
                    node.with_peer(&peer, |r| session.handle_frame(frame, r))?;
                }
            }
            change = changes.recv() => match change {
                Ok((space, doc)) => {
                    node.with_peer(&peer, |r| session.local_change(space.as_bytes(), &doc, r));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    session.close(format!("fell {missed} changes behind; reconnect"));
                }
                Err(broadcast::error::RecvError::Closed) => session.close("shutting down".into()),
            },
        }
        queue_out(&mut session, &out)?;
        if session.is_closed() {
            break;
        }
    }
    node.peer_seen(&peer)?;
    // Let the peer read our last frames: the writer finishes the stream once it
    // has sent everything; wait (briefly) for the peer's end, then close.
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let drain = async { while let Ok(Some(_)) = recv.read(&mut buf).await {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// The inviter's side of pairing: check the ticket's secret, add the joiner.
async fn answer_pairing(
    node: Arc<Node>,
    conn: Connection,
    offer: Arc<Offer>,
) -> anyhow::Result<()> {
    let joiner = conn.remote_id().to_string();
    let (mut send, mut recv) = conn.accept_bi().await?;
    let request: PairRequest = read_pair_message(&mut recv).await?;
    let response = match offer.redeem(&request, now_ms() / 1000) {
        Ok(()) => {
            let name = request.name.chars().take(100).collect::<String>();
            node.add_member(offer.space, &joiner, &name)?;
            let space_name = node
                .spaces()?
                .into_iter()
                .find(|s| s.id == offer.space)
                .map(|s| s.name)
                .unwrap_or_default();
            tracing::info!(joiner = &joiner[..8], "paired");
            PairResponse::Welcome { space_name }
        }
        Err(reason) => {
            tracing::warn!(joiner = &joiner[..8], "pairing refused: {reason}");
            PairResponse::Refused { reason }
        }
    };
    send.write_all(&encode_message(&response)).await?;
    send.finish().ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    Ok(())
}

async fn read_pair_message<T: serde::de::DeserializeOwned>(
    recv: &mut iroh::endpoint::RecvStream,
) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .context("the pairing peer hung up")?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PAIR_MESSAGE {
        anyhow::bail!("pairing message of {len} bytes is too large");
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .context("the pairing peer hung up")?;
    Ok(decode_message(&body)?)
}

/// Queues what the session wants to send for the writer task, and drops the
/// events nobody uses yet (the Node raises its own change events; presence has
/// no consumer yet), so a chatty peer cannot make them pile up.
fn queue_out(
    session: &mut Session,
    out: &tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> anyhow::Result<()> {
    while session.poll_event().is_some() {}
    while let Some(frame) = session.poll_transmit() {
        out.send(frame.encode()?)
            .map_err(|_| anyhow::anyhow!("the connection's writer stopped"))?;
    }
    Ok(())
}

/// Writes queued frames to the stream in order; finishes it when the queue
/// closes.
fn spawn_writer(
    mut send: SendStream,
    activity: Arc<Activity>,
) -> (
    tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    JoinHandle<anyhow::Result<()>>,
) {
    let (out, mut queue) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = queue.recv().await {
            send.write_all(&bytes).await?;
            activity.touch();
        }
        send.finish().ok();
        Ok(())
    });
    (out, writer)
}
