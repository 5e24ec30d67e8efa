//! `Node`: the one façade the CLI and the app use.
//!
//! A `Node` owns a data dir: its lock, its store, the Automerge documents of the
//! notes in use (an LRU cache, so memory stays bounded however many notes there
//! are) and the group commit that makes edits durable. Edits change the in-memory
//! document at once; a background flusher writes everything changed within a short
//! window (`NodeOptions::group_commit`) to the store in one SQLite transaction, so a
//! keystroke is on disk within ~100 ms without an fsync per keystroke. `flush`
//! forces that write; dropping the `Node` flushes too.
//!
//! Lists, search and showing a note that is not in memory read the store's cached
//! text and never load a document.
//!
//! This file holds the façade's note API and the state behind it; the rest is
//! one idea per module: `cache` (the LRU of loaded documents), `commit` (the
//! group commit and its flusher), `compaction` (when and how chunks fold into a
//! snapshot), `events` (`NodeEvent` and its delivery), `spaces`, `replicas` (a
//! peer's view), `admit`, `decode`, `status`, `window`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::{ActorId, AutoCommit, ChangeHash};
use lru::LruCache;
use serde::Serialize;

use crate::authorship::{Attestation, DeviceKey};
use crate::datadir::{DataDir, DataDirLock};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::note::{snippet_of, title_of, ChangeInfo, Note, NoteId, Splice};
use crate::space::SpaceId;
use crate::store::{QuarantinedChunk, Store};

/// How a `Node` is opened.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    /// Create the data dir and store if missing (otherwise `Error::NoDataDir`).
    pub create: bool,
    /// Most note documents kept in memory at once.
    pub cache_capacity: usize,
    /// How long edits gather before they are written in one transaction.
    pub group_commit: Duration,
    /// Open for reading only: no lock, so it works while another process (the
    /// app, a daemon) writes. Edits fail with `Error::ReadOnly`.
    pub read_only: bool,
}

impl NodeOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeOptions {
        NodeOptions {
            data_dir: data_dir.into(),
            create: true,
            cache_capacity: 64,
            group_commit: Duration::from_millis(50),
            read_only: false,
        }
    }
}

/// Which notes `Node::list` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFilter {
    #[default]
    Active,
    Trash,
}

/// A note as it appears in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteSummary {
    pub id: NoteId,
    /// The space the note belongs to.
    pub space: Option<SpaceId>,
    pub title: String,
    pub snippet: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Who made the latest change: "you", a member's name, or `None` if unknown.
    pub updated_by: Option<String>,
    pub trashed: bool,
}

/// A note with its whole text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteView {
    pub id: NoteId,
    pub space: Option<SpaceId>,
    pub title: String,
    pub text: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub trashed: bool,
    /// The document heads `text` is the text of (hex change hashes; empty if
    /// unknown), so an edit made against `text` can be merged with what
    /// happened since.
    pub heads: Vec<String>,
}

/// A full-text search result; `snippet` marks matches with `[` and `]`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub id: NoteId,
    pub title: String,
    pub snippet: String,
}

/// The state of a note's document at some moment, for merging an edit made
/// against it (e.g. in an external editor) with whatever happened since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heads(Vec<ChangeHash>);

impl Serialize for Heads {
    /// As hex hashes, so the state can travel (e.g. over the control socket).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let hex: Vec<String> = self.0.iter().map(|h| h.to_string()).collect();
        hex.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Heads {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Heads, D::Error> {
        let hex = Vec::<String>::deserialize(d)?;
        if hex.len() > crate::protocol::vet::MAX_HASHES {
            return Err(serde::de::Error::custom("too many heads"));
        }
        hex.iter()
            .map(|h| h.parse::<ChangeHash>().map_err(serde::de::Error::custom))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Heads)
    }
}

impl Heads {
    /// The state that includes every one of `parts` (a merge of them).
    pub fn union<'a>(parts: impl IntoIterator<Item = &'a Heads>) -> Heads {
        let mut all: Vec<ChangeHash> = parts
            .into_iter()
            .flat_map(|h| h.0.iter().copied())
            .collect();
        all.sort();
        all.dedup();
        Heads(all)
    }
}

/// The actor id this device's changes carry: its node id and a role byte (0 for
/// the Node itself; the window adds its own role and a random suffix). Changes
/// can then be traced back to the device that made them.
pub fn device_actor(node_id: &str, role: u8) -> Vec<u8> {
    let mut actor: Vec<u8> = (0..node_id.len() / 2)
        .filter_map(|i| u8::from_str_radix(node_id.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    actor.push(role);
    actor
}

/// The node id (hex) of the device that made the document's latest edit, from
/// its actor id ("" if the actor is not one of ours). Empty changes (an owner
/// vouching for a removed member's work) are no edit: the walk looks past
/// them, through at most `VOUCH_WALK` of them. Reads change metadata only.
fn latest_author(doc: &mut AutoCommit) -> String {
    const VOUCH_WALK: usize = 256;
    let mut todo = doc.get_heads();
    let mut seen = std::collections::HashSet::new();
    let mut skipped = 0;
    let mut latest: Option<(i64, Vec<u8>)> = None;
    while let Some(hash) = todo.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let Some(meta) = doc.get_change_meta_by_hash(&hash) else {
            continue;
        };
        if meta.max_op < meta.start_op && skipped < VOUCH_WALK {
            skipped += 1;
            todo.extend(meta.deps.iter().copied());
            continue;
        }
        let candidate = (meta.timestamp, meta.actor.to_bytes().to_vec());
        if latest.as_ref().is_none_or(|best| candidate > *best) {
            latest = Some(candidate);
        }
    }
    match latest {
        Some((_, actor)) if actor.len() > 32 => {
            actor[..32].iter().map(|b| format!("{b:02x}")).collect()
        }
        _ => String::new(),
    }
}

impl State {
    /// Who a note's latest change is shown as: "you", a member's name
    /// (marked "unverified" when no signature proves it: a change made before
    /// changes were signed), or `None` if unknown.
    fn editor_name(
        &self,
        node_id: &str,
        unverified: bool,
        names: &std::collections::HashMap<String, String>,
    ) -> Option<String> {
        if node_id.is_empty() {
            None
        } else if node_id == self.node_id {
            Some("you".to_string())
        } else if unverified {
            names
                .get(node_id)
                .map(|name| format!("{name} (unverified)"))
        } else {
            names.get(node_id).cloned()
        }
    }

    /// Display names of every member of every space, by node id: from the
    /// indexes, or, before a read-only Node has read them, as the store
    /// recorded them.
    fn member_names(&self) -> std::collections::HashMap<String, String> {
        if !self.spaces_unread {
            return self
                .spaces
                .values()
                .flat_map(|open| open.space.members())
                .map(|m| (m.node_id, m.name))
                .collect();
        }
        match self.store.space_members() {
            Ok(spaces) => spaces.into_values().flatten().collect(),
            Err(e) => {
                tracing::warn!("cannot read the members' names: {e}");
                std::collections::HashMap::new()
            }
        }
    }

    /// Reads the space indexes, for a read-only Node's first call that needs them.
    fn read_spaces_if_unread(&mut self) -> Result<()> {
        if self.spaces_unread {
            self.load_spaces()?;
            self.spaces_unread = false;
        }
        Ok(())
    }
}

/// A sync state as remembered: Automerge's encoding (shared heads only) and the
/// heads the peer last announced (32-byte hashes back to back).
#[derive(Debug, Clone, Default)]
struct SavedSyncState {
    state: Vec<u8>,
    their_heads: Vec<u8>,
}

impl State {
    /// The remembered sync state for `doc` with `peer`: pending, else stored.
    fn saved_sync_state(&self, peer: &str, doc: &str) -> Option<SavedSyncState> {
        let key = (peer.to_string(), doc.to_string());
        if let Some(saved) = self.sync_states.get(&key) {
            return Some(saved.clone());
        }
        let (state, their_heads) = self.store.sync_state(peer, doc).ok().flatten()?;
        Some(SavedSyncState { state, their_heads })
    }
}

/// The façade over a data dir. Internally synchronised: share it freely.
pub struct Node {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    data_dir: PathBuf,
    node_id: String,
    /// The device key (`None` for a read-only Node, which never connects).
    secret_key: Option<[u8; 32]>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    subscribers: Mutex<Vec<Sender<NodeEvent>>>,
}

struct State {
    store: Store,
    /// The last group commit failed (`StoreFailed` was sent; `StoreRecovered`
    /// is owed once one succeeds).
    store_failing: bool,
    actor: ActorId,
    open: LruCache<NoteId, OpenNote>,
    capacity: usize,
    dirty: BTreeSet<NoteId>,
    /// Notes in a batch being written (the flusher's, with the lock
    /// released, and maybe a `flush`'s meanwhile), with how many: they stay
    /// in memory until each has landed (or failed and is pending again).
    writing: BTreeMap<NoteId, usize>,
    /// Committed notes whose stored text lags their document (they were
    /// typed in less than `TEXT_REFRESH` before): kept in memory until a
    /// group commit writes it.
    lagging: BTreeSet<NoteId>,
    shutdown: bool,
    /// Events produced while the state lock is held, sent once it is released.
    outbox: Vec<NodeEvent>,
    /// The writer's lock; `None` for a read-only Node, which never writes.
    lock: Option<DataDirLock>,
    /// The device key, which signs membership ops; `None` when read-only.
    key: Option<[u8; 32]>,
    node_id: String,
    /// Every space's index, in memory (there are few). A read-only Node
    /// reads them only when a call needs them (`spaces_unread` until then):
    /// listing notes needs only the member names the store records.
    spaces: BTreeMap<SpaceId, spaces::OpenSpace>,
    spaces_unread: bool,
    dirty_spaces: BTreeSet<SpaceId>,
    /// Where new notes go unless told otherwise; `None` when read-only.
    private_space: Option<SpaceId>,
    /// Sync states to remember, by `(peer, doc)`; written by the group commit.
    sync_states: BTreeMap<(String, String), SavedSyncState>,
    /// Documents arriving by sync that are not yet whole enough to be notes or
    /// space indexes: per peer sending them, by the space they arrive in and
    /// their doc key.
    incoming: BTreeMap<String, BTreeMap<(SpaceId, String), AutoCommit>>,
    /// Notes that could not be loaded for sync (their document lost its
    /// shape): described to no peer and never loaded again for sync.
    set_aside: BTreeSet<NoteId>,
    /// Spaces this device was invited to but whose index has not arrived yet,
    /// with the inviter's node id (the one peer to sync them with).
    joining: BTreeMap<SpaceId, String>,
    /// The Private space of the person this device is being linked to, until
    /// its index arrives (`devices`).
    linking: Option<SpaceId>,
    /// `(old, new)`: the Private space this device retires for its person's,
    /// until the group commit has stored the switch.
    private_switch: Option<(SpaceId, SpaceId)>,
    /// What a peer's hello offered while this device was still waiting for
    /// its person's Private space (so could not yet tell a sibling): looked
    /// at again once it arrives.
    offered_while_linking: Option<(
        String,
        std::collections::BTreeSet<crate::protocol::frame::SpaceKey>,
    )>,
    /// Per document, each author's newest attestation (`attest`), loaded
    /// from the store the first time a document needs them.
    attestations: std::collections::HashMap<String, attest::Kept>,
    /// Attestations the next group commit writes, by document and (author,
    /// legacy).
    new_attestations: BTreeMap<(String, (DeviceKey, bool)), Vec<Attestation>>,
    /// Attestations of documents still arriving, written once they are whole.
    held_attestations: BTreeMap<(String, (DeviceKey, bool)), Vec<Attestation>>,
    /// Documents known to have no legacy past here (not in the store when it
    /// was upgraded to signed authorship).
    no_legacy: std::collections::HashSet<String>,
    /// Per document, changes that passed the authorship check but wait in
    /// Automerge for their dependencies (`attest::note_waiting`).
    waiting: std::collections::HashMap<String, BTreeMap<[u8; 32], crate::authorship::ChangeNode>>,
}

impl Node {
    /// Opens the data dir, taking its lock: one writing process per data dir.
    /// A read-only Node takes no lock and starts no writer.
    pub fn open(options: NodeOptions) -> Result<Node> {
        let dir = options.data_dir.clone();
        if !DataDir::exists(&dir) {
            if !options.create || options.read_only {
                return Err(Error::NoDataDir(dir));
            }
            DataDir::create(&dir)?;
            crate::config::write_default(&dir)
                .map_err(|e| Error::io("cannot write the data dir's config.toml", e))?;
        }
        if options.read_only {
            let store = Store::open_read_only(&dir)?;
            let node_id = Identity::load(&dir)?
                .map(|i| i.node_id())
                .unwrap_or_default();
            // The actor is never used: a read-only Node makes no changes.
            let mut state = State::new(store, ActorId::random(), node_id.clone(), &options, None);
            state.spaces_unread = true;
            return Node::start(dir, node_id, None, state, None);
        }
        let lock = DataDirLock::acquire(&dir)?;
        let identity = Identity::load_or_create(&dir)?;
        let store = Store::open(&dir)?;
        let node_id = identity.node_id();
        let actor_bytes = device_actor(&node_id, 0);
        let secret = identity.secret_bytes();
        let mut state = State::new(
            store,
            ActorId::from(actor_bytes),
            node_id.clone(),
            &options,
            Some((lock, secret)),
        );
        state.load_spaces()?;
        state.ensure_private_space()?;
        state.record_members()?;
        state.refresh_lagging_texts()?;
        Node::start(
            dir,
            node_id,
            Some(secret),
            state,
            Some(options.group_commit),
        )
    }

    /// Wraps the state; with a group-commit window, starts the flusher thread.
    fn start(
        dir: PathBuf,
        node_id: String,
        secret_key: Option<[u8; 32]>,
        state: State,
        group_commit: Option<Duration>,
    ) -> Result<Node> {
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
        });
        let flusher = match group_commit {
            Some(window) => {
                let shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("peernotes-flush".into())
                    .spawn(move || run_flusher(&shared, window))
                    .map_err(|e| Error::io("cannot start the store writer thread", e))?;
                Some(thread)
            }
            None => None,
        };
        Ok(Node {
            shared,
            flusher,
            data_dir: dir,
            node_id,
            secret_key,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this Node holds the data dir's lock (not read-only).
    pub fn is_writer(&self) -> bool {
        self.secret_key.is_some()
    }

    /// The device key, for the transport.
    pub(crate) fn secret_key(&self) -> Result<[u8; 32]> {
        self.secret_key.ok_or(Error::ReadOnly)
    }

    /// This device's node id (64 hex digits): how peers know it.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Creates a note holding `text` in this device's private space.
    pub fn create(&self, text: &str) -> Result<NoteId> {
        let space = self.with_state(|st| st.private_space.ok_or(Error::ReadOnly))?;
        self.create_in(space, text)
    }

    /// Creates a note holding `text` in `space` and returns its id.
    pub fn create_in(&self, space: SpaceId, text: &str) -> Result<NoteId> {
        let id = NoteId::generate();
        self.with_state(|st| {
            st.require_writer()?;
            let now = now_ms();
            let note = Note::create(id.clone(), &st.actor, text, now)?;
            st.space_mut(space)?.space.add_note(&id, now)?;
            st.dirty_spaces.insert(space);
            st.outbox.push(NodeEvent::SpaceChanged { space });
            st.insert_open(OpenNote {
                note,
                space,
                created_at: now,
                updated_at: now,
                pending: Vec::new(),
                arrived_whole: None,
                snapshot_bytes: 0,
                incremental_bytes: 0,
                incremental_chunks: 0,
                text_written_at: None,
            })?;
            st.dirty.insert(id.clone());
            st.outbox.push(NodeEvent::NoteChanged {
                id: id.clone(),
                by_peer: None,
            });
            Ok(())
        })?;
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// Resolves what a user typed — a whole id or a unique prefix of one.
    pub fn find(&self, typed: &str) -> Result<NoteId> {
        let typed = typed.trim().to_ascii_lowercase();
        if !NoteId::is_valid_prefix(&typed) {
            return Err(Error::BadNoteId(typed));
        }
        self.with_state(|st| {
            st.flush_before_reading();
            let ids = st.store.ids_with_prefix(&typed, 2)?;
            match ids.len() {
                0 => Err(Error::NoteNotFound(typed.clone())),
                1 => ids[0].parse(),
                _ => Err(Error::AmbiguousNoteId {
                    count: st.store.ids_with_prefix(&typed, usize::MAX >> 1)?.len(),
                    prefix: typed.clone(),
                }),
            }
        })
    }

    pub fn list(&self, filter: ListFilter) -> Result<Vec<NoteSummary>> {
        self.list_in(filter, None)
    }

    /// The notes of one space (all notes for `None`), most recently edited first.
    pub fn list_in(&self, filter: ListFilter, space: Option<SpaceId>) -> Result<Vec<NoteSummary>> {
        let space = space.map(|s| s.to_string());
        self.with_rows(|st| {
            st.flush_before_reading();
            let rows = st
                .store
                .list_in(filter == ListFilter::Trash, space.as_deref())?;
            let names = st.member_names();
            rows.into_iter()
                .map(|r| {
                    Ok(NoteSummary {
                        id: r.id.parse()?,
                        space: r.space_id.parse().ok(),
                        title: r.title,
                        snippet: r.snippet,
                        created_at: r.created_at,
                        updated_at: r.updated_at,
                        updated_by: st.editor_name(&r.updated_by, r.updated_by_unverified, &names),
                        trashed: r.trashed_at.is_some(),
                    })
                })
                .collect()
        })
    }

    /// One note as a list shows it.
    pub fn summary(&self, id: &NoteId) -> Result<NoteSummary> {
        let view = self.get(id)?;
        let updated_by = self.with_state(|st| {
            st.flush_before_reading();
            let by = st
                .store
                .row(id.as_str())?
                .map(|r| (r.updated_by, r.updated_by_unverified));
            let names = st.member_names();
            Ok(by.and_then(|(by, unverified)| st.editor_name(&by, unverified, &names)))
        })?;
        Ok(NoteSummary {
            snippet: snippet_of(&view.text),
            id: view.id,
            space: view.space,
            title: view.title,
            created_at: view.created_at,
            updated_at: view.updated_at,
            updated_by,
            trashed: view.trashed,
        })
    }

    /// A note's current text and metadata, without loading its document if it is
    /// not already in memory.
    pub fn get(&self, id: &NoteId) -> Result<NoteView> {
        self.with_state(|st| {
            if let Some(open) = st.open.get_mut(id) {
                let text = open.text();
                let heads = open.note.heads().iter().map(|h| h.to_string()).collect();
                return Ok(NoteView {
                    id: id.clone(),
                    space: Some(open.space),
                    title: title_of(&text),
                    text,
                    created_at: open.created_at,
                    updated_at: open.updated_at,
                    trashed: open.note.trashed_at().is_some(),
                    heads,
                });
            }
            let row = st
                .store
                .row(id.as_str())?
                .ok_or_else(|| Error::NoteNotFound(id.to_string()))?;
            let heads = st.store.text_heads(id.as_str())?;
            Ok(NoteView {
                id: id.clone(),
                space: row.space_id.parse().ok(),
                title: row.title,
                text: row.text,
                created_at: row.created_at,
                updated_at: row.updated_at,
                trashed: row.trashed_at.is_some(),
                heads: decode_heads(&heads)
                    .into_iter()
                    .map(|h| ChangeHash(h).to_string())
                    .collect(),
            })
        })
    }

    /// The note's text and the document state it is from, for `replace_text_since`.
    pub fn checkout(&self, id: &NoteId) -> Result<(String, Heads)> {
        self.with_state(|st| {
            let open = st.load(id)?;
            Ok((open.note.text(), Heads(open.note.heads())))
        })
    }

    /// Deletes `delete` characters at `pos` (Unicode scalar values) and inserts `insert`.
    pub fn splice(&self, id: &NoteId, pos: usize, delete: usize, insert: &str) -> Result<()> {
        self.edit(id, |note, now| {
            note.splice(pos, delete, insert, now).map(|()| true)
        })
        .map(|_| ())
    }

    /// Applies several splices as one change (an editor transaction, a trace step).
    pub fn splice_many(&self, id: &NoteId, edits: &[Splice]) -> Result<()> {
        self.edit(id, |note, now| note.splice_many(edits, now).map(|()| true))
            .map(|_| ())
    }

    /// Replaces the note's text by a minimal diff. Returns whether anything changed.
    pub fn replace_text(&self, id: &NoteId, text: &str) -> Result<bool> {
        self.edit(id, |note, now| note.replace_text(text, now))
    }

    /// Replaces the text as it was at `base` by `text`, keeping edits made since.
    pub fn replace_text_since(&self, id: &NoteId, base: &Heads, text: &str) -> Result<bool> {
        self.edit(id, |note, now| note.replace_text_since(&base.0, text, now))
    }

    /// Applies splices to the note as it was at `base` — positions are relative
    /// to that state — as one change that merges with everything since. Returns
    /// the state right after the change (for edits made against it in turn).
    pub fn splice_many_at(&self, id: &NoteId, base: &Heads, edits: &[Splice]) -> Result<Heads> {
        let mut after = Heads::default();
        self.edit(id, |note, now| {
            after = Heads(note.splice_many_at(&base.0, edits, now)?);
            Ok(true)
        })?;
        Ok(after)
    }

    /// Whether this device has every change of `heads` for the note.
    pub fn has(&self, id: &NoteId, heads: &Heads) -> bool {
        self.with_state(|st| {
            let known = st.open.contains(id) || st.store.space_and_heads(id.as_str())?.is_some();
            if !known {
                return Ok(false);
            }
            let doc = st.load(id)?.note.doc_mut();
            Ok(heads
                .0
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some()))
        })
        .unwrap_or(false)
    }

    /// Moves a note to the trash (it syncs, and can be restored).
    pub fn trash(&self, id: &NoteId) -> Result<()> {
        self.edit(id, |note, now| note.trash(now).map(|()| true))
            .map(|_| ())
    }

    pub fn restore(&self, id: &NoteId) -> Result<()> {
        self.edit(id, |note, now| note.restore(now).map(|()| true))
            .map(|_| ())
    }

    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>> {
        self.with_rows(|st| {
            st.flush_before_reading();
            st.store
                .search(query, limit)?
                .into_iter()
                .map(|r| {
                    Ok(SearchHit {
                        id: r.id.parse()?,
                        title: r.title,
                        snippet: r.snippet,
                    })
                })
                .collect()
        })
    }

    /// The newest `limit` changes to a note, newest first.
    pub fn history(&self, id: &NoteId, limit: usize) -> Result<Vec<ChangeInfo>> {
        self.with_state(|st| Ok(st.load(id)?.note.history(limit)))
    }

    /// Chunks that failed to decode and were set aside (their bytes are kept).
    pub fn quarantined(&self) -> Result<Vec<QuarantinedChunk>> {
        self.with_state(|st| st.store.quarantined())
    }

    /// Bytes the store occupies on disk.
    pub fn store_size(&self) -> u64 {
        lock(&self.shared.state).store.size_on_disk()
    }

    /// Flushes and closes, reporting a failed final write (dropping only logs it).
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
        let result = lock(&self.shared.state).flush();
        self.send_outbox();
        result
    }

    fn edit(
        &self,
        id: &NoteId,
        change: impl FnOnce(&mut Note, i64) -> Result<bool>,
    ) -> Result<bool> {
        let changed = self.with_state(|st| {
            st.require_writer()?;
            let now = now_ms();
            let open = st.load(id)?;
            let changed = change(&mut open.note, now)?;
            if changed {
                open.updated_at = now;
                st.dirty.insert(id.clone());
                st.outbox.push(NodeEvent::NoteChanged {
                    id: id.clone(),
                    by_peer: None,
                });
            }
            Ok(changed)
        })?;
        if changed {
            self.shared.wake.notify_one();
        }
        Ok(changed)
    }

    /// Runs `f` under the state lock, then delivers the events it produced.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let result = {
            let mut st = lock(&self.shared.state);
            st.read_spaces_if_unread().and_then(|()| f(&mut st))
        };
        self.send_outbox();
        result
    }

    /// `with_state` for a call that reads only the store's rows (and member
    /// names): a read-only Node does not read the space indexes for it.
    fn with_rows<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let result = f(&mut lock(&self.shared.state));
        self.send_outbox();
        result
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.flusher.is_some() {
            if let Err(e) = self.shutdown() {
                tracing::error!("final write to {} failed: {e}", self.data_dir.display());
            }
        }
    }
}

impl State {
    fn new(
        store: Store,
        actor: ActorId,
        node_id: String,
        options: &NodeOptions,
        writer: Option<(DataDirLock, [u8; 32])>,
    ) -> State {
        let (lock, key) = writer.unzip();
        State {
            key,
            node_id,
            spaces: BTreeMap::new(),
            spaces_unread: false,
            dirty_spaces: BTreeSet::new(),
            private_space: None,
            sync_states: BTreeMap::new(),
            incoming: BTreeMap::new(),
            set_aside: BTreeSet::new(),
            joining: BTreeMap::new(),
            linking: None,
            private_switch: None,
            offered_while_linking: None,
            attestations: std::collections::HashMap::new(),
            new_attestations: BTreeMap::new(),
            held_attestations: BTreeMap::new(),
            no_legacy: std::collections::HashSet::new(),
            waiting: std::collections::HashMap::new(),
            store,
            store_failing: false,
            actor,
            open: LruCache::unbounded(),
            capacity: options.cache_capacity.max(1),
            dirty: BTreeSet::new(),
            writing: BTreeMap::new(),
            lagging: BTreeSet::new(),
            shutdown: false,
            outbox: Vec::new(),
            lock,
        }
    }

    fn require_writer(&self) -> Result<()> {
        if self.lock.is_some() {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
    }

    /// The device key, which only a writer has.
    fn device_key(&self) -> Result<[u8; 32]> {
        self.key.ok_or(Error::ReadOnly)
    }

    /// The space a note belongs to, from memory or its row; `None` if this
    /// device has no such note. Never loads its document.
    fn note_space(&self, id: &NoteId) -> Result<Option<SpaceId>> {
        if let Some(open) = self.open.peek(id) {
            return Ok(Some(open.space));
        }
        Ok(self
            .store
            .space_and_heads(id.as_str())?
            .and_then(|(space, _)| self.parse_space(&space)))
    }

    /// A note row's space id; notes from before spaces (an empty id) are in
    /// the private space.
    fn parse_space(&self, space_id: &str) -> Option<SpaceId> {
        if space_id.is_empty() {
            return self.private_space;
        }
        space_id.parse().ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

mod admit;
mod attest;
mod cache;
mod commit;
mod compaction;
mod events;

use cache::OpenNote;
use commit::run_flusher;
mod decode;
mod devices;
mod preload;
mod replicas;
mod spaces;
mod status;
mod window;

pub use events::{NodeEvent, PairingProgress};
pub use preload::Preloaded;
pub use replicas::PeerReplicas;
pub use status::PeerStatus;

/// Heads as stored: 32-byte hashes back to back.
fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

/// Heads as stored, read back.
fn decode_heads(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .map(|h| h.try_into().expect("32-byte chunks"))
        .collect()
}

pub use spaces::{device_name, SpaceInfo};
pub use window::Window;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::decode::split_changes;
    use super::*;

    #[test]
    fn listing_one_space_shows_only_its_notes_and_a_summary_matches_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let team = node.create_space("Team").unwrap();
        let mine = node.create("# Mine\nprivate").unwrap();
        let shared = node.create_in(team, "# Shared\nfor the team").unwrap();
        node.trash(&shared).unwrap();
        let ids = |filter, space| -> Vec<NoteId> {
            let notes = node.list_in(filter, space).unwrap();
            notes.into_iter().map(|n| n.id).collect()
        };
        assert_eq!(ids(ListFilter::Active, Some(team)), Vec::<NoteId>::new());
        assert_eq!(ids(ListFilter::Trash, Some(team)), vec![shared.clone()]);
        let private = node.private_space().unwrap();
        assert_eq!(ids(ListFilter::Active, Some(private)), vec![mine.clone()]);
        assert_eq!(ids(ListFilter::Active, None), vec![mine.clone()]);
        let listed = node.list(ListFilter::Active).unwrap().remove(0);
        assert_eq!(node.summary(&mine).unwrap(), listed);
        assert_eq!(listed.updated_by.as_deref(), Some("you"));
    }

    #[test]
    fn edits_committed_while_a_compaction_is_saved_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = node.create("start\n").unwrap();
        for i in 0..10 {
            node.splice(&id, 0, 0, &format!("before {i}\n")).unwrap();
            node.flush().unwrap();
        }
        // The flusher's order: prepare under the lock, save without it (edits and
        // commits go on), finish under the lock.
        let mut compaction = lock(&node.shared.state)
            .prepare_compaction(&id)
            .unwrap()
            .expect("a clean note with chunks is compactable");
        node.splice(&id, 0, 0, "during\n").unwrap();
        node.flush().unwrap();
        let snapshot = compaction.doc.save();
        lock(&node.shared.state)
            .finish_compaction(compaction, &snapshot)
            .unwrap();
        let expected = node.get(&id).unwrap().text;
        assert!(expected.starts_with("during\nbefore 9\n"), "{expected}");
        node.close().unwrap();

        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        assert_eq!(node.get(&id).unwrap().text, expected);
        assert_eq!(node.checkout(&id).unwrap().0, expected);
        assert!(node.quarantined().unwrap().is_empty());
    }

    #[test]
    fn edits_after_a_compaction_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let node = Node::open(NodeOptions::new(dir.path())).unwrap();
            let id = node.create("start\n").unwrap();
            for i in 0..(compaction::COMPACT_AFTER_CHUNKS + 20) {
                let end = node.get(&id).unwrap().text.chars().count();
                node.splice(&id, end, 0, &format!("line {i}\n")).unwrap();
                node.flush().unwrap();
            }
            node.close().unwrap();
            id
        };
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        let expected = node.get(&id).unwrap().text;
        assert_eq!(node.checkout(&id).unwrap().0, expected);
        assert!(
            node.quarantined().unwrap().is_empty(),
            "{:?}",
            node.quarantined()
        );
    }

    #[test]
    fn a_reader_lists_notes_with_member_names_without_reading_any_index() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let bob = Node::open(NodeOptions::new(other.path())).unwrap();
        let writer = Node::open(NodeOptions::new(dir.path())).unwrap();
        let team = writer.create_space("Team").unwrap();
        writer
            .add_member(team, bob.node_id(), "Bob", crate::membership::Role::Editor)
            .unwrap();
        writer.create_in(team, "# Plan\n").unwrap();
        writer.flush().unwrap();

        let mut options = NodeOptions::new(dir.path());
        options.read_only = true;
        let reader = Node::open(options).unwrap();
        assert_eq!(reader.list(ListFilter::Active).unwrap().len(), 1);
        assert_eq!(reader.search("plan", 10).unwrap().len(), 1);
        {
            let st = lock(&reader.shared.state);
            assert!(st.spaces_unread, "listing read no index");
            assert!(st.spaces.is_empty());
            let names = st.member_names();
            assert_eq!(names.get(bob.node_id()).map(String::as_str), Some("Bob"));
            assert!(names.contains_key(writer.node_id()));
        }
        // A call that needs the indexes reads them.
        assert_eq!(reader.members(team).unwrap().len(), 2);
        assert!(!lock(&reader.shared.state).spaces_unread);
    }

    #[test]
    fn a_store_without_recorded_members_gets_them_from_its_first_writer() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Node::open(NodeOptions::new(dir.path())).unwrap();
        let team = writer.create_space("Team").unwrap();
        writer.flush().unwrap();
        // As a store from before they were recorded.
        let recorded = |node: &Node| lock(&node.shared.state).store.space_members().unwrap();
        assert_eq!(recorded(&writer).len(), 2, "the Private space and Team");
        lock(&writer.shared.state)
            .store
            .write_space_members(&[(team.to_string(), Vec::new())])
            .unwrap();
        writer.close().unwrap();

        let writer = Node::open(NodeOptions::new(dir.path())).unwrap();
        let members = recorded(&writer);
        assert_eq!(members[&team.to_string()].len(), 1);
        assert_eq!(members[&team.to_string()][0].0, writer.node_id());
    }

    #[test]
    fn a_reader_sees_what_a_running_writer_committed_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let read_only = || {
            let mut options = NodeOptions::new(dir.path());
            options.read_only = true;
            Node::open(options)
        };
        assert!(matches!(read_only(), Err(Error::NoDataDir(_))));
        let writer = Node::open(NodeOptions::new(dir.path())).unwrap();
        let id = writer.create("# Shared\nbody").unwrap();
        writer.flush().unwrap();
        let reader = read_only().unwrap();
        assert_eq!(reader.list(ListFilter::Active).unwrap()[0].id, id);
        assert_eq!(reader.get(&id).unwrap().text, "# Shared\nbody");
        assert_eq!(reader.search("body", 5).unwrap().len(), 1);
        assert!(matches!(reader.create("x"), Err(Error::ReadOnly)));
        assert!(matches!(
            reader.splice(&id, 0, 0, "x"),
            Err(Error::ReadOnly)
        ));
        writer.splice(&id, 0, 0, "!").unwrap();
        writer.flush().unwrap();
        assert_eq!(reader.get(&id).unwrap().text, "!# Shared\nbody");
        drop(reader);
        writer.close().unwrap();
        // With no writer left (its WAL folded away), reading still works.
        assert_eq!(
            read_only().unwrap().get(&id).unwrap().text,
            "!# Shared\nbody"
        );
    }

    #[test]
    fn a_reloaded_note_stores_only_new_changes() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let node = Node::open(NodeOptions::new(dir.path())).unwrap();
            let id = node.create(&"long history\n".repeat(200)).unwrap();
            node.close().unwrap();
            id
        };
        let first = Store::open(dir.path())
            .unwrap()
            .chunk_stats(id.as_str())
            .unwrap();
        let node = Node::open(NodeOptions::new(dir.path())).unwrap();
        node.splice(&id, 0, 0, "x").unwrap();
        node.close().unwrap();
        let after = Store::open(dir.path())
            .unwrap()
            .chunk_stats(id.as_str())
            .unwrap();
        assert_eq!(after.chunks, first.chunks + 1);
        assert!(
            after.bytes - first.bytes < 200,
            "a one-character edit stored {} bytes",
            after.bytes - first.bytes
        );
    }

    #[test]
    fn a_truncated_or_flipped_change_is_refused_not_skipped() {
        let mut note = Note::create(NoteId::generate(), &ActorId::random(), "hello", 0).unwrap();
        note.take_incremental();
        note.splice(5, 0, " world, and more text to make it longer", 1)
            .unwrap();
        let data = note.take_incremental();
        assert_eq!(split_changes(&data).unwrap().len(), 1);
        assert!(split_changes(&data[..data.len() - 3])
            .unwrap_err()
            .contains("truncated"));
        let mut flipped = data.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(split_changes(&flipped).is_err());
    }
}
