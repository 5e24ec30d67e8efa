//! The note cache: the documents of the notes in use, in an LRU of bounded
//! size (a dirty one is never evicted before it is committed), loaded from
//! their stored chunks on first use with strict decoding (a chunk that fails
//! is quarantined, never skipped silently).

use std::time::{Duration, Instant};

use automerge::AutoCommit;

use super::decode::{decode_all, decode_chunk};
use super::{now_ms, NodeEvent, State};
use automerge::ChangeHash;

use crate::error::{Error, Result};
use crate::note::{Note, NoteId};
use crate::space::SpaceId;
use crate::store::{Chunk, ChunkKind};

/// How often at most a note's text (its title, snippet and search index) is
/// written while it is typed in; its changes are written every group commit.
pub(super) const TEXT_REFRESH: Duration = Duration::from_secs(1);

/// A note's document in memory and what of it is not yet in the store.
pub(super) struct OpenNote {
    pub(super) note: Note,
    pub(super) space: SpaceId,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    /// Encoded changes taken from the document but not yet committed.
    pub(super) pending: Vec<Vec<u8>>,
    /// A note that arrived whole from a peer and is not stored yet.
    pub(super) arrived_whole: Option<ArrivedWhole>,
    pub(super) snapshot_bytes: usize,
    pub(super) incremental_bytes: usize,
    pub(super) incremental_chunks: usize,
    /// When the group commit last wrote the note's text (title, snippet,
    /// search index); `None`: not since it was loaded or made here.
    pub(super) text_written_at: Option<Instant>,
}

/// A note as it arrived whole from a peer.
pub(super) struct ArrivedWhole {
    /// The bytes it came in (Automerge's save format, already checked
    /// strictly), stored as its first snapshot.
    pub(super) bytes: Vec<u8>,
    /// Its text at the heads it came with, read on a worker thread while it
    /// was loaded, so the group commit need not read it under the lock.
    pub(super) text: Option<(Vec<ChangeHash>, String)>,
}

impl OpenNote {
    /// Whether the next group commit writes the note's text: it is written
    /// at most every `TEXT_REFRESH` while the note is typed in.
    pub(super) fn text_due(&self, now: Instant) -> bool {
        self.text_written_at
            .is_none_or(|at| now.duration_since(at) >= TEXT_REFRESH)
    }

    /// The note's text: read from the document, unless it is the text the
    /// note arrived with and nothing changed since.
    pub(super) fn text(&mut self) -> String {
        let heads = self.note.heads();
        match self.arrived_whole.as_ref().and_then(|a| a.text.as_ref()) {
            Some((at, text)) if *at == heads => text.clone(),
            _ => self.note.text(),
        }
    }
}

/// How a document's stored chunks add up, for compaction decisions.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ChunkSizes {
    pub(super) snapshot_bytes: usize,
    pub(super) incremental_bytes: usize,
    pub(super) incremental_chunks: usize,
}

impl State {
    /// Makes sure a note's document is in memory, loading it from its chunks.
    pub(super) fn load(&mut self, id: &NoteId) -> Result<&mut OpenNote> {
        if !self.open.contains(id) {
            let open = self.read_note(id)?;
            self.insert_open(open)?;
        }
        Ok(self.open.get_mut(id).expect("just inserted"))
    }

    fn read_note(&mut self, id: &NoteId) -> Result<OpenNote> {
        // Loading may quarantine a chunk, which writes.
        self.require_writer()?;
        let row = self
            .store
            .row(id.as_str())?
            .ok_or_else(|| Error::NoteNotFound(id.to_string()))?;
        let (doc, sizes) = self.read_doc(id.as_str(), Some(id))?;
        let Some(mut doc) = doc else {
            return Err(Error::NoteDamaged {
                id: id.to_string(),
                detail: "none of its stored changes could be read (they are kept in \
                         quarantine); its last text is still shown by `peernotes show`"
                    .into(),
            });
        };
        if !doc.get_missing_deps(&[]).is_empty() {
            tracing::warn!(note = %id, "some changes wait for history that could not be read");
        }
        let note = Note::from_doc(id.clone(), &self.actor, doc)?;
        let space = self
            .parse_space(&row.space_id)
            .or(self.private_space)
            .ok_or(Error::ReadOnly)?;
        Ok(OpenNote {
            note,
            space,
            created_at: row.created_at,
            updated_at: row.updated_at,
            pending: Vec::new(),
            arrived_whole: None,
            snapshot_bytes: sizes.snapshot_bytes,
            incremental_bytes: sizes.incremental_bytes,
            incremental_chunks: sizes.incremental_chunks,
            text_written_at: None,
        })
    }

    /// Decodes a document's stored chunks (`key` is a note id or a space's doc
    /// key), quarantining any that fail; `None` if no chunk could be read.
    pub(super) fn read_doc(
        &mut self,
        key: &str,
        note: Option<&NoteId>,
    ) -> Result<(Option<AutoCommit>, ChunkSizes)> {
        let chunks = self.store.chunks(key)?;
        if chunks.is_empty() {
            return Ok((None, ChunkSizes::default()));
        }
        let count = |chunk: &Chunk, sizes: &mut ChunkSizes| match chunk.kind {
            ChunkKind::Snapshot => sizes.snapshot_bytes += chunk.data.len(),
            ChunkKind::Incremental => {
                sizes.incremental_bytes += chunk.data.len();
                sizes.incremental_chunks += 1;
            }
        };
        let mut sizes = ChunkSizes::default();
        if let Some(doc) = decode_all(&chunks) {
            chunks.iter().for_each(|chunk| count(chunk, &mut sizes));
            return Ok((Some(doc), sizes));
        }
        // Something is damaged: chunk by chunk, setting aside what cannot be read.
        let mut doc: Option<AutoCommit> = None;
        for chunk in chunks {
            match decode_chunk(&mut doc, &chunk) {
                Ok(()) => count(&chunk, &mut sizes),
                Err(error) if self.lock.is_none() => {
                    // A reader cannot move the chunk aside; the next writer will.
                    tracing::warn!(
                        doc = key,
                        seq = chunk.seq,
                        "skipping a damaged chunk: {error}"
                    );
                }
                Err(error) => {
                    tracing::error!(doc = key, seq = chunk.seq, "quarantining a chunk: {error}");
                    self.store.quarantine(chunk.seq, &error, now_ms())?;
                    if let Some(id) = note {
                        self.outbox.push(NodeEvent::ChunkQuarantined {
                            id: id.clone(),
                            error,
                        });
                    }
                }
            }
        }
        Ok((doc, sizes))
    }

    /// Adds a document to the cache, evicting the least recently used clean ones.
    pub(super) fn insert_open(&mut self, open: OpenNote) -> Result<()> {
        let id = open.note.id().clone();
        self.open.put(id.clone(), open);
        // A note whose batch is being written stays, as does the one just
        // put (the cache may be over capacity until the batch lands); each
        // other note is looked at once.
        let mut looked = 0;
        while self.open.len() > self.capacity && looked < self.open.len() {
            looked += 1;
            let (lru_id, _) = self.open.peek_lru().expect("cache is not empty");
            if *lru_id == id {
                break;
            }
            if self.writing.contains_key(lru_id) {
                let kept = lru_id.clone();
                self.open.promote(&kept);
                continue;
            }
            if self.dirty.contains(lru_id) || self.lagging.contains(lru_id) {
                self.flush()?;
            }
            self.open.pop_lru();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ActorId;

    #[test]
    fn the_text_a_note_arrived_with_counts_only_at_the_heads_it_came_with() {
        let actor = ActorId::random();
        let mut note = Note::create(NoteId::generate(), &actor, "hello", 1).unwrap();
        let heads = note.heads();
        let mut open = OpenNote {
            note,
            space: SpaceId::generate(),
            created_at: 1,
            updated_at: 1,
            pending: Vec::new(),
            // A text that differs from the document's, to see which is read.
            arrived_whole: Some(ArrivedWhole {
                bytes: Vec::new(),
                text: Some((heads, "as it came".into())),
            }),
            snapshot_bytes: 0,
            incremental_bytes: 0,
            incremental_chunks: 0,
            text_written_at: None,
        };
        assert_eq!(open.text(), "as it came");
        open.note.splice(0, 0, "oh, ", 2).unwrap();
        assert_eq!(open.text(), "oh, hello");
    }
}
