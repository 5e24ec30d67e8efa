//! `peernotes invite` and `peernotes join` when this process holds the data
//! dir: the network starts here for the pairing and the first sync, then
//! stops. (With the app or `serve` holding it, the same steps run there,
//! through the control socket.) Also how both ways print their progress.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use peernotes_sync::membership::Role;
use peernotes_sync::network::{Until, CLOSE_LIMIT_COMMAND};
use peernotes_sync::node::device_name;
use peernotes_sync::{Invitation, InviteBy, Joined, Network, Node, SpaceId};

pub fn invite(
    node: Node,
    space: SpaceId,
    by: InviteBy,
    minutes: u64,
    role: Role,
) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let network = Network::new(node.clone());
    runtime()?.block_on(async {
        let result = async {
            network.start().await?;
            let invitation = network.invite_as(space, minutes, by, role)?;
            show_invitation(&invitation, minutes);
            network.wait_for_joiner().await
        }
        .await;
        network.close_within(CLOSE_LIMIT_COMMAND).await;
        invited(&result?);
        anyhow::Ok(())
    })?;
    drop(network);
    finish(node)
}

/// `peernotes device link`: like `invite`, for an invitation that links the
/// device redeeming it as one more of this person's devices.
pub fn link(node: Node, by: InviteBy, minutes: u64) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let network = Network::new(node.clone());
    runtime()?.block_on(async {
        let result = async {
            network.start().await?;
            let invitation = network.invite_device(minutes, by)?;
            show_invitation(&invitation, minutes);
            network.wait_for_joiner().await
        }
        .await;
        network.close_within(CLOSE_LIMIT_COMMAND).await;
        result?;
        linked();
        anyhow::Ok(())
    })?;
    drop(network);
    finish(node)
}

pub fn join(node: Node, invitation: &str, name: Option<String>) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let network = Network::new(node.clone());
    let name = name.unwrap_or_else(device_name);
    let joined = runtime()?.block_on(async {
        let result = async {
            network.start().await?;
            let joined = network
                .join(invitation, &name, |line| eprintln!("{line}"))
                .await?;
            paired(&joined);
            network
                .wait_until_synced(joined.space, &joined.inviter, Until::WeHaveTheirs)
                .await?;
            anyhow::Ok(joined)
        }
        .await;
        network.close_within(CLOSE_LIMIT_COMMAND).await;
        result
    })?;
    drop(network);
    let notes = node
        .spaces()?
        .into_iter()
        .find(|s| s.id == joined.space)
        .map(|s| s.notes)
        .context("the space did not arrive; run `peernotes serve` to keep syncing")?;
    finish(node)?;
    self::joined(&joined, notes);
    Ok(())
}

/// Prints an invitation: machine-readable lines on stdout (`code …`,
/// `ticket …`), the QR code and what to do on stderr.
pub fn show_invitation(invitation: &Invitation, minutes: u64) {
    let mut out = std::io::stdout().lock();
    if let Some(code) = &invitation.code {
        let _ = writeln!(out, "code {code}");
    }
    if let Some(ticket) = &invitation.ticket {
        let _ = writeln!(out, "ticket {ticket}");
    }
    let _ = out.flush();
    if let Some(qr) = &invitation.qr_text {
        eprintln!("{qr}");
    }
    match &invitation.code {
        Some(code) => eprintln!(
            "On the other device, on this network, run:\n    peernotes join --code {code}\n\
             Waiting for it (the code works once, for {minutes} min)…"
        ),
        None => eprintln!(
            "On the other device run:\n    peernotes join <ticket>\n\
             Waiting for it (the ticket works once, for {minutes} min)…"
        ),
    }
}

/// The inviter's last line.
pub fn invited(joiner: &str) {
    tracing::info!(%joiner, "joined");
    eprintln!("Done: the new member has the space.");
}

/// The linking device's last line.
pub fn linked() {
    eprintln!("Done: the new device is yours and has your Private space; your other spaces follow as it syncs.");
}

/// The joiner paired; the first sync follows.
pub fn paired(joined: &Joined) {
    if joined.linked {
        eprintln!("Linked as one more device of the inviting device's person; syncing…");
        return;
    }
    eprintln!(
        "Joined “{}”; syncing…",
        crate::output::printable(&joined.space_name)
    );
}

/// The joiner's last lines: the space id on stdout, a summary on stderr.
pub fn joined(joined: &Joined, notes: usize) {
    println!("{}", joined.space);
    if joined.linked {
        eprintln!(
            "Your Private space is here with {notes} note(s); your other spaces follow as this device syncs."
        );
        return;
    }
    eprintln!(
        "“{}” is here with {notes} note(s).",
        crate::output::printable(&joined.space_name)
    );
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
