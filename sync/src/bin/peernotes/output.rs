//! How the CLI prints notes, search hits and history for people.

use std::io::Write;

use peernotes_sync::{ChangeInfo, Member, NoteSummary, PeerStatus, SearchHit, SpaceInfo};

pub fn print_list(notes: &[NoteSummary], trash: bool) {
    if notes.is_empty() {
        if trash {
            eprintln!("The trash is empty.");
        } else {
            eprintln!("No notes yet. Create one with `peernotes new`.");
        }
        return;
    }
    let now = now_ms();
    let mut out = std::io::stdout().lock();
    for note in notes {
        let title = shown_title(&note.title);
        let _ = writeln!(
            out,
            "{}  {:>10}  {}",
            note.id.short(),
            ago(now, note.updated_at),
            title
        );
    }
}

pub fn print_hits(hits: &[SearchHit]) {
    if hits.is_empty() {
        eprintln!("No matches.");
        return;
    }
    let mut out = std::io::stdout().lock();
    for hit in hits {
        let title = shown_title(&hit.title);
        let _ = writeln!(out, "{}  {}", hit.id.short(), title);
        let snippet = hit.snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "          {snippet}");
    }
}

pub fn print_history(changes: &[ChangeInfo]) {
    let now = now_ms();
    let mut out = std::io::stdout().lock();
    for change in changes {
        let _ = writeln!(
            out,
            "{}  {:>10}  device {}  {} op(s)",
            &change.hash[..12],
            ago(now, change.time * 1000),
            &change.actor[..change.actor.len().min(8)],
            change.ops
        );
    }
}

pub fn print_spaces(spaces: &[SpaceInfo]) {
    let mut out = std::io::stdout().lock();
    for space in spaces {
        let kind = if space.private { "  (private)" } else { "" };
        let _ = writeln!(
            out,
            "{}  {:>5} note(s)  {:>3} member(s)  {}{kind}",
            &space.id.to_string()[..8],
            space.notes,
            space.members,
            space.name
        );
    }
}

pub fn print_members(members: &[Member], this_device: &str) {
    let mut out = std::io::stdout().lock();
    for member in members {
        let me = if member.node_id == this_device {
            "  (this device)"
        } else {
            ""
        };
        let _ = writeln!(out, "{}  {}{me}", member.node_id, member.name);
    }
}

pub fn print_status(peers: &[PeerStatus]) {
    if peers.is_empty() {
        eprintln!("No other devices yet. Invite one with `peernotes invite`.");
        return;
    }
    let now = now_ms();
    let mut out = std::io::stdout().lock();
    for peer in peers {
        let name = if peer.name.is_empty() {
            &peer.node_id[..8]
        } else {
            &peer.name
        };
        let seen = match (peer.connected, peer.last_seen) {
            (true, _) => "connected".to_string(),
            (false, Some(at)) => format!("last seen {}", ago(now, at)),
            (false, None) => "never connected".into(),
        };
        let state = if peer.in_sync() {
            "in sync".to_string()
        } else {
            let mut parts = Vec::new();
            if peer.waiting > 0 {
                parts.push(format!(
                    "{} of {} document(s) to send",
                    peer.waiting, peer.documents
                ));
            }
            if peer.incoming > 0 {
                parts.push(format!("{} to receive", peer.incoming));
            }
            parts.join(", ")
        };
        let _ = writeln!(out, "{}  {name}  {state}  ({seen})", peer.space_name);
    }
}

/// Writes text byte for byte: `show` output can be piped back into a file.
pub fn print_exact(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn shown_title(title: &str) -> &str {
    if title.is_empty() {
        "(untitled)"
    } else {
        title
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
