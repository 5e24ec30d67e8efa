//! Pairing over QUIC (ALPN `peernotes/pair/1`): the joiner redeems a ticket
//! or runs a short code's SPAKE2 exchange with an inviter found over mDNS; the
//! inviter answers with its open invitations and adds the joiner. The
//! messages and their checks are `pairing`'s; this moves them over a stream.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use iroh::endpoint::Connection;
use iroh::{EndpointAddr, EndpointId, RelayUrl};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};

use super::{Transport, CODE_SEARCH, PAIRING_TIMEOUT};
use crate::config::MDNS_OFF;
use crate::membership::Role;
use crate::node::{now_ms, Node, NodeEvent, PairingProgress};
use crate::pairing::{
    decode_message, encode_message, Inviter, InviterNext, Joiner, JoinerNext, PairRequest,
    PairResponse, ShortCode, Ticket, MAX_PAIR_MESSAGE, PAIR_ALPN,
};
use crate::space::SpaceId;

impl Transport {
    /// Redeems a ticket with its inviter: on success this device is a member
    /// (or, `linked`, one more device of the inviter's person) and will
    /// receive the space by sync. Returns the space's name and `linked`.
    pub async fn pair(&self, ticket: &Ticket, name: &str) -> anyhow::Result<(String, bool)> {
        let result = self.pair_by_ticket(ticket, name).await;
        self.report_pairing(result.as_ref().map(|_| ticket.space_id()), name);
        result
    }

    async fn pair_by_ticket(&self, ticket: &Ticket, name: &str) -> anyhow::Result<(String, bool)> {
        let (joiner, first) = Joiner::with_ticket(ticket, name, now_ms() / 1000)?;
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
        let (space, space_name, linked) = run_joiner(&conn, joiner, first).await?;
        self.join(space, &ticket.inviter_id(), linked)?;
        Ok((space_name, linked))
    }

    /// After pairing: syncs `space` with the inviter until it arrives.
    fn join(&self, space: SpaceId, inviter: &str, linked: bool) -> crate::error::Result<()> {
        if linked {
            self.node.join_as_device(space, inviter)
        } else {
            self.node.join_space(space, inviter)
        }
    }

    /// Finds the inviter of a short code on the LAN (mDNS) and pairs with it by
    /// SPAKE2. Returns the space, its name, the inviter's address and whether
    /// this device was linked to the inviter's person.
    pub async fn pair_with_code(
        &self,
        code: &ShortCode,
        name: &str,
    ) -> anyhow::Result<(SpaceId, String, EndpointAddr, bool)> {
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
    ) -> anyhow::Result<(SpaceId, String, EndpointAddr, bool)> {
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
        let (joiner, first) = Joiner::with_code(code, name, &joiner_id, &inviter_id);
        let (space, space_name, linked) = run_joiner(&conn, joiner, first).await?;
        self.join(space, &inviter.id.to_string(), linked)?;
        Ok((space, space_name, inviter, linked))
    }
}

/// Moves the joiner's messages over one stream until it is admitted or refused.
async fn run_joiner(
    conn: &Connection,
    mut joiner: Joiner,
    first: PairRequest,
) -> anyhow::Result<(SpaceId, String, bool)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut request = first;
    let result = loop {
        send.write_all(&encode_message(&request)).await?;
        let response: PairResponse = read_pair_message(&mut recv).await?;
        match joiner.receive(response) {
            Ok(JoinerNext::Send(next)) => request = next,
            Ok(JoinerNext::Joined {
                space,
                space_name,
                linked,
            }) => break Ok((space, space_name, linked)),
            Err(e) => break Err(e),
        }
    };
    send.finish().ok();
    match result {
        Ok(joined) => {
            conn.close(0u32.into(), b"done");
            Ok(joined)
        }
        Err(e) => {
            conn.close(3u32.into(), b"pairing failed");
            Err(e.into())
        }
    }
}

/// Answers a pairing connection with the open invitations; afterwards a used
/// invitation's other offers for that space are withdrawn, and a short code
/// whose exchange did not finish is burnt.
pub(super) async fn answer(transport: &Transport, conn: Connection) -> anyhow::Result<()> {
    let open = transport
        .offers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if open.is_empty() {
        conn.close(2u32.into(), b"not inviting anyone now");
        return Ok(());
    }
    let node = transport.node.clone();
    let inviter_id = *node_endpoint_id(&node)?.as_bytes();
    let mut inviter = Inviter::new(
        open,
        inviter_id,
        *conn.remote_id().as_bytes(),
        now_ms() / 1000,
    );
    let answered = tokio::time::timeout(
        PAIRING_TIMEOUT,
        answer_pairing(node.clone(), conn, &mut inviter),
    )
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("pairing timed out")));
    match (&answered, inviter.chosen()) {
        (Ok(()), Some(offer)) if offer.is_used() && offer.failure().is_none() => {
            // Paired: the other offers for that space go too.
            let mut all = transport.offers.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|o| o.space != offer.space);
            if all.iter().all(|o| o.code().is_none()) {
                transport.endpoint.set_user_data_for_address_lookup(None);
            }
        }
        (Err(e), chosen) => {
            // A code may be tried once: any exchange that did not finish
            // burns it (a ticket stays usable).
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

/// The inviter's side of pairing: moves the exchange's messages, and adds
/// the joiner once it has proved its invitation.
async fn answer_pairing(
    node: Arc<Node>,
    conn: Connection,
    inviter: &mut Inviter,
) -> anyhow::Result<()> {
    let joiner = conn.remote_id().to_string();
    node.publish(NodeEvent::Pairing {
        progress: PairingProgress::JoinerArrived {
            joiner: joiner.clone(),
        },
    });
    let (mut send, mut recv) = conn.accept_bi().await?;
    loop {
        let request: PairRequest = match read_pair_message(&mut recv).await {
            Ok(request) => request,
            Err(_) => return Err(inviter.hung_up().into()),
        };
        let response = match inviter.receive(request)? {
            InviterNext::Send(response) => {
                send.write_all(&encode_message(&response)).await?;
                continue;
            }
            InviterNext::Refuse(response) => {
                if let PairResponse::Refused { reason } = &response {
                    tracing::warn!(joiner = %conn.remote_id().fmt_short(), "pairing refused: {reason}");
                    node.publish(NodeEvent::Pairing {
                        progress: PairingProgress::Failed {
                            reason: reason.clone(),
                        },
                    });
                }
                response
            }
            InviterNext::Admit { space, name } => {
                let admitted = match inviter.chosen() {
                    Some(offer) if offer.link => node.link_device(&joiner, &name).map(|_| ()),
                    chosen => {
                        let role = chosen.map_or(Role::Editor, |offer| offer.role);
                        node.add_member(space, &joiner, &name, role)
                    }
                };
                if let Err(e) = admitted {
                    // E.g. this device is no longer an owner: its invitation
                    // stopped working.
                    let reason = format!("the invitation no longer works: {e}");
                    tracing::warn!(joiner = %conn.remote_id().fmt_short(), "pairing refused: {reason}");
                    node.publish(NodeEvent::Pairing {
                        progress: PairingProgress::Failed {
                            reason: reason.clone(),
                        },
                    });
                    send.write_all(&encode_message(&PairResponse::Refused { reason }))
                        .await?;
                    send.finish().ok();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
                    return Ok(());
                }
                if let Some(offer) = inviter.chosen() {
                    offer.joined_by(&joiner);
                }
                let space_name = node.space_info(space).map(|s| s.name).unwrap_or_default();
                tracing::info!(joiner = %conn.remote_id().fmt_short(), %name, "paired");
                node.publish(NodeEvent::Pairing {
                    progress: PairingProgress::Paired {
                        space,
                        member: joiner.clone(),
                        name,
                    },
                });
                inviter.welcome(space, space_name)
            }
        };
        send.write_all(&encode_message(&response)).await?;
        send.finish().ok();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return Ok(());
    }
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
