//! The control socket: how a CLI command reaches the one process that holds a
//! device's data dir (the app or `peernotes serve`), so every command works
//! while it runs, through its `Node` — edits show up live in the window and
//! reach peers at once.
//!
//! The holder listens on `peernotes.sock` in the data dir (mode 0600, and
//! only the holder's own uid is answered). One connection carries one request
//! and its answer. Every message is a 4-byte big-endian length and a JSON body
//! of at most `MAX_MESSAGE_BYTES`, refused before it is buffered; a request
//! names the protocol version it speaks (`VERSION`) and a holder answers
//! another version with an error, never a guess. A request must arrive whole
//! within `REQUEST_TIMEOUT`, and at most `MAX_CLIENTS` are served at once, so
//! garbage, oversized or half-written requests cost the holder one
//! connection's worth and nothing else.
//!
//! Answers: zero or more `Response::Progress` lines (for a person), one
//! intermediate `Response::Invitation` for an invite or `Response::Paired` for
//! a join, then exactly one `Response::Done` or `Response::Failed`.
//!
//! `Device` (in `device`) is what a shell may ask of a device's notes either
//! way: `Node` implements it for the process holding the data dir, `Client`
//! for everyone else.

mod client;
mod device;
mod server;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::membership::Role;
use crate::network::{Invitation, InviteBy, Joined};
use crate::node::{Heads, SpaceInfo};
use crate::note::{ChangeInfo, NoteId};
use crate::space::{Member, SpaceId};
use crate::vault::ImportReport;

pub use client::Client;
pub use device::Device;
pub use server::{Holder, HolderKind, Hooks, Server};

/// The control protocol's version; requests name it.
pub const VERSION: u32 = 1;
/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "peernotes.sock";
/// Largest message either side accepts (a note's whole text travels in one).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long a client may take to send its whole request.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Requests served at once; more are answered "busy".
pub const MAX_CLIENTS: usize = 32;

/// Where the control socket of `data_dir` is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Removes a control socket left by a process that was killed: call only
/// while holding the data dir's lock (then nobody can be listening on it).
pub fn remove_stale_socket(data_dir: &Path) {
    match std::fs::remove_file(socket_path(data_dir)) {
        Ok(()) => tracing::info!("removed a stale control socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove a stale control socket: {e}"),
    }
}

/// What a client sends: the version it speaks and one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

/// One request; each maps onto one `Device` method, or onto the holder's
/// `Network` for inviting and joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Which process holds the data dir, and since when.
    Holder,
    /// Raise the holder's window (the app); `serve` has none.
    Focus,
    /// Flush and stop (only `serve` agrees: the app is stopped by its user).
    Stop,
    FindNote {
        typed: String,
    },
    FindSpace {
        typed: String,
    },
    PrivateSpace,
    Create {
        space: SpaceId,
        text: String,
    },
    Checkout {
        id: NoteId,
    },
    Replace {
        id: NoteId,
        base: Heads,
        text: String,
    },
    Trash {
        id: NoteId,
    },
    Restore {
        id: NoteId,
    },
    History {
        id: NoteId,
        limit: usize,
    },
    Import {
        dir: PathBuf,
        skip_invalid: bool,
    },
    Compact,
    Spaces,
    Members {
        space: SpaceId,
    },
    CreateSpace {
        name: String,
    },
    AddMember {
        space: SpaceId,
        node_id: String,
        name: String,
        role: Role,
    },
    SetRole {
        space: SpaceId,
        node_id: String,
        role: Role,
    },
    RemoveMember {
        space: SpaceId,
        node_id: String,
    },
    LeaveSpace {
        space: SpaceId,
    },
    JoinSpace {
        space: SpaceId,
        inviter: String,
    },
    /// Open an invitation, answer it (`Response::Invitation`), then wait for
    /// the joiner; the invitation is withdrawn if the client hangs up.
    Invite {
        space: SpaceId,
        by: InviteBy,
        minutes: u64,
        role: Role,
    },
    /// Redeem a ticket or short code and wait until the space is synced.
    Join {
        invitation: String,
        name: String,
    },
    /// This device's person's devices.
    Devices,
    /// Revoke one of this person's devices in every space.
    RemoveDevice {
        node_id: String,
    },
    /// Like `Invite`, for an invitation that links the joiner as one more
    /// device of this device's person.
    LinkDevice {
        by: InviteBy,
        minutes: u64,
    },
}

/// What a request's answer holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Reply {
    Nothing,
    Holder(Holder),
    Note(NoteId),
    Space(SpaceId),
    Checkout {
        text: String,
        base: Heads,
    },
    Changed(bool),
    History(Vec<ChangeInfo>),
    Imported(ImportReport),
    Compacted {
        before: u64,
        after: u64,
    },
    Spaces(Vec<SpaceInfo>),
    Members(Vec<Member>),
    /// The spaces a request touched.
    SpaceIds(Vec<SpaceId>),
    /// The joiner's node id.
    Joiner(String),
    /// The joined space and how many notes it has here now.
    Joined {
        joined: Joined,
        notes: usize,
    },
}

/// One message from the holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Response {
    /// A step of a long request, for a person.
    Progress(String),
    /// The invitation an `Invite` opened (the wait for a joiner follows).
    Invitation(Invitation),
    /// A join paired: the space is being synced.
    Paired(Joined),
    Done(Reply),
    /// The request failed: the message for a person and the CLI's exit code.
    Failed {
        message: String,
        exit_code: i32,
    },
}

/// Writes one message: length, then JSON.
pub fn write_message<T: Serialize>(out: &mut impl Write, message: &T) -> Result<()> {
    let body = encode(message)?;
    out.write_all(&body)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to the control socket", e))
}

/// The bytes of one message: length, then JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(message)
        .map_err(|e| Error::Invalid(format!("cannot encode a control message: {e}")))?;
    if json.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Invalid(format!(
            "the request is too large for the control socket ({} MiB; at most {} MiB)",
            json.len() >> 20,
            MAX_MESSAGE_BYTES >> 20
        )));
    }
    let mut body = Vec::with_capacity(4 + json.len());
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(&json);
    Ok(body)
}

/// Reads one message; `Ok(None)` if the other side closed before one began.
pub fn read_message<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("cannot read from the control socket", e)),
    }
    let len = checked_length(len)?;
    let mut body = vec![0u8; len];
    input
        .read_exact(&mut body)
        .map_err(|e| Error::io("the control socket closed mid-message", e))?;
    decode(&body).map(Some)
}

/// A message's length from its prefix, refused past the limit.
pub fn checked_length(prefix: [u8; 4]) -> Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(Error::Invalid(format!(
            "a control message of {len} bytes is over the limit of {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok(len)
}

/// A message's JSON body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::Invalid(format!("not a Peernotes control message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_an_oversized_one_is_refused_unread() {
        let envelope = Envelope {
            version: VERSION,
            request: Request::FindNote {
                typed: "3f2a".into(),
            },
        };
        let bytes = encode(&envelope).unwrap();
        let back: Envelope = read_message(&mut bytes.as_slice()).unwrap().unwrap();
        assert!(matches!(back.request, Request::FindNote { typed } if typed == "3f2a"));

        let huge = (MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes();
        let err = read_message::<Envelope>(&mut huge.as_slice()).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
        assert!(read_message::<Envelope>(&mut [].as_slice())
            .unwrap()
            .is_none());
    }

    #[test]
    fn heads_travel_as_hex_and_garbage_heads_are_refused() {
        let reply = Reply::Checkout {
            text: "x".into(),
            base: Heads::default(),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains("\"base\":[]"), "{json}");
        let bad = r#"{"kind":"checkout","value":{"text":"x","base":["zz"]}}"#;
        assert!(decode::<Reply>(bad.as_bytes()).is_err());
    }
}
