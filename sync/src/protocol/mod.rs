//! The sans-io sync protocol: frames (`frame`), the checks every frame from a
//! peer passes before anything else sees it (`vet`), and the per-peer session
//! state machine (`session`). Nothing here opens a socket, reads a clock or touches the
//! disk, so simulations can drive thousands of seeded runs deterministically.
//! The transport (`net`) only moves bytes between a connection and a
//! `Session`.

pub mod frame;
pub mod session;
pub mod vet;

pub use frame::{
    Frame, FrameDecoder, FrameError, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
pub use session::{summary_hash, Replicas, SavedDocument, Session, SessionError, SessionEvent};
pub use vet::Vetted;

/// Bytes that look random and do not compress (xorshift from `seed`), for tests.
#[cfg(test)]
pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
