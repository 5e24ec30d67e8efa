//! `Server`: the holder's side of the control socket. Runs on the holder's
//! tokio runtime; each connection is one request, answered from the holder's
//! `Node` (on a blocking thread: the Node does disk work) or its `Network`.
//! Everything a client sends is bounded: who (same uid only), how many at
//! once (`MAX_CLIENTS`), how big (`MAX_MESSAGE_BYTES`, before buffering), how
//! slow (`REQUEST_TIMEOUT`), which version.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::{
    checked_length, decode, encode, socket_path, Device, Envelope, Reply, Request, Response,
    MAX_CLIENTS, REQUEST_TIMEOUT, VERSION,
};
use crate::error::{Error, Result};
use crate::network::{Network, Until};
use crate::node::{now_ms, Node};

/// What kind of process holds a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderKind {
    /// The desktop app.
    App,
    /// `peernotes serve`.
    Serve,
    /// An older or unknown holder.
    Unknown,
}

impl fmt::Display for HolderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderKind::App => "Peernotes app",
            HolderKind::Serve => "`peernotes serve` daemon",
            HolderKind::Unknown => "Peernotes process",
        })
    }
}

/// The process holding a data dir, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub kind: HolderKind,
    pub pid: u32,
    /// Unix milliseconds it started holding the data dir.
    pub since: i64,
    pub node_id: String,
}

impl Holder {
    pub(crate) fn unknown() -> Holder {
        Holder {
            kind: HolderKind::Unknown,
            pid: 0,
            since: 0,
            node_id: String::new(),
        }
    }
}

/// What the holder lets clients do besides reaching its `Node`.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Raises the window (the app).
    pub focus: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Asked to flush and stop (`serve`).
    pub stop: Option<Arc<Notify>>,
}

/// The listening control socket; removed when dropped.
pub struct Server {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Server {
    /// Listens on the data dir's socket (a stale one is replaced: the caller
    /// holds the data dir's lock, so nobody else can be listening). Must run
    /// inside a tokio runtime.
    pub fn start(network: Arc<Network>, kind: HolderKind, hooks: Hooks) -> Result<Server> {
        let node = network.node().clone();
        let path = socket_path(node.data_dir());
        let unusable = |e: std::io::Error| {
            Error::io(
                format!("cannot listen on the control socket {}", path.display()),
                e,
            )
        };
        super::remove_stale_socket(node.data_dir());
        let listener = UnixListener::bind(&path).map_err(unusable)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(unusable)?;
        let holder = Holder {
            kind,
            pid: std::process::id(),
            since: now_ms(),
            node_id: node.node_id().to_string(),
        };
        let context = Arc::new(Context {
            network,
            holder,
            hooks,
            slots: Arc::new(Semaphore::new(MAX_CLIENTS)),
        });
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let context = context.clone();
                        tokio::spawn(async move { context.serve(stream).await });
                    }
                    Err(e) => {
                        tracing::warn!("the control socket failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Server { path, task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Context {
    network: Arc<Network>,
    holder: Holder,
    hooks: Hooks,
    slots: Arc<Semaphore>,
}

impl Context {
    async fn serve(&self, mut stream: UnixStream) {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let busy = failed(&Error::Invalid(
                "the Peernotes process holding the data dir is busy; try again".into(),
            ));
            let _ = send(&mut stream, &busy).await;
            return;
        };
        // The socket file is 0600 in a 0700 dir; check the uid all the same.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let ours = unsafe { libc::geteuid() };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == ours => {}
            _ => {
                tracing::warn!("refused a control connection from another user");
                return;
            }
        }
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_envelope(&mut stream)).await
        {
            Ok(Ok(Some(envelope))) if envelope.version == VERSION => envelope.request,
            Ok(Ok(Some(envelope))) => {
                let e = Error::Invalid(format!(
                    "this Peernotes speaks control protocol {VERSION}, the request {}; \
                     use the same version of the CLI and the app",
                    envelope.version
                ));
                let _ = send(&mut stream, &failed(&e)).await;
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::info!("refused a control request: {e}");
                let _ = send(&mut stream, &failed(&e)).await;
                return;
            }
            Err(_) => {
                let e = Error::Invalid(format!(
                    "the request did not arrive within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ));
                let _ = send(&mut stream, &failed(&e)).await;
                return;
            }
        };
        tracing::info!(request = request_name(&request), "control request");
        let answer = match request {
            Request::Invite {
                space,
                by,
                minutes,
                role,
            } => {
                self.invite(&mut stream, Some((space, role)), by, minutes)
                    .await
            }
            Request::LinkDevice { by, minutes } => {
                self.invite(&mut stream, None, by, minutes).await
            }
            Request::Join { invitation, name } => self.join(&mut stream, &invitation, &name).await,
            Request::Holder => Ok(Reply::Holder(self.holder.clone())),
            Request::Focus => match &self.hooks.focus {
                Some(focus) => {
                    focus();
                    Ok(Reply::Nothing)
                }
                None => Err(Error::Invalid(format!(
                    "the {} has no window",
                    self.holder.kind
                ))),
            },
            Request::Stop => match &self.hooks.stop {
                Some(stop) => {
                    stop.notify_one();
                    Ok(Reply::Nothing)
                }
                None => Err(Error::Invalid(format!(
                    "the {} is closed from its window",
                    self.holder.kind
                ))),
            },
            request => {
                let node = self.network.node().clone();
                tokio::task::spawn_blocking(move || answer(&node, request))
                    .await
                    .unwrap_or_else(|e| Err(Error::Invalid(format!("the request failed: {e}"))))
            }
        };
        let response = match answer {
            Ok(reply) => Response::Done(reply),
            Err(e) => failed(&e),
        };
        if let Err(e) = send(&mut stream, &response).await {
            tracing::info!("the control client left before its answer: {e}");
        }
    }

    /// Opens the invitation (into `space` with `role`, or, `None`, one that
    /// links a device of this person), sends it, then waits for the joiner;
    /// withdraws it if the client hangs up first.
    async fn invite(
        &self,
        stream: &mut UnixStream,
        member: Option<(crate::space::SpaceId, crate::membership::Role)>,
        by: crate::network::InviteBy,
        minutes: u64,
    ) -> Result<Reply> {
        let invitation = match member {
            Some((space, role)) => self.network.invite_as(space, minutes, by, role),
            None => self.network.invite_device(minutes, by),
        }
        .map_err(invalid)?;
        send(stream, &Response::Invitation(invitation)).await?;
        let (mut read, _write) = stream.split();
        let mut byte = [0u8; 1];
        let result = tokio::select! {
            joined = self.network.wait_for_joiner() => joined.map(Reply::Joiner).map_err(invalid),
            _ = read.read(&mut byte) => Err(Error::Invalid("the inviting command went away".into())),
        };
        if result.is_err() {
            self.network.cancel_invite();
        }
        result
    }

    /// Pairs, then waits until the space is synced with the inviter.
    async fn join(&self, stream: &mut UnixStream, invitation: &str, name: &str) -> Result<Reply> {
        let (lines, mut progress) = tokio::sync::mpsc::unbounded_channel::<String>();
        let pairing = self.network.join(invitation, name, move |line| {
            let _ = lines.send(line.to_string());
        });
        tokio::pin!(pairing);
        let joined = loop {
            tokio::select! {
                joined = &mut pairing => break joined.map_err(invalid)?,
                Some(line) = progress.recv() => send(stream, &Response::Progress(line)).await?,
            }
        };
        while let Ok(line) = progress.try_recv() {
            send(stream, &Response::Progress(line)).await?;
        }
        send(stream, &Response::Paired(joined.clone())).await?;
        self.network
            .wait_until_synced(joined.space, &joined.inviter, Until::WeHaveTheirs)
            .await
            .map_err(invalid)?;
        let notes = self
            .network
            .node()
            .spaces()?
            .into_iter()
            .find(|s| s.id == joined.space)
            .map(|s| s.notes)
            .unwrap_or(0);
        Ok(Reply::Joined { joined, notes })
    }
}

/// Answers a request that only needs the `Node`.
fn answer(node: &Node, request: Request) -> Result<Reply> {
    Ok(match request {
        Request::FindNote { typed } => Reply::Note(node.find(&typed)?),
        Request::FindSpace { typed } => Reply::Space(node.find_space(&typed)?),
        Request::PrivateSpace => Reply::Space(node.private_space()?),
        Request::Create { space, text } => Reply::Note(Device::create_in(node, space, &text)?),
        Request::Checkout { id } => {
            let (text, base) = node.checkout(&id)?;
            Reply::Checkout { text, base }
        }
        Request::Replace { id, base, text } => {
            Reply::Changed(Device::replace_text_since(node, &id, &base, &text)?)
        }
        Request::Trash { id } => {
            Device::trash(node, &id)?;
            Reply::Nothing
        }
        Request::Restore { id } => {
            Device::restore(node, &id)?;
            Reply::Nothing
        }
        Request::History { id, limit } => Reply::History(node.history(&id, limit)?),
        Request::Import { dir, skip_invalid } => {
            Reply::Imported(Device::import(node, &dir, skip_invalid)?)
        }
        Request::Compact => {
            let (before, after) = Device::compact(node)?;
            Reply::Compacted { before, after }
        }
        Request::Spaces => Reply::Spaces(node.spaces()?),
        Request::Members { space } => Reply::Members(node.members(space)?),
        Request::CreateSpace { name } => Reply::Space(node.create_space(&name)?),
        Request::AddMember {
            space,
            node_id,
            name,
            role,
        } => {
            node.add_member(space, &node_id, &name, role)?;
            Reply::Nothing
        }
        Request::SetRole {
            space,
            node_id,
            role,
        } => {
            node.set_role(space, &node_id, role)?;
            Reply::Nothing
        }
        Request::RemoveMember { space, node_id } => {
            node.remove_member(space, &node_id)?;
            Reply::Nothing
        }
        Request::LeaveSpace { space } => {
            node.leave_space(space)?;
            Reply::Nothing
        }
        Request::JoinSpace { space, inviter } => {
            node.join_space(space, &inviter)?;
            Reply::Nothing
        }
        Request::Devices => Reply::Members(node.devices()?),
        Request::RemoveDevice { node_id } => Reply::SpaceIds(node.remove_device(&node_id)?),
        Request::Holder
        | Request::Focus
        | Request::Stop
        | Request::Invite { .. }
        | Request::LinkDevice { .. }
        | Request::Join { .. } => return Err(Error::Invalid("not a request for the Node".into())),
    })
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Holder => "holder",
        Request::Focus => "focus",
        Request::Stop => "stop",
        Request::FindNote { .. } => "find-note",
        Request::FindSpace { .. } => "find-space",
        Request::PrivateSpace => "private-space",
        Request::Create { .. } => "create",
        Request::Checkout { .. } => "checkout",
        Request::Replace { .. } => "replace",
        Request::Trash { .. } => "trash",
        Request::Restore { .. } => "restore",
        Request::History { .. } => "history",
        Request::Import { .. } => "import",
        Request::Compact => "compact",
        Request::Spaces => "spaces",
        Request::Members { .. } => "members",
        Request::CreateSpace { .. } => "create-space",
        Request::AddMember { .. } => "add-member",
        Request::SetRole { .. } => "set-role",
        Request::RemoveMember { .. } => "remove-member",
        Request::LeaveSpace { .. } => "leave-space",
        Request::JoinSpace { .. } => "join-space",
        Request::Invite { .. } => "invite",
        Request::Join { .. } => "join",
        Request::Devices => "devices",
        Request::RemoveDevice { .. } => "remove-device",
        Request::LinkDevice { .. } => "link-device",
    }
}

/// A failure as a client receives it.
fn failed(e: &Error) -> Response {
    Response::Failed {
        message: e.to_string(),
        exit_code: e.exit_code(),
    }
}

/// A network failure (pairing, sync) as an error with its causes.
fn invalid(e: anyhow::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => Error::Remote {
            message: format!("{e:#}"),
            exit_code: crate::error::exit_code::ERROR,
        },
    }
}

async fn send(stream: &mut UnixStream, response: &Response) -> Result<()> {
    let bytes = encode(response)?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| Error::io("cannot answer on the control socket", e))
}

async fn read_envelope(stream: &mut UnixStream) -> Result<Option<Envelope>> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("cannot read the control request", e)),
    }
    let len = checked_length(prefix)?;
    // Grown as bytes arrive, so a length alone reserves nothing.
    let mut body = Vec::new();
    stream
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|e| Error::io("cannot read the control request", e))?;
    if body.len() < len {
        return Err(Error::Invalid(format!(
            "the control request was cut short ({} of {len} bytes)",
            body.len()
        )));
    }
    decode(&body).map(Some)
}
