//! Vetting: what a peer sends is checked here before Automerge sees it.
//!
//! Automerge trusts its input's shape: a sync message's `have` bloom filters
//! are used with whatever probe count and bits per entry the peer wrote (a
//! probe count of `u32::MAX` costs four billion steps per change hash; zero
//! bits per entry divides by zero), counts in a message are taken as written,
//! and compressed changes and document columns are inflated without limit. So
//! every frame that reaches a `Session` is a `Vetted` one: its counts are
//! within what Peernotes itself sends, every doc key is short, every bloom's
//! parameters are at most what Automerge writes, and every chunk it carries
//! inflates to at most `MAX_INFLATED_BYTES`. Checking costs at most one pass
//! over the frame plus inflating that budget; nothing here allocates in
//! proportion to what a peer claims.
//!
//! Pure functions over bytes: no I/O, so the driver can vet a frame before it
//! takes any lock.

use std::io::Read;

use super::frame::Frame;
use super::session::SessionError;

/// Most change hashes in one list (a sync message's heads or need, a
/// document's heads, a `have`'s last sync).
pub const MAX_HASHES: usize = 16_384;
/// Most `have` entries in a sync message (Automerge sends one).
pub const MAX_HAVES: usize = 8;
/// Most probes per bloom entry, and bits per entry: what Automerge writes.
pub const MAX_BLOOM_PROBES: u64 = 7;
pub const MAX_BLOOM_BITS_PER_ENTRY: u64 = 10;
/// Most bytes the chunks of one frame may inflate to.
pub const MAX_INFLATED_BYTES: usize = 64 * 1024 * 1024;
/// Longest doc key (a note id is 32 characters, a space index's 38).
pub const MAX_DOC_KEY: usize = 64;
/// Most spaces in a hello, and documents in one `Heads` frame.
pub const MAX_SPACES: usize = 4096;
pub const MAX_HEADS_DOCS: usize = 1 << 20;
/// Most actors a document chunk may name, and columns per column set.
const MAX_ACTORS: u64 = 1 << 18;
const MAX_COLUMNS: u64 = 64;

/// Magic bytes that open every Automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
/// The deflate bit of a column specification.
const COLUMN_DEFLATE: u64 = 0b1000;
/// First byte of a sync message (version 1 and version 2).
const SYNC_V1: u8 = 0x42;
const SYNC_V2: u8 = 0x43;

/// A frame that passed `Vetted::check`: the only kind a `Session` handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted(Frame);

impl Vetted {
    /// Checks a frame from a peer. An error names what was wrong; the session
    /// treats it as a protocol error.
    pub fn check(frame: Frame) -> Result<Vetted, SessionError> {
        check_frame(&frame).map_err(SessionError::Refused)?;
        Ok(Vetted(frame))
    }

    pub fn into_inner(self) -> Frame {
        self.0
    }
}

fn check_frame(frame: &Frame) -> Result<(), String> {
    match frame {
        Frame::Hello { spaces, .. } => at_most(spaces.len(), MAX_SPACES, "spaces in a hello"),
        Frame::Buckets { .. } | Frame::Goodbye { .. } => Ok(()),
        Frame::Heads { docs, .. } => {
            at_most(docs.len(), MAX_HEADS_DOCS, "documents in one heads frame")?;
            for doc in docs {
                doc_key(&doc.doc)?;
                at_most(doc.heads.len(), MAX_HASHES, "heads of one document")?;
            }
            Ok(())
        }
        Frame::Sync { doc, message, .. } => {
            doc_key(doc)?;
            sync_message(message)
        }
        Frame::Document {
            doc, heads, saved, ..
        } => {
            doc_key(doc)?;
            at_most(heads.len(), MAX_HASHES, "heads of one document")?;
            let mut budget = MAX_INFLATED_BYTES;
            chunks(saved, &mut budget)
        }
        Frame::Presence { doc, .. } => doc_key(doc),
    }
}

fn at_most(n: usize, max: usize, what: &str) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what}, over the limit of {max}"));
    }
    Ok(())
}

fn doc_key(key: &str) -> Result<(), String> {
    at_most(key.len(), MAX_DOC_KEY, "bytes in a document key")
}

/// Checks an encoded Automerge sync message (see automerge's `sync.rs`):
/// version byte, heads, need, haves with their blooms, changes, flags.
pub fn sync_message(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader::new(bytes);
    let version = r.byte()?;
    if version != SYNC_V1 && version != SYNC_V2 {
        return Err(format!("not a sync message (type {version:#x})"));
    }
    r.hashes("heads")?;
    r.hashes("needed changes")?;
    let haves = r.count(MAX_HAVES as u64, "haves")?;
    for _ in 0..haves {
        r.hashes("last-sync heads")?;
        let bloom_len = r.uleb()?;
        bloom(r.take(bloom_len)?)?;
    }
    let changes = r.uleb()?;
    let mut budget = MAX_INFLATED_BYTES;
    for _ in 0..changes {
        let len = r.uleb()?;
        chunks(r.take(len)?, &mut budget)?;
    }
    // What follows is the flags section, which Automerge reads as bits.
    Ok(())
}

/// A bloom filter's parameters: at most what Automerge writes, and enough bits
/// for its entries (an empty filter is empty bytes).
fn bloom(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut r = Reader::new(bytes);
    let entries = r.uleb()?;
    let bits_per_entry = r.uleb()?;
    let probes = r.uleb()?;
    if entries == 0 {
        return Ok(());
    }
    if !(1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry) {
        return Err(format!(
            "a bloom filter with {bits_per_entry} bits per entry (allowed: 1 to {MAX_BLOOM_BITS_PER_ENTRY})"
        ));
    }
    if !(1..=MAX_BLOOM_PROBES).contains(&probes) {
        return Err(format!(
            "a bloom filter with {probes} probes (allowed: 1 to {MAX_BLOOM_PROBES})"
        ));
    }
    let bits = (entries.saturating_mul(bits_per_entry)).div_ceil(8);
    if (r.rest().len() as u64) < bits {
        return Err("a bloom filter shorter than its entries need".into());
    }
    Ok(())
}

/// Walks Automerge chunks back to back (a saved document, or changes),
/// charging each its inflated size against `budget`.
pub fn chunks(mut data: &[u8], budget: &mut usize) -> Result<(), String> {
    while !data.is_empty() {
        let mut r = Reader::new(data);
        if r.take(4)? != CHUNK_MAGIC {
            return Err("a chunk without an Automerge header".into());
        }
        r.take(4)?; // checksum
        let kind = r.byte()?;
        let len = r.uleb()?;
        let contents = r.take(len)?;
        match kind {
            CHUNK_CHANGE => charge(budget, contents.len())?,
            CHUNK_COMPRESSED => inflate(contents, budget)?,
            CHUNK_DOCUMENT => document(contents, budget)?,
            other => {
                return Err(format!(
                    "a chunk of type {other}, which Peernotes does not accept"
                ))
            }
        }
        data = r.rest();
    }
    Ok(())
}

/// A document chunk: actors, heads, two column sets; deflated columns are
/// inflated (within budget) to learn their size.
fn document(contents: &[u8], budget: &mut usize) -> Result<(), String> {
    let mut r = Reader::new(contents);
    let actors = r.count(MAX_ACTORS, "actors")?;
    for _ in 0..actors {
        let len = r.uleb()?;
        r.take(len)?;
    }
    r.hashes("document heads")?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let n = r.count(MAX_COLUMNS, "columns")?;
        for _ in 0..n {
            let spec = r.uleb()?;
            let len = r.uleb()?;
            columns.push((spec & COLUMN_DEFLATE != 0, len));
        }
    }
    for (deflated, len) in columns {
        let data = r.take(len)?;
        if deflated {
            inflate(data, budget)?;
        } else {
            charge(budget, data.len())?;
        }
    }
    Ok(())
}

/// Inflates raw DEFLATE data into a small scratch buffer, only to count it,
/// stopping as soon as it passes the budget.
fn inflate(data: &[u8], budget: &mut usize) -> Result<(), String> {
    let mut inflater = flate2::read::DeflateDecoder::new(data);
    let mut scratch = [0u8; 16 * 1024];
    loop {
        let n = inflater
            .read(&mut scratch)
            .map_err(|e| format!("compressed data that does not inflate: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        charge(budget, n)?;
    }
}

fn charge(budget: &mut usize, bytes: usize) -> Result<(), String> {
    *budget = budget.checked_sub(bytes).ok_or_else(|| {
        format!("changes that inflate to over {MAX_INFLATED_BYTES} bytes in one frame")
    })?;
    Ok(())
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or("a length past the end of the data")?;
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn uleb(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number longer than ten bytes".into())
    }

    fn count(&mut self, max: u64, what: &str) -> Result<u64, String> {
        let n = self.uleb()?;
        if n > max {
            return Err(format!("{n} {what}, over the limit of {max}"));
        }
        Ok(n)
    }

    /// A count of 32-byte hashes and the hashes, skipped.
    fn hashes(&mut self, what: &str) -> Result<(), String> {
        let n = self.count(MAX_HASHES as u64, what)?;
        self.take(n * 32)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjType, ROOT};

    fn uleb(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A sync message with one `have` whose bloom has these parameters.
    fn with_bloom(entries: u64, bits_per_entry: u64, probes: u64) -> Vec<u8> {
        let mut bloom = Vec::new();
        uleb(&mut bloom, entries);
        uleb(&mut bloom, bits_per_entry);
        uleb(&mut bloom, probes);
        bloom.extend(vec![0xff; (entries * bits_per_entry).div_ceil(8) as usize]);
        let mut m = vec![SYNC_V1, 0, 0, 1, 0];
        uleb(&mut m, bloom.len() as u64);
        m.extend(bloom);
        m.push(0);
        m
    }

    #[test]
    fn what_automerge_itself_sends_passes() {
        let mut doc = AutoCommit::new();
        let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
        for i in 0..300 {
            doc.splice_text(&text, i, 0, "x").unwrap();
            doc.commit();
        }
        let mut state = automerge::sync::State::new();
        let first = doc.sync().generate_sync_message(&mut state).unwrap();
        sync_message(&first.encode()).unwrap();
        // A reply carrying changes and a real bloom.
        let mut other = AutoCommit::new();
        let mut theirs = automerge::sync::State::new();
        let hello = other.sync().generate_sync_message(&mut theirs).unwrap();
        doc.sync().receive_sync_message(&mut state, hello).unwrap();
        let reply = doc.sync().generate_sync_message(&mut state).unwrap();
        assert!(!reply.changes.is_empty());
        sync_message(&reply.encode()).unwrap();
        let mut budget = MAX_INFLATED_BYTES;
        chunks(&doc.save(), &mut budget).unwrap();
        chunks(&doc.save_after(&[]), &mut budget).unwrap();
    }

    #[test]
    fn absurd_blooms_are_refused() {
        sync_message(&with_bloom(4, 10, 7)).unwrap();
        assert!(sync_message(&with_bloom(4, 10, u32::MAX.into())).is_err());
        assert!(sync_message(&with_bloom(4, 0, 7)).is_err());
        assert!(sync_message(&with_bloom(4, 11, 7)).is_err());
        assert!(sync_message(&with_bloom(4, 10, 0)).is_err());
        // The same messages decode in Automerge: only vetting stops them.
        assert!(automerge::sync::Message::decode(&with_bloom(4, 0, 7)).is_ok());
    }

    #[test]
    fn a_compressed_change_that_inflates_past_the_budget_is_refused() {
        use std::io::Write;
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..(MAX_INFLATED_BYTES / zeros.len() + 1) {
            deflater.write_all(&zeros).unwrap();
        }
        let bomb = deflater.finish().unwrap();
        let mut chunk = CHUNK_MAGIC.to_vec();
        chunk.extend([0; 4]);
        chunk.push(CHUNK_COMPRESSED);
        uleb(&mut chunk, bomb.len() as u64);
        chunk.extend(&bomb);
        let mut budget = MAX_INFLATED_BYTES;
        let refused = chunks(&chunk, &mut budget).unwrap_err();
        assert!(refused.contains("inflate"), "{refused}");
    }

    #[test]
    fn counts_past_the_data_or_the_limits_are_refused() {
        // 2^40 heads claimed, none there.
        let mut m = vec![SYNC_V1];
        uleb(&mut m, 1 << 40);
        assert!(sync_message(&m).is_err());
        // A million haves of two bytes each.
        let mut m = vec![SYNC_V1, 0, 0];
        uleb(&mut m, 1_000_000);
        m.extend(vec![0; 2_000_000]);
        assert!(sync_message(&m).is_err());
        assert!(sync_message(&[]).is_err());
        assert!(sync_message(&[0x99]).is_err());
    }
}
