//! Frames: what travels on a sync connection, and their wire encoding.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many bytes of
//! postcard-encoded `Frame`. Lengths above `MAX_FRAME_BYTES` are refused before
//! anything is allocated, so a peer cannot make us reserve memory it never sends.
//! Decoding never panics on any input.

use serde::{Deserialize, Serialize};

pub use crate::authorship::Attestation;

/// The protocol version this build speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u16 = 5;
/// Largest frame accepted or sent, in bytes (after the length prefix).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const LENGTH_PREFIX: usize = 4;

/// A space's identity on the wire (16 random bytes).
pub type SpaceKey = [u8; 16];
/// A document's identity on the wire (its UTF-8 id).
pub type DocKey = String;
/// An Automerge change hash.
pub type Hash = [u8; 32];

/// Automerge's change hashes as they go on the wire.
pub fn hashes(heads: &[automerge::ChangeHash]) -> Vec<Hash> {
    heads.iter().map(|h| h.0).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame each side sends: version and, per space both may share, a hash
    /// over its sorted `(doc, heads)` (equal hashes mean nothing to do) and
    /// the documents whose heads here differ from what the receiver last
    /// acknowledged.
    Hello {
        version: u16,
        spaces: Vec<SpaceSummary>,
    },
    /// For a space whose summary differed: one hash per bucket of its documents
    /// (`session::BUCKETS` of them), so only differing buckets list their heads.
    Buckets { space: SpaceKey, hashes: Vec<Hash> },
    /// Every document of one bucket of a space, with its heads.
    Heads {
        space: SpaceKey,
        bucket: u8,
        docs: Vec<DocHeads>,
    },
    /// An Automerge sync message for one document, with an attestation by
    /// each author of the changes it carries (`authorship`).
    Sync {
        space: SpaceKey,
        doc: DocKey,
        message: Vec<u8>,
        attestations: Vec<Attestation>,
    },
    /// Ephemeral state (cursor, selection) of the sender in one document; never stored.
    Presence { doc: DocKey, payload: Vec<u8> },
    /// A whole document in Automerge's compressed save format, sent instead of
    /// its change history when the peer's heads showed it has none of it.
    /// `heads` are the document's heads, so the receiver can tell it now has
    /// exactly what the sender has. `attestations`: one by each author of
    /// its changes, as for `Sync`.
    Document {
        space: SpaceKey,
        doc: DocKey,
        heads: Vec<Hash>,
        saved: Vec<u8>,
        attestations: Vec<Attestation>,
    },
    /// The sender is closing the connection, and why.
    Goodbye { reason: String },
    /// The sender's membership log of a space the receiver was removed from
    /// (signed ops, in causal order): how a removed device learns that it
    /// was removed, and by whom. Sent instead of syncing that space.
    Removed { space: SpaceKey, ops: Vec<Vec<u8>> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSummary {
    pub space: SpaceKey,
    pub hash: Hash,
    /// Every document whose heads differ from those the receiver last
    /// acknowledged (or that it never acknowledged), with its heads here;
    /// `None` when there are too many to list
    /// (`session::MAX_CHANGED_LISTED`), so buckets are compared instead.
    pub changed: Option<Vec<DocHeads>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    pub doc: DocKey,
    pub heads: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// The frame with its length prefix, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let body = postcard::to_stdvec(self).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if body.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(body.len()));
        }
        let mut out = Vec::with_capacity(LENGTH_PREFIX + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes one frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(body.len()));
        }
        let (frame, rest) = postcard::take_from_bytes::<Frame>(body)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FrameError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(frame)
    }
}

/// Turns a byte stream into frames. Feed it whatever arrived; take frames out.
/// After an error the stream is unusable: close the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the bytes not yet taken start in `buf`.
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was taken before growing: the buffer holds at most one
        // partial frame plus what arrived with it.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let waiting = &self.buf[self.start..];
        let Some(prefix) = waiting.first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(len));
        }
        let Some(body) = waiting.get(LENGTH_PREFIX..LENGTH_PREFIX + len) else {
            return Ok(None);
        };
        let frame = Frame::decode(body);
        self.start += LENGTH_PREFIX + len;
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_being_split_anywhere() {
        let frames = vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                spaces: vec![SpaceSummary {
                    space: [1; 16],
                    hash: [2; 32],
                    changed: Some(vec![DocHeads {
                        doc: "abc".into(),
                        heads: vec![[3; 32]],
                    }]),
                }],
            },
            Frame::Sync {
                space: [1; 16],
                doc: "abc".into(),
                message: vec![9; 1000],
                attestations: vec![Attestation::sign("abc", &[4; 32], vec![[5; 32]])],
            },
            Frame::Goodbye {
                reason: "bye".into(),
            },
            Frame::Removed {
                space: [1; 16],
                ops: vec![vec![3; 40]],
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.encode().unwrap()).collect();
        for step in [1, 3, 7, 1000] {
            let mut decoder = FrameDecoder::new();
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                decoder.push(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames);
        }
    }

    #[test]
    fn an_absurd_length_is_refused_before_anything_is_buffered() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for len in 0..300 {
            let _ = Frame::decode(&crate::protocol::noise(len, 0x1234_5678 + len as u64));
        }
        assert!(Frame::decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
