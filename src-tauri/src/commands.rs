//! The Tauri commands the UI calls (`ui/src/ipc.ts` is the other side). Each
//! maps onto `Node` (or its `Network`, or the `Window`'s note sync) and turns errors into
//! `CommandError`, a serialisable enum the UI can branch on. No note logic.
//!
//! A note's document syncs between the window and the `Node` with Automerge's
//! sync protocol; those messages travel as raw bytes (request body and
//! response), never as JSON.
//!
//! Commands are `async` so they run on Tauri's runtime, not the GTK main thread;
//! a slow disk then stalls one request, not the whole window.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use peernotes_sync::control::Holder;
use peernotes_sync::membership::Role;
use peernotes_sync::node::Window;
use peernotes_sync::{
    Error, Invitation, InviteBy, Joined, ListFilter, Member, Network, Node, NoteId, NoteSummary,
    NoteView, PeerStatus, SearchHit, SpaceId, SpaceInfo,
};
use serde::Serialize;
use tauri::ipc::{InvokeBody, Request, Response};
use tauri::State;

/// Search results shown at most.
const SEARCH_LIMIT: usize = 200;

/// What the commands share.
pub struct App {
    /// The data dir once this process holds it (at start, or after taking it
    /// over from a daemon).
    opened: OnceLock<Opened>,
    /// Who held the data dir when the app started, while it still does.
    held_by: Mutex<Option<Holder>>,
    /// The window's side of note sync.
    pub window: Window,
    data_dir: PathBuf,
}

/// The data dir's `Node` and its network, held by this process.
pub struct Opened {
    pub node: Arc<Node>,
    pub network: Arc<Network>,
}

impl App {
    /// An app that holds the data dir, or one waiting to take it over from
    /// `held_by`.
    pub fn new(data_dir: PathBuf, held_by: Option<Holder>) -> App {
        App {
            opened: OnceLock::new(),
            held_by: Mutex::new(held_by),
            window: Window::new(),
            data_dir,
        }
    }

    /// Records that this process now holds the data dir.
    pub fn set_opened(&self, opened: Opened) {
        *self.held_by.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.opened.set(opened).is_err() {
            tracing::warn!("the data dir was opened twice; keeping the first");
        }
    }

    pub fn opened(&self) -> Option<&Opened> {
        self.opened.get()
    }

    fn node(&self) -> Reply<&Arc<Node>> {
        self.opened()
            .map(|o| &o.node)
            .ok_or_else(|| self.not_open())
    }

    fn network(&self) -> Reply<&Arc<Network>> {
        self.opened()
            .map(|o| &o.network)
            .ok_or_else(|| self.not_open())
    }

    fn not_open(&self) -> CommandError {
        CommandError::Held {
            message: "another Peernotes process holds this data dir; take it over first".into(),
        }
    }

    pub fn held_by(&self) -> Option<Holder> {
        self.held_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A failed command, as the UI receives it: `{"kind": "note_not_found",
/// "message": "..."}`. `message` is written for a person and can be shown as is.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandError {
    /// The UI passed something that is not a note id.
    InvalidNoteId { message: String },
    /// No note has that id (deleted, or never synced here).
    NoteNotFound { message: String },
    /// Input the user typed is not usable (a name, a ticket, a code...).
    Invalid { message: String },
    /// Pairing failed: wrong code, expired ticket, inviter unreachable...
    Pairing { message: String },
    /// Another process (a `peernotes serve` daemon) holds the data dir.
    Held { message: String },
    /// The store could not be read or written (disk full, damaged, ...).
    Storage { message: String },
    /// Anything else; a bug rather than a user problem.
    Internal { message: String },
}

impl From<Error> for CommandError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::BadNoteId(_) => CommandError::InvalidNoteId { message },
            Error::NoteNotFound(_) | Error::AmbiguousNoteId { .. } => {
                CommandError::NoteNotFound { message }
            }
            Error::Invalid(_) => CommandError::Invalid { message },
            Error::DataDirInUse { .. }
            | Error::NoDataDir(_)
            | Error::DataDirUnusable { .. }
            | Error::StoreDamaged { .. }
            | Error::StoreTooNew { .. }
            | Error::DiskFull { .. }
            | Error::Storage { .. }
            | Error::NoteDamaged { .. }
            | Error::Io { .. } => CommandError::Storage { message },
            _ => CommandError::Internal { message },
        }
    }
}

impl CommandError {
    /// A pairing or network failure, with its causes for the person reading it.
    fn pairing(err: anyhow::Error) -> CommandError {
        match err.downcast::<Error>() {
            Ok(err @ Error::Invalid(_)) => CommandError::from(err),
            Ok(err) => CommandError::Pairing {
                message: err.to_string(),
            },
            Err(err) => CommandError::Pairing {
                message: format!("{err:#}"),
            },
        }
    }
}

type Reply<T> = Result<T, CommandError>;

fn logged<T>(command: &str, result: Result<T, Error>) -> Reply<T> {
    result.map_err(|err| {
        tracing::warn!(%err, "{command} failed");
        CommandError::from(err)
    })
}

fn note_id(id: &str) -> Reply<NoteId> {
    id.parse::<NoteId>().map_err(CommandError::from)
}

fn space_id(id: &str) -> Reply<SpaceId> {
    id.parse::<SpaceId>().map_err(|_| CommandError::Invalid {
        message: format!("`{id}` is not a space id"),
    })
}

/// Whether this window holds the data dir (mirrors `DeviceState` in `ui/src/ipc.ts`).
#[derive(Debug, Serialize)]
pub struct DeviceState {
    /// The process holding the data dir instead, while it does.
    held_by: Option<Holder>,
}

#[tauri::command]
pub async fn device_state(app: State<'_, App>) -> Reply<DeviceState> {
    Ok(DeviceState {
        held_by: app.opened().is_none().then(|| app.held_by()).flatten(),
    })
}

/// Asks the daemon holding the data dir to save and stop, then holds it here.
#[tauri::command]
pub async fn take_over(handle: tauri::AppHandle, app: State<'_, App>) -> Reply<()> {
    if app.opened().is_some() {
        return Ok(());
    }
    let dir = app.data_dir.clone();
    let node = tauri::async_runtime::spawn_blocking(move || crate::holding::take_over_from(&dir))
        .await
        .map_err(|e| CommandError::Internal {
            message: format!("taking over failed: {e}"),
        })?
        .map_err(|e| CommandError::Held {
            message: format!("{e:#}"),
        })?;
    crate::holding::hold(&handle, node).map_err(|e| CommandError::Internal {
        message: format!("{e:#}"),
    })
}

/// Notes of one space (or all), most recently edited first.
#[tauri::command]
pub async fn list_notes(
    app: State<'_, App>,
    space: Option<String>,
    trash: bool,
) -> Reply<Vec<NoteSummary>> {
    let filter = if trash {
        ListFilter::Trash
    } else {
        ListFilter::Active
    };
    let space = space.as_deref().map(space_id).transpose()?;
    logged("list_notes", app.node()?.list_in(filter, space))
}

/// One note's cached text and metadata.
#[tauri::command]
pub async fn get_note(app: State<'_, App>, id: String) -> Reply<NoteView> {
    logged("get_note", app.node()?.get(&note_id(&id)?))
}

#[tauri::command]
pub async fn search_notes(app: State<'_, App>, query: String) -> Reply<Vec<SearchHit>> {
    logged("search_notes", app.node()?.search(&query, SEARCH_LIMIT))
}

/// Creates a note in `space` (the private space if none) and returns its row.
#[tauri::command]
pub async fn create_note(
    app: State<'_, App>,
    space: Option<String>,
    text: String,
) -> Reply<NoteSummary> {
    let space = match space.as_deref().map(space_id).transpose()? {
        Some(space) => space,
        None => logged("create_note", app.node()?.private_space())?,
    };
    let id = logged("create_note", app.node()?.create_in(space, &text))?;
    logged("create_note", app.node()?.summary(&id))
}

#[tauri::command]
pub async fn trash_note(app: State<'_, App>, id: String) -> Reply<()> {
    logged("trash_note", app.node()?.trash(&note_id(&id)?))
}

#[tauri::command]
pub async fn restore_note(app: State<'_, App>, id: String) -> Reply<()> {
    logged("restore_note", app.node()?.restore(&note_id(&id)?))
}

/// The note's whole document, as raw bytes, for the window's replica. Starts a
/// fresh sync state for it: the window has exactly this document now.
#[tauri::command]
pub async fn load_note_doc(app: State<'_, App>, id: String) -> Reply<Response> {
    let id = note_id(&id)?;
    let bytes = logged("load_note_doc", app.window.open(app.node()?, &id))?;
    Ok(Response::new(bytes))
}

/// One round of Automerge sync with the window: the request body is the
/// window's message (empty for none), the `note-id` header names the note, and
/// the response is the reply (empty for none).
#[tauri::command]
pub async fn sync_note(app: State<'_, App>, request: Request<'_>) -> Reply<Response> {
    let id = request
        .headers()
        .get("note-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| CommandError::Invalid {
            message: "sync_note needs a note-id header".into(),
        })?;
    let id = note_id(id)?;
    let message = match request.body() {
        InvokeBody::Raw(bytes) if bytes.is_empty() => None,
        InvokeBody::Raw(bytes) => Some(bytes.as_slice()),
        InvokeBody::Json(_) => {
            return Err(CommandError::Invalid {
                message: "sync_note takes raw bytes".into(),
            })
        }
    };
    let reply = logged("sync_note", app.window.sync(app.node()?, &id, message))?;
    Ok(Response::new(reply.unwrap_or_default()))
}

/// Forgets the window's sync state for a note it closed.
#[tauri::command]
pub async fn close_note_doc(app: State<'_, App>, id: String) -> Reply<()> {
    app.window.close(&note_id(&id)?);
    Ok(())
}

/// Shares where the window's cursor is in a note with connected members (a
/// no-op while sync is not running: there is nobody to tell).
#[tauri::command]
pub async fn set_presence(
    app: State<'_, App>,
    id: String,
    anchor: usize,
    head: usize,
) -> Reply<()> {
    let id = note_id(&id)?;
    app.network()?
        .share_presence(&id, anchor, head)
        .map_err(|e| CommandError::Internal {
            message: format!("{e:#}"),
        })
}

/// This device's node id: the window's Automerge actor ids start with it, so
/// its edits are attributed to this device.
#[tauri::command]
pub async fn device_id(app: State<'_, App>) -> Reply<String> {
    Ok(app.node()?.node_id().to_string())
}

#[tauri::command]
pub async fn list_spaces(app: State<'_, App>) -> Reply<Vec<SpaceInfo>> {
    logged("list_spaces", app.node()?.spaces())
}

#[tauri::command]
pub async fn create_space(app: State<'_, App>, name: String) -> Reply<SpaceInfo> {
    let id = logged("create_space", app.node()?.create_space(&name))?;
    logged("create_space", app.node()?.space_info(id))
}

#[tauri::command]
pub async fn list_members(app: State<'_, App>, space: String) -> Reply<Vec<Member>> {
    logged("list_members", app.node()?.members(space_id(&space)?))
}

#[tauri::command]
pub async fn set_role(
    app: State<'_, App>,
    space: String,
    node_id: String,
    role: String,
) -> Reply<()> {
    let role = logged("set_role", role.parse())?;
    logged(
        "set_role",
        app.node()?
            .set_role(space_id(&space)?, node_id.trim(), role),
    )
}

#[tauri::command]
pub async fn remove_member(app: State<'_, App>, space: String, node_id: String) -> Reply<()> {
    logged(
        "remove_member",
        app.node()?.remove_member(space_id(&space)?, node_id.trim()),
    )
}

/// The network side of the window (mirrors `NetworkStatus` in `ui/src/ipc.ts`).
#[derive(Debug, Serialize)]
pub struct NetworkStatus {
    node_id: String,
    online: bool,
    problem: Option<String>,
    peers: Vec<PeerStatus>,
}

#[tauri::command]
pub async fn network_status(app: State<'_, App>) -> Reply<NetworkStatus> {
    Ok(NetworkStatus {
        node_id: app.node()?.node_id().to_string(),
        online: app.network()?.is_online(),
        problem: app.network()?.problem(),
        peers: logged("network_status", app.node()?.status())?,
    })
}

#[tauri::command]
pub async fn invite(
    app: State<'_, App>,
    space: String,
    minutes: u64,
    role: Option<String>,
) -> Reply<Invitation> {
    let space = space_id(&space)?;
    let role = match role {
        Some(role) => logged("invite", role.parse())?,
        None => Role::Editor,
    };
    app.network()?
        .invite_as(space, minutes, InviteBy::TicketAndCode, role)
        .map_err(CommandError::pairing)
}

/// An invitation that links the device redeeming it as one more of this
/// person's devices.
#[tauri::command]
pub async fn invite_device(app: State<'_, App>, minutes: u64) -> Reply<Invitation> {
    app.network()?
        .invite_device(minutes, InviteBy::TicketAndCode)
        .map_err(CommandError::pairing)
}

/// Revokes one of this person's devices (a lost laptop) in every space.
#[tauri::command]
pub async fn remove_device(app: State<'_, App>, node_id: String) -> Reply<()> {
    logged("remove_device", app.node()?.remove_device(node_id.trim())).map(|_| ())
}

#[tauri::command]
pub async fn cancel_invite(app: State<'_, App>) -> Reply<()> {
    app.network()?.cancel_invite();
    Ok(())
}

#[tauri::command]
pub async fn join(app: State<'_, App>, invitation: String, name: Option<String>) -> Reply<Joined> {
    let name = name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(peernotes_sync::node::device_name);
    app.network()?
        .join(&invitation, &name, |_| {})
        .await
        .map_err(CommandError::pairing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_reach_the_ui_as_a_kind_and_a_readable_message() {
        let err = CommandError::from(Error::NoteNotFound("3f2a".into()));
        let json = serde_json_value(&err);
        assert_eq!(json["kind"], "note_not_found");
        assert!(json["message"].as_str().unwrap().contains("3f2a"), "{json}");

        let err = CommandError::from(Error::BadNoteId("zz".into()));
        assert_eq!(serde_json_value(&err)["kind"], "invalid_note_id");

        let err = CommandError::pairing(anyhow::anyhow!("the code is wrong"));
        assert_eq!(serde_json_value(&err)["kind"], "pairing");
        let err = CommandError::pairing(Error::Invalid("not a code".into()).into());
        assert_eq!(serde_json_value(&err)["kind"], "invalid");
    }

    fn serde_json_value(err: &CommandError) -> serde_json::Value {
        serde_json::to_value(err).expect("CommandError serialises")
    }
}
