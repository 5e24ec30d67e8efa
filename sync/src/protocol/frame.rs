//! Frames: what travels on a sync connection, and their wire encoding.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many bytes of
//! postcard-encoded `Frame`. Lengths above `MAX_FRAME_BYTES` are refused before
//! anything is allocated, so a peer cannot make us reserve memory it never sends.
//! A frame whose body is larger (a long note sent whole) goes as a run of
//! `Frame::Part`s, back to back, each carrying the next piece of its body; the
//! decoder joins them, never past `MAX_MESSAGE_BYTES`, and reserves only
//! what has arrived. Decoding never panics on any input.

use serde::{Deserialize, Serialize};

pub use crate::authorship::Attestation;

/// The protocol version this build speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u16 = 6;
/// Largest frame accepted or sent, in bytes (after the length prefix).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest frame body accepted or sent once its parts are joined: a 50 MB
/// note saves to well under it.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// Bytes of a body carried by one `Frame::Part`.
const PART_BYTES: usize = 4 * 1024 * 1024;
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
    /// The devices (node ids) the sender has sync connections to now,
    /// the receiver aside: a change the sender got from one of them goes
    /// to the receiver from that device, not again from the sender. Sent
    /// after the hello and whenever they change.
    Links { devices: Vec<String> },
    /// The next piece of the body of a frame too large for one (`total`
    /// bytes in all, over `MAX_FRAME_BYTES`). Its parts go back to back,
    /// nothing between them; the last one completes the frame.
    Part { total: u64, bytes: Vec<u8> },
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
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    MessageTooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// The frame with its length prefix, ready to write: one frame, or, for
    /// a body over `MAX_FRAME_BYTES`, its parts one after another.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let body = postcard::to_stdvec(self).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if body.len() <= MAX_FRAME_BYTES {
            return Ok(prefixed(&body));
        }
        if body.len() > MAX_MESSAGE_BYTES || matches!(self, Frame::Part { .. }) {
            return Err(FrameError::MessageTooLarge(body.len()));
        }
        let total = body.len() as u64;
        let mut out = Vec::with_capacity(body.len() + body.len() / PART_BYTES * 32 + 64);
        for piece in body.chunks(PART_BYTES) {
            let part = Frame::Part {
                total,
                bytes: piece.to_vec(),
            };
            let part =
                postcard::to_stdvec(&part).map_err(|e| FrameError::Malformed(e.to_string()))?;
            out.extend_from_slice(&prefixed(&part));
        }
        Ok(out)
    }

    /// Decodes one frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(body.len()));
        }
        decode_body(body)
    }
}

fn prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_PREFIX + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
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

/// Turns a byte stream into frames. Feed it whatever arrived; take frames out.
/// After an error the stream is unusable: close the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the bytes not yet taken start in `buf`.
    start: usize,
    /// How long the body of a frame sent in parts will be, and as much of
    /// it as has arrived.
    joining: Option<(usize, Vec<u8>)>,
    /// Body bytes of the last frame taken out (joined, for one in parts).
    last_len: usize,
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

    /// The next whole frame, `Ok(None)` if more bytes are needed. A frame
    /// sent in parts comes out once its last part has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
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
            match frame? {
                Frame::Part { total, bytes } => {
                    if let Some(whole) = self.join(total, bytes)? {
                        return Ok(Some(whole));
                    }
                }
                _ if self.joining.is_some() => {
                    return Err(FrameError::Malformed(
                        "a frame between the parts of another".into(),
                    ))
                }
                frame => {
                    self.last_len = len;
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// How many bytes the body of the last frame taken out had: over
    /// `MAX_FRAME_BYTES` for one that came in parts.
    pub fn last_len(&self) -> usize {
        self.last_len
    }

    /// Adds a part to the frame being joined; the frame, once whole.
    fn join(&mut self, total: u64, bytes: Vec<u8>) -> Result<Option<Frame>, FrameError> {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total <= MAX_FRAME_BYTES {
            return Err(FrameError::Malformed(format!(
                "a frame of {total} bytes sent in parts"
            )));
        }
        if total > MAX_MESSAGE_BYTES {
            return Err(FrameError::MessageTooLarge(total));
        }
        let (expected, joined) = self.joining.get_or_insert_with(|| (total, Vec::new()));
        if *expected != total {
            return Err(FrameError::Malformed(
                "parts of one frame disagree on its length".into(),
            ));
        }
        if bytes.is_empty() || joined.len() + bytes.len() > total {
            return Err(FrameError::Malformed(
                "parts of a frame do not add up to its length".into(),
            ));
        }
        joined.extend_from_slice(&bytes);
        if joined.len() < total {
            return Ok(None);
        }
        let (_, body) = self.joining.take().expect("a frame is being joined");
        self.last_len = body.len();
        match decode_body(&body)? {
            Frame::Part { .. } => Err(FrameError::Malformed("a part made of parts".into())),
            frame => Ok(Some(frame)),
        }
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

    /// The frames `wire` holds, each body's length.
    fn frame_lengths(mut wire: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        while let Some(prefix) = wire.first_chunk::<LENGTH_PREFIX>() {
            let len = u32::from_be_bytes(*prefix) as usize;
            lengths.push(len);
            wire = &wire[LENGTH_PREFIX + len..];
        }
        lengths
    }

    fn big_sync(len: usize) -> Frame {
        Frame::Sync {
            space: [1; 16],
            doc: "big".into(),
            message: crate::protocol::noise(len, 0x2545_f491_4f6c_dd1d),
            attestations: Vec::new(),
        }
    }

    #[test]
    fn a_frame_over_the_limit_goes_in_parts_and_comes_back_whole() {
        let big = big_sync(MAX_FRAME_BYTES + 5 * 1024 * 1024);
        let small = Frame::Goodbye {
            reason: "after".into(),
        };
        let wire = big.encode().unwrap();
        let lengths = frame_lengths(&wire);
        assert!(lengths.len() > 1, "in parts: {lengths:?}");
        assert!(lengths.iter().all(|len| *len <= MAX_FRAME_BYTES));

        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        let wire = [wire, small.encode().unwrap()].concat();
        for piece in wire.chunks(1024 * 1024 + 7) {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push((decoder.last_len(), frame));
            }
        }
        assert_eq!(out.len(), 2);
        assert!(
            out[0].0 > MAX_FRAME_BYTES,
            "the joined frame says how long it was"
        );
        assert_eq!(out[0].1, big);
        assert_eq!(out[1].1, small);
        assert!(out[1].0 < 64);
    }

    #[test]
    fn nothing_is_sent_over_the_message_limit() {
        assert!(matches!(
            big_sync(MAX_MESSAGE_BYTES).encode(),
            Err(FrameError::MessageTooLarge(n)) if n > MAX_MESSAGE_BYTES
        ));
    }

    /// One `Part` frame on the wire.
    fn part(total: u64, bytes: Vec<u8>) -> Vec<u8> {
        Frame::Part { total, bytes }.encode().unwrap()
    }

    fn first_error(wire: &[u8]) -> FrameError {
        let mut decoder = FrameDecoder::new();
        decoder.push(wire);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error: the decoder waits for more"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn parts_that_do_not_make_a_frame_are_refused() {
        let total = MAX_FRAME_BYTES as u64 + 10;
        // A length that needs no parts, or over the message limit.
        assert!(matches!(
            first_error(&part(10, vec![1; 10])),
            FrameError::Malformed(_)
        ));
        assert!(matches!(
            first_error(&part(u64::MAX, vec![1; 10])),
            FrameError::MessageTooLarge(_)
        ));
        // Parts that disagree, or add up to more than they said.
        let wire = [part(total, vec![1; 10]), part(total + 1, vec![1; 10])].concat();
        assert!(matches!(first_error(&wire), FrameError::Malformed(_)));
        let wire = part(total, vec![1; 1024 * 1024]).repeat(17);
        assert!(matches!(first_error(&wire), FrameError::Malformed(_)));
        // Another frame between the parts.
        let bye = Frame::Goodbye { reason: "x".into() }.encode().unwrap();
        let wire = [part(total, vec![1; 10]), bye].concat();
        assert!(matches!(first_error(&wire), FrameError::Malformed(_)));
        // Parts whose body is itself a part.
        let inner = postcard::to_stdvec(&Frame::Part {
            total,
            bytes: vec![0; MAX_FRAME_BYTES],
        })
        .unwrap();
        let outer = inner.len() as u64;
        let wire: Vec<u8> = inner
            .chunks(PART_BYTES)
            .flat_map(|piece| part(outer, piece.to_vec()))
            .collect();
        assert!(matches!(first_error(&wire), FrameError::Malformed(_)));
    }

    #[test]
    fn parts_are_kept_only_as_they_arrive() {
        // A part claiming the largest message reserves nothing for it.
        let mut decoder = FrameDecoder::new();
        decoder.push(&part(MAX_MESSAGE_BYTES as u64, vec![1; 100]));
        assert_eq!(decoder.next_frame(), Ok(None));
        let (_, joined) = decoder.joining.as_ref().unwrap();
        assert!(joined.capacity() < 1024 * 1024);
    }
}
