//! The sans-io sync protocol: frames (`frame`), the checks every frame from a
//! peer passes before anything else sees it (`vet`), and the per-peer session
//! state machine (`session`). Nothing here opens a socket, reads a clock or touches the
//! disk, so simulations can drive thousands of seeded runs deterministically.
//! The transport (`net`) only moves bytes between a connection and a
//! `Session`.

pub mod frame;
pub mod session;
pub mod vet;

pub use frame::{Frame, FrameDecoder, FrameError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use session::{summary_hash, Replicas, SavedDocument, Session, SessionError, SessionEvent};
pub use vet::Vetted;
