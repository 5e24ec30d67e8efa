//! The transport: an iroh endpoint speaking `peernotes/1`, one connection per
//! remote device, each driving a `protocol::Session` against the `Node`. It moves
//! bytes and nothing else: what to send is the session's business.
//!
//! A connection from a device that shares no space with us is closed before a
//! single frame is written. Local changes are pushed to every open session as
//! they happen. Endpoints are configured explicitly: no relays and no address
//! lookups unless asked for, so nothing is sent anywhere but to the peers dialled.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::endpoint::{presets, Connection, SendStream};
use iroh::{
    Endpoint, EndpointAddr, EndpointId, NetReportConfig, RelayMap, RelayMode, RelayUrl, SecretKey,
};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::{RelayChoice, MDNS_OFF};
use crate::node::{now_ms, Node, NodeEvent, PairingProgress};
use crate::note::NoteId;
use crate::pairing::{
    decode_message, encode_message, InviterExchange, JoinerExchange, Offer, PairRequest,
    PairResponse, ShortCode, Ticket, MAX_PAIR_MESSAGE, PAIR_ALPN,
};
use crate::protocol::{FrameDecoder, Replicas, Session, SessionEvent, Vetted};
use crate::space::SpaceId;

pub use crate::config::NetConfig;

/// ALPN of the sync protocol.
pub const SYNC_ALPN: &[u8] = b"peernotes/1";
/// The mDNS service Peernotes devices announce themselves under.
const MDNS_SERVICE: &str = "peernotes";
/// How long a joiner looks for an inviter's short code on the LAN.
const CODE_SEARCH: Duration = Duration::from_secs(30);
/// How often `connect_members` looks for members it is not yet dialling.
const MEMBER_SCAN: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 64 * 1024;
/// How long a pairing exchange may take before the inviter hangs up.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Local changes queued per connection before it falls behind and is closed.
const CHANGE_BACKLOG: usize = 4096;
/// Bytes queued for a connection's writer before the session stops making
/// frames: a peer that does not read gets nothing more generated for it.
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Most sync connections one peer may hold open; a new one replaces the oldest.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// How often a connection checks that its peer is still a member.
const MEMBERSHIP_CHECK: Duration = Duration::from_millis(250);

/// A bound endpoint serving the `Node`. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Transport {
    endpoint: Endpoint,
    node: Arc<Node>,
    changes: broadcast::Sender<Outgoing>,
    /// The invitations this device is offering (a ticket and a code can be
    /// open for the same space at once).
    offers: Arc<Mutex<Vec<Arc<Offer>>>>,
    activity: Arc<Activity>,
    /// Open sync connections by node id, oldest first.
    connected: Connected,
    /// Node ids a `keep_connected` task is already dialling.
    kept: Arc<Mutex<HashSet<String>>>,
    /// Dialling tasks, stopped by `close`.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// mDNS on the LAN, when configured and not on loopback.
    mdns: Option<MdnsAddressLookup>,
    /// The relay this endpoint uses, if a custom one: members are assumed to
    /// be reachable through it too.
    relay: Option<RelayUrl>,
    /// Dropped with the last clone: tells the change forwarder to stop.
    _alive: Arc<()>,
}

/// How busy the transport is, for commands that run until sync goes quiet.
#[derive(Debug)]
pub struct Activity {
    connections: AtomicUsize,
    last_frame: Mutex<Instant>,
    /// Sync-stream bytes written and read, over every connection so far.
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        *self.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Sync-stream bytes (frames, length prefixes included) sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }

    /// Sync-stream bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::SeqCst)
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

/// Open sync connections by node id, oldest first, each with a number.
type Connected = Arc<Mutex<HashMap<String, Vec<(u64, Connection)>>>>;

/// Numbers connections, so a guard can find its own.
static CONNECTION_NUMBER: AtomicU64 = AtomicU64::new(0);

/// Counts a connection, overall and per peer, for as long as it lives, and
/// tells the Node when a peer's first connection opens and its last one closes
/// (forgetting what that peer was still sending). A peer's connections beyond
/// `MAX_CONNECTIONS_PER_PEER` close, oldest first.
struct ConnectionGuard {
    node: Arc<Node>,
    activity: Arc<Activity>,
    connected: Connected,
    peer: String,
    number: u64,
}

impl ConnectionGuard {
    fn new(
        node: Arc<Node>,
        activity: Arc<Activity>,
        connected: Connected,
        conn: &Connection,
        addrs: &[SocketAddr],
    ) -> ConnectionGuard {
        let peer = conn.remote_id().to_string();
        let number = CONNECTION_NUMBER.fetch_add(1, Ordering::SeqCst);
        activity.connections.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        let (first, replaced) = {
            let mut open = connected.lock().unwrap_or_else(|e| e.into_inner());
            let conns = open.entry(peer.clone()).or_default();
            conns.push((number, conn.clone()));
            let excess = conns.len().saturating_sub(MAX_CONNECTIONS_PER_PEER);
            let replaced: Vec<Connection> = conns.drain(..excess).map(|(_, c)| c).collect();
            (conns.len() == 1, replaced)
        };
        for old in replaced {
            old.close(4u32.into(), b"replaced by a newer connection");
        }
        if first {
            if let Err(e) = node.peer_connected(&peer, true, addrs) {
                tracing::warn!("cannot record the connection: {e}");
            }
        }
        ConnectionGuard {
            node,
            activity,
            connected,
            peer,
            number,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.activity.connections.fetch_sub(1, Ordering::SeqCst);
        let last = {
            let mut open = self.connected.lock().unwrap_or_else(|e| e.into_inner());
            match open.get_mut(&self.peer) {
                Some(conns) => {
                    conns.retain(|(n, _)| *n != self.number);
                    if conns.is_empty() {
                        open.remove(&self.peer);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last {
            self.node.drop_incoming_from(&self.peer);
            if let Err(e) = self.node.peer_connected(&self.peer, false, &[]) {
                tracing::warn!("cannot record the disconnection: {e}");
            }
        }
    }
}

impl Transport {
    pub async fn bind(node: Arc<Node>, config: &NetConfig) -> anyhow::Result<Transport> {
        let last_port = node.transport_starting()?;
        // Port 0 means "any": prefer the one used last time, so the addresses
        // members remember for this device stay right across restarts.
        let endpoint = match last_port {
            Some(port) if config.bind.port() == 0 => {
                let mut again = config.clone();
                again.bind.set_port(port);
                match Transport::bind_endpoint(&node, &again).await {
                    Ok(bound) => Ok(bound),
                    Err(e) => {
                        tracing::info!("port {port} is taken ({e:#}); using another");
                        Transport::bind_endpoint(&node, config).await
                    }
                }
            }
            _ => Transport::bind_endpoint(&node, config).await,
        };
        let (endpoint, mdns, relay) = endpoint?;
        if let Some(addr) = endpoint.bound_sockets().first() {
            node.transport_listening(addr.port())?;
        }
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
            offers: Arc::new(Mutex::new(Vec::new())),
            _alive: alive,
            activity: Arc::new(Activity {
                connections: AtomicUsize::new(0),
                last_frame: Mutex::new(Instant::now()),
                bytes_sent: AtomicU64::new(0),
                bytes_received: AtomicU64::new(0),
            }),
            connected: Arc::new(Mutex::new(HashMap::new())),
            kept: Arc::new(Mutex::new(HashSet::new())),
            tasks: Arc::new(Mutex::new(Vec::new())),
            mdns,
            relay,
        })
    }

    /// Binds the iroh endpoint as `config` says.
    async fn bind_endpoint(
        node: &Node,
        config: &NetConfig,
    ) -> anyhow::Result<(Endpoint, Option<MdnsAddressLookup>, Option<RelayUrl>)> {
        let secret = SecretKey::from_bytes(&node.secret_key()?);
        let id = secret.public();
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .alpns(vec![SYNC_ALPN.to_vec(), PAIR_ALPN.to_vec()])
            .clear_ip_transports()
            .bind_addr(config.bind)
            .with_context(|| format!("cannot use {} as the address to listen on", config.bind))?;
        let mut relay = None;
        builder = match &config.relay {
            RelayChoice::Off => builder.relay_mode(RelayMode::Disabled),
            RelayChoice::Public => builder.relay_mode(RelayMode::Default),
            RelayChoice::Custom(url) => {
                relay = Some(url.clone());
                // A self-hosted relay may not answer QUIC address probes or
                // captive-portal checks: do not wait on them.
                let mut report = NetReportConfig::default();
                report.captive_portal_check = false;
                builder
                    .relay_mode(RelayMode::Custom(RelayMap::from(iroh::RelayConfig::new(
                        url.clone(),
                        None,
                    ))))
                    .net_report_config(report)
            }
        };
        let mdns = if config.mdns_active() {
            let mdns = MdnsAddressLookup::builder()
                .service_name(MDNS_SERVICE)
                .build(id)
                .context("cannot start mDNS on this network (set mdns = false in config.toml to go without)")?;
            builder = builder.address_lookup(mdns.clone());
            Some(mdns)
        } else {
            None
        };
        let endpoint = builder
            .bind()
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        Ok((endpoint, mdns, relay))
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Starts offering an invitation: joiners presenting its ticket are let in.
    /// A short-code offer is announced (its number only) over mDNS.
    pub fn offer(&self, offer: Arc<Offer>) -> anyhow::Result<()> {
        if let Some(code) = offer.code() {
            if self.mdns.is_none() {
                anyhow::bail!(MDNS_OFF);
            }
            let announcement = code
                .announcement()
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            self.endpoint
                .set_user_data_for_address_lookup(Some(announcement));
        }
        self.offers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(offer);
        Ok(())
    }

    /// Withdraws every open invitation (and the mDNS announcement of a code).
    pub fn withdraw_offers(&self) {
        self.offers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.endpoint.set_user_data_for_address_lookup(None);
    }

    /// Tells every connected member who shares the note's space where this
    /// device's cursor is in it (ephemeral: nothing is stored).
    pub fn share_presence(&self, note: &NoteId, anchor: usize, head: usize) -> anyhow::Result<()> {
        let space = self.node.space_of(note)?;
        let cursor = Cursor {
            anchor: anchor.min(u32::MAX as usize) as u32,
            head: head.min(u32::MAX as usize) as u32,
        };
        let payload = postcard::to_stdvec(&cursor)?;
        // No receivers just means no connection is open.
        let _ = self
            .changes
            .send(Outgoing::Presence(space, note.to_string(), payload));
        Ok(())
    }

    /// Whether mDNS runs on this endpoint (short codes need it).
    pub fn has_mdns(&self) -> bool {
        self.mdns.is_some()
    }

    /// Redeems a ticket with its inviter: on success this device is a member and
    /// will receive the space by sync. Returns the space's name.
    pub async fn pair(&self, ticket: &Ticket, name: &str) -> anyhow::Result<String> {
        let result = self.pair_by_ticket(ticket, name).await;
        self.report_pairing(result.as_ref().map(|_| ticket.space_id()), name);
        result
    }

    async fn pair_by_ticket(&self, ticket: &Ticket, name: &str) -> anyhow::Result<String> {
        if now_ms() / 1000 > ticket.expires_at {
            anyhow::bail!("the ticket has expired; ask for a new one");
        }
        let inviter = ticket_addr(ticket)?;
        self.node.publish(NodeEvent::Pairing {
            progress: PairingProgress::Exchanging {
                with: inviter.id.to_string(),
            },
        });
        let conn = self
            .endpoint
            .connect(inviter, PAIR_ALPN)
            .await
            .context("cannot reach the inviter: is `peernotes invite` still running there?")?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let request = PairRequest::Ticket {
            secret: ticket.secret,
            name: name.to_string(),
        };
        send.write_all(&encode_message(&request)).await?;
        send.finish().ok();
        let response: PairResponse = read_pair_message(&mut recv).await?;
        conn.close(0u32.into(), b"done");
        match response {
            PairResponse::Welcome { space_name, .. } => {
                self.node
                    .join_space(ticket.space_id(), &ticket.inviter_id())?;
                Ok(space_name)
            }
            PairResponse::Refused { reason } => anyhow::bail!("the inviter refused: {reason}"),
            PairResponse::CodeChallenge { .. } => anyhow::bail!("the inviter answered out of turn"),
        }
    }

    /// Finds the inviter of a short code on the LAN (mDNS) and pairs with it by
    /// SPAKE2. Returns the space, its name and the inviter's address.
    pub async fn pair_with_code(
        &self,
        code: &ShortCode,
        name: &str,
    ) -> anyhow::Result<(SpaceId, String, EndpointAddr)> {
        let result = self.pair_by_code(code, name).await;
        self.report_pairing(result.as_ref().map(|(space, ..)| *space), name);
        result
    }

    /// Tells subscribers how a joiner's pairing ended.
    fn report_pairing(&self, result: Result<SpaceId, &anyhow::Error>, name: &str) {
        let progress = match result {
            Ok(space) => PairingProgress::Paired {
                space,
                member: self.node.node_id().to_string(),
                name: name.to_string(),
            },
            Err(e) => PairingProgress::Failed {
                reason: format!("{e:#}"),
            },
        };
        self.node.publish(NodeEvent::Pairing { progress });
    }

    async fn pair_by_code(
        &self,
        code: &ShortCode,
        name: &str,
    ) -> anyhow::Result<(SpaceId, String, EndpointAddr)> {
        self.node.publish(NodeEvent::Pairing {
            progress: PairingProgress::LookingForInviter,
        });
        let mdns = self.mdns.as_ref().context(MDNS_OFF)?;
        let inviter = find_inviter(mdns, code).await?;
        self.node.publish(NodeEvent::Pairing {
            progress: PairingProgress::Exchanging {
                with: inviter.id.to_string(),
            },
        });
        let inviter_id = *inviter.id.as_bytes();
        let joiner_id = *self.endpoint.id().as_bytes();
        let conn = self
            .endpoint
            .connect(inviter.clone(), PAIR_ALPN)
            .await
            .context("found the inviter but cannot reach it")?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let (exchange, message) = JoinerExchange::start(code, &joiner_id, &inviter_id);
        let start = PairRequest::CodeStart {
            nameplate: code.nameplate,
            message,
        };
        send.write_all(&encode_message(&start)).await?;
        let (message, proof) = match read_pair_message(&mut recv).await? {
            PairResponse::CodeChallenge { message, proof } => (message, proof),
            PairResponse::Refused { reason } => anyhow::bail!("the inviter refused: {reason}"),
            PairResponse::Welcome { .. } => anyhow::bail!("the inviter answered out of turn"),
        };
        let proof = match exchange.finish(&message, &proof) {
            Ok(proof) => proof,
            Err(e) => {
                conn.close(3u32.into(), b"wrong code");
                return Err(e.into());
            }
        };
        let confirm = PairRequest::CodeConfirm {
            proof,
            name: name.to_string(),
        };
        send.write_all(&encode_message(&confirm)).await?;
        send.finish().ok();
        let response: PairResponse = read_pair_message(&mut recv).await?;
        conn.close(0u32.into(), b"done");
        match response {
            PairResponse::Welcome { space, space_name } => {
                let space = SpaceId::from_bytes(space);
                self.node.join_space(space, &inviter.id.to_string())?;
                Ok((space, space_name, inviter))
            }
            PairResponse::Refused { reason } => anyhow::bail!("the inviter refused: {reason}"),
            PairResponse::CodeChallenge { .. } => anyhow::bail!("the inviter answered out of turn"),
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
        let offers = self.offers.clone();
        let activity = self.activity.clone();
        let connected = self.connected.clone();
        let endpoint_for_offers = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let node = node.clone();
                let changes = changes.subscribe();
                let offers = offers.clone();
                let endpoint_for_offers = endpoint_for_offers.clone();
                let activity = activity.clone();
                let connected = connected.clone();
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::debug!("incoming connection failed: {e}");
                            return;
                        }
                    };
                    let result = if conn.alpn() == PAIR_ALPN {
                        let open = offers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        if open.is_empty() {
                            conn.close(2u32.into(), b"not inviting anyone now");
                            Ok(())
                        } else {
                            let mut chosen = None;
                            let answered = tokio::time::timeout(
                                PAIRING_TIMEOUT,
                                answer_pairing(node.clone(), conn, &open, &mut chosen),
                            )
                            .await
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("pairing timed out")));
                            match (&answered, &chosen) {
                                (Ok(()), Some(offer))
                                    if offer.is_used() && offer.failure().is_none() =>
                                {
                                    // Paired: the other offers for that space go too.
                                    let mut all = offers.lock().unwrap_or_else(|e| e.into_inner());
                                    all.retain(|o| o.space != offer.space);
                                    if all.iter().all(|o| o.code().is_none()) {
                                        endpoint_for_offers.set_user_data_for_address_lookup(None);
                                    }
                                }
                                (Err(e), chosen) => {
                                    // A code may be tried once: any exchange that did
                                    // not finish burns it (a ticket stays usable).
                                    if let Some(offer) = chosen {
                                        if offer.code().is_some() && offer.is_used() {
                                            offer.fail(&format!("{e}"));
                                        }
                                    }
                                    node.publish(NodeEvent::Pairing {
                                        progress: PairingProgress::Failed {
                                            reason: format!("{e}"),
                                        },
                                    });
                                }
                                _ => {}
                            }
                            answered
                        }
                    } else {
                        drive(node, conn, false, changes, activity, connected).await
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
        let connected = self.connected.clone();
        Ok(tokio::spawn(drive(
            node, conn, true, changes, activity, connected,
        )))
    }

    /// Keeps a connection to `peer` open: dials, syncs until the connection ends,
    /// and dials again after a pause that doubles from 100 ms to 30 s (reset
    /// after a connection that lasted). While the peer is connected to us
    /// anyway, or shares no space with us, it is not dialled.
    pub fn keep_connected(&self, peer: EndpointAddr) -> JoinHandle<()> {
        let transport = self.clone();
        let id = peer.id.to_string();
        let new = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        if !new {
            // Another task keeps this peer connected already.
            return tokio::spawn(async {});
        }
        let mut peer = self.with_our_relay(peer);
        for addr in self.node.remembered_addresses(&id) {
            if !peer.ip_addrs().any(|known| *known == addr) {
                peer = peer.with_ip_addr(addr);
            }
        }
        let task = tokio::spawn(async move {
            let mut pause = RECONNECT_MIN;
            loop {
                let connected = transport
                    .connected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id);
                let member = !transport
                    .node
                    .with_peer(&id, |r| r.shared_spaces().is_empty());
                if connected || !member {
                    tokio::time::sleep(RECONNECT_MIN * 10).await;
                    continue;
                }
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
        });
        self.track(task)
    }

    /// Remembers a background task so `close` can stop it: a dial in progress
    /// would otherwise hold the endpoint open until it times out.
    fn track(&self, task: JoinHandle<()>) -> JoinHandle<()> {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
        task
    }

    /// Keeps connections to every member of every space we share, including
    /// members added later. Addresses come from mDNS or our relay.
    pub fn connect_members(&self) -> JoinHandle<()> {
        let transport = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match transport.node.known_devices() {
                    Ok(devices) => {
                        for id in devices {
                            if let Ok(endpoint) = id.parse::<EndpointId>() {
                                // Does nothing for a peer already kept connected.
                                transport.keep_connected(EndpointAddr::new(endpoint));
                            }
                        }
                    }
                    Err(e) => tracing::warn!("cannot list the members to connect to: {e}"),
                }
                tokio::time::sleep(MEMBER_SCAN).await;
            }
        });
        self.track(task)
    }

    /// Adds our custom relay to an address that names none: members of a team
    /// that runs its own relay are reachable through it.
    fn with_our_relay(&self, peer: EndpointAddr) -> EndpointAddr {
        match &self.relay {
            Some(url) if peer.relay_urls().next().is_none() => peer.with_relay_url(url.clone()),
            _ => peer,
        }
    }

    /// Stops dialling, then closes every connection and the endpoint.
    pub async fn close(self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.endpoint.close().await;
    }
}

/// What goes out to every open connection: a local change to push, or where
/// this device's cursor is.
#[derive(Debug, Clone)]
enum Outgoing {
    Change(SpaceId, String),
    Presence(SpaceId, String, Vec<u8>),
}

/// A cursor as presence frames carry it (character offsets in the note).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Cursor {
    anchor: u32,
    head: u32,
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
    changes: broadcast::Sender<Outgoing>,
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
                let _ = changes.send(Outgoing::Change(change.0, change.1));
            }
        })
        .expect("cannot start the change forwarder");
}

/// Runs one connection: membership check, then frames in, frames out.
async fn drive(
    node: Arc<Node>,
    conn: Connection,
    initiator: bool,
    mut changes: broadcast::Receiver<Outgoing>,
    activity: Arc<Activity>,
    connected: Connected,
) -> anyhow::Result<()> {
    let peer = conn.remote_id().to_string();
    let span = tracing::info_span!("peer", peer = %conn.remote_id().fmt_short());
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
    let addrs: Vec<SocketAddr> = conn
        .paths()
        .iter()
        .filter_map(|path| match path.remote_addr() {
            iroh::TransportAddr::Ip(addr) => Some(*addr),
            _ => None,
        })
        .collect();
    let _counted = ConnectionGuard::new(node.clone(), activity.clone(), connected, &conn, &addrs);
    // Writing has its own task, so this loop always keeps reading: two peers that
    // both have more to send than the stream window cannot block each other.
    // What waits for the writer is bounded (`MAX_QUEUED_BYTES`): past it the
    // session makes no more frames until the writer has room.
    let out = spawn_writer(send, activity.clone());
    let mut session = Session::new();
    node.with_peer(&peer, |r| session.start(r));
    queue_out(&mut session, &out, &node, &peer)?;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut membership = tokio::time::interval(MEMBERSHIP_CHECK);
    loop {
        tokio::select! {
            read = recv.read(&mut buf) => {
                let Some(n) = read? else { break };
                activity.touch();
                activity.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame()? {
                    // Vetted here, before the Node's lock is taken.
                    let frame = match Vetted::check(frame) {
                        Ok(frame) => frame,
                        Err(e) => {
                            session.close(e.to_string());
                            break;
                        }
                    };
                    node.with_peer(&peer, |r| session.handle_vetted(frame, r))?;
                }
            }
            () = out.room.notified(), if session.wants_to_transmit() => {}
            _ = membership.tick() => {
                if node.with_peer(&peer, |r| r.shared_spaces().is_empty()) {
                    session.close("no longer a member of a space we share".into());
                }
            }
            change = changes.recv() => match change {
                Ok(Outgoing::Change(space, doc)) => {
                    session.local_change(space.as_bytes(), &doc);
                }
                Ok(Outgoing::Presence(space, doc, payload)) => {
                    let shared = node.with_peer(&peer, |r| r.shared_spaces().contains(space.as_bytes()));
                    if shared {
                        session.send_presence(doc, payload);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    session.close(format!("fell {missed} changes behind; reconnect"));
                }
                Err(broadcast::error::RecvError::Closed) => session.close("shutting down".into()),
            },
        }
        queue_out(&mut session, &out, &node, &peer)?;
        if session.is_closed() {
            break;
        }
    }
    // Let the peer read our last frames: the writer finishes the stream once it
    // has sent everything; wait (briefly) for the peer's end, then close.
    let writer = out.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let drain = async { while let Ok(Some(_)) = recv.read(&mut buf).await {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// The inviter's side of pairing: check the ticket's secret, or run the short
/// code's exchange, then add the joiner.
async fn answer_pairing(
    node: Arc<Node>,
    conn: Connection,
    offers: &[Arc<Offer>],
    chosen: &mut Option<Arc<Offer>>,
) -> anyhow::Result<()> {
    let joiner = conn.remote_id();
    node.publish(NodeEvent::Pairing {
        progress: PairingProgress::JoinerArrived {
            joiner: joiner.to_string(),
        },
    });
    let (mut send, mut recv) = conn.accept_bi().await?;
    let now = now_ms() / 1000;
    let (outcome, name) = match read_pair_message(&mut recv).await? {
        PairRequest::Ticket { secret, name } => {
            // Every ticket offer checks the secret (in constant time); the one
            // that takes it is the invitation being redeemed.
            let mut outcome = Err("this device is not inviting with a ticket now".to_string());
            for offer in offers.iter().filter(|o| o.code().is_none()) {
                outcome = offer.redeem(&secret, now);
                if outcome.is_ok() {
                    *chosen = Some(offer.clone());
                    break;
                }
            }
            (outcome, name)
        }
        PairRequest::CodeStart { nameplate, message } => {
            let offer = offers
                .iter()
                .find(|o| o.code().is_some_and(|c| c.nameplate == nameplate))
                .or_else(|| offers.iter().find(|o| o.code().is_some()));
            let begun = match offer {
                Some(offer) => {
                    *chosen = Some(offer.clone());
                    offer.begin_code_exchange(nameplate, now)
                }
                None => Err("this device is not inviting with a short code now".to_string()),
            };
            let code = match begun {
                Ok(code) => code,
                Err(reason) => {
                    send.write_all(&encode_message(&PairResponse::Refused { reason }))
                        .await?;
                    send.finish().ok();
                    return Ok(());
                }
            };
            let inviter = *node_endpoint_id(&node)?.as_bytes();
            let (exchange, message, proof) =
                InviterExchange::respond(&code, joiner.as_bytes(), &inviter, &message)?;
            send.write_all(&encode_message(&PairResponse::CodeChallenge {
                message,
                proof,
            }))
            .await?;
            let confirm: PairRequest = read_pair_message(&mut recv)
                .await
                .context("a device tried a different code")?;
            match confirm {
                PairRequest::CodeConfirm { proof, name } if exchange.check(&proof) => {
                    (Ok(()), name)
                }
                _ => anyhow::bail!("a device tried a different code"),
            }
        }
        PairRequest::CodeConfirm { .. } => anyhow::bail!("the joiner spoke out of turn"),
    };
    let joiner = joiner.to_string();
    let response = match (outcome, chosen.as_ref()) {
        (Ok(()), Some(offer)) => {
            let name = name.chars().take(100).collect::<String>();
            node.add_member(offer.space, &joiner, &name)?;
            offer.joined_by(&joiner);
            let space_name = node
                .spaces()?
                .into_iter()
                .find(|s| s.id == offer.space)
                .map(|s| s.name)
                .unwrap_or_default();
            tracing::info!(joiner = %conn.remote_id().fmt_short(), "paired");
            node.publish(NodeEvent::Pairing {
                progress: PairingProgress::Paired {
                    space: offer.space,
                    member: joiner.clone(),
                    name: name.clone(),
                },
            });
            PairResponse::Welcome {
                space: *offer.space.as_bytes(),
                space_name,
            }
        }
        (Ok(()), None) => anyhow::bail!("pairing succeeded without an invitation"),
        (Err(reason), _) => {
            tracing::warn!(joiner = %conn.remote_id().fmt_short(), "pairing refused: {reason}");
            node.publish(NodeEvent::Pairing {
                progress: PairingProgress::Failed {
                    reason: reason.clone(),
                },
            });
            PairResponse::Refused { reason }
        }
    };
    send.write_all(&encode_message(&response)).await?;
    send.finish().ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    Ok(())
}

fn node_endpoint_id(node: &Node) -> anyhow::Result<EndpointId> {
    node.node_id()
        .parse()
        .context("this device's node id is damaged")
}

/// Where a ticket says its inviter is: addresses and relay.
fn ticket_addr(ticket: &Ticket) -> anyhow::Result<EndpointAddr> {
    let inviter =
        EndpointId::from_bytes(&ticket.inviter).context("the ticket's inviter id is damaged")?;
    let mut addr = EndpointAddr::new(inviter);
    for ip in &ticket.addrs {
        addr = addr.with_ip_addr(*ip);
    }
    if let Some(relay) = &ticket.relay {
        let url: RelayUrl = relay.parse().context("the ticket's relay is damaged")?;
        addr = addr.with_relay_url(url);
    }
    Ok(addr)
}

/// Watches mDNS for an inviter announcing this code's number.
async fn find_inviter(mdns: &MdnsAddressLookup, code: &ShortCode) -> anyhow::Result<EndpointAddr> {
    use futures_util::StreamExt;
    let mut events = mdns.subscribe().await;
    let search = async {
        while let Some(event) = events.next().await {
            let DiscoveryEvent::Discovered { endpoint_info, .. } = event else {
                continue;
            };
            let announced = endpoint_info
                .data
                .user_data()
                .is_some_and(|data| code.matches_announcement(data.as_ref()));
            if announced {
                return Some(EndpointAddr::from(endpoint_info));
            }
        }
        None
    };
    match tokio::time::timeout(CODE_SEARCH, search).await {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => anyhow::bail!("mDNS stopped while looking for the inviter"),
        Err(_) => anyhow::bail!(
            "no device on this network is inviting with code number {} \
             (is `peernotes invite --code` running there, on the same network?)",
            code.nameplate
        ),
    }
}

/// Dials the inviter named by a ticket for sync.
pub fn ticket_inviter(ticket: &Ticket) -> anyhow::Result<EndpointAddr> {
    ticket_addr(ticket)
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

/// Acts on the session's events — the peer's presence goes to the Node's
/// subscribers, only for a note in use here in a space both share (other
/// events need nothing: the Node raises its own change events), a refusal is
/// logged and published — then queues frames for the writer while it has
/// room.
fn queue_out(session: &mut Session, out: &Writer, node: &Node, peer: &str) -> anyhow::Result<()> {
    while let Some(event) = session.poll_event() {
        match event {
            SessionEvent::Presence { doc, payload } => {
                let Ok(note) = doc.parse::<NoteId>() else {
                    continue;
                };
                let Ok((cursor, _)) = postcard::take_from_bytes::<Cursor>(&payload) else {
                    continue;
                };
                if node.shares_open_note(peer, &note) {
                    node.publish(NodeEvent::PeerPresence {
                        peer: peer.to_string(),
                        note,
                        anchor: cursor.anchor,
                        head: cursor.head,
                    });
                }
            }
            SessionEvent::Refused { doc, reason, .. } => {
                tracing::warn!(doc, "refused what the peer sent: {reason}");
                node.publish(NodeEvent::PeerRefused {
                    peer: peer.to_string(),
                    doc,
                    reason,
                });
            }
            SessionEvent::RemoteChange { .. } | SessionEvent::Closed { .. } => {}
        }
    }
    if !session.wants_to_transmit() {
        return Ok(());
    }
    let frames = node.with_peer(peer, |r| {
        let mut frames = Vec::new();
        let mut queued = out.queued.load(Ordering::SeqCst);
        while queued < MAX_QUEUED_BYTES {
            let Some(frame) = session.poll_transmit(r) else {
                break;
            };
            let bytes = frame.encode()?;
            queued += bytes.len();
            frames.push(bytes);
        }
        anyhow::Ok(frames)
    })?;
    for bytes in frames {
        out.send(bytes)?;
    }
    Ok(())
}

/// The queue to a connection's writer task: frames in order, and how many
/// bytes wait in it.
struct Writer {
    queue: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// Notified each time the writer has written a frame.
    room: Arc<tokio::sync::Notify>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Writer {
    fn send(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.queued.fetch_add(bytes.len(), Ordering::SeqCst);
        self.queue
            .send(bytes)
            .map_err(|_| anyhow::anyhow!("the connection's writer stopped"))
    }

    /// Closes the queue: the writer sends what is in it, then finishes the
    /// stream.
    fn close(self) -> JoinHandle<anyhow::Result<()>> {
        self.task
    }
}

/// Writes queued frames to the stream in order; finishes it when the queue
/// closes.
fn spawn_writer(mut send: SendStream, activity: Arc<Activity>) -> Writer {
    let (queue, mut frames) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let room = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (queued, room) = (queued.clone(), room.clone());
        tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                send.write_all(&bytes).await?;
                queued.fetch_sub(bytes.len(), Ordering::SeqCst);
                room.notify_one();
                activity
                    .bytes_sent
                    .fetch_add(bytes.len() as u64, Ordering::SeqCst);
                activity.touch();
            }
            send.finish().ok();
            Ok(())
        })
    };
    Writer {
        queue,
        queued,
        room,
        task,
    }
}
