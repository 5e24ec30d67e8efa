//! The error type every `peernotes-sync` API returns.
//!
//! Each variant's message is written for the person at the keyboard: it names the
//! file, note or data dir involved and, where there is one, the fix. The CLI maps
//! variants onto exit codes (`Error::exit_code`).

use std::path::PathBuf;

/// Errors from the note model, the store and the `Node` façade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no note matches `{0}` (see `peernotes list`, or `peernotes list --trash`)")]
    NoteNotFound(String),

    #[error("no space matches `{0}` (see `peernotes space list`)")]
    SpaceNotFound(String),

    #[error("`{prefix}` matches {count} notes; type more of the id")]
    AmbiguousNoteId { prefix: String, count: usize },

    #[error("`{0}` is not a note id: ids are hexadecimal, like `3f2a9c1e`")]
    BadNoteId(String),

    #[error(
        "the data dir {dir} is in use by another Peernotes process{}; \
         close it, or pass another --data-dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    DataDirInUse { dir: PathBuf, pid: Option<u32> },

    #[error("there is no Peernotes data in {0}; run `peernotes init`, or pass --data-dir")]
    NoDataDir(PathBuf),

    // The cause is part of the message and deliberately not a `#[source]`, so a
    // printed error chain does not repeat it.
    #[error("cannot use {dir} as the data dir: {cause}")]
    DataDirUnusable { dir: PathBuf, cause: std::io::Error },

    #[error(
        "the store {path} is damaged or is not a Peernotes store ({detail}). \
         Nothing was changed; move the file aside and open the data dir again \
         to start an empty store"
    )]
    StoreDamaged { path: PathBuf, detail: String },

    #[error(
        "the store {path} was written by a newer Peernotes (schema {found}; \
         this version knows up to {known}); upgrade Peernotes to open it"
    )]
    StoreTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error(
        "the store {path} is from an older Peernotes; run a command that writes \
         (e.g. `peernotes init`) once to upgrade it"
    )]
    StoreNeedsUpgrade { path: PathBuf },

    #[error("the data dir was opened read-only; this needs a writing Node")]
    ReadOnly,

    #[error(
        "the disk holding {path} is full; free some space and try again \
         (everything saved before is intact)"
    )]
    DiskFull { path: PathBuf },

    #[error(
        "cannot write the store {path}: the file or its folder is read-only; \
         check their permissions (everything saved before is intact)"
    )]
    StoreReadOnly { path: PathBuf },

    #[error("the store {path} failed: {cause}")]
    Storage {
        path: PathBuf,
        cause: rusqlite::Error,
    },

    #[error("note {id} could not be read: {detail}")]
    NoteDamaged { id: String, detail: String },

    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    /// A pairing that failed: refused, wrong code, expired, out of turn.
    #[error("{0}")]
    Pairing(String),

    /// An error from the process that holds the data dir, reached over its
    /// control socket: its message and the exit code it maps onto there.
    #[error("{message}")]
    Remote { message: String, exit_code: i32 },
}

/// Process exit codes, shared by the CLI's help text and its tests.
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const IN_USE: i32 = 4;
    pub const DAMAGED: i32 = 5;
}

impl Error {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoteNotFound(_)
            | Error::SpaceNotFound(_)
            | Error::AmbiguousNoteId { .. }
            | Error::NoDataDir(_) => exit_code::NOT_FOUND,
            Error::BadNoteId(_) | Error::Invalid(_) => exit_code::USAGE,
            Error::DataDirInUse { .. } => exit_code::IN_USE,
            Error::Remote { exit_code, .. } => *exit_code,
            Error::StoreDamaged { .. } | Error::StoreTooNew { .. } | Error::NoteDamaged { .. } => {
                exit_code::DAMAGED
            }
            _ => exit_code::ERROR,
        }
    }

    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
