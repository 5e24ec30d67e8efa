//! How the CLI prints notes, search hits, history, spaces, members, sync
//! status and the process holding the data dir, for people. Whatever a
//! peer may have written (titles, snippets, names) is printed through
//! `printable`, so it can never drive the terminal; ids are shortened by
//! characters, never by byte index.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

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
        let title = printable(shown_title(&note.title));
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
        let title = printable(shown_title(&hit.title));
        let _ = writeln!(out, "{}  {}", hit.id.short(), title);
        let snippet = hit.snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "          {}", printable(&snippet));
    }
}

pub fn print_history(changes: &[ChangeInfo]) {
    let now = now_ms();
    let mut out = std::io::stdout().lock();
    for change in changes {
        let _ = writeln!(
            out,
            "{}  {:>10}  device {}  {} op(s)",
            short(&change.hash, 12),
            ago(now, change.time * 1000),
            short(&change.actor, 8),
            change.ops
        );
    }
}

pub fn print_spaces(spaces: &[SpaceInfo]) {
    let mut out = std::io::stdout().lock();
    for space in spaces {
        let kind = match (&space.removed_by, space.private) {
            (Some(by), _) => format!("  (you were removed by {})", printable(by)),
            (None, true) => "  (private)".to_string(),
            (None, false) => String::new(),
        };
        let _ = writeln!(
            out,
            "{}  {:>5} note(s)  {:>3} member(s)  {}{kind}",
            short(&space.id.to_string(), 8),
            space.notes,
            space.members,
            printable(&space.name)
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
        // A linked device names the person it belongs to.
        let person = members
            .iter()
            .find(|m| {
                !member.person.is_empty()
                    && member.person != member.node_id
                    && m.node_id == member.person
            })
            .map(|m| format!("  (a device of {})", printable(&m.name)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<6}  {}{person}{me}",
            printable(&member.node_id),
            member.role,
            printable(&member.name)
        );
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
            printable(&short(&peer.node_id, 8)).into_owned()
        } else {
            printable(&peer.name).into_owned()
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
        let _ = writeln!(
            out,
            "{}  {name}  {state}  ({seen})",
            printable(&peer.space_name)
        );
    }
}

/// Writes a note's text: byte for byte when piped (`show` output can go back
/// into a file), with control characters other than newlines and tabs shown
/// escaped on a terminal.
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        for line in text.split_inclusive('\n') {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            let shown: String = body
                .split('\t')
                .map(|part| printable(part).into_owned())
                .collect::<Vec<_>>()
                .join("\t");
            write!(out, "{shown}{end}")?;
        }
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()
}

/// `text` with every control character (and bidirectional override) shown
/// as an escape, so text from a peer cannot move the cursor, retitle the
/// window or reorder what follows it.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// The first `n` characters of an id (whatever it holds).
pub fn short(id: &str, n: usize) -> String {
    id.chars().take(n).collect()
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

/// Names the process holding the data dir, if one answers its control socket.
pub fn print_holder(holder: Option<&peernotes_sync::control::Client>) {
    let Some(holder) = holder.map(|c| c.holder()) else {
        return;
    };
    let _ = writeln!(
        std::io::stdout().lock(),
        "Held by the {} (pid {}), started {}",
        holder.kind,
        holder.pid,
        ago(now_ms(), holder.since)
    );
}
