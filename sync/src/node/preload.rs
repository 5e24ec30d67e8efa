//! Loading a whole document a peer sent before the Node's lock is taken.
//!
//! Most of what taking in a `Document` frame costs — Automerge's load with
//! its checks, the shape check, reading the changes' metadata — needs nothing
//! of the Node. A connection does it on a worker thread, a few frames ahead
//! of the session, and hands the result to `receive_document`. That leaves
//! under the lock only the decisions that need the Node: membership,
//! authorship and the merge. Both cores load while the session goes on.
//! Nothing here is trusted more for having been done early: the same checks
//! run, and a document that fails one is refused exactly as before.

use automerge::{AutoCommit, ObjType, ReadDoc, Value, ROOT};

use super::admit::{check_shape, Shape};
use super::decode::strict_load;
use crate::authorship::ChangeNode;
use crate::protocol::frame::{DocKey, SpaceKey};
use crate::protocol::{Frame, Vetted};
use crate::space::SpaceId;

/// A `Document` frame's document, loaded and checked ahead of the session.
pub struct Preloaded {
    space: SpaceKey,
    doc: DocKey,
    saved_len: usize,
    loaded: Result<Loaded, String>,
}

/// A whole document as loaded from a peer's bytes, with what was checked.
pub(super) struct Loaded {
    pub doc: AutoCommit,
    /// Its changes, as authorship sees them.
    pub nodes: Vec<ChangeNode>,
    /// Whether it has the shape of what it claims to be (checked only when
    /// the document is new here, so kept as a result).
    pub shape: Result<(), String>,
    /// A note's text, read here so that storing the note need not.
    pub text: Option<String>,
}

impl Loaded {
    /// Loads `saved` strictly as the document `doc` of `space`.
    pub(super) fn from_saved(space: SpaceId, doc: &str, saved: &[u8]) -> Result<Loaded, String> {
        let mut whole = strict_load(saved)?;
        let shape = if doc == space.doc_key() {
            Shape::Index
        } else {
            Shape::Note
        };
        let text = match (shape, whole.get(ROOT, "text")) {
            (Shape::Note, Ok(Some((Value::Object(ObjType::Text), text)))) => whole.text(&text).ok(),
            _ => None,
        };
        let shape = check_shape(&whole, shape);
        let nodes = whole
            .get_changes_meta(&[])
            .iter()
            .map(ChangeNode::from)
            .collect();
        Ok(Loaded {
            doc: whole,
            nodes,
            shape,
            text,
        })
    }
}

impl Preloaded {
    /// Loads the document of a `Document` frame; `None` for other frames.
    /// Costly: run it on a worker thread.
    pub fn of(frame: &Vetted) -> Option<Preloaded> {
        let Frame::Document {
            space, doc, saved, ..
        } = frame.frame()
        else {
            return None;
        };
        Some(Preloaded {
            space: *space,
            doc: doc.clone(),
            saved_len: saved.len(),
            loaded: Loaded::from_saved(SpaceId::from_bytes(*space), doc, saved),
        })
    }

    /// Whether a frame's document needs loading (worth a worker thread).
    pub fn wanted(frame: &Vetted) -> bool {
        matches!(frame.frame(), Frame::Document { .. })
    }

    /// The load, if this is the one of `doc` of `space` from `saved`.
    pub(super) fn take_for(
        this: &mut Option<Preloaded>,
        space: &SpaceKey,
        doc: &str,
        saved: &[u8],
    ) -> Option<Result<Loaded, String>> {
        let matches = this
            .as_ref()
            .is_some_and(|p| p.space == *space && p.doc == doc && p.saved_len == saved.len());
        matches.then(|| this.take().expect("checked above").loaded)
    }
}
