//! `peernotes invite` and `peernotes join`: pairing a device into a space with a
//! ticket or a short code, then one sync so the joiner leaves with the space's
//! notes.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use peernotes_sync::config::MDNS_OFF;
use peernotes_sync::net::{ticket_inviter, NetConfig, Transport};
use peernotes_sync::node::device_name;
use peernotes_sync::pairing::{Offer, ShortCode, Ticket};
use peernotes_sync::{Node, SpaceId};

/// Sync counts as finished once no frame has moved for this long.
const QUIET: Duration = Duration::from_secs(1);
/// The longest a joiner waits for its first sync to finish.
const SYNC_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);

/// What a joiner was given.
pub enum Invitation {
    Ticket(Ticket),
    Code(ShortCode),
}

pub fn invite(node: Node, space: SpaceId, by_code: bool, minutes: u64) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let config = NetConfig::load(node.data_dir())?;
    if by_code {
        require_mdns(&config)?;
    }
    let expires_at = now_s() + 60 * minutes as i64;
    let offer = Arc::new(if by_code {
        Offer::generate_code(space, expires_at)?
    } else {
        Offer::generate(space, expires_at)?
    });
    let inviter = *iroh::EndpointId::from_str(node.node_id())?.as_bytes();
    runtime()?.block_on(async {
        let net = Transport::bind(node.clone(), &config).await?;
        net.spawn_accept();
        if let Err(e) = net.offer(offer.clone()) {
            net.close().await;
            return Err(e);
        }
        {
            let mut out = std::io::stdout().lock();
            if let Some(code) = offer.code() {
                writeln!(out, "code {code}")?;
            }
            let addr = net.addr();
            let relay = addr.relay_urls().next().map(|url| url.to_string());
            if let Some(ticket) = offer.ticket(inviter, addr.ip_addrs().copied().collect(), relay) {
                writeln!(out, "ticket {}", ticket.encode())?;
                out.flush()?;
                eprintln!("{}", ticket.qr_code());
            }
            out.flush()?;
        }
        match offer.code() {
            Some(code) => eprintln!(
                "On the other device, on this network, run:\n    peernotes join --code {code}\n\
                 Waiting for it (the code works once, for {minutes} min)…"
            ),
            None => eprintln!(
                "On the other device run:\n    peernotes join <ticket>\n\
                 Waiting for it (the ticket works once, for {minutes} min)…"
            ),
        }
        let result = wait_for_joiner(&net, &offer, expires_at).await;
        net.close().await;
        result
    })?;
    finish(node)?;
    eprintln!("Done: the new member has the space.");
    Ok(())
}

pub fn join(node: Node, invitation: Invitation, name: Option<String>) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let config = NetConfig::load(node.data_dir())?;
    if let Invitation::Code(_) = invitation {
        require_mdns(&config)?;
    }
    let name = name.unwrap_or_else(device_name);
    let (space, space_name) = runtime()?.block_on(async {
        let net = Transport::bind(node.clone(), &config).await?;
        net.spawn_accept();
        let result = pair_and_sync(&net, &invitation, &name).await;
        net.close().await;
        result
    })?;
    let notes = node
        .spaces()?
        .into_iter()
        .find(|s| s.id == space)
        .map(|s| s.notes)
        .context("the space did not arrive; run `peernotes serve` to keep syncing")?;
    finish(node)?;
    println!("{space}");
    eprintln!(
        "“{}” is here with {notes} note(s).",
        crate::output::printable(&space_name)
    );
    Ok(())
}

async fn pair_and_sync(
    net: &Transport,
    invitation: &Invitation,
    name: &str,
) -> anyhow::Result<(SpaceId, String)> {
    let (space, space_name, inviter) = match invitation {
        Invitation::Ticket(ticket) => {
            let space_name = net.pair(ticket, name).await?;
            (ticket.space_id(), space_name, ticket_inviter(ticket)?)
        }
        Invitation::Code(code) => {
            eprintln!("Looking for the inviter on this network…");
            net.pair_with_code(code, name).await?
        }
    };
    eprintln!(
        "Joined “{}”; syncing…",
        crate::output::printable(&space_name)
    );
    let driver = net.connect(inviter).await?;
    let started = Instant::now();
    while net.activity().quiet_for() < QUIET {
        if driver.is_finished() || started.elapsed() > SYNC_LIMIT {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok((space, space_name))
}

/// Waits until the ticket is used and the joiner's first sync is over.
async fn wait_for_joiner(net: &Transport, offer: &Offer, expires_at: i64) -> anyhow::Result<()> {
    while !offer.is_used() {
        if now_s() > expires_at {
            bail!("nobody joined before the invitation expired");
        }
        tokio::time::sleep(POLL).await;
    }
    if offer.code().is_some() {
        // The exchange takes a moment; it ends in a new member or a failure.
        let started = Instant::now();
        loop {
            if let Some(reason) = offer.failure() {
                bail!(
                    "pairing failed: {reason}; the code is no longer valid: \
                     run `peernotes invite --code` again"
                );
            }
            let joined =
                net.activity().connections() > 0 || started.elapsed() > Duration::from_secs(15);
            if joined {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    eprintln!("Paired; syncing the space…");
    // The joiner connects for sync right after pairing. A `peernotes join`
    // hangs up when done; an app stays connected, so sync going quiet also ends
    // the wait.
    let paired_at = Instant::now();
    let mut connected = false;
    loop {
        let open = net.activity().connections();
        connected |= open > 0;
        let done = connected && (open == 0 || net.activity().quiet_for() >= 3 * QUIET);
        let gave_up = !connected && paired_at.elapsed() > Duration::from_secs(10);
        if done || gave_up || paired_at.elapsed() > SYNC_LIMIT {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Short codes are found over mDNS: say so before anything starts.
fn require_mdns(config: &NetConfig) -> anyhow::Result<()> {
    if !config.mdns_active() {
        bail!(MDNS_OFF);
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn finish(node: Arc<Node>) -> anyhow::Result<()> {
    let node = Arc::into_inner(node).context("the store is still in use at shutdown")?;
    node.close()?;
    Ok(())
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
