//! The app window as a replica of the notes it shows. The window keeps its own
//! Automerge document per open note and syncs it with the `Node` by Automerge's
//! sync protocol, exactly as a peer would — so a keystroke in the window and a
//! change from the network meet in the same merge, with no position rebasing.
//! `Window` keeps the sync state of each note a window has open, so the app
//! never handles Automerge itself.

use std::collections::HashMap;
use std::sync::Mutex;

use automerge::sync::{self, SyncDoc};

use super::{now_ms, Node, NodeEvent};
use crate::error::{Error, Result};
use crate::note::NoteId;

/// The longest sync message the window may send (its edits between two syncs).
pub const MAX_WINDOW_MESSAGE: usize = 64 * 1024 * 1024;

impl Node {
    /// The note's whole document, for the window to load.
    pub fn note_document(&self, id: &NoteId) -> Result<Vec<u8>> {
        self.with_state(|st| Ok(st.load(id)?.note.save()))
    }

    /// Takes the window's sync message for a note (if any), applies it — the
    /// window's edits become this device's edits, saved by the group commit and
    /// sent to peers — and returns the reply for the window, if there is one.
    pub fn sync_window(
        &self,
        id: &NoteId,
        state: &mut sync::State,
        message: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let message = match message {
            Some(bytes) if bytes.len() > MAX_WINDOW_MESSAGE => {
                return Err(Error::Invalid(
                    "the window sent an oversized sync message".into(),
                ))
            }
            Some(bytes) => Some(sync::Message::decode(bytes).map_err(|e| {
                Error::Invalid(format!("malformed sync message from the window: {e}"))
            })?),
            None => None,
        };
        let reply = self.with_state(|st| {
            st.require_writer()?;
            let open = st.load(id)?;
            let doc = open.note.doc_mut();
            if let Some(message) = message {
                let before = doc.get_heads();
                doc.sync()
                    .receive_sync_message(state, message)
                    .map_err(|e| {
                        Error::Invalid(format!("the window's changes do not apply: {e}"))
                    })?;
                if doc.get_heads() != before {
                    open.updated_at = now_ms();
                    st.dirty.insert(id.clone());
                    st.outbox.push(NodeEvent::NoteChanged {
                        id: id.clone(),
                        by_peer: None,
                    });
                }
            }
            let doc = st.load(id)?.note.doc_mut();
            Ok(doc.sync().generate_sync_message(state).map(|m| m.encode()))
        });
        // Wake the group commit: the window's edits are saved within its window.
        self.shared.wake.notify_one();
        reply
    }
}

/// One window's side of note sync: a sync state per note it has open.
#[derive(Default)]
pub struct Window {
    states: Mutex<HashMap<NoteId, sync::State>>,
}

impl Window {
    pub fn new() -> Window {
        Window::default()
    }

    /// The note's whole document for the window to load; its sync starts
    /// afresh (the window has exactly this document now).
    pub fn open(&self, node: &Node, id: &NoteId) -> Result<Vec<u8>> {
        let bytes = node.note_document(id)?;
        self.states().insert(id.clone(), sync::State::new());
        Ok(bytes)
    }

    /// One round of sync with the window's copy of a note: its message in (if
    /// any), the reply out (if any). A note syncs one round at a time (the
    /// window waits for each reply); other notes' rounds are not held up.
    pub fn sync(
        &self,
        node: &Node,
        id: &NoteId,
        message: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let mut state = self.states().remove(id).unwrap_or_default();
        let reply = node.sync_window(id, &mut state, message);
        self.states().insert(id.clone(), state);
        reply
    }

    /// Forgets a note the window closed.
    pub fn close(&self, id: &NoteId) {
        self.states().remove(id);
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<NoteId, sync::State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}
