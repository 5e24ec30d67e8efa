//! The note model: one Automerge document per note.
//!
//! A note's document holds `text` (an Automerge Text of Markdown), `created_at`
//! (unix ms, written once by the device that created the note) and `trashed_at`
//! (unix ms, or absent). The title is derived, never stored in the document: it is
//! the first non-empty line of the text. This module knows nothing of storage or
//! the network; it turns user intents into Automerge changes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};
use serde::{Deserialize, Serialize};
use similar::{DiffOp, TextDiff};

use crate::error::{Error, Result};

/// A note's stable identity: 32 lowercase hex digits (a random UUID v4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NoteId(String);

impl NoteId {
    pub const LEN: usize = 32;

    pub fn generate() -> NoteId {
        NoteId(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight digits: what the CLI shows and what users type.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }

    /// Whether `s` could be the start of a note id (used to resolve typed prefixes).
    pub fn is_valid_prefix(s: &str) -> bool {
        !s.is_empty() && s.len() <= Self::LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NoteId {
    type Err = Error;
    fn from_str(s: &str) -> Result<NoteId> {
        if s.len() == Self::LEN && Self::is_valid_prefix(s) {
            Ok(NoteId(s.to_ascii_lowercase()))
        } else {
            Err(Error::BadNoteId(s.to_string()))
        }
    }
}

impl TryFrom<String> for NoteId {
    type Error = Error;
    fn try_from(s: String) -> Result<NoteId> {
        s.parse()
    }
}

impl From<NoteId> for String {
    fn from(id: NoteId) -> String {
        id.0
    }
}

/// Longest title kept, in characters; longer first lines are cut.
const TITLE_MAX_CHARS: usize = 200;
/// Length of the snippet shown under a title in lists, in characters.
const SNIPPET_MAX_CHARS: usize = 160;
/// How long the minimal diff of an external edit may search before settling for a
/// coarser (still correct) diff.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);
/// Most characters one change inserts: a longer text (a big paste, an import,
/// a replaced file) goes in as several changes of this many. Automerge holds
/// a transaction's ops uncompressed until it commits (a 5 MB insert as one
/// change peaks at 1.5 GB, in changes of this size at under 100 MB), and a
/// peer vets each change against a budget of column entries.
pub const MAX_INSERT_PER_CHANGE: usize = 64 * 1024;

/// A note's title: its first non-empty line, without Markdown heading marks.
pub fn title_of(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.trim_start_matches('#').trim();
    line.chars().take(TITLE_MAX_CHARS).collect()
}

/// A one-line preview of the text after the title line, whitespace collapsed.
pub fn snippet_of(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
    lines.next(); // the title line
    let mut snippet = String::new();
    for word in lines.flat_map(str::split_whitespace) {
        if !snippet.is_empty() {
            snippet.push(' ');
        }
        snippet.push_str(word);
        if snippet.chars().count() >= SNIPPET_MAX_CHARS {
            break;
        }
    }
    snippet.chars().take(SNIPPET_MAX_CHARS).collect()
}

/// One text edit: delete `delete` characters at `pos`, then insert `insert` there.
/// Positions count Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splice {
    pub pos: usize,
    pub delete: usize,
    pub insert: String,
}

/// One change in a note's history, for `peernotes log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeInfo {
    pub hash: String,
    /// Seconds since the Unix epoch, as recorded by the device that made the change.
    pub time: i64,
    pub actor: String,
    pub ops: usize,
}

/// A note and its Automerge document.
pub struct Note {
    id: NoteId,
    doc: AutoCommit,
    text: ObjId,
    /// The heads already handed out by `take_incremental` or `save`. Kept here
    /// rather than in Automerge's own save cursor, which a loaded document starts
    /// empty: the first incremental save after a load would repeat all history.
    saved: Vec<ChangeHash>,
}

impl Note {
    /// Creates a new note. This is the only place a note's document is created: the
    /// document's objects come into being once, on one device, so replicas never
    /// race to create them.
    pub fn create(id: NoteId, actor: &ActorId, text: &str, now_ms: i64) -> Result<Note> {
        let mut doc = AutoCommit::new().with_actor(actor.clone());
        let text_obj = doc
            .put_object(ROOT, "text", ObjType::Text)
            .map_err(|e| damaged(&id, e))?;
        doc.put(ROOT, "created_at", now_ms)
            .map_err(|e| damaged(&id, e))?;
        insert_in_pieces(&mut doc, &text_obj, 0, text, now_ms).map_err(|e| damaged(&id, e))?;
        doc.commit_with(CommitOptions::default().with_time(now_ms / 1000));
        Ok(Note {
            id,
            doc,
            text: text_obj,
            saved: Vec::new(),
        })
    }

    /// Wraps a loaded document, checking it has the shape of a note.
    /// Everything in `doc` counts as already stored.
    pub fn from_doc(id: NoteId, actor: &ActorId, doc: AutoCommit) -> Result<Note> {
        let mut doc = doc.with_actor(actor.clone());
        let saved = doc.get_heads();
        let text = match doc.get(ROOT, "text") {
            Ok(Some((Value::Object(ObjType::Text), obj))) => obj,
            Ok(_) => {
                return Err(Error::NoteDamaged {
                    id: id.to_string(),
                    detail: "its document has no text".into(),
                })
            }
            Err(e) => return Err(damaged(&id, e)),
        };
        Ok(Note {
            id,
            doc,
            text,
            saved,
        })
    }

    /// Wraps a document that arrived from a peer: none of it is stored yet.
    pub fn from_remote(id: NoteId, actor: &ActorId, doc: AutoCommit) -> Result<Note> {
        let mut note = Note::from_doc(id, actor, doc)?;
        note.saved.clear();
        Ok(note)
    }

    pub fn id(&self) -> &NoteId {
        &self.id
    }

    pub fn text(&self) -> String {
        self.doc.text(&self.text).unwrap_or_default()
    }

    pub fn title(&self) -> String {
        title_of(&self.text())
    }

    pub fn len_chars(&self) -> usize {
        self.doc.length(&self.text)
    }

    pub fn created_at(&self) -> i64 {
        self.get_i64("created_at").unwrap_or(0)
    }

    pub fn trashed_at(&self) -> Option<i64> {
        self.get_i64("trashed_at")
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Deletes `delete` characters at `pos` and inserts `insert` there, as one change.
    /// Positions count Unicode scalar values.
    pub fn splice(&mut self, pos: usize, delete: usize, insert: &str, now_ms: i64) -> Result<()> {
        let edit = Splice {
            pos,
            delete,
            insert: insert.to_string(),
        };
        self.splice_many(std::slice::from_ref(&edit), now_ms)
    }

    /// Applies several splices, in order, as one change (one editor transaction).
    /// All are checked first: either every splice applies or none does.
    pub fn splice_many(&mut self, edits: &[Splice], now_ms: i64) -> Result<()> {
        let mut len = self.len_chars();
        for edit in edits {
            if edit.pos > len || edit.delete > len - edit.pos {
                return Err(Error::Invalid(format!(
                    "edit at {}..{} is outside note {} ({len} characters)",
                    edit.pos,
                    edit.pos + edit.delete,
                    self.id.short()
                )));
            }
            len = len - edit.delete + edit.insert.chars().count();
        }
        for edit in edits {
            self.doc
                .splice_text(&self.text, edit.pos, edit.delete as isize, &edit.insert)
                .map_err(|e| damaged(&self.id, e))?;
        }
        self.commit(now_ms);
        Ok(())
    }

    /// Applies splices to the text as it was at `base` (positions relative to
    /// that state), as one change whose dependencies are `base`; it merges with
    /// whatever else the document holds. Returns the heads right after it.
    pub fn splice_many_at(
        &mut self,
        base: &[ChangeHash],
        edits: &[Splice],
        now_ms: i64,
    ) -> Result<Vec<ChangeHash>> {
        if base
            .iter()
            .any(|h| self.doc.get_change_meta_by_hash(h).is_none())
        {
            return Err(Error::Invalid(format!(
                "note {} does not have the state the edit was made against",
                self.id.short()
            )));
        }
        let mut sorted = base.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if self.doc.get_heads() == sorted {
            // At the current state already: the same edit, without the
            // isolation (which walks the whole document twice).
            self.splice_many(edits, now_ms)?;
            return Ok(self.doc.get_heads());
        }
        self.doc.isolate(base);
        let result = self.splice_many(edits, now_ms);
        let after = self.doc.get_heads();
        self.doc.integrate();
        result.map(|()| after)
    }

    /// Replaces the whole text by a minimal character diff, so an external editor's
    /// save becomes a few splices that merge with concurrent edits, not a rewrite.
    /// Returns whether anything changed.
    pub fn replace_text(&mut self, new_text: &str, now_ms: i64) -> Result<bool> {
        let old_text = self.text();
        let changed = apply_diff(&mut self.doc, &self.text, &old_text, new_text, now_ms)
            .map_err(|e| damaged(&self.id, e))?;
        if changed {
            self.commit(now_ms);
        }
        Ok(changed)
    }

    /// Like `replace_text`, but the diff is taken against the text as it was at
    /// `base` (when an external editor opened it) and merged with whatever happened
    /// since, so edits made meanwhile are kept.
    pub fn replace_text_since(
        &mut self,
        base: &[ChangeHash],
        new_text: &str,
        now_ms: i64,
    ) -> Result<bool> {
        if self.doc.get_heads() == base {
            // Nothing happened meanwhile: edit in place, as this device.
            return self.replace_text(new_text, now_ms);
        }
        let mut fork = self.doc.fork_at(base).map_err(|e| damaged(&self.id, e))?;
        let base_text = fork.text(&self.text).map_err(|e| damaged(&self.id, e))?;
        let changed = apply_diff(&mut fork, &self.text, &base_text, new_text, now_ms)
            .map_err(|e| damaged(&self.id, e))?;
        if changed {
            fork.commit_with(CommitOptions::default().with_time(now_ms / 1000));
            self.doc
                .merge(&mut fork)
                .map_err(|e| damaged(&self.id, e))?;
        }
        Ok(changed)
    }

    pub fn trash(&mut self, now_ms: i64) -> Result<()> {
        self.doc
            .put(ROOT, "trashed_at", now_ms)
            .map_err(|e| damaged(&self.id, e))?;
        self.commit(now_ms);
        Ok(())
    }

    pub fn restore(&mut self, now_ms: i64) -> Result<()> {
        if self.trashed_at().is_some() {
            self.doc
                .delete(ROOT, "trashed_at")
                .map_err(|e| damaged(&self.id, e))?;
            self.commit(now_ms);
        }
        Ok(())
    }

    /// The changes made since the last call, encoded for appending to the store.
    /// Empty when nothing changed.
    pub fn take_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.saved);
        self.saved = self.doc.get_heads();
        bytes
    }

    /// The whole document as one compact snapshot.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.saved = self.doc.get_heads();
        bytes
    }

    /// The newest `limit` changes, newest first.
    pub fn history(&mut self, limit: usize) -> Vec<ChangeInfo> {
        let changes = self.doc.get_changes(&[]);
        changes
            .iter()
            .rev()
            .take(limit)
            .map(|c| ChangeInfo {
                hash: c.hash().to_string(),
                time: c.timestamp(),
                actor: c.actor_id().to_hex_string(),
                ops: c.len(),
            })
            .collect()
    }

    pub fn change_count(&mut self) -> usize {
        self.doc.get_changes(&[]).len()
    }

    /// When a head of the note is a change by `device` (a node id's 32
    /// bytes), adds an empty change on the current heads: this device vouches
    /// for what `device` wrote so far, which members then accept from anyone
    /// after `device` is removed. Returns whether it did.
    pub fn vouch_for(&mut self, device: &[u8], now_ms: i64) -> bool {
        let heads = self.doc.get_heads();
        let by_device = heads.iter().any(|head| {
            self.doc
                .get_change_meta_by_hash(head)
                .is_some_and(|meta| meta.actor.to_bytes().starts_with(device))
        });
        if by_device {
            self.doc
                .empty_change(CommitOptions::default().with_time(now_ms / 1000));
        }
        by_device
    }

    pub fn doc_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    fn commit(&mut self, now_ms: i64) {
        self.doc
            .commit_with(CommitOptions::default().with_time(now_ms / 1000));
    }

    fn get_i64(&self, key: &str) -> Option<i64> {
        match self.doc.get(ROOT, key) {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Int(v) => Some(*v),
                ScalarValue::Uint(v) => i64::try_from(*v).ok(),
                ScalarValue::Timestamp(v) => Some(*v),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Applies the character diff from `old` to `new` to the text object `obj`.
/// Long insertions are committed in pieces (`insert_in_pieces`); the caller
/// commits the rest.
fn apply_diff(
    doc: &mut AutoCommit,
    obj: &ObjId,
    old: &str,
    new: &str,
    now_ms: i64,
) -> Result<bool, automerge::AutomergeError> {
    if old == new {
        return Ok(false);
    }
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_chars(old, new);
    let new_chars: Vec<char> = new.chars().collect();
    // Apply from the end so earlier positions stay valid.
    for op in diff.ops().iter().rev() {
        let (at, delete, inserted) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index, old_len, 0..0),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index, 0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index, old_len, new_index..new_index + new_len),
        };
        if delete > 0 {
            doc.splice_text(obj, at, delete as isize, "")?;
        }
        let s: String = new_chars[inserted].iter().collect();
        insert_in_pieces(doc, obj, at, &s, now_ms)?;
    }
    Ok(true)
}

/// Inserts `text` at `at`, committing a change after every
/// `MAX_INSERT_PER_CHANGE` characters but the last ones, which are left in
/// the open transaction for the caller's commit.
fn insert_in_pieces(
    doc: &mut AutoCommit,
    obj: &ObjId,
    mut at: usize,
    text: &str,
    now_ms: i64,
) -> Result<(), automerge::AutomergeError> {
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest
            .char_indices()
            .nth(MAX_INSERT_PER_CHANGE)
            .map_or(rest.len(), |(i, _)| i);
        let (piece, after) = rest.split_at(cut);
        doc.splice_text(obj, at, 0, piece)?;
        at += piece.chars().count();
        rest = after;
        if !rest.is_empty() {
            doc.commit_with(CommitOptions::default().with_time(now_ms / 1000));
        }
    }
    Ok(())
}

fn damaged(id: &NoteId, e: automerge::AutomergeError) -> Error {
    Error::NoteDamaged {
        id: id.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> ActorId {
        ActorId::random()
    }

    /// A text of `chars` characters, some of them outside ASCII.
    fn long_text(chars: usize) -> String {
        "ab\ncdé—f🙂 ".chars().cycle().take(chars).collect()
    }

    #[test]
    fn a_long_text_goes_in_as_several_changes_of_bounded_size() {
        let text = long_text(MAX_INSERT_PER_CHANGE * 2 + 10);
        let mut note = Note::create(NoteId::generate(), &actor(), &text, 1_000).unwrap();
        assert_eq!(note.text(), text);
        assert_eq!(note.change_count(), 3);
        let largest = note
            .doc_mut()
            .get_changes(&[])
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap();
        assert!(
            largest <= MAX_INSERT_PER_CHANGE + 2,
            "{largest} ops in one change"
        );

        let pasted = format!(
            "{}{}{}",
            &text[..5],
            long_text(MAX_INSERT_PER_CHANGE + 1),
            &text[5..]
        );
        assert!(note.replace_text(&pasted, 2_000).unwrap());
        assert_eq!(note.text(), pasted);
        assert_eq!(note.change_count(), 5);
        let reloaded = Note::from_doc(
            note.id().clone(),
            &actor(),
            AutoCommit::load(&note.save()).unwrap(),
        )
        .unwrap();
        assert_eq!(reloaded.text(), pasted);
    }

    #[test]
    fn title_is_the_first_non_empty_line_without_heading_marks() {
        assert_eq!(title_of("\n\n  # Groceries \nmilk"), "Groceries");
        assert_eq!(title_of(""), "");
        assert_eq!(title_of("plain\nsecond"), "plain");
        assert_eq!(
            snippet_of("# T\n\nfirst  line\nsecond"),
            "first line second"
        );
    }

    #[test]
    fn replacing_text_makes_a_small_diff_not_a_rewrite() {
        let base = "line one\nline two\nline three\n".repeat(50);
        let mut note = Note::create(NoteId::generate(), &actor(), &base, 0).unwrap();
        let edited = base.replacen("two", "2", 1);
        assert!(note.replace_text(&edited, 1000).unwrap());
        assert_eq!(note.text(), edited);
        let last = note.doc_mut().get_last_local_change().unwrap();
        assert!(last.len() < 10, "diff produced {} ops", last.len());
        assert!(!note.replace_text(&edited, 2000).unwrap());
    }

    #[test]
    fn an_external_edit_merges_with_edits_made_meanwhile() {
        let mut note = Note::create(NoteId::generate(), &actor(), "alpha\nbeta\n", 0).unwrap();
        let base = note.heads();
        note.splice(0, 0, "0 ", 1).unwrap();
        note.replace_text_since(&base, "alpha\nbeta\ngamma\n", 2)
            .unwrap();
        assert_eq!(note.text(), "0 alpha\nbeta\ngamma\n");
    }

    #[test]
    fn trash_and_restore_round_trip_through_a_save() {
        let a = actor();
        let mut note = Note::create(NoteId::generate(), &a, "x", 5).unwrap();
        note.trash(10).unwrap();
        let bytes = note.save();
        let mut loaded =
            Note::from_doc(note.id().clone(), &a, AutoCommit::load(&bytes).unwrap()).unwrap();
        assert_eq!(loaded.trashed_at(), Some(10));
        assert_eq!(loaded.created_at(), 5);
        loaded.restore(20).unwrap();
        assert_eq!(loaded.trashed_at(), None);
    }

    #[test]
    fn splices_outside_the_text_are_refused() {
        let mut note = Note::create(NoteId::generate(), &actor(), "abc", 0).unwrap();
        assert!(note.splice(4, 0, "x", 0).is_err());
        assert!(note.splice(2, 2, "", 0).is_err());
        note.splice(3, 0, "é😀", 0).unwrap();
        assert_eq!(note.text(), "abcé😀");
    }

    #[test]
    fn note_ids_parse_only_full_hex() {
        let id = NoteId::generate();
        assert_eq!(id.as_str().parse::<NoteId>().unwrap(), id);
        assert!("xyz".parse::<NoteId>().is_err());
        assert!(id.short().parse::<NoteId>().is_err());
    }
}
