//! `Client`: the CLI's side of the control socket. Blocking, one connection
//! per request. Connecting succeeds only when a live holder answers, so a
//! stale socket file left by a killed process reads as "nobody holds it".

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{read_message, socket_path, write_message, Envelope, Holder, Reply, Request, Response};
use super::{Device, VERSION};
use crate::error::{Error, Result};
use crate::membership::Role;
use crate::network::{Invitation, InviteBy, Joined};
use crate::node::{Heads, SpaceInfo};
use crate::note::{ChangeInfo, NoteId};
use crate::space::{Member, SpaceId};
use crate::vault::ImportReport;

/// A connection point to the process holding a data dir.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    holder: Holder,
}

impl Client {
    /// Reaches the process holding `data_dir`, if one answers on its socket.
    /// `Ok(None)` when there is no socket or nobody listens on it (a stale one).
    pub fn connect(data_dir: &Path) -> Result<Option<Client>> {
        let socket = socket_path(data_dir);
        if !socket.exists() {
            return Ok(None);
        }
        let mut client = Client {
            socket,
            holder: Holder::unknown(),
        };
        match client.ask(Request::Holder) {
            Ok(Reply::Holder(holder)) => {
                client.holder = holder;
                Ok(Some(client))
            }
            Ok(_) => Err(unexpected()),
            Err(Error::Io { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Which process this client reaches.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    fn open(&self, request: Request) -> Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| Error::io(format!("cannot reach {}", self.socket.display()), e))?;
        write_message(
            &mut stream,
            &Envelope {
                version: VERSION,
                request,
            },
        )?;
        Ok(stream)
    }

    /// Sends a request and reads the answer, passing progress lines on.
    fn ask_with(&self, request: Request, on: &mut dyn FnMut(Response)) -> Result<Reply> {
        let mut stream = self.open(request)?;
        loop {
            let response: Response = read_message(&mut stream)?.ok_or_else(|| {
                Error::Invalid(format!(
                    "the {} holding the data dir hung up without an answer",
                    self.holder.kind
                ))
            })?;
            match response {
                Response::Done(reply) => return Ok(reply),
                Response::Failed { message, exit_code } => {
                    return Err(Error::Remote { message, exit_code })
                }
                other => on(other),
            }
        }
    }

    fn ask(&self, request: Request) -> Result<Reply> {
        self.ask_with(request, &mut |_| {})
    }

    /// Asks the holder to raise its window. False if it has none (`serve`).
    pub fn focus(&self) -> Result<bool> {
        match self.ask(Request::Focus) {
            Ok(_) => Ok(true),
            Err(Error::Remote { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the holder to flush and stop (`serve` agrees; the app does not).
    pub fn stop(&self) -> Result<()> {
        self.ask(Request::Stop).map(|_| ())
    }

    /// Opens an invitation in the holder; `on_invitation` shows it, then this
    /// waits for a device to join and have the space. Returns its node id.
    pub fn invite(
        &self,
        space: SpaceId,
        by: InviteBy,
        minutes: u64,
        role: Role,
        on_invitation: &mut dyn FnMut(&Invitation),
    ) -> Result<String> {
        self.invite_with(
            Request::Invite {
                space,
                by,
                minutes,
                role,
            },
            on_invitation,
        )
    }

    /// Opens an invitation in the holder that links the device redeeming it
    /// as one more device of this person; then like `invite`.
    pub fn invite_device(
        &self,
        by: InviteBy,
        minutes: u64,
        on_invitation: &mut dyn FnMut(&Invitation),
    ) -> Result<String> {
        self.invite_with(Request::LinkDevice { by, minutes }, on_invitation)
    }

    fn invite_with(
        &self,
        request: Request,
        on_invitation: &mut dyn FnMut(&Invitation),
    ) -> Result<String> {
        let reply = self.ask_with(request, &mut |response| {
            if let Response::Invitation(invitation) = response {
                on_invitation(&invitation);
            }
        })?;
        match reply {
            Reply::Joiner(joiner) => Ok(joiner),
            _ => Err(unexpected()),
        }
    }

    /// Joins through the holder: `on_progress` hears each step, `on_paired`
    /// the space once paired; returns how many notes arrived.
    pub fn join(
        &self,
        invitation: &str,
        name: &str,
        on_progress: &mut dyn FnMut(&str),
        on_paired: &mut dyn FnMut(&Joined),
    ) -> Result<(Joined, usize)> {
        let request = Request::Join {
            invitation: invitation.to_string(),
            name: name.to_string(),
        };
        let reply = self.ask_with(request, &mut |response| match response {
            Response::Progress(line) => on_progress(&line),
            Response::Paired(joined) => on_paired(&joined),
            _ => {}
        })?;
        match reply {
            Reply::Joined { joined, notes } => Ok((joined, notes)),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> Error {
    Error::Invalid("the process holding the data dir answered something unexpected".into())
}

impl Device for Client {
    fn find(&self, typed: &str) -> Result<NoteId> {
        match self.ask(Request::FindNote {
            typed: typed.to_string(),
        })? {
            Reply::Note(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn find_space(&self, typed: &str) -> Result<SpaceId> {
        match self.ask(Request::FindSpace {
            typed: typed.to_string(),
        })? {
            Reply::Space(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn private_space(&self) -> Result<SpaceId> {
        match self.ask(Request::PrivateSpace)? {
            Reply::Space(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn create_in(&self, space: SpaceId, text: &str) -> Result<NoteId> {
        match self.ask(Request::Create {
            space,
            text: text.to_string(),
        })? {
            Reply::Note(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn checkout(&self, id: &NoteId) -> Result<(String, Heads)> {
        match self.ask(Request::Checkout { id: id.clone() })? {
            Reply::Checkout { text, base } => Ok((text, base)),
            _ => Err(unexpected()),
        }
    }

    fn replace_text_since(&self, id: &NoteId, base: &Heads, text: &str) -> Result<bool> {
        match self.ask(Request::Replace {
            id: id.clone(),
            base: base.clone(),
            text: text.to_string(),
        })? {
            Reply::Changed(changed) => Ok(changed),
            _ => Err(unexpected()),
        }
    }

    fn trash(&self, id: &NoteId) -> Result<()> {
        self.ask(Request::Trash { id: id.clone() }).map(|_| ())
    }

    fn restore(&self, id: &NoteId) -> Result<()> {
        self.ask(Request::Restore { id: id.clone() }).map(|_| ())
    }

    fn history(&self, id: &NoteId, limit: usize) -> Result<Vec<ChangeInfo>> {
        match self.ask(Request::History {
            id: id.clone(),
            limit,
        })? {
            Reply::History(changes) => Ok(changes),
            _ => Err(unexpected()),
        }
    }

    fn import(&self, dir: &Path, skip_invalid: bool) -> Result<ImportReport> {
        // The holder has its own working directory: send the full path.
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
        match self.ask(Request::Import { dir, skip_invalid })? {
            Reply::Imported(report) => Ok(report),
            _ => Err(unexpected()),
        }
    }

    fn compact(&self) -> Result<(u64, u64)> {
        match self.ask(Request::Compact)? {
            Reply::Compacted { before, after } => Ok((before, after)),
            _ => Err(unexpected()),
        }
    }

    fn spaces(&self) -> Result<Vec<SpaceInfo>> {
        match self.ask(Request::Spaces)? {
            Reply::Spaces(spaces) => Ok(spaces),
            _ => Err(unexpected()),
        }
    }

    fn members(&self, space: SpaceId) -> Result<Vec<Member>> {
        match self.ask(Request::Members { space })? {
            Reply::Members(members) => Ok(members),
            _ => Err(unexpected()),
        }
    }

    fn create_space(&self, name: &str) -> Result<SpaceId> {
        match self.ask(Request::CreateSpace {
            name: name.to_string(),
        })? {
            Reply::Space(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn add_member(&self, space: SpaceId, node_id: &str, name: &str, role: Role) -> Result<()> {
        self.ask(Request::AddMember {
            space,
            node_id: node_id.to_string(),
            name: name.to_string(),
            role,
        })
        .map(|_| ())
    }

    fn set_role(&self, space: SpaceId, node_id: &str, role: Role) -> Result<()> {
        self.ask(Request::SetRole {
            space,
            node_id: node_id.to_string(),
            role,
        })
        .map(|_| ())
    }

    fn leave_space(&self, space: SpaceId) -> Result<()> {
        self.ask(Request::LeaveSpace { space }).map(|_| ())
    }

    fn remove_member(&self, space: SpaceId, node_id: &str) -> Result<()> {
        self.ask(Request::RemoveMember {
            space,
            node_id: node_id.to_string(),
        })
        .map(|_| ())
    }

    fn join_space(&self, space: SpaceId, inviter: &str) -> Result<()> {
        self.ask(Request::JoinSpace {
            space,
            inviter: inviter.to_string(),
        })
        .map(|_| ())
    }

    fn devices(&self) -> Result<Vec<Member>> {
        match self.ask(Request::Devices)? {
            Reply::Members(devices) => Ok(devices),
            _ => Err(unexpected()),
        }
    }

    fn remove_device(&self, node_id: &str) -> Result<Vec<SpaceId>> {
        match self.ask(Request::RemoveDevice {
            node_id: node_id.to_string(),
        })? {
            Reply::SpaceIds(spaces) => Ok(spaces),
            _ => Err(unexpected()),
        }
    }
}
