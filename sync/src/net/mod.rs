//! The transport: an iroh endpoint speaking `peernotes/1`, with connections to
//! remote devices (a few per peer at most), each driving a `protocol::Session`
//! against the `Node`. It moves
//! bytes and nothing else: what to send is the session's business.
//!
//! This module binds the endpoint (relays, mDNS and the address as
//! `NetConfig` says; port 0 reuses the port of last time, so members'
//! remembered addresses stay right), counts activity (`Activity`: open
//! connections, bytes, time since the last frame), accepts connections, holds the open invitations and
//! relays local changes to every connection. `connection` runs one sync
//! connection, `dial` keeps members connected, `pair` runs pairing over QUIC.
//!
//! A connection from a device that shares no space with us is closed before a
//! single frame is written. Local changes are pushed to every open session as
//! they happen. Endpoints are configured explicitly: no relays unless asked for,
//! and no address lookups beyond mDNS on the LAN (which `config.toml` can turn
//! off).

mod connection;
mod dial;
mod pair;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::endpoint::{presets, Connection};
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMap, RelayMode, RelayUrl, SecretKey};
use iroh_mdns_address_lookup::MdnsAddressLookup;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::{RelayChoice, MDNS_OFF};
use crate::node::{Node, NodeEvent};
use crate::note::NoteId;
use crate::pairing::{Offer, PAIR_ALPN};
use crate::space::SpaceId;

pub use crate::config::NetConfig;
pub use pair::ticket_inviter;

/// ALPN of the sync protocol.
pub const SYNC_ALPN: &[u8] = b"peernotes/1";
/// The mDNS service Peernotes devices announce themselves under.
const MDNS_SERVICE: &str = "peernotes";
/// How long a joiner looks for an inviter's short code on the LAN.
const CODE_SEARCH: Duration = Duration::from_secs(30);
/// How often `connect_members` looks for members it is not yet dialling.
const MEMBER_SCAN: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 64 * 1024;
/// Frames a connection reads (and whose documents it loads) ahead of the
/// session: enough to keep both cores loading, few enough that what waits
/// stays small (at most this many frames of `MAX_FRAME_BYTES`).
const FRAMES_AHEAD: usize = 4;
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

    /// This endpoint's id and the addresses peers can dial.
    pub fn addr(&self) -> EndpointAddr {
        self.endpoint.addr()
    }

    /// Accepts connections until the endpoint closes: pairing ones go to
    /// `pair::answer`, sync ones to `connection::drive`.
    pub fn spawn_accept(&self) -> JoinHandle<()> {
        let transport = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = transport.endpoint.accept().await {
                let transport = transport.clone();
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::debug!("incoming connection failed: {e}");
                            return;
                        }
                    };
                    let result = if conn.alpn() == PAIR_ALPN {
                        pair::answer(&transport, conn).await
                    } else {
                        connection::drive(
                            transport.node.clone(),
                            conn,
                            false,
                            transport.changes.clone(),
                            transport.activity.clone(),
                            transport.connected.clone(),
                        )
                        .await
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
        let changes = self.changes.clone();
        let activity = self.activity.clone();
        activity.touch();
        let connected = self.connected.clone();
        Ok(tokio::spawn(connection::drive(
            node, conn, true, changes, activity, connected,
        )))
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

/// What goes out to every open connection: a change to push (made here, or
/// by what the device named sent), where this device's cursor is, or that
/// the devices this one is connected to changed.
#[derive(Debug, Clone)]
enum Outgoing {
    Change(SpaceId, String, Option<String>),
    Presence(SpaceId, String, Vec<u8>),
    Links,
}

/// A cursor as presence frames carry it (character offsets in the note).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Cursor {
    anchor: u32,
    head: u32,
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
                    NodeEvent::NoteChanged { id, by_peer } => match node.space_of(&id) {
                        Ok(space) => Outgoing::Change(space, id.to_string(), by_peer),
                        Err(_) => continue,
                    },
                    // Indexes change seldom: relayed to everyone.
                    NodeEvent::SpaceChanged { space } => {
                        Outgoing::Change(space, space.doc_key(), None)
                    }
                    _ => continue,
                };
                // No receivers just means no connection is open.
                let _ = changes.send(change);
            }
        })
        .expect("cannot start the change forwarder");
}
