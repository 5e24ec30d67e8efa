//! `Network`: a `Node`'s network as the shells use it. Starting it binds the
//! endpoint the data dir's `config.toml` describes, accepts members' devices
//! and keeps every member of every shared space connected. Inviting offers a
//! ticket (with its QR code) and, where mDNS runs, a short code; joining
//! redeems one and keeps the inviter connected; both can wait until the space
//! is synced, judged by what the other side acknowledged. The CLI, the daemon
//! and the app all go through this, so an invitation behaves the same wherever
//! it is made. Also `PeerAddr`, how a peer is written (`<node id>@<ip:port>`).
//! Built on `net::Transport`; the shells never see it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::{EndpointAddr, EndpointId};
use serde::{Deserialize, Serialize};

use crate::config::{NetConfig, MDNS_OFF};
use crate::error::Error;
use crate::membership::Role;
use crate::net::{ticket_inviter, Transport};
use crate::node::{now_ms, Node};
use crate::note::NoteId;
use crate::pairing::{Offer, ShortCode, Ticket};
use crate::space::SpaceId;

/// The longest a join or an invitation waits for the space to be synced.
pub const SYNC_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);
/// How often sync status is recomputed while waiting (it reads every note's heads).
const STATUS_POLL: Duration = Duration::from_millis(200);
/// How long nothing must have moved before a sync whose last acknowledgement
/// is still owed counts as over (the other side may have hung up first).
const QUIET: Duration = Duration::from_secs(1);
/// How long closing waits for connections to say goodbye: a window closes
/// quickly; a command that synced once can wait for its peer to acknowledge.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(2);
pub const CLOSE_LIMIT_COMMAND: Duration = Duration::from_secs(10);

/// A peer device: its node id and, where known, addresses to dial. Written
/// `<node id>@<ip:port>`, or a bare node id (found by mDNS or a relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(EndpointAddr);

impl PeerAddr {
    /// The peer's node id (hex).
    pub fn node_id(&self) -> String {
        self.0.id.to_string()
    }

    pub(crate) fn endpoint(&self) -> EndpointAddr {
        self.0.clone()
    }
}

impl FromStr for PeerAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<PeerAddr, Error> {
        let s = s.trim();
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (id, Some(addr)),
            None => (s, None),
        };
        let id: EndpointId = id.parse().map_err(|_| {
            Error::Invalid(format!(
                "`{id}` is not a node id (64 hexadecimal digits); write a peer as <node id>@<ip:port>"
            ))
        })?;
        let mut peer = EndpointAddr::new(id);
        if let Some(addr) = addr {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                Error::Invalid(format!("`{addr}` is not an address like 192.168.1.20:4433"))
            })?;
            peer = peer.with_ip_addr(addr);
        }
        Ok(PeerAddr(peer))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.id)?;
        if let Some(addr) = self.0.ip_addrs().next() {
            write!(f, "@{addr}")?;
        }
        Ok(())
    }
}

/// How a device is invited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InviteBy {
    /// A one-time ticket (text and QR code): works anywhere the inviter can be reached.
    Ticket,
    /// A short code such as `7-amber-falcon`, for a device on the same LAN (needs mDNS).
    Code,
    /// A ticket, and a short code too where mDNS runs here (the app's dialog).
    TicketAndCode,
}

/// An open invitation, as shown to the person inviting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub space: SpaceId,
    pub space_name: String,
    /// The ticket's text (`peernotes1…`), if a ticket was asked for.
    pub ticket: Option<String>,
    /// The ticket as a QR code drawn with text, for a terminal.
    pub qr_text: Option<String>,
    /// The ticket as a QR code in SVG, for a window.
    pub qr_svg: Option<String>,
    /// The short code, if one was asked for and mDNS runs here.
    pub code: Option<String>,
    /// Why there is no short code, when one was wanted but cannot be offered.
    pub code_unavailable: Option<String>,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// When a first sync counts as over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// This device has everything the peer has (a joiner).
    WeHaveTheirs,
    /// The peer has everything this device has (an inviter).
    TheyHaveOurs,
}

/// A space joined by redeeming an invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub space: SpaceId,
    pub space_name: String,
    /// The inviter's node id.
    pub inviter: String,
    /// This device was linked as one more device of the inviter's person
    /// (`space` is that person's Private space).
    #[serde(default)]
    pub linked: bool,
}

/// Where the network stands.
enum Up {
    Starting,
    Running(Transport),
    Failed(String),
    Closed,
}

/// A `Node`'s network. Shared by the shell's commands.
pub struct Network {
    node: Arc<Node>,
    up: Mutex<Up>,
    /// The offers of the invitation open now, if any.
    offers: Mutex<Vec<Arc<Offer>>>,
}

impl Network {
    /// A network for `node`, not started yet.
    pub fn new(node: Arc<Node>) -> Arc<Network> {
        Arc::new(Network {
            node,
            up: Mutex::new(Up::Starting),
            offers: Mutex::new(Vec::new()),
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Binds the endpoint `config.toml` describes, accepts connections and
    /// keeps every member of every shared space connected. A failure is kept
    /// (`problem`) as well as returned.
    pub async fn start(&self) -> anyhow::Result<()> {
        let started = async {
            let config = NetConfig::load(self.node.data_dir())?;
            let transport = Transport::bind(self.node.clone(), &config).await?;
            transport.spawn_accept();
            transport.connect_members();
            anyhow::Ok(transport)
        };
        match started.await {
            Ok(transport) => {
                tracing::info!(addr = ?transport.addr(), "sync is listening");
                *lock(&self.up) = Up::Running(transport);
                Ok(())
            }
            Err(e) => {
                *lock(&self.up) = Up::Failed(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Whether the network is up.
    pub fn is_online(&self) -> bool {
        matches!(*lock(&self.up), Up::Running(_))
    }

    /// Why the network is not running, if starting it failed.
    pub fn problem(&self) -> Option<String> {
        match &*lock(&self.up) {
            Up::Failed(problem) => Some(problem.clone()),
            _ => None,
        }
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        match &*lock(&self.up) {
            Up::Running(transport) => Ok(transport.clone()),
            Up::Starting => anyhow::bail!("sync is still starting; try again in a moment"),
            Up::Failed(problem) => anyhow::bail!("sync is not running: {problem}"),
            Up::Closed => anyhow::bail!("sync has stopped"),
        }
    }

    /// The addresses this device listens on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.transport()
            .map(|t| t.addr().ip_addrs().copied().collect())
            .unwrap_or_default()
    }

    /// Keeps `peer` connected (redialling with backoff) while it shares a space.
    pub fn keep_connected(&self, peer: &PeerAddr) -> anyhow::Result<()> {
        self.transport()?.keep_connected(peer.endpoint());
        Ok(())
    }

    /// Tells connected members who share the note's space where this device's
    /// cursor is (nothing while the network is down: nobody to tell).
    pub fn share_presence(&self, note: &NoteId, anchor: usize, head: usize) -> anyhow::Result<()> {
        match self.transport() {
            Ok(transport) => transport.share_presence(note, anchor, head),
            Err(_) => Ok(()),
        }
    }

    /// Opens an invitation into `space` for `minutes`, replacing any open
    /// one; the joiner becomes an editor.
    pub fn invite(&self, space: SpaceId, minutes: u64, by: InviteBy) -> anyhow::Result<Invitation> {
        self.invite_as(space, minutes, by, Role::Editor)
    }

    /// Opens an invitation into `space` for `minutes` that makes the joiner
    /// a member with `role`, replacing any open one.
    pub fn invite_as(
        &self,
        space: SpaceId,
        minutes: u64,
        by: InviteBy,
        role: Role,
    ) -> anyhow::Result<Invitation> {
        self.open_invitation(space, minutes, by, role, false)
    }

    /// Opens an invitation for `minutes` that links the device redeeming it
    /// as one more device of this device's person: it gets the person's
    /// Private space and every space the person is in, with the person's
    /// role there. Replaces any open invitation.
    pub fn invite_device(&self, minutes: u64, by: InviteBy) -> anyhow::Result<Invitation> {
        let private = self.node.private_space()?;
        self.open_invitation(private, minutes, by, Role::Owner, true)
    }

    fn open_invitation(
        &self,
        space: SpaceId,
        minutes: u64,
        by: InviteBy,
        role: Role,
        link: bool,
    ) -> anyhow::Result<Invitation> {
        let offer = |offer: Offer| {
            let offer = offer.with_role(role);
            Arc::new(if link { offer.linking() } else { offer })
        };
        let transport = self.transport()?;
        if by == InviteBy::Code && !transport.has_mdns() {
            anyhow::bail!(MDNS_OFF);
        }
        let space_name = self
            .node
            .spaces()?
            .into_iter()
            .find(|s| s.id == space)
            .map(|s| s.name)
            .ok_or_else(|| Error::SpaceNotFound(space.to_string()))?;
        self.cancel_invite();
        let expires_at = now_ms() / 1000 + 60 * minutes.min(24 * 60) as i64;
        let mut invitation = Invitation {
            space,
            space_name,
            ticket: None,
            qr_text: None,
            qr_svg: None,
            code: None,
            code_unavailable: None,
            expires_at: expires_at * 1000,
        };
        let mut offers = Vec::new();
        if by != InviteBy::Code {
            let offer = offer(Offer::generate(space, expires_at)?);
            let addr = transport.addr();
            let inviter: EndpointId = self
                .node
                .node_id()
                .parse()
                .context("this device's node id is damaged")?;
            let relay = addr.relay_urls().next().map(|url| url.to_string());
            let ticket = offer
                .ticket(
                    *inviter.as_bytes(),
                    addr.ip_addrs().copied().collect(),
                    relay,
                )
                .context("a ticket offer has a ticket")?;
            invitation.qr_text = Some(ticket.qr_code());
            invitation.qr_svg = ticket.qr_svg();
            invitation.ticket = Some(ticket.encode());
            offers.push(offer);
        }
        if by != InviteBy::Ticket {
            if transport.has_mdns() {
                let offer = offer(Offer::generate_code(space, expires_at)?);
                invitation.code = offer.code().map(ShortCode::to_string);
                offers.push(offer);
            } else {
                invitation.code_unavailable = Some(
                    "Short codes work between devices on the same network with mDNS on; \
                     it is off on this device (config.toml). Use the ticket."
                        .into(),
                );
            }
        }
        for offer in &offers {
            transport.offer(offer.clone())?;
        }
        *lock(&self.offers) = offers;
        Ok(invitation)
    }

    /// Withdraws the open invitation, if any.
    pub fn cancel_invite(&self) {
        lock(&self.offers).clear();
        if let Ok(transport) = self.transport() {
            transport.withdraw_offers();
        }
    }

    /// Waits until a device joins with the open invitation and has the space
    /// (it acknowledged every document, or it hung up once sync went quiet).
    /// Returns the new member's node id. Fails if the invitation expires or a
    /// short-code exchange fails.
    pub async fn wait_for_joiner(&self) -> anyhow::Result<String> {
        let offers = lock(&self.offers).clone();
        let Some(first) = offers.first() else {
            anyhow::bail!("no invitation is open");
        };
        let space = first.space;
        let expires_at = first.expires_at();
        let joiner = loop {
            if let Some(joiner) = offers.iter().find_map(|o| o.joiner()) {
                break joiner;
            }
            if let Some(reason) = offers.iter().find_map(|o| o.failure()) {
                anyhow::bail!(
                    "pairing failed: {reason}; the code is no longer valid: \
                     make a new invitation"
                );
            }
            if lock(&self.offers).is_empty() {
                anyhow::bail!("the invitation was withdrawn");
            }
            if now_ms() / 1000 > expires_at {
                anyhow::bail!("nobody joined before the invitation expired");
            }
            tokio::time::sleep(POLL).await;
        };
        self.wait_until_synced(space, &joiner, Until::TheyHaveOurs)
            .await?;
        Ok(joiner)
    }

    /// Redeems a ticket (`peernotes1…`) or a short code: on success this device
    /// is a member of the space, which arrives by sync with the inviter (kept
    /// connected from now on). `on_progress` hears each step, for a person.
    pub async fn join(
        &self,
        invitation: &str,
        name: &str,
        mut on_progress: impl FnMut(&str),
    ) -> anyhow::Result<Joined> {
        let transport = self.transport()?;
        let text = invitation.trim();
        let (space, space_name, inviter, linked) = if text.starts_with("peernotes1") {
            let ticket = Ticket::decode(text)?;
            let (space_name, linked) = transport.pair(&ticket, name).await?;
            (
                ticket.space_id(),
                space_name,
                ticket_inviter(&ticket)?,
                linked,
            )
        } else {
            let code = ShortCode::parse(text)?;
            if !transport.has_mdns() {
                anyhow::bail!(MDNS_OFF);
            }
            on_progress("Looking for the inviter on this network…");
            transport.pair_with_code(&code, name).await?
        };
        transport.keep_connected(inviter.clone());
        Ok(Joined {
            space,
            space_name,
            inviter: inviter.id.to_string(),
            linked,
        })
    }

    /// Waits until the first sync of `space` with `peer` is over, as `until`
    /// says, judged from what each side acknowledged. Gives up after
    /// `SYNC_LIMIT` with an error saying sync goes on later.
    pub async fn wait_until_synced(
        &self,
        space: SpaceId,
        peer: &str,
        until: Until,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let transport = self.transport()?;
        let mut seen_connected = false;
        loop {
            let here = self.node.spaces()?.iter().any(|s| s.id == space);
            let row = self
                .node
                .status()?
                .into_iter()
                .find(|s| s.space == space && s.node_id == peer);
            let quiet = transport.activity().quiet_for() >= QUIET;
            let done = match (&row, until) {
                (Some(row), _) if here && row.in_sync() => true,
                // Everything it announced is here, and nothing more comes.
                (Some(row), Until::WeHaveTheirs) => here && row.incoming == 0 && quiet,
                // It hung up after sync went quiet (a one-shot `join` does).
                (Some(row), Until::TheyHaveOurs) => {
                    seen_connected |= row.connected;
                    seen_connected && !row.connected && quiet
                }
                (None, _) => false,
            };
            if done {
                return Ok(());
            }
            if started.elapsed() > SYNC_LIMIT {
                anyhow::bail!(
                    "the space has not finished syncing after {} s; it goes on whenever \
                     both devices are online",
                    SYNC_LIMIT.as_secs()
                );
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }

    /// Stops dialling and closes every connection, waiting up to `CLOSE_LIMIT`
    /// for goodbyes.
    pub async fn close(&self) {
        self.close_within(CLOSE_LIMIT).await
    }

    /// Stops dialling and closes every connection, waiting up to `limit` for
    /// the peers to acknowledge.
    pub async fn close_within(&self, limit: Duration) {
        let up = std::mem::replace(&mut *lock(&self.up), Up::Closed);
        if let Up::Running(transport) = up {
            if tokio::time::timeout(limit, transport.close())
                .await
                .is_err()
            {
                tracing::info!("closing connections took too long; leaving anyway");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_a_node_id_with_or_without_an_address() {
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public().to_string();
        let peer: PeerAddr = format!("{id}@127.0.0.1:4433").parse().unwrap();
        assert_eq!(peer.to_string(), format!("{id}@127.0.0.1:4433"));
        assert_eq!(peer.node_id(), id);
        assert_eq!(peer.endpoint().ip_addrs().count(), 1);
    }

    #[test]
    fn a_malformed_peer_says_what_is_wrong() {
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public().to_string();
        let bare: PeerAddr = id.parse().unwrap();
        assert_eq!(bare.to_string(), id);
        let err = "zz@127.0.0.1:1"
            .parse::<PeerAddr>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a node id"), "{err}");
        let err = format!("{id}@nowhere")
            .parse::<PeerAddr>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an address"), "{err}");
    }
}
