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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::{ActorId, AutoCommit, ChangeHash};
use lru::LruCache;
use serde::Serialize;

use crate::datadir::{DataDir, DataDirLock};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::note::{snippet_of, title_of, ChangeInfo, Note, NoteId, Splice};
use crate::space::SpaceId;
use crate::store::{Batch, Chunk, ChunkKind, NoteRow, NoteWrite, QuarantinedChunk, Store};

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

/// The node id (hex) of the device that made the document's latest change, from
/// its actor id ("" if the actor is not one of ours).
fn latest_author(doc: &mut AutoCommit) -> String {
    let heads = doc.get_heads();
    let latest = heads
        .iter()
        .filter_map(|h| doc.get_change_by_hash(h))
        .max_by_key(|c| (c.timestamp(), c.actor_id().to_bytes().to_vec()))
        .map(|c| c.actor_id().to_bytes().to_vec());
    match latest {
        Some(actor) if actor.len() > 32 => actor[..32].iter().map(|b| format!("{b:02x}")).collect(),
        _ => String::new(),
    }
}

impl State {
    /// Who a note's latest change is shown as: "you", a member's name, or
    /// `None` if unknown.
    fn editor_name(
        &self,
        node_id: &str,
        names: &std::collections::HashMap<String, String>,
    ) -> Option<String> {
        if node_id.is_empty() {
            None
        } else if node_id == self.node_id {
            Some("you".to_string())
        } else {
            names.get(node_id).cloned()
        }
    }

    /// Display names of every member of every space, by node id.
    fn member_names(&self) -> std::collections::HashMap<String, String> {
        self.spaces
            .values()
            .flat_map(|open| open.space.members())
            .map(|m| (m.node_id, m.name))
            .collect()
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

/// What happened, for subscribers (the app re-renders on these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// A note's text, title or trash state changed on this device.
    NoteChanged { id: NoteId },
    /// Writing to the store failed; edits stay in memory and are retried.
    StoreFailed { message: String },
    /// Writing to the store works again after `StoreFailed`: everything
    /// pending is saved.
    StoreRecovered,
    /// A space's index (members, notes) changed on this device or from a peer.
    SpaceChanged { space: SpaceId },
    /// A stored chunk could not be decoded and was quarantined.
    ChunkQuarantined { id: NoteId, error: String },
    /// A peer device connected or disconnected (its status may have changed:
    /// ask `peer_status`).
    PeerStatusChanged { peer: String, connected: bool },
    /// How a pairing (by ticket or short code) is going, on either side.
    Pairing { progress: PairingProgress },
    /// A note's document cannot be loaded (it lost its shape, e.g. before
    /// this version refused such changes): it is set aside from sync; its
    /// last text is still shown.
    NoteSetAside { id: NoteId, reason: String },
    /// A peer sent something for a document that was refused (not applied,
    /// not stored, not forwarded): a change that would break the document's
    /// shape, or a document of a space it does not belong to.
    PeerRefused {
        peer: String,
        doc: String,
        reason: String,
    },
    /// Where a connected member's cursor is in a note (character offsets). It
    /// vanishes when the peer disconnects (`PeerStatusChanged`).
    PeerPresence {
        peer: String,
        note: NoteId,
        anchor: u32,
        head: u32,
    },
}

/// Steps of a pairing, for a UI to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum PairingProgress {
    /// The joiner is looking for the inviter (mDNS, for a short code).
    LookingForInviter,
    /// The joiner found the inviter and is proving it was invited.
    Exchanging { with: String },
    /// The inviter: a device is presenting an invitation.
    JoinerArrived { joiner: String },
    /// Paired: the joiner is now a member of the space.
    /// `member` is the joiner's node id, `name` the name it goes by.
    Paired {
        space: SpaceId,
        member: String,
        name: String,
    },
    /// Pairing failed; the reason is meant for the user.
    Failed { reason: String },
}

/// Compaction folds a note's incremental chunks into one snapshot once there are
/// this many of them...
const COMPACT_AFTER_CHUNKS: usize = 128;
/// ...or once they hold more bytes than the snapshot and at least this many...
const COMPACT_AFTER_BYTES: usize = 64 * 1024;
/// ...or, for small notes (whose snapshot is cheap to write), once they hold
/// more than four times the snapshot plus this many bytes. Applying changes
/// one by one is what makes a note slow to load and to send whole.
const COMPACT_SMALL_AFTER_BYTES: usize = 4 * 1024;
/// Pause before retrying a failed group commit (e.g. a full disk).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

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
    shutdown: bool,
    /// Events produced while the state lock is held, sent once it is released.
    outbox: Vec<NodeEvent>,
    /// The writer's lock; `None` for a read-only Node, which never writes.
    lock: Option<DataDirLock>,
    node_id: String,
    /// Every space's index, always in memory (there are few). Empty when read-only.
    spaces: BTreeMap<SpaceId, spaces::OpenSpace>,
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
}

/// How a document's stored chunks add up, for compaction decisions.
#[derive(Debug, Default, Clone, Copy)]
struct ChunkSizes {
    snapshot_bytes: usize,
    incremental_bytes: usize,
    incremental_chunks: usize,
}

/// A note's document in memory and what of it is not yet in the store.
struct OpenNote {
    note: Note,
    space: SpaceId,
    created_at: i64,
    updated_at: i64,
    /// Encoded changes taken from the document but not yet committed.
    pending: Vec<Vec<u8>>,
    /// A note that arrived whole from a peer: the bytes it came in (Automerge's
    /// save format, already checked strictly), stored as its first snapshot.
    arrived_whole: Option<Vec<u8>>,
    snapshot_bytes: usize,
    incremental_bytes: usize,
    incremental_chunks: usize,
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
            state.load_spaces()?;
            return Node::start(dir, node_id, None, state, None);
        }
        let lock = DataDirLock::acquire(&dir)?;
        let identity = Identity::load_or_create(&dir)?;
        let store = Store::open(&dir)?;
        let node_id = identity.node_id();
        let actor_bytes = device_actor(&node_id, 0);
        let mut state = State::new(
            store,
            ActorId::from(actor_bytes),
            node_id.clone(),
            &options,
            Some(lock),
        );
        state.load_spaces()?;
        state.ensure_private_space()?;
        let secret = identity.secret_bytes();
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

    /// Receives every event from now on.
    pub fn subscribe(&self) -> Receiver<NodeEvent> {
        let (tx, rx) = channel();
        lock(&self.shared.subscribers).push(tx);
        rx
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
            })?;
            st.dirty.insert(id.clone());
            st.outbox.push(NodeEvent::NoteChanged { id: id.clone() });
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
        self.with_state(|st| {
            st.flush_before_reading();
            let rows = st.store.list(filter == ListFilter::Trash)?;
            let names = st.member_names();
            rows.into_iter()
                .filter(|r| space.as_ref().is_none_or(|s| *s == r.space_id))
                .map(|r| {
                    Ok(NoteSummary {
                        id: r.id.parse()?,
                        space: r.space_id.parse().ok(),
                        title: r.title,
                        snippet: r.snippet,
                        created_at: r.created_at,
                        updated_at: r.updated_at,
                        updated_by: st.editor_name(&r.updated_by, &names),
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
            let by = st.store.row(id.as_str())?.map(|r| r.updated_by);
            let names = st.member_names();
            Ok(by.and_then(|by| st.editor_name(&by, &names)))
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
            if let Some(open) = st.open.get(id) {
                let text = open.note.text();
                return Ok(NoteView {
                    id: id.clone(),
                    space: Some(open.space),
                    title: title_of(&text),
                    text,
                    created_at: open.created_at,
                    updated_at: open.updated_at,
                    trashed: open.note.trashed_at().is_some(),
                });
            }
            let row = st
                .store
                .row(id.as_str())?
                .ok_or_else(|| Error::NoteNotFound(id.to_string()))?;
            Ok(NoteView {
                id: id.clone(),
                space: row.space_id.parse().ok(),
                title: row.title,
                text: row.text,
                created_at: row.created_at,
                updated_at: row.updated_at,
                trashed: row.trashed_at.is_some(),
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
            let known = st.open.contains(id) || st.store.row(id.as_str())?.is_some();
            if !known {
                return Ok(false);
            }
            let doc = st.load(id)?.note.doc_mut();
            Ok(heads.0.iter().all(|h| doc.get_change_by_hash(h).is_some()))
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
        self.with_state(|st| {
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

    /// Writes every pending edit to disk now.
    pub fn flush(&self) -> Result<()> {
        self.with_state(|st| st.flush())
    }

    /// Folds every note's chunks into one snapshot each.
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
            st.store.checkpoint_and_vacuum()
        })
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
                st.outbox.push(NodeEvent::NoteChanged { id: id.clone() });
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
        let result = f(&mut lock(&self.shared.state));
        self.send_outbox();
        result
    }

    fn send_outbox(&self) {
        send_outbox(&self.shared);
    }

    /// Publishes an event raised outside the Node (by the transport).
    pub(crate) fn publish(&self, event: NodeEvent) {
        lock(&self.shared.state).outbox.push(event);
        self.send_outbox();
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
        lock: Option<DataDirLock>,
    ) -> State {
        State {
            node_id,
            spaces: BTreeMap::new(),
            dirty_spaces: BTreeSet::new(),
            private_space: None,
            sync_states: BTreeMap::new(),
            incoming: BTreeMap::new(),
            set_aside: BTreeSet::new(),
            joining: BTreeMap::new(),
            store,
            store_failing: false,
            actor,
            open: LruCache::unbounded(),
            capacity: options.cache_capacity.max(1),
            dirty: BTreeSet::new(),
            shutdown: false,
            outbox: Vec::new(),
            lock,
        }
    }

    /// Whether the group commit has anything to write.
    fn has_pending(&self) -> bool {
        !(self.dirty.is_empty() && self.dirty_spaces.is_empty() && self.sync_states.is_empty())
    }

    fn require_writer(&self) -> Result<()> {
        if self.lock.is_some() {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
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

    /// Makes sure a note's document is in memory, loading it from its chunks.
    fn load(&mut self, id: &NoteId) -> Result<&mut OpenNote> {
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
        })
    }

    /// Decodes a document's stored chunks (`key` is a note id or a space's doc
    /// key), quarantining any that fail; `None` if no chunk could be read.
    fn read_doc(
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
    fn insert_open(&mut self, open: OpenNote) -> Result<()> {
        let id = open.note.id().clone();
        self.open.put(id, open);
        while self.open.len() > self.capacity {
            let (lru_id, _) = self.open.peek_lru().expect("cache is not empty");
            if self.dirty.contains(lru_id) {
                self.flush()?;
            }
            self.open.pop_lru();
        }
        Ok(())
    }

    /// Before reading the store: writes what is pending, so the read is
    /// current. If writing fails (a full disk), the read goes on with what was
    /// saved: the failure is already reported (`StoreFailed`), and the edits
    /// stay pending and are retried.
    fn flush_before_reading(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("reading what was saved; saving failed: {e}");
        }
    }

    /// The group commit, then the compactions it made due.
    fn flush(&mut self) -> Result<()> {
        for id in self.commit_pending()? {
            self.compact(&id)?;
        }
        Ok(())
    }

    /// The group commit: every dirty note's new changes and cached text, in one
    /// transaction. On failure nothing is lost: the changes stay pending in memory.
    /// Returns the notes now due for compaction.
    fn commit_pending(&mut self) -> Result<Vec<NoteId>> {
        if !self.has_pending() {
            return Ok(Vec::new());
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
            ..Batch::default()
        };
        let writes = &mut batch.notes;
        for id in &self.dirty {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            let chunk = open.note.take_incremental();
            if !chunk.is_empty() {
                open.pending.push(chunk);
            }
            let text = open.note.text();
            writes.push(NoteWrite {
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
                },
                snapshot: open.arrived_whole.clone(),
                chunks: open.pending.clone(),
            });
        }
        if let Err(e) = self.store.commit(&batch) {
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
        let written_spaces = self.spaces_written();
        let written = std::mem::take(&mut self.dirty);
        for id in &written {
            let open = self.open.peek_mut(id).expect("dirty notes stay in memory");
            open.incremental_bytes += open.pending.iter().map(Vec::len).sum::<usize>();
            open.incremental_chunks += open.pending.len();
            open.pending.clear();
            if let Some(snapshot) = open.arrived_whole.take() {
                open.snapshot_bytes = snapshot.len();
            }
        }
        let due = written
            .into_iter()
            .filter(|id| {
                let open = self.open.peek(id).expect("dirty notes stay in memory");
                open.incremental_chunks >= COMPACT_AFTER_CHUNKS
                    || (open.incremental_bytes >= COMPACT_AFTER_BYTES
                        && open.incremental_bytes > open.snapshot_bytes)
                    || open.incremental_bytes > 4 * open.snapshot_bytes + COMPACT_SMALL_AFTER_BYTES
            })
            .collect();
        self.compact_spaces(&written_spaces)?;
        Ok(due)
    }

    /// Replaces a (clean, loaded) note's chunks by one snapshot.
    fn compact(&mut self, id: &NoteId) -> Result<()> {
        if let Some(mut compaction) = self.prepare_compaction(id)? {
            let snapshot = compaction.doc.save();
            self.finish_compaction(compaction, &snapshot)?;
        }
        Ok(())
    }

    /// The first half of a compaction, under the lock: a copy of the note's
    /// document exactly as its stored chunks (through `through`) hold it. Saving
    /// the copy, the slow part, needs no lock (copying is several times faster).
    fn prepare_compaction(&mut self, id: &NoteId) -> Result<Option<Compaction>> {
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
    fn finish_compaction(&mut self, compaction: Compaction, snapshot: &[u8]) -> Result<()> {
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
struct Compaction {
    id: NoteId,
    doc: AutoCommit,
    through: i64,
    incremental_bytes: usize,
    incremental_chunks: usize,
}

fn run_flusher(shared: &Shared, window: Duration) {
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
        let committed = st.commit_pending();
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

fn send_outbox(shared: &Shared) {
    let events = std::mem::take(&mut lock(&shared.state).outbox);
    if events.is_empty() {
        return;
    }
    let mut subscribers = lock(&shared.subscribers);
    subscribers.retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

mod admit;
mod decode;
mod replicas;
mod spaces;
mod status;
mod window;

pub use replicas::PeerReplicas;
pub use status::PeerStatus;

/// Heads as stored: 32-byte hashes back to back.
fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

use decode::{decode_all, decode_chunk};
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
            for i in 0..(COMPACT_AFTER_CHUNKS + 20) {
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
