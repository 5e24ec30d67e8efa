//! Group commit: edits change documents in memory at once; every dirty
//! note's new changes, its cached text, the space indexes and the sync states
//! go to the store in one SQLite transaction within the group-commit window,
//! written by a background flusher thread (or at once by `flush`). While a
//! note is typed in, the flusher writes its text (title, snippet, search
//! index) at most every `TEXT_REFRESH`, and its changes every commit; `flush`
//! writes every text, and a writer that starts refreshes the texts a stopped
//! one left lagging. The flusher builds a batch under the lock and, unless it
//! writes a space, writes it on a connection of its own with the lock
//! released (SQLite's write lock taken first, so batches land in the order
//! they were built). A failed write keeps everything pending and is retried;
//! the compactions a commit makes due are done by the flusher with the lock
//! released.

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::compaction::is_due;
use super::events::send_outbox;
use super::{attest, encode_heads, latest_author, lock, Node, NodeEvent, Shared, State};
use crate::authorship::{Attestation, DeviceKey};
use crate::error::Result;
use crate::note::{snippet_of, title_of, NoteId};
use crate::store::{Batch, NoteRow, NoteWrite, Store};

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
        if !self.writing.is_empty() {
            // The flusher is writing a batch with the lock released: wait
            // for SQLite's write lock, so what follows reads what it wrote.
            drop(self.store.begin_batch()?);
        }
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
        let Some(prepared) = self.prepare_commit(every_text) else {
            return Ok(Vec::new());
        };
        let written = self
            .store
            .begin_batch()
            .and_then(|batch| batch.write(&prepared.batch));
        self.finish_commit(prepared, written)
    }

    /// Builds the group commit's batch and takes what it writes out of the
    /// State: the dirty notes and their pending chunks (the notes stay in
    /// memory while it is written), the attestations. Sync states stay as
    /// the read cache until the batch has landed. `None` if there is
    /// nothing to write.
    pub(super) fn prepare_commit(&mut self, every_text: bool) -> Option<Prepared> {
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
            return None;
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
        let attestations = std::mem::take(&mut self.new_attestations);
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
            attestations: attestations
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
        let notes: Vec<NoteId> = std::mem::take(&mut self.dirty).into_iter().collect();
        for id in &notes {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            let with_text = every_text || open.text_due(now);
            let text = if with_text {
                open.text()
            } else {
                String::new()
            };
            batch.notes.push(NoteWrite {
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
                chunks: std::mem::take(&mut open.pending),
            });
        }
        for write in &mut batch.notes {
            write.row.updated_by_unverified =
                self.unverified_author(&write.row.id, &write.row.updated_by);
        }
        for id in &notes {
            *self.writing.entry(id.clone()).or_default() += 1;
        }
        Some(Prepared {
            batch,
            notes,
            attestations,
            now,
        })
    }

    /// After a prepared batch was written (`written`): on success, what it
    /// wrote is no longer pending and the cache's bookkeeping follows; on
    /// failure everything it took is pending again, before anything made
    /// since. Returns the notes now due for compaction.
    pub(super) fn finish_commit(
        &mut self,
        prepared: Prepared,
        written: Result<()>,
    ) -> Result<Vec<NoteId>> {
        let Prepared {
            batch,
            notes,
            attestations,
            now,
        } = prepared;
        for id in &notes {
            if let Some(count) = self.writing.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    self.writing.remove(id);
                }
            }
        }
        if let Err(e) = written {
            self.store_failing = true;
            self.outbox.push(NodeEvent::StoreFailed {
                message: e.to_string(),
            });
            for (id, write) in notes.into_iter().zip(batch.notes) {
                let open = self
                    .open
                    .peek_mut(&id)
                    .expect("notes being written stay in memory");
                let mut chunks = write.chunks;
                chunks.append(&mut open.pending);
                open.pending = chunks;
                self.dirty.insert(id);
            }
            for (key, list) in attestations {
                self.new_attestations.entry(key).or_insert(list);
            }
            return Err(e);
        }
        self.store.record_written(&batch);
        if std::mem::take(&mut self.store_failing) {
            self.outbox.push(NodeEvent::StoreRecovered);
        }
        // Sync states now stored are read from the store again, unless a
        // newer one came meanwhile.
        for (peer, doc, state, their_heads) in &batch.sync_states {
            let key = (peer.clone(), doc.clone());
            if self
                .sync_states
                .get(&key)
                .is_some_and(|s| s.state == *state && s.their_heads == *their_heads)
            {
                self.sync_states.remove(&key);
            }
        }
        let written_spaces = if batch.spaces.is_empty() && batch.private_switch.is_none() {
            Vec::new()
        } else {
            self.spaces_written()
        };
        let mut lagging = Vec::new();
        for (id, write) in notes.iter().zip(&batch.notes) {
            let open = self
                .open
                .peek_mut(id)
                .expect("notes being written stay in memory");
            if write.with_text {
                open.text_written_at = Some(now);
            } else {
                lagging.push(id.clone());
            }
            open.incremental_bytes += write.chunks.iter().map(Vec::len).sum::<usize>();
            open.incremental_chunks += write.chunks.len();
            if write.snapshot.is_some() {
                if let Some(arrived) = open.arrived_whole.take() {
                    open.snapshot_bytes = arrived.bytes.len();
                }
            }
        }
        self.lagging.extend(lagging);
        let due = notes
            .into_iter()
            .filter(|id| is_due(self.open.peek(id).expect("written notes stay in memory")))
            .collect();
        self.compact_spaces(&written_spaces)?;
        Ok(due)
    }
}

/// A group commit built under the lock (`State::prepare_commit`), to be
/// written and then finished (`State::finish_commit`).
pub(super) struct Prepared {
    batch: Batch,
    /// The notes it writes, in `batch.notes` order.
    notes: Vec<NoteId>,
    /// The attestations it writes, out of `State::new_attestations`.
    attestations: BTreeMap<(String, (DeviceKey, bool)), Vec<Attestation>>,
    now: Instant,
}

impl Prepared {
    /// Whether it can be written with the lock released: it writes notes,
    /// sync states and attestations only. A batch that writes a space is
    /// finished with work on the spaces (the private switch, compaction)
    /// that must not race edits, so it is written under the lock.
    fn writes_notes_only(&self) -> bool {
        self.batch.spaces.is_empty() && self.batch.private_switch.is_none()
    }
}

/// The flusher's group commit. Built under the lock; a batch of notes only
/// is then written on the flusher's own connection (`writer`) with the lock
/// released, so typing, sync and reads go on during the write and its
/// fsync; then finished under the lock. SQLite's write lock is taken before
/// the Node's is released, so a `flush` meanwhile lands after it.
fn commit_released<'a>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, State>,
    writer: Option<&mut Store>,
) -> (MutexGuard<'a, State>, Result<Vec<NoteId>>) {
    let Some(writer) = writer else {
        let committed = st.commit_pending(false);
        return (st, committed);
    };
    let Some(prepared) = st.prepare_commit(false) else {
        return (st, Ok(Vec::new()));
    };
    if !prepared.writes_notes_only() {
        let written = st
            .store
            .begin_batch()
            .and_then(|batch| batch.write(&prepared.batch));
        let committed = st.finish_commit(prepared, written);
        return (st, committed);
    }
    let written = match writer.begin_batch() {
        Err(e) => Err(e),
        Ok(batch) => {
            drop(st);
            let written = batch.write(&prepared.batch);
            st = lock(&shared.state);
            written
        }
    };
    let committed = st.finish_commit(prepared, written);
    (st, committed)
}

pub(super) fn run_flusher(shared: &Shared, window: Duration) {
    let mut st = lock(&shared.state);
    let mut writer = match st.store.open_writer() {
        Ok(writer) => Some(writer),
        Err(e) => {
            tracing::warn!("the group commit writes under the lock: {e}");
            None
        }
    };
    loop {
        while !st.has_pending() && !st.shutdown {
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.shutdown {
            return;
        }
        drop(st);
        std::thread::sleep(window);
        let (locked, committed) = commit_released(shared, lock(&shared.state), writer.as_mut());
        st = locked;
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

    /// A Node whose flusher waits long enough not to commit during a test,
    /// keeping at most `capacity` notes in memory.
    fn quiet_node(dir: &std::path::Path, capacity: usize) -> Node {
        let mut options = NodeOptions::new(dir);
        options.group_commit = Duration::from_secs(2);
        options.cache_capacity = capacity;
        Node::open(options).unwrap()
    }

    /// A note "# Draft\n" stored, then "one" typed at its end and its batch
    /// prepared (taken out of the State, not yet written).
    fn prepared_edit(node: &Node) -> (NoteId, Prepared) {
        let id = node.create("# Draft\n").unwrap();
        node.flush().unwrap();
        node.splice(&id, 8, 0, "one").unwrap();
        let prepared = lock(&node.shared.state).prepare_commit(true).unwrap();
        (id, prepared)
    }

    /// Writes a prepared batch on a connection of its own, as the flusher
    /// does with the lock released.
    fn write_released(node: &Node, prepared: &Prepared) -> Result<()> {
        let mut writer = lock(&node.shared.state).store.open_writer()?;
        let written = writer
            .begin_batch()
            .and_then(|batch| batch.write(&prepared.batch));
        written
    }

    #[test]
    fn edits_made_while_a_batch_is_written_without_the_lock_are_kept_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = quiet_node(dir.path(), 64);
        let (id, prepared) = prepared_edit(&node);

        // While it is written: more typing, and a read.
        node.splice(&id, 11, 0, " two").unwrap();
        assert_eq!(node.get(&id).unwrap().text, "# Draft\none two");
        let written = write_released(&node, &prepared);
        lock(&node.shared.state)
            .finish_commit(prepared, written)
            .unwrap();
        assert_eq!(stored_text(&node, &id), "# Draft\none", "the batch landed");

        node.close().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        assert_eq!(node.get(&id).unwrap().text, "# Draft\none two");
        assert_eq!(stored_text(&node, &id), "# Draft\none two");
        node.close().unwrap();
    }

    #[test]
    fn a_batch_that_fails_without_the_lock_is_pending_again_before_later_edits() {
        let dir = tempfile::tempdir().unwrap();
        let node = quiet_node(dir.path(), 64);
        let (id, prepared) = prepared_edit(&node);
        node.splice(&id, 11, 0, " two").unwrap();
        let failed = Err(crate::Error::Invalid("the disk is full".into()));
        assert!(lock(&node.shared.state)
            .finish_commit(prepared, failed)
            .is_err());
        assert_eq!(stored_text(&node, &id), "# Draft\n", "nothing landed");

        node.close().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        assert_eq!(node.get(&id).unwrap().text, "# Draft\none two");
        node.close().unwrap();
    }

    #[test]
    fn a_note_being_written_is_not_evicted_and_a_flush_waits_for_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let node = quiet_node(dir.path(), 1);
        let (id, prepared) = prepared_edit(&node);
        // Another note takes the one place in memory: the written one stays.
        let other = node.create("# Other\n").unwrap();
        assert!(lock(&node.shared.state).open.contains(&id));
        assert!(lock(&node.shared.state).open.contains(&other));
        // A flush meanwhile writes the same note again.
        node.splice(&id, 11, 0, " two").unwrap();
        let mut writer = lock(&node.shared.state).store.open_writer().unwrap();
        let batch = writer.begin_batch().unwrap();
        let flushing = std::thread::scope(|scope| {
            let flusher = scope.spawn(|| node.flush());
            std::thread::sleep(Duration::from_millis(200));
            assert!(!flusher.is_finished(), "the flush waits for the batch");
            batch.write(&prepared.batch).unwrap();
            flusher.join().unwrap()
        });
        flushing.unwrap();
        // The flush's batch is finished, the first is not: it still stays.
        node.create("# Third\n").unwrap();
        assert!(lock(&node.shared.state).open.contains(&id));
        lock(&node.shared.state)
            .finish_commit(prepared, Ok(()))
            .unwrap();
        assert_eq!(stored_text(&node, &id), "# Draft\none two");
        node.close().unwrap();
    }
}
