//! Vetting: what a peer sends is checked here before Automerge sees it.
//!
//! Automerge trusts its input's shape: a sync message's `have` bloom filters
//! are used with whatever probe count and bits per entry the peer wrote (a
//! probe count of `u32::MAX` costs four billion steps per change hash; zero
//! bits per entry divides by zero), counts in a message are taken as written,
//! and compressed changes and document columns are inflated without limit. So
//! every frame that reaches a `Session` is a `Vetted` one: its counts are
//! within what Peernotes itself sends, every doc key is short, every bloom's
//! parameters are at most what Automerge writes, and the chunks it carries
//! inflate to at most `MAX_INFLATED_BYTES` and decode to at most
//! `MAX_COLUMN_ENTRIES` column entries (run-length encoding lets a few bytes
//! claim billions of ops; Automerge would iterate every one), or, for a
//! larger frame, a budget in proportion to the bytes the peer sent, up to
//! absolute caps (`Budget::for_sent`). Checking costs
//! one pass over the frame plus inflating that budget; nothing here allocates
//! more than the budget, whatever a peer claims.
//!
//! Pure functions over bytes: no I/O, so the driver can vet a frame before it
//! takes any lock.

use std::io::Read;

use super::frame::{Attestation, Frame};
use super::session::SessionError;
use crate::{authorship, membership};

/// Most change hashes in one list (a sync message's heads or need, a
/// document's heads, a `have`'s last sync).
pub const MAX_HASHES: usize = 16_384;
/// Most `have` entries in a sync message (Automerge sends one).
pub const MAX_HAVES: usize = 8;
/// Most probes per bloom entry, and bits per entry: what Automerge writes.
pub const MAX_BLOOM_PROBES: u64 = 7;
pub const MAX_BLOOM_BITS_PER_ENTRY: u64 = 10;
/// Most bytes the chunks of one frame may inflate to.
pub const MAX_INFLATED_BYTES: usize = 32 * 1024 * 1024;
/// Most column entries (over every column of every chunk) in one frame: an
/// op is about ten of them, so this is a few million ops. Deleting a whole
/// 2 MB note in one change is about 20 million.
pub const MAX_COLUMN_ENTRIES: u64 = 64 * 1024 * 1024;
/// A larger frame (a long note, sent in parts) may inflate to this many
/// bytes, and claim this many column entries, per byte its chunks take,
/// up to the absolute caps: what a peer makes this device spend grows only
/// with what it sends. A 50 MB note of prose saves to about 17 MB, which
/// inflates to 67 MB (4 per byte) and claims 600 million entries (35 per byte).
pub const INFLATED_PER_BYTE: usize = 16;
pub const ENTRIES_PER_BYTE: u64 = 64;
pub const MAX_INFLATED_TOTAL: usize = 1024 * 1024 * 1024;
pub const MAX_COLUMN_ENTRIES_TOTAL: u64 = 2 * 1024 * 1024 * 1024;
/// Longest doc key (a note id is 32 characters, a space index's 38).
pub const MAX_DOC_KEY: usize = 64;
/// Most spaces in a hello, and documents in one `Heads` frame.
pub const MAX_SPACES: usize = 4096;
pub const MAX_HEADS_DOCS: usize = 1 << 20;
/// Most devices a `Links` frame names (each a node id, as short as a doc key).
pub const MAX_LINKS: usize = 4096;
/// Most attestations in one frame: one per author of the document.
pub const MAX_ATTESTATIONS: usize = 4096;
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

    /// The frame, to look at (e.g. to load its document ahead of the session).
    pub fn frame(&self) -> &Frame {
        &self.0
    }
}

fn check_frame(frame: &Frame) -> Result<(), String> {
    match frame {
        Frame::Hello { spaces, .. } => {
            at_most(spaces.len(), MAX_SPACES, "spaces in a hello")?;
            let listed = spaces.iter().filter_map(|s| s.changed.as_ref());
            at_most(
                listed.clone().map(Vec::len).sum(),
                MAX_HEADS_DOCS,
                "changed documents in a hello",
            )?;
            for doc in listed.flatten() {
                doc_key(&doc.doc)?;
                at_most(doc.heads.len(), MAX_HASHES, "heads of one document")?;
            }
            Ok(())
        }
        Frame::Buckets { .. } | Frame::Goodbye { .. } => Ok(()),
        Frame::Part { .. } => Err("a part of a frame on its own".into()),
        Frame::Heads { docs, .. } => {
            at_most(docs.len(), MAX_HEADS_DOCS, "documents in one heads frame")?;
            for doc in docs {
                doc_key(&doc.doc)?;
                at_most(doc.heads.len(), MAX_HASHES, "heads of one document")?;
            }
            Ok(())
        }
        Frame::Sync {
            doc,
            message,
            attestations,
            ..
        } => {
            doc_key(doc)?;
            attested(doc, attestations)?;
            sync_message(message)
        }
        Frame::Document {
            doc,
            heads,
            saved,
            attestations,
            ..
        } => {
            doc_key(doc)?;
            at_most(heads.len(), MAX_HASHES, "heads of one document")?;
            attested(doc, attestations)?;
            chunks(saved, &mut Budget::for_sent(saved.len()))
        }
        Frame::Presence { doc, .. } => doc_key(doc),
        Frame::Links { devices } => {
            at_most(devices.len(), MAX_LINKS, "devices in a links frame")?;
            for device in devices {
                doc_key(device)?;
            }
            Ok(())
        }
        Frame::Removed { ops, .. } => {
            at_most(ops.len(), membership::MAX_OPS, "membership ops")?;
            for op in ops {
                at_most(
                    op.len(),
                    membership::MAX_OP_BYTES,
                    "bytes of one membership op",
                )?;
            }
            Ok(())
        }
    }
}

fn at_most(n: usize, max: usize, what: &str) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what}, over the limit of {max}"));
    }
    Ok(())
}

/// Attestations of a frame: a bounded number, each naming the frame's
/// document and a bounded number of heads. (Signatures are checked later,
/// and only for authors of the changes the frame carries.)
fn attested(doc: &str, attestations: &[Attestation]) -> Result<(), String> {
    at_most(
        attestations.len(),
        MAX_ATTESTATIONS,
        "attestations in one frame",
    )?;
    for attestation in attestations {
        if attestation.doc != doc {
            return Err("an attestation names another document".into());
        }
        at_most(
            attestation.heads.len(),
            authorship::MAX_HEADS,
            "heads of one attestation",
        )?;
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
    let mut budget = Budget::for_sent(bytes.len());
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

/// What one frame's chunks may still cost.
#[derive(Debug)]
pub struct Budget {
    bytes: usize,
    entries: u64,
    /// What it started at, to say so when it runs out.
    limits: (usize, u64),
}

impl Budget {
    /// The budget of a frame whose chunks take `sent` bytes: the floors
    /// (`MAX_INFLATED_BYTES`, `MAX_COLUMN_ENTRIES`), or, for a larger frame
    /// (a long note), in proportion to what the peer actually sent, never
    /// past the absolute caps. A few bytes never claim more than a short
    /// note's worth.
    pub fn for_sent(sent: usize) -> Budget {
        let bytes = sent
            .saturating_mul(INFLATED_PER_BYTE)
            .clamp(MAX_INFLATED_BYTES, MAX_INFLATED_TOTAL);
        let entries = (sent as u64)
            .saturating_mul(ENTRIES_PER_BYTE)
            .clamp(MAX_COLUMN_ENTRIES, MAX_COLUMN_ENTRIES_TOTAL);
        Budget {
            bytes,
            entries,
            limits: (bytes, entries),
        }
    }

    /// The budget of a frame of ordinary size.
    pub fn frame() -> Budget {
        Budget::for_sent(0)
    }

    fn bytes(&mut self, n: usize) -> Result<(), String> {
        let limit = self.limits.0;
        self.bytes = self
            .bytes
            .checked_sub(n)
            .ok_or_else(|| format!("changes that inflate to over {limit} bytes in one frame"))?;
        Ok(())
    }

    fn entries(&mut self, n: u64) -> Result<(), String> {
        let limit = self.limits.1;
        self.entries = self
            .entries
            .checked_sub(n)
            .ok_or_else(|| format!("changes of over {limit} column entries in one frame"))?;
        Ok(())
    }
}

/// Walks Automerge chunks back to back (a saved document, or changes),
/// charging each its inflated size and column entries against `budget`.
pub fn chunks(mut data: &[u8], budget: &mut Budget) -> Result<(), String> {
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
            CHUNK_CHANGE => {
                budget.bytes(contents.len())?;
                change(contents, budget)?;
            }
            CHUNK_COMPRESSED => {
                let inflated = inflate(contents, budget)?;
                change(&inflated, budget)?;
            }
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

/// The actors Automerge chunks back to back name: each change's own, and
/// every actor of a document (a superset of its authors). `None` for a
/// compressed change or anything that does not parse: the caller then
/// assumes any author. Reads headers only; inflates nothing.
pub fn actors_named(mut data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut actors = Vec::new();
    while !data.is_empty() {
        let mut r = Reader::new(data);
        if r.take(4).ok()? != CHUNK_MAGIC {
            return None;
        }
        r.take(4).ok()?; // checksum
        let kind = r.byte().ok()?;
        let len = r.uleb().ok()?;
        let mut contents = Reader::new(r.take(len).ok()?);
        match kind {
            CHUNK_CHANGE => {
                contents.hashes("dependencies").ok()?;
                let len = contents.uleb().ok()?;
                actors.push(contents.take(len).ok()?.to_vec());
            }
            CHUNK_DOCUMENT => {
                let n = contents.count(MAX_ACTORS, "actors").ok()?;
                for _ in 0..n {
                    let len = contents.uleb().ok()?;
                    actors.push(contents.take(len).ok()?.to_vec());
                }
            }
            _ => return None,
        }
        data = r.rest();
    }
    Some(actors)
}

/// A change chunk's contents: header, then its op columns.
fn change(contents: &[u8], budget: &mut Budget) -> Result<(), String> {
    let mut r = Reader::new(contents);
    r.hashes("dependencies")?;
    let actor = r.uleb()?;
    r.take(actor)?;
    r.uleb()?; // seq
    r.uleb()?; // start op
    r.uleb()?; // time (signed; its bytes are what matters)
    let message = r.uleb()?;
    r.take(message)?;
    let others = r.count(MAX_ACTORS, "actors")?;
    for _ in 0..others {
        let len = r.uleb()?;
        r.take(len)?;
    }
    let columns = column_specs(&mut r)?;
    for (spec, len) in columns {
        if spec & COLUMN_DEFLATE != 0 {
            return Err("a change with compressed columns".into());
        }
        column_entries(spec, r.take(len)?, budget)?;
    }
    Ok(())
}

/// A document chunk: actors, heads, two column sets; deflated columns are
/// inflated (within budget) to count their entries.
fn document(contents: &[u8], budget: &mut Budget) -> Result<(), String> {
    budget.bytes(contents.len())?;
    let mut r = Reader::new(contents);
    let actors = r.count(MAX_ACTORS, "actors")?;
    for _ in 0..actors {
        let len = r.uleb()?;
        r.take(len)?;
    }
    r.hashes("document heads")?;
    let mut columns = column_specs(&mut r)?;
    columns.extend(column_specs(&mut r)?);
    for (spec, len) in columns {
        let data = r.take(len)?;
        if spec & COLUMN_DEFLATE != 0 {
            column_entries(spec, &inflate(data, budget)?, budget)?;
        } else {
            column_entries(spec, data, budget)?;
        }
    }
    Ok(())
}

/// A column set's (specification, length) pairs.
fn column_specs(r: &mut Reader<'_>) -> Result<Vec<(u64, u64)>, String> {
    let n = r.count(MAX_COLUMNS, "columns")?;
    (0..n).map(|_| Ok((r.uleb()?, r.uleb()?))).collect()
}

/// Counts the entries a column decodes to, by its type (the low three bits of
/// its specification): run-length encoded integers, deltas and strings, runs
/// of booleans, or raw bytes. O(its bytes), whatever the runs claim.
fn column_entries(spec: u64, data: &[u8], budget: &mut Budget) -> Result<(), String> {
    const BOOLEAN: u64 = 4;
    const STRING: u64 = 5;
    const VALUE: u64 = 7;
    let mut r = Reader::new(data);
    match spec & 0b111 {
        VALUE => budget.entries(data.len() as u64),
        BOOLEAN => {
            while !r.rest().is_empty() {
                budget.entries(r.uleb()?)?;
            }
            Ok(())
        }
        kind => {
            let value = |r: &mut Reader<'_>| -> Result<(), String> {
                if kind == STRING {
                    let len = r.uleb()?;
                    r.take(len)?;
                } else {
                    r.uleb()?;
                }
                Ok(())
            };
            while !r.rest().is_empty() {
                let count = r.sleb()?;
                if count > 0 {
                    value(&mut r)?;
                    budget.entries(count.unsigned_abs())?;
                } else if count < 0 {
                    for _ in 0..count.unsigned_abs() {
                        value(&mut r)?;
                        budget.entries(1)?;
                    }
                } else {
                    budget.entries(r.uleb()?)?;
                }
            }
            Ok(())
        }
    }
}

/// Inflates raw DEFLATE data, stopping as soon as it passes the budget. The
/// first pass only counts, into a small scratch buffer; the second fills a
/// buffer of exactly that size, so the heap never holds more than the budget.
fn inflate(data: &[u8], budget: &mut Budget) -> Result<Vec<u8>, String> {
    let len = inflate_into(data, budget, |_| {})?;
    let mut inflated = Vec::with_capacity(len);
    inflate_into(data, &mut Budget::for_sent(usize::MAX), |bytes| {
        inflated.extend_from_slice(bytes)
    })?;
    Ok(inflated)
}

/// Inflates `data`, handing each piece to `sink`; returns the inflated size.
fn inflate_into(
    data: &[u8],
    budget: &mut Budget,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, String> {
    let mut inflater = flate2::read::DeflateDecoder::new(data);
    let mut scratch = [0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = inflater
            .read(&mut scratch)
            .map_err(|e| format!("compressed data that does not inflate: {e}"))?;
        if n == 0 {
            return Ok(total);
        }
        budget.bytes(n)?;
        total += n;
        sink(&scratch[..n]);
    }
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

    /// A signed LEB128 number (as Automerge writes run lengths and deltas).
    fn sleb(&mut self) -> Result<i64, String> {
        let mut value: i64 = 0;
        for i in 0..10 {
            let byte = self.byte()?;
            value |= i64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i < 9 && byte & 0x40 != 0 {
                    value |= -1i64 << (7 * (i + 1));
                }
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

    /// A count of 32-byte hashes and the hashes, each at most once (Automerge
    /// panics building changes for a `need` that names one twice).
    fn hashes(&mut self, what: &str) -> Result<(), String> {
        let n = self.count(MAX_HASHES as u64, what)?;
        let hashes = self.take(n * 32)?;
        let distinct: std::collections::HashSet<&[u8]> = hashes.chunks_exact(32).collect();
        if distinct.len() as u64 != n {
            return Err(format!("{what} listing a change twice"));
        }
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
        // Enough history that the saved document deflates its columns.
        let mut seed = 7u64;
        for i in 0..3000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let at = (seed >> 33) as usize % (i + 1);
            let c = char::from(b'a' + (seed >> 40) as u8 % 26).to_string();
            doc.splice_text(&text, at, 0, &c).unwrap();
            if i % 3 == 0 {
                doc.commit();
            }
        }
        doc.commit();
        let saved = doc.save();
        assert!(saved.len() > 1024, "{} bytes", saved.len());
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
        chunks(&doc.save(), &mut Budget::frame()).unwrap();
        chunks(&doc.save_after(&[]), &mut Budget::frame()).unwrap();
        for mut change in doc.get_changes(&[]) {
            chunks(&change.bytes(), &mut Budget::frame()).unwrap();
        }
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
        let refused = chunks(&chunk, &mut Budget::frame()).unwrap_err();
        assert!(refused.contains("inflate"), "{refused}");
    }

    #[test]
    fn a_change_whose_runs_claim_billions_of_ops_is_refused() {
        let mut doc = AutoCommit::new();
        let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, "hi").unwrap();
        doc.commit();
        let honest = doc.get_last_local_change().unwrap();
        chunks(honest.raw_bytes(), &mut Budget::frame()).unwrap();
        // One column holding a single run of 2^40 entries: three bytes.
        let mut budget = Budget::frame();
        let mut run = Vec::new();
        uleb(&mut run, 1 << 40); // a positive run length, as signed LEB128 it is also positive
        run.push(1);
        assert!(column_entries(2, &run, &mut budget).is_err());
        let mut budget = Budget::frame();
        assert!(
            column_entries(4, &run, &mut budget).is_err(),
            "boolean runs too"
        );
        let mut nulls = vec![0];
        uleb(&mut nulls, 1 << 40);
        assert!(column_entries(3, &nulls, &mut Budget::frame()).is_err());
    }

    #[test]
    fn a_change_needed_twice_is_refused() {
        // Automerge 0.12 panics generating a reply to such a need.
        let mut m = vec![SYNC_V1, 0, 2];
        m.extend([7; 64]);
        m.extend([0, 0]);
        assert!(sync_message(&m).unwrap_err().contains("twice"));
        let mut m = vec![SYNC_V1, 0, 2];
        m.extend([7; 32]);
        m.extend([8; 32]);
        m.extend([0, 0]);
        sync_message(&m).unwrap();
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

    #[test]
    fn a_hello_that_lists_too_much_is_refused() {
        use super::super::frame::{DocHeads, SpaceSummary, PROTOCOL_VERSION};
        let hello = |changed: Vec<DocHeads>| Frame::Hello {
            version: PROTOCOL_VERSION,
            spaces: vec![SpaceSummary {
                space: [1; 16],
                hash: [2; 32],
                changed: Some(changed),
            }],
        };
        let listed = |doc: &str, heads: usize| DocHeads {
            doc: doc.into(),
            heads: vec![[3; 32]; heads],
        };
        assert!(Vetted::check(hello(vec![listed("a note", 3)])).is_ok());
        let too_many_heads = hello(vec![listed("a note", MAX_HASHES + 1)]);
        assert!(Vetted::check(too_many_heads).is_err());
        let long_key = hello(vec![listed(&"k".repeat(MAX_DOC_KEY + 1), 1)]);
        assert!(Vetted::check(long_key).is_err());
        let too_many_docs = hello((0..=MAX_HEADS_DOCS).map(|_| listed("d", 0)).collect());
        assert!(Vetted::check(too_many_docs).is_err());
    }

    #[test]
    fn links_that_name_too_many_devices_or_long_ids_are_refused() {
        let links = |devices: Vec<String>| Frame::Links { devices };
        let id = "ab".repeat(32);
        assert!(Vetted::check(links(vec![id.clone(); 20])).is_ok());
        assert!(Vetted::check(links(vec![id; MAX_LINKS + 1])).is_err());
        assert!(Vetted::check(links(vec!["k".repeat(MAX_DOC_KEY + 1)])).is_err());
        let part = Frame::Part {
            total: 1 << 30,
            bytes: vec![1; 10],
        };
        assert!(
            Vetted::check(part).is_err(),
            "a part never reaches a session"
        );
    }
}
