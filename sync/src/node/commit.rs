//! Group commit: edits change documents in memory at once; every dirty
//! note's new changes, its cached text, the space indexes and the sync states
//! go to the store in one SQLite transaction within the group-commit window,
//! written by a background flusher thread (or at once by `flush`). While a
//! note is typed in, the flusher writes its text (title, snippet, search
//! index) at most every `TEXT_REFRESH`, and its changes every commit; `flush`
//! writes every text, and a writer that starts refreshes the texts a stopped
//! one left lagging. A failed
//! write keeps everything pending and is retried; the compactions a commit
//! makes due are done by the flusher with the lock released.

use std::time::{Duration, Instant};

use super::compaction::is_due;
use super::events::send_outbox;
use super::{attest, encode_heads, latest_author, lock, Node, NodeEvent, Shared, State};
use crate::error::Result;
use crate::note::{snippet_of, title_of, NoteId};
use crate::store::{Batch, NoteRow, NoteWrite};

/// Pause before retrying a failed group commit (e.g. a full disk).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl Node {
    /// Writes every pending edit to disk now.
    pub fn flush(&self) -> Result<()> {
        self.with_state(|st| st.flush())
    }
}

impl State {
    /// Whether the group commit has anything to write, now or once a lagging
    /// text is due.
    pub(super) fn has_pending(&self) -> bool {
        self.has_writes() || !self.lagging.is_empty()
    }

    /// Whether the group commit has anything to write now.
    fn has_writes(&self) -> bool {
        !(self.dirty.is_empty()
            && self.dirty_spaces.is_empty()
            && self.sync_states.is_empty()
            && self.new_attestations.is_empty())
    }

    /// Before reading the store: writes what is pending, so the read is
    /// current. If writing fails (a full disk), the read goes on with what was
    /// saved: the failure is already reported (`StoreFailed`), and the edits
    /// stay pending and are retried.
    pub(super) fn flush_before_reading(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("reading what was saved; saving failed: {e}");
        }
    }

    /// The group commit with every note's text, then the compactions it made
    /// due.
    pub(super) fn flush(&mut self) -> Result<()> {
        for id in self.commit_pending(true)? {
            self.compact(&id)?;
        }
        Ok(())
    }

    /// At start: the notes a writer that stopped left with lagging texts get
    /// them written.
    pub(super) fn refresh_lagging_texts(&mut self) -> Result<()> {
        for id in self.store.lagging_texts()? {
            let Ok(id) = id.parse::<NoteId>() else {
                continue;
            };
            match self.load(&id) {
                Ok(_) => {
                    self.dirty.insert(id);
                }
                Err(e) => tracing::warn!(note = %id, "cannot refresh its text: {e}"),
            }
        }
        self.flush()
    }

    /// The group commit: every dirty note's new changes and cached text, in one
    /// transaction. On failure nothing is lost: the changes stay pending in memory.
    /// Returns the notes now due for compaction.
    fn commit_pending(&mut self, every_text: bool) -> Result<Vec<NoteId>> {
        // Attestations of documents still arriving wait outside the commit
        // (and do not make one due) until those documents are whole.
        let held = std::mem::take(&mut self.held_attestations);
        self.new_attestations.extend(held);
        self.held_attestations = self.take_unwritten_attestations();
        // Lagging texts whose time has come are written with the rest.
        let now = Instant::now();
        let due: Vec<NoteId> = self
            .lagging
            .iter()
            .filter(|id| every_text || self.open.peek(id).is_none_or(|o| o.text_due(now)))
            .cloned()
            .collect();
        for id in due {
            self.lagging.remove(&id);
            if self.open.contains(&id) {
                self.dirty.insert(id);
            }
        }
        if !self.has_writes() {
            return Ok(Vec::new());
        }
        // A changed space may be one this person's other devices are not in.
        if !self.dirty_spaces.is_empty() {
            self.link_siblings();
        }
        // Every change this device commits is signed: one attestation over
        // the document's heads covers it and its earlier ones.
        let mine = self.own_device();
        let mut signed: Vec<String> = self.dirty_spaces.iter().map(|id| id.doc_key()).collect();
        for id in &self.dirty {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            let chunk = open.note.take_incremental();
            let by_me = attest::authors_in([chunk.as_slice()])
                .is_none_or(|authors| mine.is_some_and(|m| authors.contains(&m)));
            if !chunk.is_empty() {
                open.pending.push(chunk);
                if by_me {
                    signed.push(id.to_string());
                }
            }
        }
        for doc in signed {
            self.own_attestation(&doc);
        }
        let mut batch = Batch {
            spaces: self.space_writes(),
            sync_states: self
                .sync_states
                .iter()
                .map(|((peer, doc), saved)| {
                    (
                        peer.clone(),
                        doc.clone(),
                        saved.state.clone(),
                        saved.their_heads.clone(),
                    )
                })
                .collect(),
            attestations: self
                .new_attestations
                .iter()
                .map(|((doc, (author, legacy)), attestation)| {
                    let mut author = author.to_vec();
                    if *legacy {
                        author.push(1);
                    }
                    (
                        doc.clone(),
                        author,
                        postcard::to_stdvec(attestation).expect("an attestation encodes"),
                    )
                })
                .collect(),
            private_switch: self
                .private_switch
                .map(|(old, new)| (old.to_string(), new.to_string())),
            ..Batch::default()
        };
        let writes = &mut batch.notes;
        for id in &self.dirty {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            let with_text = every_text || open.text_due(now);
            let text = if with_text {
                open.text()
            } else {
                String::new()
            };
            writes.push(NoteWrite {
                with_text,
                row: NoteRow {
                    id: id.to_string(),
                    space_id: open.space.to_string(),
                    heads: encode_heads(&open.note.heads()),
                    title: title_of(&text),
                    snippet: snippet_of(&text),
                    text,
                    created_at: open.created_at,
                    updated_at: open.updated_at,
                    trashed_at: open.note.trashed_at(),
                    updated_by: latest_author(open.note.doc_mut()),
                    updated_by_unverified: false,
                },
                snapshot: open.arrived_whole.as_ref().map(|a| a.bytes.clone()),
                chunks: open.pending.clone(),
            });
        }
        for write in &mut batch.notes {
            write.row.updated_by_unverified =
                self.unverified_author(&write.row.id, &write.row.updated_by);
        }
        let written = self.store.commit(&batch);
        if let Err(e) = written {
            self.store_failing = true;
            self.outbox.push(NodeEvent::StoreFailed {
                message: e.to_string(),
            });
            return Err(e);
        }
        if std::mem::take(&mut self.store_failing) {
            self.outbox.push(NodeEvent::StoreRecovered);
        }
        self.sync_states.clear();
        self.new_attestations.clear();
        let written_spaces = self.spaces_written();
        let written = std::mem::take(&mut self.dirty);
        let mut lagging = Vec::new();
        // `batch.notes` was made from `dirty`, in its order.
        for (id, write) in written.iter().zip(&batch.notes) {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            if write.with_text {
                open.text_written_at = Some(now);
            } else {
                lagging.push(id.clone());
            }
            open.incremental_bytes += open.pending.iter().map(Vec::len).sum::<usize>();
            open.incremental_chunks += open.pending.len();
            open.pending.clear();
            if let Some(arrived) = open.arrived_whole.take() {
                open.snapshot_bytes = arrived.bytes.len();
            }
        }
        self.lagging.extend(lagging);
        let due = written
            .into_iter()
            .filter(|id| is_due(self.open.peek(id).expect("dirty notes stay in memory")))
            .collect();
        self.compact_spaces(&written_spaces)?;
        Ok(due)
    }
}

pub(super) fn run_flusher(shared: &Shared, window: Duration) {
    let mut st = lock(&shared.state);
    loop {
        while !st.has_pending() && !st.shutdown {
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.shutdown {
            return;
        }
        drop(st);
        std::thread::sleep(window);
        st = lock(&shared.state);
        let committed = st.commit_pending(false);
        let failed = committed.is_err();
        // Compactions save a copy of the document with the lock released, so
        // editing goes on meanwhile.
        for id in committed.unwrap_or_default() {
            let mut compaction = match st.prepare_compaction(&id) {
                Ok(Some(compaction)) => compaction,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(note = %id, "not compacted: {e}");
                    continue;
                }
            };
            drop(st);
            let snapshot = compaction.doc.save();
            st = lock(&shared.state);
            if let Err(e) = st.finish_compaction(compaction, &snapshot) {
                tracing::warn!(note = %id, "not compacted: {e}");
            }
        }
        drop(st);
        send_outbox(shared);
        if failed {
            std::thread::sleep(RETRY_AFTER_FAILURE);
        }
        st = lock(&shared.state);
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::TEXT_REFRESH;
    use super::*;
    use crate::store::Store;
    use crate::NodeOptions;

    fn stored_text(node: &Node, id: &NoteId) -> String {
        let st = lock(&node.shared.state);
        st.store.row(id.as_str()).unwrap().unwrap().text
    }

    /// Marks the note's text as written just now (or `ago` before).
    fn text_written(node: &Node, id: &NoteId, ago: Duration) {
        let mut st = lock(&node.shared.state);
        st.open.peek_mut(id).unwrap().text_written_at = Some(Instant::now() - ago);
    }

    /// A note "# Draft\n" whose text was just written, then `typed` at its
    /// end and committed by the flusher: its stored text lags.
    fn typed_in(node: &Node, typed: &str) -> NoteId {
        let id = node.create("# Draft\n").unwrap();
        node.flush().unwrap();
        text_written(node, &id, Duration::ZERO);
        node.splice(&id, 8, 0, typed).unwrap();
        lock(&node.shared.state).commit_pending(false).unwrap();
        id
    }

    #[test]
    fn while_a_note_is_typed_in_its_text_is_written_at_most_every_second() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = typed_in(&node, "typed");
        assert_eq!(stored_text(&node, &id), "# Draft\n", "the text lags");
        {
            let mut st = lock(&node.shared.state);
            assert_eq!(st.store.lagging_texts().unwrap(), vec![id.to_string()]);
            let heads = st.store.row(id.as_str()).unwrap().unwrap().heads;
            let open = st.open.peek_mut(&id).unwrap();
            assert_eq!(
                heads,
                encode_heads(&open.note.heads()),
                "its changes are stored"
            );
        }
        assert_eq!(node.get(&id).unwrap().text, "# Draft\ntyped");

        // A second later the next commit writes it, and search finds it.
        text_written(&node, &id, TEXT_REFRESH);
        lock(&node.shared.state).commit_pending(false).unwrap();
        assert_eq!(stored_text(&node, &id), "# Draft\ntyped");
        assert!(lock(&node.shared.state)
            .store
            .lagging_texts()
            .unwrap()
            .is_empty());
        let found = node.search("typed", 10).unwrap();
        assert_eq!(found.len(), 1);
        node.close().unwrap();
    }

    #[test]
    fn a_text_a_stopped_writer_left_lagging_is_written_when_the_next_starts() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = typed_in(&node, "typed before the crash");
        // As if the process died now: nothing writes the text on the way out.
        lock(&node.shared.state).lagging.clear();
        node.close().unwrap();
        assert_eq!(
            Store::open(dir.path()).unwrap().lagging_texts().unwrap(),
            vec![id.to_string()]
        );

        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        assert_eq!(stored_text(&node, &id), "# Draft\ntyped before the crash");
        assert_eq!(
            node.search("crash", 10).unwrap().len(),
            1,
            "the search index has it too"
        );
        node.close().unwrap();
    }

    #[test]
    fn a_note_shown_from_its_lagging_row_names_the_heads_its_text_is_of() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = node.create("# Draft\n").unwrap();
        node.flush().unwrap();
        let (_, written) = node.checkout(&id).unwrap();
        text_written(&node, &id, Duration::ZERO);
        node.splice(&id, 8, 0, "typed").unwrap();
        lock(&node.shared.state).commit_pending(false).unwrap();
        let (_, now) = node.checkout(&id).unwrap();
        assert_ne!(written, now);
        let hex =
            |heads: &crate::node::Heads| heads.0.iter().map(|h| h.to_string()).collect::<Vec<_>>();

        assert_eq!(
            node.get(&id).unwrap().heads,
            hex(&now),
            "in memory: the document's own"
        );
        // Out of memory without a flush (as after a crash): the row's text is
        // the one written before the typing, and so are its heads.
        lock(&node.shared.state).open.pop(&id);
        let shown = node.get(&id).unwrap();
        assert_eq!(shown.text, "# Draft\n");
        assert_eq!(shown.heads, hex(&written));
        node.close().unwrap();
    }
}
