//! The app's side of sync: starts the `Transport` in the background once the
//! window is up (the window never waits for the network), keeps members
//! connected, and runs invitations and joins for the pairing dialogs. Owns no
//! sync logic: that is `peernotes_sync::net`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use peernotes_sync::net::{ticket_inviter, NetConfig, Transport};
use peernotes_sync::pairing::{Offer, ShortCode, Ticket};
use peernotes_sync::{Node, SpaceId};
use serde::Serialize;

/// How long closing the window waits for connections to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The network as the window sees it. Shared by the commands.
#[derive(Default)]
pub struct Network {
    transport: Mutex<Option<Transport>>,
    /// Why the transport is not running, if starting it failed.
    problem: Mutex<Option<String>>,
}

/// What "Invite to space" shows (mirrors `Invitation` in `ui/src/ipc.ts`).
#[derive(Debug, Serialize)]
pub struct Invitation {
    pub ticket: Option<String>,
    pub qr_svg: Option<String>,
    pub code: Option<String>,
    pub code_unavailable: Option<String>,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// The result of a join (mirrors `Joined` in `ui/src/ipc.ts`).
#[derive(Debug, Serialize)]
pub struct Joined {
    pub space: SpaceId,
    pub space_name: String,
}

impl Network {
    /// Binds the transport from the data dir's settings, in the background.
    pub fn start(self: &Arc<Self>, node: Arc<Node>) {
        let network = self.clone();
        tauri::async_runtime::spawn(async move {
            let started = async {
                let config = NetConfig::load(node.data_dir())?;
                let transport = Transport::bind(node, &config).await?;
                transport.spawn_accept();
                transport.connect_members();
                anyhow::Ok(transport)
            };
            match started.await {
                Ok(transport) => {
                    tracing::info!(addr = ?transport.addr(), "sync is listening");
                    *lock(&network.transport) = Some(transport);
                }
                Err(e) => {
                    tracing::warn!("sync could not start: {e:#}");
                    *lock(&network.problem) = Some(format!("{e:#}"));
                }
            }
        });
    }

    pub fn is_online(&self) -> bool {
        lock(&self.transport).is_some()
    }

    /// The transport, if it is running.
    pub fn running(&self) -> Option<Transport> {
        lock(&self.transport).clone()
    }

    pub fn problem(&self) -> Option<String> {
        lock(&self.problem).clone()
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        if let Some(transport) = lock(&self.transport).clone() {
            return Ok(transport);
        }
        match self.problem() {
            Some(problem) => anyhow::bail!("sync is not running: {problem}"),
            None => anyhow::bail!("sync is still starting; try again in a moment"),
        }
    }

    /// Opens an invitation into `space`: a ticket always, a short code too when
    /// mDNS runs here. Replaces any earlier invitation.
    pub fn invite(&self, node: &Node, space: SpaceId, minutes: u64) -> anyhow::Result<Invitation> {
        let transport = self.transport()?;
        transport.withdraw_offers();
        let expires_at = now_ms() / 1000 + 60 * minutes as i64;
        let ticket_offer = Arc::new(Offer::generate(space, expires_at)?);
        let inviter = *iroh::EndpointId::from_str(node.node_id())?.as_bytes();
        let addr = transport.addr();
        let relay = addr.relay_urls().next().map(|url| url.to_string());
        let ticket = ticket_offer
            .ticket(inviter, addr.ip_addrs().copied().collect(), relay)
            .context("a ticket offer has a ticket")?;
        transport.offer(ticket_offer)?;
        let (code, code_unavailable) = if transport.has_mdns() {
            let code_offer = Arc::new(Offer::generate_code(space, expires_at)?);
            let code = code_offer.code().map(ShortCode::to_string);
            transport.offer(code_offer)?;
            (code, None)
        } else {
            let why = "Short codes work between devices on the same network with mDNS on; \
                       it is off on this device (config.toml). Use the ticket.";
            (None, Some(why.to_string()))
        };
        Ok(Invitation {
            qr_svg: ticket.qr_svg(),
            ticket: Some(ticket.encode()),
            code,
            code_unavailable,
            expires_at: expires_at * 1000,
        })
    }

    pub fn cancel_invite(&self) {
        if let Ok(transport) = self.transport() {
            transport.withdraw_offers();
        }
    }

    /// Joins with a ticket or a short code; the space then syncs in the
    /// background, with the inviter kept connected.
    pub async fn join(&self, invitation: &str, name: &str) -> anyhow::Result<Joined> {
        let transport = self.transport()?;
        let text = invitation.trim();
        let (space, space_name, inviter) = if text.starts_with("peernotes1") {
            let ticket = Ticket::decode(text)?;
            let space_name = transport.pair(&ticket, name).await?;
            (ticket.space_id(), space_name, ticket_inviter(&ticket)?)
        } else {
            let code = ShortCode::parse(text)?;
            transport.pair_with_code(&code, name).await?
        };
        transport.keep_connected(inviter);
        Ok(Joined { space, space_name })
    }

    /// Closes every connection, briefly waiting for goodbyes.
    pub fn close(&self) {
        let Some(transport) = lock(&self.transport).take() else {
            return;
        };
        tauri::async_runtime::block_on(async {
            if tokio::time::timeout(CLOSE_TIMEOUT, transport.close())
                .await
                .is_err()
            {
                tracing::info!("closing connections took too long; leaving anyway");
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
