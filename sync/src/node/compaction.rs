//! Compaction policy: when a note's incremental chunks are folded into one
//! snapshot, and how, in two halves so the slow save runs without the lock.
//! A note whose changes wait for missing history is never compacted.

use automerge::AutoCommit;

use super::cache::OpenNote;
use super::{Node, State};
use crate::error::{Error, Result};
use crate::note::NoteId;
use crate::space::SpaceId;

/// Compaction folds a note's incremental chunks into one snapshot once there are
/// this many of them...
pub(super) const COMPACT_AFTER_CHUNKS: usize = 128;
/// ...or once they hold more bytes than the snapshot and at least this many...
const COMPACT_AFTER_BYTES: usize = 64 * 1024;
/// ...or, for small notes (whose snapshot is cheap to write), once they hold
/// more than four times the snapshot plus this many bytes. Applying changes
/// one by one is what makes a note slow to load and to send whole.
const COMPACT_SMALL_AFTER_BYTES: usize = 4 * 1024;

/// Whether a note's stored chunks are due to be folded into one snapshot.
pub(super) fn is_due(open: &OpenNote) -> bool {
    open.incremental_chunks >= COMPACT_AFTER_CHUNKS
        || (open.incremental_bytes >= COMPACT_AFTER_BYTES
            && open.incremental_bytes > open.snapshot_bytes)
        || open.incremental_bytes > 4 * open.snapshot_bytes + COMPACT_SMALL_AFTER_BYTES
}

impl Node {
    /// Folds every note's chunks, and every space index's, into one
    /// snapshot each.
    pub fn compact_all(&self) -> Result<()> {
        self.with_state(|st| {
            st.require_writer()?;
            st.flush()?;
            for id in st.store.all_ids()? {
                let id: NoteId = id.parse()?;
                // A note that cannot be read is reported when it is opened; it
                // must not stop every other note from being compacted.
                match st.load(&id) {
                    Ok(_) => st.compact(&id)?,
                    Err(Error::NoteDamaged { detail, .. }) => {
                        tracing::warn!(note = %id, "not compacted: {detail}");
                    }
                    Err(e) => return Err(e),
                }
            }
            // The space indexes too: one lists every note of its space, and
            // every start loads it.
            let spaces: Vec<SpaceId> = st.spaces.keys().copied().collect();
            st.compact_spaces_past(&spaces, 1)?;
            st.store.checkpoint_and_vacuum()
        })
    }
}

impl State {
    /// Replaces a (clean, loaded) note's chunks by one snapshot.
    pub(super) fn compact(&mut self, id: &NoteId) -> Result<()> {
        if let Some(mut compaction) = self.prepare_compaction(id)? {
            let snapshot = compaction.doc.save();
            self.finish_compaction(compaction, &snapshot)?;
        }
        Ok(())
    }

    /// The first half of a compaction, under the lock: a copy of the note's
    /// document exactly as its stored chunks (through `through`) hold it. Saving
    /// the copy, the slow part, needs no lock (copying is several times faster).
    pub(super) fn prepare_compaction(&mut self, id: &NoteId) -> Result<Option<Compaction>> {
        let Some(open) = self.open.peek_mut(id) else {
            return Ok(None);
        };
        if !open.pending.is_empty() || open.incremental_chunks == 0 {
            return Ok(None);
        }
        // Changes waiting for missing history are not in a snapshot: keep their
        // chunks rather than fold them away.
        if !open.note.doc_mut().get_missing_deps(&[]).is_empty() {
            return Ok(None);
        }
        let Some(through) = self.store.last_chunk_seq(id.as_str())? else {
            return Ok(None);
        };
        Ok(Some(Compaction {
            id: id.clone(),
            doc: open.note.doc_mut().clone(),
            through,
            incremental_bytes: open.incremental_bytes,
            incremental_chunks: open.incremental_chunks,
        }))
    }

    /// The second half: the snapshot replaces the chunks it covers. Chunks
    /// written since the copy was taken stay.
    pub(super) fn finish_compaction(
        &mut self,
        compaction: Compaction,
        snapshot: &[u8],
    ) -> Result<()> {
        let id = compaction.id;
        self.store
            .compact(id.as_str(), snapshot, compaction.through)?;
        if let Some(open) = self.open.peek_mut(&id) {
            open.snapshot_bytes = snapshot.len();
            open.incremental_bytes = open
                .incremental_bytes
                .saturating_sub(compaction.incremental_bytes);
            open.incremental_chunks = open
                .incremental_chunks
                .saturating_sub(compaction.incremental_chunks);
        }
        Ok(())
    }
}

/// A compaction between its two halves (see `State::prepare_compaction`).
pub(super) struct Compaction {
    pub(super) id: NoteId,
    pub(super) doc: AutoCommit,
    through: i64,
    incremental_bytes: usize,
    incremental_chunks: usize,
}

#[cfg(test)]
mod tests {
    use super::super::lock;
    use crate::store::ChunkKind;
    use crate::{Node, NodeOptions};

    #[test]
    fn compacting_folds_the_space_indexes_too() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        for i in 0..5 {
            node.create(&format!("Note {i}\n")).unwrap();
            node.flush().unwrap();
        }
        let index = node.private_space().unwrap().doc_key();
        let chunks = |node: &Node| lock(&node.shared.state).store.chunks(&index).unwrap();
        assert!(
            chunks(&node).len() > 1,
            "each flush wrote a chunk of the index"
        );

        node.compact_all().unwrap();
        let after = chunks(&node);
        assert_eq!(after.len(), 1);
        assert!(matches!(after[0].kind, ChunkKind::Snapshot));
        assert_eq!(node.list(crate::ListFilter::Active).unwrap().len(), 5);
        node.close().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        assert_eq!(node.list(crate::ListFilter::Active).unwrap().len(), 5);
        node.close().unwrap();
    }
}
