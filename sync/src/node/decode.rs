//! Strict decoding of stored chunks: a truncated or corrupt chunk is an error
//! here, where Automerge's own loaders would skip a damaged tail silently.

use automerge::{AutoCommit, LoadOptions, OnPartialLoad, VerificationMode};

use crate::store::{Chunk, ChunkKind};

/// Decodes all of a document's chunks at once: snapshots loaded, then every
/// incremental change applied in one batch (far faster than chunk by chunk).
/// `None` if any chunk is damaged or the batch does not apply: the caller then
/// goes chunk by chunk with `decode_chunk` to find and set aside the bad one.
pub(super) fn decode_all(chunks: &[Chunk]) -> Option<AutoCommit> {
    let mut doc: Option<AutoCommit> = None;
    let mut changes = Vec::new();
    for chunk in chunks {
        match chunk.kind {
            ChunkKind::Snapshot => decode_chunk(&mut doc, chunk).ok()?,
            ChunkKind::Incremental => changes.extend(split_changes(&chunk.data).ok()?),
        }
    }
    let mut doc = doc.unwrap_or_default();
    doc.apply_changes(changes).ok()?;
    Some(doc)
}

/// Decodes one stored chunk onto `doc`, strictly: a truncated or corrupt chunk is
/// an error here, where Automerge's own loaders skip a damaged tail silently.
pub(super) fn decode_chunk(
    doc: &mut Option<AutoCommit>,
    chunk: &Chunk,
) -> std::result::Result<(), String> {
    match chunk.kind {
        ChunkKind::Snapshot => {
            let loaded = strict_load(&chunk.data)?;
            match doc {
                None => *doc = Some(loaded),
                Some(doc) => {
                    let mut loaded = loaded;
                    doc.merge(&mut loaded).map_err(|e| e.to_string())?;
                }
            }
        }
        ChunkKind::Incremental => {
            let changes = split_changes(&chunk.data)?;
            doc.get_or_insert_with(AutoCommit::new)
                .apply_changes(changes)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Loads a saved document, strictly: trailing garbage or a bad checksum is an
/// error, where Automerge's default would keep what it could read.
pub(super) fn strict_load(saved: &[u8]) -> std::result::Result<AutoCommit, String> {
    let strict = LoadOptions::new()
        .on_partial_load(OnPartialLoad::Error)
        .verification_mode(VerificationMode::Check);
    AutoCommit::load_with_options(saved, strict).map_err(|e| e.to_string())
}

/// Magic bytes that open every Automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Splits an incremental chunk (Automerge change chunks back to back) into changes,
/// checking each one's length and checksum.
pub(super) fn split_changes(
    mut data: &[u8],
) -> std::result::Result<Vec<automerge::Change>, String> {
    let mut changes = Vec::new();
    while !data.is_empty() {
        if data.len() < 10 || data[..4] != CHUNK_MAGIC {
            return Err(format!(
                "change {} does not start with an Automerge header",
                changes.len() + 1
            ));
        }
        // magic (4) + checksum (4) + chunk type (1) + uLEB128 length + contents
        let (len, len_bytes) = read_uleb128(&data[9..])
            .ok_or_else(|| format!("change {} has a damaged length", changes.len() + 1))?;
        let end = 9usize
            .checked_add(len_bytes)
            .and_then(|n| n.checked_add(usize::try_from(len).ok()?))
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                format!(
                    "change {} is truncated: it declares {len} bytes, {} are stored",
                    changes.len() + 1,
                    data.len().saturating_sub(9 + len_bytes)
                )
            })?;
        let change = automerge::Change::try_from(&data[..end]).map_err(|e| e.to_string())?;
        // An Automerge checksum is the first four bytes of the change's hash.
        if change.hash().0[..4] != data[4..8] {
            return Err(format!("change {} fails its checksum", changes.len() + 1));
        }
        changes.push(change);
        data = &data[end..];
    }
    Ok(changes)
}

fn read_uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
