//! Mallory, a hostile member, for the tests in `tests/tests/hostile_member.rs`.
//!
//! This module owns everything a test needs to attack a running device over
//! iroh on loopback with the real sync protocol:
//! - `Mallory`: an endpoint with its own key (added as a member of a space by
//!   the victim, or an outsider nobody added), and its own Automerge replica
//!   of every document it learned, so a test can craft any change;
//! - `MalloryConn`: one sync connection (frames out; a reader task collecting
//!   every frame and byte the victim sends, optionally answering honestly so
//!   Mallory learns the victim's documents), or one that never reads;
//! - raw Automerge sync messages written byte by byte (`raw_sync_message`,
//!   `raw_bloom`), since automerge keeps its bloom filter's fields private;
//! - decompression bombs (`compressed_change_bomb`);
//! - a panic detector (`install_panic_hook`, `assert_no_panic`) and checks that
//!   the victim stays usable (`responsive`, `honest_edit_arrives`, `reopen`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, Value, ROOT};
use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
use peernotes_sync::membership::{self, Role};
use peernotes_sync::net::SYNC_ALPN;
use peernotes_sync::protocol::frame::{Attestation, DocHeads, Hash, SpaceKey, SpaceSummary};
use peernotes_sync::protocol::session::{bucket_of, summary_hash, BUCKETS};
use peernotes_sync::protocol::{Frame, FrameDecoder, PROTOCOL_VERSION};
use peernotes_sync::{ListFilter, Node, NodeOptions, NoteId, SpaceId};

use crate::Device;

/// A hostile device: a bare iroh endpoint speaking the sync protocol.
pub struct Mallory {
    endpoint: Endpoint,
    key: [u8; 32],
    id: String,
    victim: EndpointAddr,
    docs: Arc<Mutex<Docs>>,
}

/// Mallory's replicas, by document key (`space-<id>` or a note id), with
/// the attestations the victim sent for each (by author) and Mallory's key,
/// so what she sends carries attestations like an honest member's.
struct Docs {
    map: BTreeMap<String, Replica>,
    kept: BTreeMap<String, BTreeMap<[u8; 32], Attestation>>,
    key: [u8; 32],
}

struct Replica {
    space: SpaceKey,
    doc: AutoCommit,
    state: sync::State,
}

impl Replica {
    fn new(space: SpaceKey) -> Replica {
        Replica {
            space,
            doc: AutoCommit::new(),
            state: sync::State::new(),
        }
    }
}

impl Docs {
    fn new(key: [u8; 32]) -> Docs {
        Docs {
            map: BTreeMap::new(),
            kept: BTreeMap::new(),
            key,
        }
    }

    /// Keeps the attestations a frame from the victim carries.
    fn remember(&mut self, frame: &Frame) {
        if let Frame::Sync {
            doc, attestations, ..
        }
        | Frame::Document {
            doc, attestations, ..
        } = frame
        {
            let kept = self.kept.entry(doc.clone()).or_default();
            for attestation in attestations {
                kept.insert(attestation.author, attestation.clone());
            }
        }
    }

    /// What an honest member sends with changes of `doc`: every attestation
    /// it kept, and its own over its replica's heads.
    fn attestations(&mut self, doc: &str) -> Vec<Attestation> {
        let mut out: Vec<Attestation> = self
            .kept
            .get(doc)
            .map(|kept| kept.values().cloned().collect())
            .unwrap_or_default();
        if let Some(replica) = self.map.get_mut(doc) {
            let heads: Vec<Hash> = replica.doc.get_heads().iter().map(|h| h.0).collect();
            if !heads.is_empty() {
                out.push(Attestation::sign(doc, &self.key, heads));
            }
        }
        out
    }

    /// Mallory's documents of `space`, split into the protocol's buckets.
    fn buckets(&mut self, space: &SpaceKey) -> Vec<BTreeMap<String, Vec<Hash>>> {
        let mut buckets = vec![BTreeMap::new(); BUCKETS];
        for (key, replica) in self.map.iter_mut() {
            if replica.space == *space {
                let heads = replica.doc.get_heads().iter().map(|h| h.0).collect();
                buckets[bucket_of(key)].insert(key.clone(), heads);
            }
        }
        buckets
    }

    /// What an honest peer would answer to `frame`.
    fn answer(&mut self, frame: &Frame) -> Vec<Frame> {
        match frame {
            Frame::Buckets { space, hashes } => {
                let ours = self.buckets(space);
                ours.into_iter()
                    .zip(hashes)
                    .enumerate()
                    .filter(|(_, (docs, theirs))| summary_hash(docs) != **theirs)
                    .map(|(i, (docs, _))| Frame::Heads {
                        space: *space,
                        bucket: i as u8,
                        docs: docs
                            .into_iter()
                            .map(|(doc, heads)| DocHeads { doc, heads })
                            .collect(),
                    })
                    .collect()
            }
            Frame::Heads { space, docs, .. } => {
                let mut out = Vec::new();
                for theirs in docs {
                    let Some(replica) = self.map.get_mut(&theirs.doc) else {
                        continue;
                    };
                    let ours: Vec<Hash> = replica.doc.get_heads().iter().map(|h| h.0).collect();
                    if ours != theirs.heads {
                        if let Some(m) =
                            replica.doc.sync().generate_sync_message(&mut replica.state)
                        {
                            out.push((theirs.doc.clone(), m.encode()));
                        }
                    }
                }
                out.into_iter()
                    .map(|(doc, message)| Frame::Sync {
                        space: *space,
                        attestations: self.attestations(&doc),
                        doc,
                        message,
                    })
                    .collect()
            }
            Frame::Document {
                space, doc, saved, ..
            } => {
                match self.map.get_mut(doc) {
                    Some(replica) => {
                        let _ = replica.doc.load_incremental(saved);
                    }
                    None => {
                        if let Ok(loaded) = AutoCommit::load(saved) {
                            let mut replica = Replica::new(*space);
                            replica.doc = loaded;
                            self.map.insert(doc.clone(), replica);
                        }
                    }
                }
                Vec::new()
            }
            Frame::Sync {
                space,
                doc,
                message,
                ..
            } => {
                let Ok(message) = sync::Message::decode(message) else {
                    return Vec::new();
                };
                let replica = self
                    .map
                    .entry(doc.clone())
                    .or_insert_with(|| Replica::new(*space));
                let _ = replica
                    .doc
                    .sync()
                    .receive_sync_message(&mut replica.state, message);
                let Some(m) = replica.doc.sync().generate_sync_message(&mut replica.state) else {
                    return Vec::new();
                };
                vec![Frame::Sync {
                    space: *space,
                    doc: doc.clone(),
                    message: m.encode(),
                    attestations: self.attestations(doc),
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// A bare iroh endpoint with `key`, on 127.0.0.1 only, no relays.
pub async fn loopback_endpoint(key: SecretKey) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(key)
        .relay_mode(RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap()
        .bind()
        .await
        .unwrap()
}

impl Mallory {
    /// Mallory with a fresh key, whom the victim adds as an editor of `space`.
    pub async fn join(victim: &Device, space: SpaceId) -> Mallory {
        Mallory::join_as(victim, space, Role::Editor).await
    }

    /// Mallory with a fresh key, whom the victim adds to `space` with `role`.
    pub async fn join_as(victim: &Device, space: SpaceId, role: Role) -> Mallory {
        let key = SecretKey::generate();
        victim
            .node
            .add_member(space, &key.public().to_string(), "Mallory", role)
            .unwrap();
        Mallory::with_key(victim.net.addr(), key).await
    }

    /// An endpoint with a fresh key that nobody added to anything (yet).
    pub async fn outsider(victim: &Device) -> Mallory {
        Mallory::with_key(victim.net.addr(), SecretKey::generate()).await
    }

    async fn with_key(victim: EndpointAddr, key: SecretKey) -> Mallory {
        let id = key.public().to_string();
        let bytes = key.to_bytes();
        Mallory {
            key: bytes,
            endpoint: loopback_endpoint(key).await,
            id,
            victim,
            docs: Arc::new(Mutex::new(Docs::new(bytes))),
        }
    }

    /// Mallory's node id (64 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A sync connection whose reader only collects what the victim sends.
    pub async fn connect(&self) -> MalloryConn {
        self.try_connect().await.expect("Mallory connects")
    }

    /// `connect`, reporting a refused connection instead of failing.
    pub async fn try_connect(&self) -> anyhow::Result<MalloryConn> {
        self.open(Reader::Collect).await
    }

    /// A sync connection whose reader also answers like an honest member
    /// (buckets with heads, sync messages, whole documents), updating
    /// Mallory's replicas.
    pub async fn connect_honest(&self) -> MalloryConn {
        self.open(Reader::Honest).await.expect("Mallory connects")
    }

    /// A sync connection that never reads what the victim sends (its stream
    /// stays open, so the victim's writes back up).
    pub async fn connect_unread(&self) -> MalloryConn {
        self.open(Reader::None).await.expect("Mallory connects")
    }

    async fn open(&self, reader: Reader) -> anyhow::Result<MalloryConn> {
        let conn = self
            .endpoint
            .connect(self.victim.clone(), SYNC_ALPN)
            .await?;
        let (send, recv) = conn.open_bi().await?;
        let send = Arc::new(tokio::sync::Mutex::new(send));
        let inbox = Arc::new(Inbox::default());
        let mut held = None;
        match reader {
            Reader::None => held = Some(recv),
            Reader::Collect => {
                let docs = self.docs.clone();
                tokio::spawn(read(recv, inbox.clone(), docs, false, send.clone()));
            }
            Reader::Honest => {
                let docs = self.docs.clone();
                tokio::spawn(read(recv, inbox.clone(), docs, true, send.clone()));
            }
        }
        Ok(MalloryConn {
            conn,
            send,
            inbox,
            docs: self.docs.clone(),
            _unread: held,
        })
    }

    /// Syncs `space` honestly until the victim goes quiet, so Mallory holds
    /// every document of it. Returns the (still open, honest) connection.
    pub async fn learn(&self, space: SpaceId) -> MalloryConn {
        let conn = self.connect_honest().await;
        conn.hello(&[space]).await.expect("hello");
        conn.quiet(Duration::from_millis(700), Duration::from_secs(20))
            .await;
        assert!(
            self.has(&space.doc_key()),
            "Mallory learned the space's index (got {:?})",
            conn.kinds()
        );
        conn
    }

    /// Whether Mallory holds a replica of `doc` with any change in it.
    pub fn has(&self, doc: &str) -> bool {
        let mut docs = self.docs.lock().unwrap();
        docs.map
            .get_mut(doc)
            .is_some_and(|r| !r.doc.get_heads().is_empty())
    }

    /// Reads (or changes, uncommitted) Mallory's replica of `doc`.
    pub fn with_doc<R>(&self, doc: &str, f: impl FnOnce(&mut AutoCommit) -> R) -> R {
        let mut docs = self.docs.lock().unwrap();
        let replica = docs
            .map
            .get_mut(doc)
            .unwrap_or_else(|| panic!("Mallory has no replica of {doc}"));
        f(&mut replica.doc)
    }

    /// The text of `doc`'s ROOT `text`, as Mallory's replica has it.
    pub fn text(&self, doc: &str) -> Option<String> {
        self.with_doc(doc, |d| match d.get(ROOT, "text") {
            Ok(Some((Value::Object(ObjType::Text), obj))) => d.text(&obj).ok(),
            _ => None,
        })
    }

    /// Makes a change to Mallory's replica of `doc` with `f`, commits it, and
    /// returns a sync message carrying exactly the new change(s), ready for a
    /// `Frame::Sync`.
    /// The change is Mallory's own: made under her device's actor.
    pub fn edit(&self, doc: &str, f: impl FnOnce(&mut AutoCommit)) -> Vec<u8> {
        self.edit_as(doc, &self.actor(), f)
    }

    /// `edit`, with the change made under `actor` (whoever's device that
    /// names).
    pub fn edit_as(&self, doc: &str, actor: &[u8], f: impl FnOnce(&mut AutoCommit)) -> Vec<u8> {
        self.with_doc(doc, |d| {
            d.set_actor(automerge::ActorId::from(actor));
            let before = d.get_heads();
            f(d);
            d.commit();
            let changes: Vec<Vec<u8>> = d
                .get_changes(&before)
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            assert!(!changes.is_empty(), "the edit changed something");
            let heads: Vec<Hash> = d.get_heads().iter().map(|h| h.0).collect();
            raw_sync_message(&heads, &[], &[], &changes)
        })
    }

    /// Mallory's replica of `doc` as it is now, to put back with `restore`
    /// (so an attack that was refused does not taint the next one).
    pub fn snapshot(&self, doc: &str) -> AutoCommit {
        self.with_doc(doc, |d| d.fork())
    }

    pub fn restore(&self, doc: &str, replica: AutoCommit) {
        self.with_doc(doc, |d| *d = replica);
    }

    /// The actor Mallory's own device writes as (its node id, then 0).
    pub fn actor(&self) -> Vec<u8> {
        let mut actor = membership::device_key(&self.id)
            .expect("a node id")
            .to_vec();
        actor.push(0);
        actor
    }

    /// A membership op for `space` signed by Mallory's device key, on the
    /// heads of the log her replica of the space's index holds.
    pub fn sign(&self, space: SpaceId, action: membership::Action) -> membership::Op {
        let heads = self.log_heads(space);
        membership::Op::sign(*space.as_bytes(), &self.key, heads, action)
    }

    /// The heads of the membership log in Mallory's replica of `space`'s index.
    pub fn log_heads(&self, space: SpaceId) -> Vec<[u8; 32]> {
        self.with_doc(&space.doc_key(), |d| {
            let mut log = membership::Log::new(*space.as_bytes());
            let Ok(Some((_, obj))) = d.get(ROOT, "log") else {
                return Vec::new();
            };
            let mut ops: Vec<membership::Op> = d
                .keys(&obj)
                .filter_map(|k| match d.get(&obj, k.as_str()) {
                    Ok(Some((Value::Scalar(v), _))) => match v.as_ref() {
                        automerge::ScalarValue::Bytes(b) => membership::Op::from_bytes(b).ok(),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            // Insert in any order that works: parents first.
            while !ops.is_empty() {
                let before = ops.len();
                ops.retain(|op| log.insert(op.clone()).is_err());
                if ops.len() == before {
                    break;
                }
            }
            log.heads()
        })
    }

    /// An index change putting `op` into the space's log, as a sync message.
    pub fn put_op(&self, space: SpaceId, op: &membership::Op) -> Vec<u8> {
        let actor = self.actor();
        self.edit_as(&space.doc_key(), &actor, |d| {
            let Ok(Some((_, obj))) = d.get(ROOT, "log") else {
                panic!("the index has a log");
            };
            d.put(
                &obj,
                membership::hex(&op.hash()),
                automerge::ScalarValue::Bytes(op.to_bytes()),
            )
            .unwrap();
        })
    }

    /// The attestations the victim sent for `doc` so far, by author.
    pub fn attestations_seen(&self, doc: &str) -> Vec<Attestation> {
        self.docs
            .lock()
            .unwrap()
            .kept
            .get(doc)
            .map(|kept| kept.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Mallory's own attestation of `doc` as her replica has it: what she
    /// signs for her changes (and what a forwarder passes on with them).
    pub fn attest(&self, doc: &str) -> Attestation {
        let heads: Vec<Hash> = self.with_doc(doc, |d| d.get_heads().iter().map(|h| h.0).collect());
        Attestation::sign(doc, &self.key, heads)
    }

    /// The hashes of `doc`'s changes in Mallory's replica, oldest first.
    pub fn change_hashes(&self, doc: &str) -> Vec<Hash> {
        self.with_doc(doc, |d| {
            d.get_changes(&[]).iter().map(|c| c.hash().0).collect()
        })
    }

    pub async fn close(self) {
        self.endpoint.close().await;
    }
}

enum Reader {
    None,
    Collect,
    Honest,
}

/// What the victim sent on one connection.
#[derive(Default)]
struct Inbox {
    frames: Mutex<Vec<Frame>>,
    bytes: AtomicU64,
    /// The victim finished its stream (or it failed): the session is over.
    ended: AtomicBool,
    error: Mutex<Option<String>>,
    last: Mutex<Option<Instant>>,
    count: AtomicUsize,
}

async fn read(
    mut recv: RecvStream,
    inbox: Arc<Inbox>,
    docs: Arc<Mutex<Docs>>,
    honest: bool,
    send: Arc<tokio::sync::Mutex<SendStream>>,
) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                inbox.bytes.fetch_add(n as u64, Ordering::SeqCst);
                *inbox.last.lock().unwrap() = Some(Instant::now());
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            let answers = {
                                let mut docs = docs.lock().unwrap();
                                docs.remember(&frame);
                                if honest {
                                    docs.answer(&frame)
                                } else {
                                    Vec::new()
                                }
                            };
                            inbox.frames.lock().unwrap().push(frame);
                            inbox.count.fetch_add(1, Ordering::SeqCst);
                            if !answers.is_empty() {
                                let bytes: Vec<u8> = answers
                                    .iter()
                                    .flat_map(|f| f.encode().expect("an honest frame encodes"))
                                    .collect();
                                let _ = send.lock().await.write_all(&bytes).await;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            *inbox.error.lock().unwrap() = Some(format!("undecodable: {e}"));
                            inbox.ended.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                *inbox.error.lock().unwrap() = Some(e.to_string());
                break;
            }
        }
    }
    inbox.ended.store(true, Ordering::SeqCst);
}

/// One sync connection of Mallory's to the victim.
pub struct MalloryConn {
    conn: Connection,
    send: Arc<tokio::sync::Mutex<SendStream>>,
    inbox: Arc<Inbox>,
    docs: Arc<Mutex<Docs>>,
    /// The receive half, held unread (for `Mallory::connect_unread`).
    _unread: Option<RecvStream>,
}

impl MalloryConn {
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends one frame (length prefix and postcard body).
    pub async fn send(&self, frame: &Frame) -> anyhow::Result<()> {
        self.send_raw(&frame.encode()?).await
    }

    /// Sends several frames in one write.
    pub async fn send_all(&self, frames: &[Frame]) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for frame in frames {
            bytes.extend(frame.encode()?);
        }
        self.send_raw(&bytes).await
    }

    /// Writes `bytes` on the stream as they are.
    pub async fn send_raw(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.send.lock().await.write_all(bytes).await?;
        Ok(())
    }

    /// Sends `Hello` listing `spaces` with summary hashes of zero, so the
    /// victim answers with its buckets for each.
    pub async fn hello(&self, spaces: &[SpaceId]) -> anyhow::Result<()> {
        self.send(&hello(spaces)).await
    }

    /// Sends a `Frame::Sync` with `message` for `doc` of `space`, carrying
    /// what an honest member would: the attestations the victim sent for
    /// `doc`, and Mallory's own over her replica's heads.
    pub async fn sync(&self, space: SpaceId, doc: &str, message: Vec<u8>) -> anyhow::Result<()> {
        let attestations = self.docs.lock().unwrap().attestations(doc);
        self.sync_with(space, doc, message, attestations).await
    }

    /// Sends a `Frame::Sync` with `message` and exactly `attestations`.
    pub async fn sync_with(
        &self,
        space: SpaceId,
        doc: &str,
        message: Vec<u8>,
        attestations: Vec<Attestation>,
    ) -> anyhow::Result<()> {
        self.send(&Frame::Sync {
            space: *space.as_bytes(),
            doc: doc.to_string(),
            message,
            attestations,
        })
        .await
    }

    /// Every frame the victim sent so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.inbox.frames.lock().unwrap().clone()
    }

    /// How many frames the victim sent so far.
    pub fn frame_count(&self) -> usize {
        self.inbox.count.load(Ordering::SeqCst)
    }

    /// The kinds of the frames received, for failure messages.
    pub fn kinds(&self) -> Vec<String> {
        self.inbox
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| kind(f).to_string())
            .collect()
    }

    /// Stream bytes the victim sent so far.
    pub fn bytes_received(&self) -> u64 {
        self.inbox.bytes.load(Ordering::SeqCst)
    }

    /// Why the reader stopped, if it failed.
    pub fn read_error(&self) -> Option<String> {
        self.inbox.error.lock().unwrap().clone()
    }

    /// Waits until a frame matching `pred` has arrived (returning it), or
    /// `timeout` passes.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&Frame) -> bool,
        timeout: Duration,
    ) -> Option<Frame> {
        self.wait_for_after(0, pred, timeout).await
    }

    /// How many frames have arrived so far: take it before doing what should
    /// make the victim send something, then `wait_for_after` it.
    pub fn mark(&self) -> usize {
        self.inbox.frames.lock().unwrap().len()
    }

    /// Like `wait_for`, but only for frames that arrived after `mark`.
    pub async fn wait_for_after(
        &self,
        mark: usize,
        pred: impl Fn(&Frame) -> bool,
        timeout: Duration,
    ) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        let mut seen = mark;
        loop {
            {
                let frames = self.inbox.frames.lock().unwrap();
                if let Some(f) = frames[seen.min(frames.len())..].iter().find(|f| pred(f)) {
                    return Some(f.clone());
                }
                seen = frames.len();
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no byte has arrived for `gap` (or the session ended), at
    /// most `max`.
    pub async fn quiet(&self, gap: Duration, max: Duration) {
        let start = Instant::now();
        loop {
            let last = self.inbox.last.lock().unwrap().unwrap_or(start);
            if last.elapsed() >= gap && start.elapsed() >= gap {
                return;
            }
            if self.is_closed() || start.elapsed() >= max {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the victim ended this session: closed the connection, or
    /// finished (or reset) its stream.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some() || self.inbox.ended.load(Ordering::SeqCst)
    }

    /// Why the session ended, if it did: the connection's close reason, or
    /// how the victim's stream ended.
    pub fn end_reason(&self) -> Option<String> {
        if let Some(reason) = self.conn.close_reason() {
            return Some(reason.to_string());
        }
        if self.inbox.ended.load(Ordering::SeqCst) {
            return Some(
                self.read_error()
                    .unwrap_or_else(|| "the victim finished its stream".into()),
            );
        }
        None
    }

    /// Waits up to `timeout` for `is_closed`.
    pub async fn closed_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_closed() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Closes the connection from Mallory's side.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// A `Hello` for `spaces`, with summary hashes of zero.
pub fn hello(spaces: &[SpaceId]) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        spaces: spaces
            .iter()
            .map(|s| SpaceSummary {
                space: *s.as_bytes(),
                hash: [0; 32],
                changed: None,
            })
            .collect(),
    }
}

/// A frame's variant name.
pub fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "Hello",
        Frame::Buckets { .. } => "Buckets",
        Frame::Heads { .. } => "Heads",
        Frame::Sync { .. } => "Sync",
        Frame::Presence { .. } => "Presence",
        Frame::Document { .. } => "Document",
        Frame::Goodbye { .. } => "Goodbye",
        Frame::Removed { .. } => "Removed",
        Frame::Links { .. } => "Links",
        Frame::Part { .. } => "Part",
    }
}

// ---- Raw Automerge sync messages -------------------------------------------

/// One `have` entry of a raw sync message: `last_sync` heads and the bloom
/// filter's bytes (see `raw_bloom`; empty for "no filter").
#[derive(Debug, Clone)]
pub struct RawHave {
    pub last_sync: Vec<Hash>,
    pub bloom: Vec<u8>,
}

/// Appends `value` as unsigned LEB128.
pub fn uleb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A bloom filter's bytes with whatever parameters the sender likes:
/// `num_entries`, `bits_per_entry`, `num_probes` (each uLEB128), then
/// ceil(num_entries × bits_per_entry / 8) bytes of bits, all set (so every
/// probe is looked at).
pub fn raw_bloom(num_entries: u32, bits_per_entry: u32, num_probes: u32) -> Vec<u8> {
    let mut out = Vec::new();
    uleb128(&mut out, num_entries.into());
    uleb128(&mut out, bits_per_entry.into());
    uleb128(&mut out, num_probes.into());
    let bits = (u64::from(num_entries) * u64::from(bits_per_entry)).div_ceil(8);
    out.extend(std::iter::repeat_n(0xff, bits as usize));
    out
}

fn hashes(out: &mut Vec<u8>, hashes: &[Hash]) {
    uleb128(out, hashes.len() as u64);
    for h in hashes {
        out.extend_from_slice(h);
    }
}

/// An Automerge (v1) sync message written byte by byte: 0x42; heads; need;
/// have (each: last_sync hashes, then the bloom's byte length and bytes);
/// changes (each: byte length and bytes). No flags section.
pub fn raw_sync_message(
    heads: &[Hash],
    need: &[Hash],
    have: &[RawHave],
    changes: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = vec![0x42];
    hashes(&mut out, heads);
    hashes(&mut out, need);
    uleb128(&mut out, have.len() as u64);
    for h in have {
        hashes(&mut out, &h.last_sync);
        uleb128(&mut out, h.bloom.len() as u64);
        out.extend_from_slice(&h.bloom);
    }
    uleb128(&mut out, changes.len() as u64);
    for c in changes {
        uleb128(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

/// The bytes of one change that makes a map under ROOT `key` and nothing else
/// (so a document made of it never has a note's `text`).
pub fn junk_change(key: &str) -> (Hash, Vec<u8>) {
    use automerge::transaction::Transactable;
    let mut doc = AutoCommit::new();
    doc.put_object(ROOT, key, ObjType::Map).unwrap();
    doc.commit();
    let change = doc.get_changes(&[]).pop().unwrap();
    (change.hash().0, change.raw_bytes().to_vec())
}

/// The first sync message a replica with nothing sends for a document (empty
/// heads: "send me all of it").
pub fn empty_heads_message() -> Vec<u8> {
    let mut doc = AutoCommit::new();
    let mut state = sync::State::new();
    let message = doc
        .sync()
        .generate_sync_message(&mut state)
        .expect("a fresh document says hello");
    message.encode()
}

// ---- Decompression bombs ---------------------------------------------------

/// Automerge's chunk magic bytes.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// A compressed change chunk (type 2) whose DEFLATE body inflates to
/// `inflated` zero bytes: magic, a checksum (wrong: it is only checked after
/// inflating), the chunk type, the uLEB128 length, then the deflated zeros.
pub fn compressed_change_bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(zeros.len());
        encoder.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    let deflated = encoder.finish().unwrap();
    let mut chunk = CHUNK_MAGIC.to_vec();
    chunk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    chunk.push(2);
    uleb128(&mut chunk, deflated.len() as u64);
    chunk.extend(deflated);
    chunk
}

/// `compressed_change_bomb` of 1 GiB, made once per process (~1 MiB).
pub fn gigabyte_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| compressed_change_bomb(1 << 30))
}

// ---- Panics ----------------------------------------------------------------

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// Counts every panic in this process from now on (any thread, tokio tasks
/// included), then reports it as the default hook does. Idempotent.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            if let Ok(mut panics) = PANICS.lock() {
                panics.push(format!("thread '{thread}': {info}"));
            }
            default(info);
        }));
    });
}

/// The panics seen since `install_panic_hook`.
pub fn panics() -> Vec<String> {
    PANICS.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Fails if anything panicked since `install_panic_hook`.
pub fn assert_no_panic() {
    let panics = panics();
    assert!(panics.is_empty(), "something panicked: {panics:#?}");
}

// ---- The victim stays usable -----------------------------------------------

/// How long `node.list(Active)` takes to answer, or `None` if it has not
/// within `limit` (it runs on its own thread, so a frozen Node blocks only
/// that thread).
pub async fn answer_time(node: &Arc<Node>, limit: Duration) -> Option<Duration> {
    let node = node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let listed = node.list(ListFilter::Active).map(|_| ());
        let _ = tx.send(listed);
    });
    loop {
        match rx.try_recv() {
            Ok(listed) => {
                listed.expect("list() works");
                return Some(start.elapsed());
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                panic!("list() panicked")
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long the victim may take to list its notes while attacked.
pub const RESPONSIVE_WITHIN: Duration = Duration::from_secs(5);

/// Fails unless `node` lists its notes within 5 s.
pub async fn responsive(node: &Arc<Node>, when: &str) -> Duration {
    match answer_time(node, RESPONSIVE_WITHIN).await {
        Some(took) => took,
        None => panic!("the device did not answer list() within 5 s {when}"),
    }
}

/// Waits up to `timeout` for `check`.
pub async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob writes a line at the top of `note`; it must reach Alice within 20 s.
/// Returns the line.
pub async fn honest_edit_arrives(
    alice: &Device,
    bob: &Device,
    note: &NoteId,
    after: &str,
) -> String {
    let line = format!("Bob, after {after}\n");
    bob.node.splice(note, 0, 0, &line).unwrap();
    eventually(
        &format!("Bob's edit to reach Alice after {after}"),
        Duration::from_secs(20),
        || {
            alice
                .node
                .get(note)
                .map(|n| n.text.starts_with(&line))
                .unwrap_or(false)
        },
    )
    .await;
    line
}

/// Closes a device's transport and its `Node`, then opens the `Node` again
/// from the same data dir (no transport): what the device holds after a
/// restart.
pub async fn reopen(device: Device) -> (Node, tempfile::TempDir) {
    let Device { node, net, dir } = device;
    net.close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Arc::strong_count(&node) > 1 {
        assert!(
            Instant::now() < deadline,
            "the transport's tasks never let go of the Node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = Arc::try_unwrap(node).ok().expect("the only handle");
    node.close().unwrap();
    let node = Node::open(NodeOptions::new(dir.path())).unwrap();
    (node, dir)
}

/// Whether `marker` appears in anything `frames` carry: their encoded bytes,
/// and the text of every document or change inside them once loaded (a whole
/// document is compressed; loading it undoes that).
pub fn frames_mention(frames: &[Frame], marker: &str) -> bool {
    let needle = marker.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let doc_mentions = |doc: &mut AutoCommit| {
        if contains(&doc.save_nocompress()) {
            return true;
        }
        matches!(doc.get(ROOT, "text"), Ok(Some((Value::Object(ObjType::Text), obj)))
            if doc.text(&obj).is_ok_and(|t| t.contains(marker)))
    };
    frames.iter().any(|frame| {
        if contains(&frame.encode().unwrap_or_default()) {
            return true;
        }
        match frame {
            Frame::Document { saved, .. } => {
                AutoCommit::load(saved).is_ok_and(|mut doc| doc_mentions(&mut doc))
            }
            Frame::Sync { message, .. } => match sync::Message::decode(message) {
                Ok(m) => m.changes.iter().any(|change| {
                    if inflated(change).is_some_and(|bytes| contains(&bytes)) {
                        return true;
                    }
                    let mut doc = AutoCommit::new();
                    doc.load_incremental(change).is_ok() && doc_mentions(&mut doc)
                }),
                Err(_) => false,
            },
            _ => false,
        }
    })
}

/// The inflated body of a compressed change chunk (type 2), at most 64 MiB.
fn inflated(chunk: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    if chunk.len() < 10 || chunk[..4] != CHUNK_MAGIC || chunk[8] != 2 {
        return None;
    }
    let mut at = 9;
    while *chunk.get(at)? & 0x80 != 0 {
        at += 1;
    }
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(&chunk[at + 1..])
        .take(64 << 20)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Whether a sync message carries any change.
pub fn carries_changes(message: &[u8]) -> bool {
    sync::Message::decode(message).is_ok_and(|m| !m.changes.is_empty())
}

/// The ids of a space's members on `node`.
pub fn member_ids(node: &Node, space: SpaceId) -> BTreeSet<String> {
    node.members(space)
        .unwrap()
        .into_iter()
        .map(|m| m.node_id)
        .collect()
}
