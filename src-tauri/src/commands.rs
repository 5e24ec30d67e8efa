//! The Tauri commands the UI calls (`ui/src/ipc.ts` is the other side). Each
//! maps onto one `Node` call and turns `peernotes_sync::Error` into
//! `CommandError`, a serialisable enum the UI can branch on. Nothing else: no
//! caching, no note logic.
//!
//! Commands are `async` so they run on Tauri's runtime, not the GTK main thread;
//! a slow disk then stalls one request, not the whole window.

use peernotes_sync::{Error, ListFilter, Node, NoteId, NoteSummary, NoteView};
use serde::Serialize;
use tauri::State;

/// A failed command, as the UI receives it: `{"kind": "note_not_found",
/// "message": "..."}`. `message` is written for a person and can be shown as is.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandError {
    /// The UI passed something that is not a note id.
    InvalidNoteId { message: String },
    /// No note has that id (deleted, or never synced here).
    NoteNotFound { message: String },
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

/// Notes not in the trash, in the order the `Node` lists them.
#[tauri::command]
pub async fn list_notes(node: State<'_, Node>) -> Result<Vec<NoteSummary>, CommandError> {
    node.list(ListFilter::Active).map_err(|err| {
        tracing::warn!(%err, "list_notes failed");
        CommandError::from(err)
    })
}

/// One note's full text and metadata.
#[tauri::command]
pub async fn get_note(node: State<'_, Node>, id: String) -> Result<NoteView, CommandError> {
    let result = id.parse::<NoteId>().and_then(|note_id| node.get(&note_id));
    result.map_err(|err| {
        tracing::warn!(note = %id, %err, "get_note failed");
        CommandError::from(err)
    })
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
    }

    fn serde_json_value(err: &CommandError) -> serde_json::Value {
        serde_json::to_value(err).expect("CommandError serialises")
    }
}
