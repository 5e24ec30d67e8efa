//! The durable local store: one SQLite database per data dir.
//!
//! It owns the on-disk layout — note rows (with each note's current text cached for
//! lists, search and instant display), the Automerge change chunks that are the
//! truth, quarantined chunks, and the FTS5 index kept current by triggers — and
//! the schema migrations. WAL with `synchronous=FULL`: a transaction that returned
//! is on disk. It knows nothing of Automerge; it stores and returns bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// The file name of the store inside a data dir.
pub const STORE_FILE: &str = "peernotes.sqlite3";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
/// Never edit one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: notes, chunks, quarantine, full-text index, device metadata.
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE notes (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        snippet TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        trashed_at INTEGER
    );
    CREATE INDEX notes_by_updated ON notes (updated_at DESC);
    CREATE TABLE chunks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        note_id TEXT NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX chunks_by_note ON chunks (note_id, seq);
    CREATE TABLE quarantine (
        seq INTEGER PRIMARY KEY,
        note_id TEXT NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL,
        error TEXT NOT NULL,
        quarantined_at INTEGER NOT NULL
    );
    CREATE VIRTUAL TABLE notes_fts USING fts5 (
        title, text,
        content = 'notes', content_rowid = 'rowid',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
        INSERT INTO notes_fts (rowid, title, text) VALUES (new.rowid, new.title, new.text);
    END;
    CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
        INSERT INTO notes_fts (notes_fts, rowid, title, text)
            VALUES ('delete', old.rowid, old.title, old.text);
    END;
    CREATE TRIGGER notes_fts_update AFTER UPDATE OF title, text ON notes BEGIN
        INSERT INTO notes_fts (notes_fts, rowid, title, text)
            VALUES ('delete', old.rowid, old.title, old.text);
        INSERT INTO notes_fts (rowid, title, text) VALUES (new.rowid, new.title, new.text);
    END;
    "#,
    // 2: spaces. Each note belongs to one space; a space's index document is
    // stored in `chunks` like a note's, under the key `space-<id>` (so
    // `chunks.note_id` and `quarantine.note_id` hold any document key).
    r#"
    ALTER TABLE notes ADD COLUMN space_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX notes_by_space ON notes (space_id);
    CREATE TABLE spaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        private INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 3: sync. Each note's heads (32-byte hashes back to back), so a sync session
    // can compare documents without loading them; and per-peer sync state, so a
    // reconnect sends only what is new.
    r#"
    ALTER TABLE notes ADD COLUMN heads BLOB NOT NULL DEFAULT x'';
    CREATE TABLE sync_states (
        peer TEXT NOT NULL,
        doc TEXT NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (peer, doc)
    );
    "#,
    // 4: invitations accepted whose space index has not arrived yet.
    r#"
    CREATE TABLE invitations (
        space_id TEXT PRIMARY KEY,
        inviter TEXT NOT NULL
    );
    "#,
    // 5: when each peer was last connected, for `peernotes status`.
    r#"
    CREATE TABLE peers (
        node_id TEXT PRIMARY KEY,
        last_seen INTEGER NOT NULL
    );
    "#,
    // 6: what each peer last said its heads were (for "waiting to arrive"),
    // whether it is connected to the writing process now, and the addresses it
    // was last reached at (`a.b.c.d:port` separated by spaces).
    r#"
    ALTER TABLE sync_states ADD COLUMN their_heads BLOB NOT NULL DEFAULT x'';
    ALTER TABLE peers ADD COLUMN connected INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE peers ADD COLUMN addrs TEXT NOT NULL DEFAULT '';
    "#,
    // 7: who made a note's latest change (a node id), for the note list.
    r#"
    ALTER TABLE notes ADD COLUMN updated_by TEXT NOT NULL DEFAULT '';
    "#,
    // 8: signed authorship. Per document (a note id or `space-<id>`) and
    // author (32 bytes, then 1 for a legacy attestation), that author's
    // newest attestation (`authorship`), kept to prove the author's changes
    // to members that ask later. What each document's heads were when the
    // store was upgraded (a space's index is filled in when it is next
    // opened): the unsigned changes an owner may vouch for as legacy. Rows
    // whose latest change was made before signing are marked unverified.
    r#"
    CREATE TABLE attestations (
        doc TEXT NOT NULL,
        author BLOB NOT NULL,
        attestation BLOB NOT NULL,
        PRIMARY KEY (doc, author)
    );
    CREATE TABLE legacy_heads (
        doc TEXT PRIMARY KEY,
        heads BLOB NOT NULL
    );
    INSERT INTO legacy_heads (doc, heads) SELECT id, heads FROM notes WHERE length(heads) > 0;
    INSERT INTO legacy_heads (doc, heads) SELECT 'space-' || id, x'' FROM spaces;
    ALTER TABLE notes ADD COLUMN updated_by_unverified INTEGER NOT NULL DEFAULT 0;
    UPDATE notes SET updated_by_unverified = 1 WHERE updated_by != '';
    "#,
    // 9: an invitation that links this device to another device's person:
    // the space it joins is that person's Private space, which becomes this
    // device's own.
    r#"
    ALTER TABLE invitations ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    "#,
    // 10: a note's cached text (title, snippet, text and its search index)
    // may lag its document while it is typed in: it is refreshed at most
    // every second. `text_heads` is then the heads the text is of (empty if
    // unknown); `NULL` means it is of `heads`.
    r#"
    ALTER TABLE notes ADD COLUMN text_heads BLOB;
    CREATE INDEX notes_lagging ON notes (id) WHERE text_heads IS NOT NULL;
    "#,
    // 11: each space's members and their names, as its index last said, so
    // a reader can name who edited a note without loading any index (the
    // Private space's lists every note of this person). Written with the
    // index; filled by the first writer to open the store.
    r#"
    CREATE TABLE space_members (
        space_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (space_id, node_id)
    ) WITHOUT ROWID;
    "#,
];

/// What kind of bytes a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// A whole document (`Automerge::save`).
    Snapshot = 0,
    /// Changes appended since the previous chunk (`save_incremental`).
    Incremental = 1,
}

impl ChunkKind {
    fn from_i64(v: i64) -> ChunkKind {
        if v == 0 {
            ChunkKind::Snapshot
        } else {
            ChunkKind::Incremental
        }
    }
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: i64,
    pub kind: ChunkKind,
    pub data: Vec<u8>,
}

/// A note's row: everything needed to list or show it without loading its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRow {
    pub id: String,
    pub space_id: String,
    /// The document's heads, 32-byte hashes back to back (empty if unknown).
    pub heads: Vec<u8>,
    pub title: String,
    pub snippet: String,
    pub text: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub trashed_at: Option<i64>,
    /// Node id of the device that made the latest change ("" if unknown).
    pub updated_by: String,
    /// That change's author is not proven by a signature (it was made before
    /// changes were signed).
    pub updated_by_unverified: bool,
}

/// A note's row without its text, for lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteListing {
    pub id: String,
    pub space_id: String,
    pub title: String,
    pub snippet: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub trashed_at: Option<i64>,
    pub updated_by: String,
    pub updated_by_unverified: bool,
}

/// One note's part of a group commit: its new cached row and the chunks to append.
#[derive(Debug, Clone)]
pub struct NoteWrite {
    pub row: NoteRow,
    /// Whether the row's title, snippet and text are written (and indexed for
    /// search). If not, they keep their stored value, which lags the
    /// document, and the row says so (`Store::lagging_texts`).
    pub with_text: bool,
    /// A snapshot to store before the chunks (a note that arrived whole).
    pub snapshot: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
}

/// A batch's transaction, begun (`Store::begin_batch`).
pub struct BatchWriter<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
}

impl BatchWriter<'_> {
    /// Writes the batch and commits: all of it lands or none does.
    pub fn write(self, batch: &Batch) -> Result<()> {
        let BatchWriter { tx, path } = self;
        for space in &batch.spaces {
            write_space(&tx, space, false).map_err(|e| classify(path, e))?;
        }
        if let Some((old, new)) = &batch.private_switch {
            switch_private(&tx, old, new).map_err(|e| classify(path, e))?;
        }
        for (peer, doc, state, their_heads) in &batch.sync_states {
            tx.prepare_cached(
                "INSERT INTO sync_states (peer, doc, state, their_heads) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (peer, doc) DO UPDATE
                 SET state = excluded.state, their_heads = excluded.their_heads",
            )
            .and_then(|mut stmt| stmt.execute(params![peer, doc, state, their_heads]))
            .map_err(|e| classify(path, e))?;
        }
        for (doc, author, attestation) in &batch.attestations {
            tx.prepare_cached(
                "INSERT INTO attestations (doc, author, attestation) VALUES (?1, ?2, ?3)
                 ON CONFLICT (doc, author) DO UPDATE SET attestation = excluded.attestation",
            )
            .and_then(|mut stmt| stmt.execute(params![doc, author, attestation]))
            .map_err(|e| classify(path, e))?;
        }
        for write in &batch.notes {
            if write.with_text {
                upsert_row(&tx, &write.row)
            } else {
                update_row_keeping_text(&tx, &write.row)
            }
            .map_err(|e| classify(path, e))?;
            let snapshot = write.snapshot.iter().map(|s| (ChunkKind::Snapshot, s));
            let chunks = write.chunks.iter().map(|c| (ChunkKind::Incremental, c));
            for (kind, data) in snapshot.chain(chunks) {
                tx.prepare_cached("INSERT INTO chunks (note_id, kind, data) VALUES (?1, ?2, ?3)")
                    .and_then(|mut stmt| stmt.execute(params![write.row.id, kind as i64, data]))
                    .map_err(|e| classify(path, e))?;
            }
        }
        tx.commit().map_err(|e| classify(path, e))?;
        Ok(())
    }
}

/// Everything one group commit writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub notes: Vec<NoteWrite>,
    pub spaces: Vec<SpaceWrite>,
    /// `(peer, doc, encoded sync state)`.
    /// `(peer, doc, encoded sync state, the peer's last heads)`.
    pub sync_states: Vec<(String, String, Vec<u8>, Vec<u8>)>,
    /// `(doc, author, encoded attestation)`, each replacing the author's last.
    pub attestations: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// `(old, new)`: this device was linked to a person whose Private space
    /// is `new` (written in this batch); `old`, its own, is retired and its
    /// notes are filed under `new`.
    pub private_switch: Option<(String, String)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
            && self.spaces.is_empty()
            && self.sync_states.is_empty()
            && self.attestations.is_empty()
            && self.private_switch.is_none()
    }
}

/// A space's part of a group commit: its cached name, the chunks to append
/// and its members.
#[derive(Debug, Clone)]
pub struct SpaceWrite {
    pub id: String,
    pub name: String,
    pub chunks: Vec<Vec<u8>>,
    /// Its members now, `(node id, name)`.
    pub members: Vec<(String, String)>,
}

/// A space's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceRow {
    pub id: String,
    pub name: String,
    pub private: bool,
    pub notes: usize,
}

/// A search result, with a highlighted snippet (`[` and `]` around matches).
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    pub id: String,
    pub title: String,
    pub snippet: String,
}

/// A chunk that failed to decode and was set aside.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedChunk {
    pub seq: i64,
    pub note_id: String,
    pub bytes: usize,
    pub error: String,
    pub quarantined_at: i64,
}

/// Sizes per note, for compaction decisions and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub chunks: usize,
    pub bytes: usize,
}

/// Note id to its `space_id` and `heads` columns.
type HeadsCache = HashMap<String, (String, Vec<u8>)>;

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Every note's `space_id` and `heads` columns, read in one scan the first
    /// time they are asked for and kept in step with each write since: sync
    /// asks for them on almost every frame. Only a store that writes keeps
    /// them (a read-only one would not see another process's writes).
    heads: Option<OnceLock<HeadsCache>>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join(STORE_FILE);
        let conn = Connection::open(&path).map_err(|e| classify(&path, e))?;
        let mut store = Store {
            conn,
            path,
            heads: Some(OnceLock::new()),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store for reading only: no lock, no migration, no write.
    /// Readers see what writers have committed, so `list` works while the app runs.
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        let path = dir.join(STORE_FILE);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        let version = schema_version(&conn, &path)?;
        if version < MIGRATIONS.len() as i64 {
            return Err(Error::StoreNeedsUpgrade { path });
        }
        require_notes_table(&conn, &path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| classify(&path, e))?;
        Ok(Store {
            conn,
            path,
            heads: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<()> {
        let path = self.path.clone();
        // The first statement that reads the file is where a damaged or foreign file
        // shows itself ("file is not a database").
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| classify(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::StoreDamaged {
                path,
                detail: format!("could not switch to WAL mode (got {mode})"),
            });
        }
        self.conn
            .execute_batch(
                "PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;",
            )
            .map_err(|e| classify(&path, e))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let version = schema_version(&self.conn, &path)?;
        if version > 0 {
            // An existing store must really be ours: a foreign SQLite file with a
            // user_version would otherwise be "migrated".
            require_notes_table(&self.conn, &path)?;
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
            tx.execute_batch(sql).map_err(|e| classify(&path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| classify(&path, e))?;
            tx.commit().map_err(|e| classify(&path, e))?;
        }
        Ok(())
    }

    /// A value from the metadata table, creating it with `init` if absent.
    pub fn meta_or_insert(&mut self, key: &str, init: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        let existing: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| classify(&self.path, e))?;
        if let Some(v) = existing {
            return Ok(v);
        }
        let value = init();
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(value)
    }

    /// Writes a group of note changes in one transaction: all land or none do.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        self.begin_batch()?.write(batch)?;
        self.record_written(batch);
        Ok(())
    }

    /// Starts the transaction a batch is written in, taking SQLite's write
    /// lock now: batches begun in turn land in turn, whoever writes them.
    pub fn begin_batch(&mut self) -> Result<BatchWriter<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, e))?;
        Ok(BatchWriter {
            tx,
            path: &self.path,
        })
    }

    /// Another connection to the same store, for the group commit to write on
    /// while this one serves reads (WAL: readers do not wait for it).
    pub fn open_writer(&self) -> Result<Store> {
        let conn = Connection::open(&self.path).map_err(|e| classify(&self.path, e))?;
        let mut store = Store {
            conn,
            path: self.path.clone(),
            heads: None,
        };
        store.configure()?;
        Ok(store)
    }

    /// After a batch landed (on this connection or another): the heads kept
    /// in memory follow it.
    pub fn record_written(&mut self, batch: &Batch) {
        // In the order the transaction wrote them.
        if let Some(heads) = self.heads.as_mut().and_then(OnceLock::get_mut) {
            if let Some((old, new)) = &batch.private_switch {
                refile(heads, &[old, ""], new);
            }
            for write in &batch.notes {
                heads.insert(
                    write.row.id.clone(),
                    (write.row.space_id.clone(), write.row.heads.clone()),
                );
            }
        }
    }

    /// Stores a device's first private space and files every note that has no
    /// space yet (notes from before spaces existed) into it, in one transaction.
    pub fn adopt_private_space(&mut self, space: &SpaceWrite) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        write_space(&tx, space, true).map_err(|e| classify(&path, e))?;
        tx.execute(
            "UPDATE notes SET space_id = ?1 WHERE space_id = ''",
            [&space.id],
        )
        .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        if let Some(heads) = self.heads.as_mut().and_then(OnceLock::get_mut) {
            refile(heads, &[""], &space.id);
        }
        Ok(())
    }

    /// The sync state remembered for `doc` with `peer`, and the heads the peer
    /// last announced for it.
    pub fn sync_state(&self, peer: &str, doc: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.conn
            .prepare_cached(
                "SELECT state, their_heads FROM sync_states WHERE peer = ?1 AND doc = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([peer, doc], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| classify(&self.path, e))
    }

    /// The attestations kept for `doc` (encoded), one per author.
    pub fn attestations(&self, doc: &str) -> Result<Vec<Vec<u8>>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT attestation FROM attestations WHERE doc = ?1")
            .map_err(|e| classify(&self.path, e))?;
        let rows = statement
            .query_map([doc], |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<Vec<u8>>>>()
            .map_err(|e| classify(&self.path, e))
    }

    /// What `doc`'s heads were when the store was upgraded to signed
    /// authorship (32-byte hashes back to back), if it existed then; empty
    /// for a space's index not opened since.
    pub fn legacy_heads(&self, doc: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT heads FROM legacy_heads WHERE doc = ?1")
            .and_then(|mut s| s.query_row([doc], |r| r.get(0)).optional())
            .map_err(|e| classify(&self.path, e))
    }

    /// Fills in a space index's heads at upgrade, the first time it is opened.
    pub fn fill_legacy_heads(&mut self, doc: &str, heads: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "UPDATE legacy_heads SET heads = ?2 WHERE doc = ?1 AND length(heads) = 0",
                params![doc, heads],
            )
            .map(|_| ())
            .map_err(|e| classify(&self.path, e))
    }

    /// Every space's recorded members, `(node id, name)`, by space id.
    pub fn space_members(&self) -> Result<BTreeMap<String, Vec<(String, String)>>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT space_id, node_id, name FROM space_members ORDER BY space_id, node_id",
            )
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(String, String, String)>>>())
            .map_err(|e| classify(&self.path, e))?;
        let mut members: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (space, node_id, name) in rows {
            members.entry(space).or_default().push((node_id, name));
        }
        Ok(members)
    }

    /// Records the members of each of `spaces`, in one transaction.
    pub fn write_space_members(
        &mut self,
        spaces: &[(String, Vec<(String, String)>)],
    ) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        for (space_id, members) in spaces {
            write_members(&tx, space_id, members).map_err(|e| classify(&path, e))?;
        }
        tx.commit().map_err(|e| classify(&path, e))
    }

    /// Remembers an accepted invitation until the space's index arrives;
    /// `private`: it links this device, and the space is its person's Private.
    pub fn add_invitation(&mut self, space_id: &str, inviter: &str, private: bool) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO invitations (space_id, inviter, private) VALUES (?1, ?2, ?3)
                 ON CONFLICT (space_id) DO UPDATE SET inviter = excluded.inviter,
                     private = excluded.private",
                params![space_id, inviter, private],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// `(space id, inviter, private)` of invitations still waiting for their space.
    pub fn invitations(&self) -> Result<Vec<(String, String, bool)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT space_id, inviter, private FROM invitations ORDER BY space_id")
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Records that `node_id` connected or disconnected at `now_ms`.
    pub fn peer_seen(&mut self, node_id: &str, now_ms: i64, connected: bool) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO peers (node_id, last_seen, connected) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE
                 SET last_seen = excluded.last_seen, connected = excluded.connected",
                params![node_id, now_ms, connected],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// When `node_id` was last connected, and whether it is now.
    pub fn peer_last_seen(&self, node_id: &str) -> Result<Option<(i64, bool)>> {
        self.conn
            .query_row(
                "SELECT last_seen, connected FROM peers WHERE node_id = ?1",
                [node_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| classify(&self.path, e))
    }

    /// Marks every peer disconnected: a writer starting has no connections.
    pub fn peers_disconnected(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE peers SET connected = 0", [])
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// Remembers where `node_id` was reached.
    pub fn set_peer_addrs(&mut self, node_id: &str, addrs: &str, now_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO peers (node_id, last_seen, addrs) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE SET addrs = excluded.addrs",
                params![node_id, now_ms, addrs],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// Where `node_id` was last reached (empty if never).
    pub fn peer_addrs(&self, node_id: &str) -> Result<String> {
        Ok(self
            .conn
            .query_row(
                "SELECT addrs FROM peers WHERE node_id = ?1",
                [node_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| classify(&self.path, e))?
            .unwrap_or_default())
    }

    /// A value from the metadata table.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| classify(&self.path, e))
    }

    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// Ids of notes that belong to no space.
    pub fn unfiled_note_ids(&self) -> Result<Vec<String>> {
        self.strings("SELECT id FROM notes WHERE space_id = '' ORDER BY id")
    }

    pub fn spaces(&self) -> Result<Vec<SpaceRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.id, s.name, s.private,
                        (SELECT count(*) FROM notes n WHERE n.space_id = s.id)
                 FROM spaces s ORDER BY s.private DESC, s.name, s.id",
            )
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SpaceRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    private: r.get::<_, i64>(2)? != 0,
                    notes: r.get::<_, i64>(3)? as usize,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Replaces every chunk of a note up to and including `through_seq` by one
    /// snapshot, in one transaction: the old chunks go only once the snapshot is in.
    pub fn compact(&mut self, note_id: &str, snapshot: &[u8], through_seq: i64) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        tx.execute(
            "INSERT INTO chunks (note_id, kind, data) VALUES (?1, ?2, ?3)",
            params![note_id, ChunkKind::Snapshot as i64, snapshot],
        )
        .map_err(|e| classify(&path, e))?;
        tx.execute(
            "DELETE FROM chunks WHERE note_id = ?1 AND seq <= ?2",
            params![note_id, through_seq],
        )
        .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))
    }

    pub fn chunks(&self, note_id: &str) -> Result<Vec<Chunk>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, kind, data FROM chunks WHERE note_id = ?1 ORDER BY seq")
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([note_id], |r| {
                Ok(Chunk {
                    seq: r.get(0)?,
                    kind: ChunkKind::from_i64(r.get(1)?),
                    data: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    pub fn last_chunk_seq(&self, note_id: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT max(seq) FROM chunks WHERE note_id = ?1",
                [note_id],
                |r| r.get(0),
            )
            .map_err(|e| classify(&self.path, e))
    }

    pub fn chunk_stats(&self, note_id: &str) -> Result<ChunkStats> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM chunks WHERE note_id = ?1",
                [note_id],
                |r| {
                    Ok(ChunkStats {
                        chunks: r.get::<_, i64>(0)? as usize,
                        bytes: r.get::<_, i64>(1)? as usize,
                    })
                },
            )
            .map_err(|e| classify(&self.path, e))
    }

    /// Moves a chunk that failed to decode out of the way, keeping its bytes.
    pub fn quarantine(&mut self, seq: i64, error: &str, now_ms: i64) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        tx.execute(
            "INSERT INTO quarantine (seq, note_id, kind, data, error, quarantined_at)
             SELECT seq, note_id, kind, data, ?2, ?3 FROM chunks WHERE seq = ?1",
            params![seq, error, now_ms],
        )
        .map_err(|e| classify(&path, e))?;
        tx.execute("DELETE FROM chunks WHERE seq = ?1", [seq])
            .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))
    }

    pub fn quarantined(&self) -> Result<Vec<QuarantinedChunk>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, note_id, length(data), error, quarantined_at
                 FROM quarantine ORDER BY seq",
            )
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(QuarantinedChunk {
                    seq: r.get(0)?,
                    note_id: r.get(1)?,
                    bytes: r.get::<_, i64>(2)? as usize,
                    error: r.get(3)?,
                    quarantined_at: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// A note's space id and encoded heads, without its text: what the sync
    /// protocol needs to check and compare.
    pub fn space_and_heads(&self, note_id: &str) -> Result<Option<(String, Vec<u8>)>> {
        let Some(cache) = &self.heads else {
            return self.read_space_and_heads(note_id);
        };
        if cache.get().is_none() {
            let all = self.all_spaces_and_heads()?;
            let _ = cache.set(all);
        }
        let heads = cache.get().expect("filled above");
        Ok(heads.get(note_id).cloned())
    }

    /// Every note's space and heads, in one scan.
    fn all_spaces_and_heads(&self) -> Result<HeadsCache> {
        self.conn
            .prepare("SELECT id, space_id, heads FROM notes")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                    .collect()
            })
            .map_err(|e| classify(&self.path, e))
    }

    fn read_space_and_heads(&self, note_id: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.conn
            .prepare_cached("SELECT space_id, heads FROM notes WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([note_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| classify(&self.path, e))
    }

    pub fn row(&self, note_id: &str) -> Result<Option<NoteRow>> {
        self.conn
            .query_row(
                "SELECT id, title, snippet, text, created_at, updated_at, trashed_at, space_id, heads,
                        updated_by, updated_by_unverified
                 FROM notes WHERE id = ?1",
                [note_id],
                |r| {
                    Ok(NoteRow {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        snippet: r.get(2)?,
                        text: r.get(3)?,
                        created_at: r.get(4)?,
                        updated_at: r.get(5)?,
                        trashed_at: r.get(6)?,
                        space_id: r.get(7)?,
                        heads: r.get(8)?,
                        updated_by: r.get(9)?,
                        updated_by_unverified: r.get(10)?,
                    })
                },
            )
            .optional()
            .map_err(|e| classify(&self.path, e))
    }

    /// The heads of the document a note's cached text is the text of (32-byte
    /// hashes back to back; empty if unknown or if there is no such note).
    pub fn text_heads(&self, note_id: &str) -> Result<Vec<u8>> {
        let heads: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT COALESCE(text_heads, heads) FROM notes WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([note_id], |r| r.get(0)).optional())
            .map_err(|e| classify(&self.path, e))?;
        Ok(heads.unwrap_or_default())
    }

    /// Notes whose cached text lags their document (written while they were
    /// typed in, then not refreshed: the process stopped first).
    pub fn lagging_texts(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM notes WHERE text_heads IS NOT NULL")
            .map_err(|e| classify(&self.path, e))?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.path, e));
        ids
    }

    /// Note ids starting with `prefix` (at most `limit`).
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM notes WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3")
            .map_err(|e| classify(&self.path, e))?;
        // Ids are lowercase hex, so every id with the prefix sorts below prefix + "g".
        let upper = format!("{prefix}g");
        let rows = stmt
            .query_map(params![prefix, upper, limit as i64], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Notes in the trash (`trashed`) or not, most recently edited first.
    pub fn list(&self, trashed: bool) -> Result<Vec<NoteListing>> {
        self.list_in(trashed, None)
    }

    /// Like `list`, only the notes filed under `space_id` when one is given.
    pub fn list_in(&self, trashed: bool, space_id: Option<&str>) -> Result<Vec<NoteListing>> {
        let sql = if trashed {
            "SELECT id, title, snippet, created_at, updated_at, trashed_at, space_id, updated_by,
                    updated_by_unverified FROM notes
             WHERE trashed_at IS NOT NULL AND (?1 IS NULL OR space_id = ?1)
             ORDER BY updated_at DESC, id"
        } else {
            "SELECT id, title, snippet, created_at, updated_at, trashed_at, space_id, updated_by,
                    updated_by_unverified FROM notes
             WHERE trashed_at IS NULL AND (?1 IS NULL OR space_id = ?1)
             ORDER BY updated_at DESC, id"
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([space_id], |r| {
                Ok(NoteListing {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    snippet: r.get(2)?,
                    created_at: r.get(3)?,
                    updated_at: r.get(4)?,
                    trashed_at: r.get(5)?,
                    space_id: r.get(6)?,
                    updated_by: r.get(7)?,
                    updated_by_unverified: r.get(8)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Every note id, trashed or not, oldest first (for export).
    pub fn all_ids(&self) -> Result<Vec<String>> {
        self.strings("SELECT id FROM notes ORDER BY created_at, id")
    }

    /// The first column of every row of a parameterless query.
    fn strings(&self, sql: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Full-text search over titles and bodies of notes not in the trash. Every
    /// word must match; the last one may be a prefix (search as you type).
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchRow>> {
        let Some(fts_query) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT n.id, n.title, snippet(notes_fts, 1, '[', ']', '…', 12)
                 FROM notes_fts JOIN notes n ON n.rowid = notes_fts.rowid
                 WHERE notes_fts MATCH ?1 AND n.trashed_at IS NULL
                 ORDER BY rank LIMIT ?2",
            )
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map(params![fts_query, limit as i64], |r| {
                Ok(SearchRow {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    snippet: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| classify(&self.path, e))?;
        Ok(rows)
    }

    /// Bytes the database occupies on disk (main file plus WAL).
    pub fn size_on_disk(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [&self.path, &wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Moves everything in the WAL into the main file and shrinks the file.
    pub fn checkpoint_and_vacuum(&mut self) -> Result<()> {
        self.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| classify(&self.path, e))
    }
}

/// The store's schema version, refusing one newer than this build knows.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::StoreTooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    Ok(version)
}

/// Reading the schema is where a damaged or foreign file shows itself.
fn require_notes_table(conn: &Connection, path: &Path) -> Result<()> {
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'notes'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| classify(path, e))?;
    if tables == 0 {
        return Err(Error::StoreDamaged {
            path: path.to_path_buf(),
            detail: "it has no notes table".into(),
        });
    }
    Ok(())
}

/// Updates a note's row but not its title, snippet or text (nor so its search
/// index): `text_heads` keeps the heads that text is of. A note with no row
/// yet gets one whose text is marked as lagging (of unknown heads).
fn update_row_keeping_text(tx: &Transaction<'_>, row: &NoteRow) -> rusqlite::Result<()> {
    let updated = tx
        .prepare_cached(
            "UPDATE notes SET
                created_at = ?2, updated_at = ?3, trashed_at = ?4, space_id = ?5,
                text_heads = COALESCE(text_heads, heads), heads = ?6, updated_by = ?7,
                updated_by_unverified = ?8
             WHERE id = ?1",
        )?
        .execute(params![
            row.id,
            row.created_at,
            row.updated_at,
            row.trashed_at,
            row.space_id,
            row.heads,
            row.updated_by,
            row.updated_by_unverified
        ])?;
    if updated == 0 {
        upsert_row(tx, row)?;
        tx.prepare_cached("UPDATE notes SET text_heads = x'' WHERE id = ?1")?
            .execute([&row.id])?;
    }
    Ok(())
}

fn upsert_row(tx: &Transaction<'_>, row: &NoteRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO notes
            (id, title, snippet, text, created_at, updated_at, trashed_at, space_id, heads,
             updated_by, updated_by_unverified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET
            title = excluded.title, snippet = excluded.snippet, text = excluded.text,
            created_at = excluded.created_at, updated_at = excluded.updated_at,
            trashed_at = excluded.trashed_at, space_id = excluded.space_id,
            heads = excluded.heads, updated_by = excluded.updated_by,
            updated_by_unverified = excluded.updated_by_unverified, text_heads = NULL",
    )?
    .execute(params![
        row.id,
        row.title,
        row.snippet,
        row.text,
        row.created_at,
        row.updated_at,
        row.trashed_at,
        row.space_id,
        row.heads,
        row.updated_by,
        row.updated_by_unverified
    ])?;
    Ok(())
}

fn write_space(tx: &Transaction<'_>, space: &SpaceWrite, private: bool) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO spaces (id, name, private) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        params![space.id, space.name, private],
    )?;
    // A space that arrives fulfils the invitation to it.
    tx.execute("DELETE FROM invitations WHERE space_id = ?1", [&space.id])?;
    write_members(tx, &space.id, &space.members)?;
    for chunk in &space.chunks {
        tx.execute(
            "INSERT INTO chunks (note_id, kind, data) VALUES (?1, ?2, ?3)",
            params![
                format!("space-{}", space.id),
                ChunkKind::Incremental as i64,
                chunk
            ],
        )?;
    }
    Ok(())
}

/// Replaces the members recorded for `space_id`.
fn write_members(
    tx: &Transaction<'_>,
    space_id: &str,
    members: &[(String, String)],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM space_members WHERE space_id = ?1", [space_id])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO space_members (space_id, node_id, name) VALUES (?1, ?2, ?3)",
    )?;
    for (node_id, name) in members {
        insert.execute(params![space_id, node_id, name])?;
    }
    Ok(())
}

/// Makes `new` the Private space in place of `old`: `old`'s notes are filed
/// under `new`, and `old` (its index, its attestations) is forgotten.
fn switch_private(tx: &Transaction<'_>, old: &str, new: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE notes SET space_id = ?2 WHERE space_id = ?1 OR space_id = ''",
        params![old, new],
    )?;
    let index = format!("space-{old}");
    tx.execute("DELETE FROM chunks WHERE note_id = ?1", [&index])?;
    tx.execute("DELETE FROM attestations WHERE doc = ?1", [&index])?;
    tx.execute("DELETE FROM legacy_heads WHERE doc = ?1", [&index])?;
    tx.execute("DELETE FROM spaces WHERE id = ?1", [old])?;
    tx.execute("DELETE FROM space_members WHERE space_id = ?1", [old])?;
    tx.execute("UPDATE spaces SET private = 1 WHERE id = ?1", [new])?;
    Ok(())
}

/// Files the notes of the spaces `from` under `to`, in the heads cache.
fn refile(heads: &mut HeadsCache, from: &[&str], to: &str) {
    for (space, _) in heads.values_mut() {
        if from.contains(&space.as_str()) {
            *space = to.to_string();
        }
    }
}

/// Turns what a user typed into an FTS5 query that cannot be a syntax error: each
/// word quoted, the last one a prefix.
fn fts_query(input: &str) -> Option<String> {
    let words: Vec<String> = input
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    if words.is_empty() {
        return None;
    }
    Some(format!("{}*", words.join(" ")))
}

/// Maps SQLite failures onto what they mean to the user.
fn classify(path: &Path, e: rusqlite::Error) -> Error {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => Error::StoreDamaged {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::DiskFull) => Error::DiskFull { path },
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied) => Error::StoreReadOnly { path },
        _ => Error::Storage { path, cause: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, text: &str) -> NoteRow {
        NoteRow {
            id: id.into(),
            title: crate::note::title_of(text),
            snippet: crate::note::snippet_of(text),
            text: text.into(),
            created_at: 1,
            updated_at: 2,
            trashed_at: None,
            space_id: String::new(),
            heads: Vec::new(),
            updated_by: String::new(),
            updated_by_unverified: false,
        }
    }

    #[test]
    fn search_index_follows_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut r = row("aa", "Groceries\nmilk and eggs");
        store
            .commit(&Batch {
                notes: vec![NoteWrite {
                    with_text: true,
                    row: r.clone(),
                    snapshot: None,
                    chunks: vec![],
                }],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(store.search("milk", 10).unwrap().len(), 1);
        r.text = "Groceries\nbread".into();
        store
            .commit(&Batch {
                notes: vec![NoteWrite {
                    with_text: true,
                    row: r,
                    snapshot: None,
                    chunks: vec![],
                }],
                ..Batch::default()
            })
            .unwrap();
        assert!(store.search("milk", 10).unwrap().is_empty());
        assert_eq!(store.search("bre", 10).unwrap().len(), 1);
        // Query syntax in user input is just text.
        assert!(store.search("\"unbalanced OR (", 10).unwrap().is_empty());
    }

    #[test]
    fn cached_heads_follow_every_write_and_match_a_fresh_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let write = |id: &str, space: &str, heads: &[u8]| NoteWrite {
            with_text: true,
            row: NoteRow {
                space_id: space.into(),
                heads: heads.to_vec(),
                ..row(id, "text")
            },
            snapshot: None,
            chunks: vec![],
        };
        let commit = |store: &mut Store, notes: Vec<NoteWrite>, switch: Option<(&str, &str)>| {
            store
                .commit(&Batch {
                    notes,
                    private_switch: switch.map(|(a, b)| (a.to_string(), b.to_string())),
                    ..Batch::default()
                })
                .unwrap()
        };
        commit(
            &mut store,
            vec![write("aa", "", &[1]), write("bb", "s1", &[2])],
            None,
        );
        // The first read fills the cache from the table.
        assert_eq!(
            store.space_and_heads("aa").unwrap(),
            Some((String::new(), vec![1]))
        );
        assert_eq!(store.space_and_heads("zz").unwrap(), None);
        commit(
            &mut store,
            vec![write("aa", "", &[3]), write("cc", "s2", &[4])],
            None,
        );
        store
            .adopt_private_space(&SpaceWrite {
                id: "s1".into(),
                name: "Private".into(),
                chunks: vec![],
                members: vec![],
            })
            .unwrap();
        // Switched in the same transaction that writes a note of the old space.
        commit(
            &mut store,
            vec![write("dd", "s2", &[5])],
            Some(("s2", "s3")),
        );
        let cached: Vec<_> = ["aa", "bb", "cc", "dd"]
            .iter()
            .map(|id| store.space_and_heads(id).unwrap())
            .collect();
        let fresh: Vec<_> = ["aa", "bb", "cc", "dd"]
            .iter()
            .map(|id| store.read_space_and_heads(id).unwrap())
            .collect();
        assert_eq!(cached, fresh);
        assert_eq!(cached[0], Some(("s1".to_string(), vec![3])));
        assert_eq!(cached[2], Some(("s3".to_string(), vec![4])));
        assert_eq!(cached[3], Some(("s2".to_string(), vec![5])));
    }

    #[test]
    fn compaction_replaces_chunks_with_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let write = NoteWrite {
            with_text: true,
            row: row("bb", "x"),
            snapshot: None,
            chunks: vec![vec![1], vec![2], vec![3]],
        };
        store
            .commit(&Batch {
                notes: vec![write],
                ..Batch::default()
            })
            .unwrap();
        let last = store.last_chunk_seq("bb").unwrap().unwrap();
        store.compact("bb", &[9, 9], last).unwrap();
        let chunks = store.chunks("bb").unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].kind, ChunkKind::Snapshot);
        assert_eq!(chunks[0].data, vec![9, 9]);
    }

    #[test]
    fn a_store_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(Error::StoreTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_damaged_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![0x5a_u8; 8192];
        std::fs::write(dir.path().join(STORE_FILE), &garbage).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(Error::StoreDamaged { .. })
        ));
        assert_eq!(std::fs::read(dir.path().join(STORE_FILE)).unwrap(), garbage);
    }
}
