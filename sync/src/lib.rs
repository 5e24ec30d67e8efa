//! `peernotes-sync`: everything in Peernotes that is not UI.
//!
//! The CLI (`src/bin/peernotes`) and the desktop app (`peernotes-app`) are thin
//! shells over [`Node`]; nothing else in this crate is meant for them directly
//! except the types `Node` returns. See `ARCHITECTURE.md` for the map.

pub mod authorship;
pub mod config;
pub mod control;
pub mod datadir;
pub mod error;
pub mod identity;
pub mod membership;
pub mod net;
pub mod network;
pub mod node;
pub mod note;
pub mod pairing;
pub mod protocol;
mod signature;
pub mod space;
pub mod store;
pub mod vault;

pub use datadir::{DataDir, DATA_ENV};
pub use error::{exit_code, Error, Result};
pub use network::{Invitation, InviteBy, Joined, Network, PeerAddr};
pub use node::{
    Heads, ListFilter, Node, NodeEvent, NodeOptions, NoteSummary, NoteView, PairingProgress,
    PeerStatus, SearchHit, SpaceInfo,
};
pub use note::{ChangeInfo, NoteId, Splice};
pub use space::{Member, SpaceId};
