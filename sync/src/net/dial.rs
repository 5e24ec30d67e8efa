//! Keeping members connected: one task per peer that dials, syncs until the
//! connection ends and dials again with backoff (skipping a peer connected to
//! us anyway or no longer a member, and trying the addresses it was last
//! reached at), and a scan that starts such a task for every member of every
//! shared space, including members added later.

use iroh::{EndpointAddr, EndpointId};
use tokio::task::JoinHandle;

use super::{Transport, MEMBER_SCAN, RECONNECT_MAX, RECONNECT_MIN};
use crate::protocol::Replicas;

impl Transport {
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
}
