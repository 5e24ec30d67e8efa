//! One sync session with one remote device: a state machine with no I/O.
//!
//! Run loop, for the driver (`net`, or a simulation):
//! 1. `Session::new`, then `start` once the connection is up;
//! 2. `handle_frame` for each frame that arrives (or `handle_vetted`, for a
//!    frame the driver vetted itself, outside any lock), `local_change`
//!    whenever a document changed on this device;
//! 3. after every call, act on each `poll_event`, and send frames from
//!    `poll_transmit` in order while the connection has room for them;
//! 4. close the session and start a new one when `shares_more_than_announced`
//!    (a space became shared after the hellos: only a new hello lists it).
//!
//! Work is bounded by what the peer can make this device spend, not by what it
//! asks: every frame is vetted (`vet`) before Automerge sees it; each document
//! with something to send is due at most once, and its frame is generated only
//! when the driver asks for the next one, so a peer that asks again and again,
//! or never reads, grows nothing but a set of due documents (at most one entry
//! per document it shares). A change the replicas refuse is reported
//! (`SessionEvent::Refused`) and the session goes on for everything else.
//!
//! The session never touches a socket, clock or disk: documents are reached
//! through `Replicas`, which the caller implements. A protocol error ends the
//! session (`Goodbye` is queued); the driver then closes that connection only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use automerge::{sync, ChangeHash};
use sha2::{Digest, Sha256};

use super::frame::{
    hashes, Attestation, DocHeads, DocKey, Frame, Hash, SpaceKey, SpaceSummary, MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
};
use super::vet::Vetted;

/// The documents a session syncs, as the device holding them sees them.
pub trait Replicas {
    /// Spaces this device shares with the remote peer.
    fn shared_spaces(&self) -> BTreeSet<SpaceKey>;
    /// The peer's hello listed `spaces`, which this device does not share
    /// with it: a device may start joining some (a device of the same
    /// person). They sync from the next session on. The default ignores them.
    fn peer_offers(&mut self, _spaces: &BTreeSet<SpaceKey>) {}
    /// Every document of `space` with its current heads.
    fn docs(&mut self, space: &SpaceKey) -> BTreeMap<DocKey, Vec<Hash>>;
    /// The document of `space` the others depend on (its index, holding the
    /// membership), sent before them. The default names none.
    fn index_key(&self, _space: &SpaceKey) -> Option<DocKey> {
        None
    }
    /// The next sync message for `doc`, with an attestation by each author of
    /// the changes it carries, or `None` if there is nothing to say. A
    /// document this device does not have yet is treated as empty.
    fn generate_sync_message(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
    ) -> Option<(sync::Message, Vec<Attestation>)>;
    /// Applies a sync message to `doc`, creating the document if it is new here.
    /// An error means it was refused (not applied): the session reports it and
    /// goes on.
    fn receive_sync_message(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
        message: sync::Message,
        attestations: &[Attestation],
    ) -> Result<(), String>;
    /// The sync state remembered from an earlier session with this peer, so a
    /// reconnect sends only what is new. The default remembers nothing.
    fn load_sync_state(&mut self, _space: &SpaceKey, _doc: &DocKey) -> sync::State {
        sync::State::new()
    }
    /// Remembers a sync state after a message was received (the state's shared
    /// heads are what matters across sessions).
    fn save_sync_state(&mut self, _space: &SpaceKey, _doc: &DocKey, _state: &sync::State) {}
    /// `doc` whole, for a peer that has none of it. `None` (the default)
    /// falls back to the sync protocol.
    fn saved_document(&mut self, _space: &SpaceKey, _doc: &DocKey) -> Option<SavedDocument> {
        None
    }
    /// Merges a whole document sent by the peer into `doc` (creating it if it is
    /// new here). Returns the document's heads if anything changed; an error
    /// means it was refused.
    fn receive_document(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        saved: &[u8],
        attestations: &[Attestation],
    ) -> Result<Option<Vec<Hash>>, String>;
    /// Takes in the peer's membership log of `space`, sent because the peer
    /// removed this device from it. Returns whether this device now knows it
    /// was removed. The default ignores it.
    fn receive_removal(&mut self, _space: &SpaceKey, _ops: &[Vec<u8>]) -> bool {
        false
    }
}

/// A whole document to send: Automerge's compressed save format, its heads,
/// and an attestation by each author of its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDocument {
    pub saved: Vec<u8>,
    pub heads: Vec<Hash>,
    pub attestations: Vec<Attestation>,
}

/// What a session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A document changed because of the remote peer.
    RemoteChange { space: SpaceKey, doc: DocKey },
    /// The remote peer's ephemeral state in a document (cursor, selection).
    Presence { doc: DocKey, payload: Vec<u8> },
    /// The replicas refused what the peer sent for a document (it was not
    /// applied); the session goes on.
    Refused {
        space: SpaceKey,
        doc: DocKey,
        reason: String,
    },
    /// The peer showed that this device was removed from `space`.
    Removed { space: SpaceKey },
    /// What this device has of `doc` that the peer lacks would not fit in
    /// one message, even in parts (`bytes` of it, over `MAX_MESSAGE_BYTES`):
    /// it is not sent in this session, and nothing of it counts as sent. The
    /// other documents go on syncing.
    TooLarge {
        space: SpaceKey,
        doc: DocKey,
        bytes: usize,
    },
    /// The session is over; the connection can be closed.
    Closed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("peer speaks protocol version {0}, this device speaks {PROTOCOL_VERSION}")]
    VersionMismatch(u16),
    #[error("peer sent {0} before hello")]
    NotStarted(&'static str),
    #[error("peer sent a frame for a space it does not share with us")]
    UnsharedSpace,
    #[error("peer sent a malformed frame: {0}")]
    Malformed(&'static str),
    #[error("peer sent a bad sync message: {0}")]
    BadSyncMessage(String),
    #[error("peer sent a frame refused by vetting: {0}")]
    Refused(String),
}

/// What is due to be sent for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The next Automerge sync message, if there is anything to say.
    Sync,
    /// The whole document: the peer has none of it.
    Whole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    /// Our hello is sent; theirs has not arrived.
    Started,
    Open,
    Closed,
}

pub struct Session {
    phase: Phase,
    /// Spaces both sides listed in their hellos.
    shared: BTreeSet<SpaceKey>,
    /// Spaces our hello listed.
    announced: BTreeSet<SpaceKey>,
    states: HashMap<(SpaceKey, DocKey), sync::State>,
    outbox: VecDeque<Frame>,
    events: VecDeque<SessionEvent>,
    /// Spaces whose buckets the peer already sent this session: once each.
    buckets_seen: BTreeSet<SpaceKey>,
    /// Buckets whose heads the peer already sent this session: once each.
    heads_seen: BTreeSet<(SpaceKey, u8)>,
    /// Documents with something to send, in the order they became due, each
    /// at most once; frames for them are made by `poll_transmit`.
    due_order: VecDeque<(SpaceKey, DocKey)>,
    due: HashMap<(SpaceKey, DocKey), Due>,
    /// What the peer last acknowledged of each document (its shared heads),
    /// read when our hello is made and kept until theirs is handled.
    acknowledged: HashMap<(SpaceKey, DocKey), Vec<Hash>>,
    /// Documents sent whole whose receipt the peer has not acknowledged yet:
    /// until it does, they are not remembered as synced.
    unacknowledged: BTreeSet<(SpaceKey, DocKey)>,
    /// The devices the peer said it is connected to (`Frame::Links`).
    peer_links: BTreeSet<String>,
    /// Documents changed here by what one of those devices sent, and so not
    /// relayed to the peer: made due if the peer's link to it goes.
    not_relayed: BTreeMap<String, BTreeSet<(SpaceKey, DocKey)>>,
    /// Documents whose sync message would not fit in a message: not sent again
    /// in this session (making it again would cost as much, for nothing).
    too_large: BTreeSet<(SpaceKey, DocKey)>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            phase: Phase::New,
            shared: BTreeSet::new(),
            announced: BTreeSet::new(),
            states: HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            buckets_seen: BTreeSet::new(),
            heads_seen: BTreeSet::new(),
            due_order: VecDeque::new(),
            due: HashMap::new(),
            unacknowledged: BTreeSet::new(),
            acknowledged: HashMap::new(),
            too_large: BTreeSet::new(),
            peer_links: BTreeSet::new(),
            not_relayed: BTreeMap::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Queues our hello.
    pub fn start(&mut self, replicas: &mut impl Replicas) {
        if self.phase != Phase::New {
            return;
        }
        self.announced = replicas.shared_spaces();
        let mut spaces = Vec::new();
        for space in self.announced.clone() {
            let docs = replicas.docs(&space);
            let mut changed = Some(Vec::new());
            for (doc, heads) in &docs {
                if same_heads(heads, self.acknowledged(&space, doc, replicas)) {
                    continue;
                }
                match &mut changed {
                    Some(list) if list.len() < MAX_CHANGED_LISTED => list.push(DocHeads {
                        doc: doc.clone(),
                        heads: heads.clone(),
                    }),
                    _ => changed = None,
                }
            }
            spaces.push(SpaceSummary {
                hash: summary_hash(&docs),
                space,
                changed,
            });
        }
        self.outbox.push_back(Frame::Hello {
            version: PROTOCOL_VERSION,
            spaces,
        });
        self.phase = Phase::Started;
    }

    /// Vets `frame` (see `vet`), then handles it.
    pub fn handle_frame(
        &mut self,
        frame: Frame,
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        match Vetted::check(frame) {
            Ok(frame) => self.handle_vetted(frame, replicas),
            Err(e) => {
                self.close(e.to_string());
                Err(e)
            }
        }
    }

    /// Handles a frame that passed vetting.
    pub fn handle_vetted(
        &mut self,
        frame: Vetted,
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        let result = self.dispatch(frame.into_inner(), replicas);
        if let Err(e) = &result {
            self.close(e.to_string());
        }
        result
    }

    /// Whether this device now shares a space with the peer that its hello
    /// did not list (`shared` is what `Replicas::shared_spaces` says now):
    /// the session cannot sync it, and should be closed and started again.
    pub fn shares_more_than_announced(&self, shared: &BTreeSet<SpaceKey>) -> bool {
        self.phase == Phase::Open && shared.iter().any(|s| !self.announced.contains(s))
    }

    /// A document changed on this device: tell the peer, if it shares the space.
    pub fn local_change(&mut self, space: &SpaceKey, doc: &DocKey) {
        if self.phase == Phase::Open && self.shared.contains(space) {
            self.make_due(space, doc, Due::Sync);
        }
    }

    /// `doc` changed here because of what `from` (another device this one
    /// syncs with) sent. If the peer said it is connected to `from`, it has
    /// the change from there: each device gets a change once, not once per
    /// path. Otherwise it is relayed like a local change.
    pub fn relayed_change(&mut self, space: &SpaceKey, doc: &DocKey, from: &str) {
        if self.phase != Phase::Open || !self.shared.contains(space) {
            return;
        }
        if self.peer_links.contains(from) {
            self.not_relayed
                .entry(from.to_string())
                .or_default()
                .insert((*space, doc.clone()));
        } else {
            self.make_due(space, doc, Due::Sync);
        }
    }

    /// Tells the peer which devices this one is connected to now (the peer
    /// aside), replacing a list still queued.
    pub fn send_links(&mut self, devices: Vec<String>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.outbox.retain(|f| !matches!(f, Frame::Links { .. }));
        self.outbox.push_back(Frame::Links { devices });
    }

    /// Queues a presence update for the peer (dropped if the session is not open).
    pub fn send_presence(&mut self, doc: DocKey, payload: Vec<u8>) {
        if self.phase == Phase::Open {
            // Only the newest presence per document matters: replace a queued one.
            self.outbox
                .retain(|f| !matches!(f, Frame::Presence { doc: d, .. } if *d == doc));
            self.outbox.push_back(Frame::Presence { doc, payload });
        }
    }

    /// Tells the peer it was removed from `space`, with the space's
    /// membership log as proof (sent whatever the session's phase).
    pub fn tell_removed(&mut self, space: SpaceKey, ops: Vec<Vec<u8>>) {
        if self.phase != Phase::Closed {
            self.outbox.push_back(Frame::Removed { space, ops });
        }
    }

    /// Ends the session, queueing a goodbye.
    pub fn close(&mut self, reason: String) {
        if self.phase != Phase::Closed {
            self.outbox.push_back(Frame::Goodbye {
                reason: reason.clone(),
            });
            self.events.push_back(SessionEvent::Closed { reason });
            self.phase = Phase::Closed;
        }
    }

    /// The next frame to send, generating it for the next due document if
    /// nothing else is queued. `None`: nothing to send now.
    pub fn poll_transmit(&mut self, replicas: &mut impl Replicas) -> Option<Frame> {
        loop {
            if let Some(frame) = self.outbox.pop_front() {
                return Some(frame);
            }
            if self.phase != Phase::Open {
                return None;
            }
            let key = self.due_order.pop_front()?;
            let Some(due) = self.due.remove(&key) else {
                continue;
            };
            let (space, doc) = key;
            if !self.shared.contains(&space) {
                continue;
            }
            match due {
                Due::Sync => self.sync_doc(&space, &doc, replicas),
                Due::Whole => self.send_document(&space, &doc, replicas),
            }
        }
    }

    /// Whether `poll_transmit` may have a frame to give.
    pub fn wants_to_transmit(&self) -> bool {
        !self.outbox.is_empty() || (self.phase == Phase::Open && !self.due.is_empty())
    }

    /// Marks `doc` as having something to send. A document already due stays
    /// where it is (sending it whole covers a sync message too).
    fn make_due(&mut self, space: &SpaceKey, doc: &DocKey, due: Due) {
        let key = (*space, doc.clone());
        match self.due.get_mut(&key) {
            Some(existing) => {
                if due == Due::Whole {
                    *existing = Due::Whole;
                }
            }
            None => {
                self.due.insert(key.clone(), due);
                self.due_order.push_back(key);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Handles one frame: one method per kind.
    fn dispatch(&mut self, frame: Frame, replicas: &mut impl Replicas) -> Result<(), SessionError> {
        match frame {
            Frame::Hello { version, spaces } => self.on_hello(version, spaces, replicas),
            Frame::Buckets { space, hashes } => self.on_buckets(space, hashes, replicas),
            Frame::Heads {
                space,
                bucket,
                docs,
            } => self.on_heads(space, bucket, docs, replicas),
            Frame::Sync {
                space,
                doc,
                message,
                attestations,
            } => self.on_sync(space, doc, &message, &attestations, replicas),
            Frame::Document {
                space,
                doc,
                heads,
                saved,
                attestations,
            } => self.on_document(space, doc, &heads, &saved, &attestations, replicas),
            Frame::Presence { doc, payload } => self.on_presence(doc, payload),
            Frame::Links { devices } => self.on_links(devices),
            Frame::Goodbye { reason } => {
                self.on_goodbye(reason);
                Ok(())
            }
            // Whenever it comes: a removed device hears it instead of a hello.
            Frame::Removed { space, ops } => {
                if replicas.receive_removal(&space, &ops) {
                    self.events.push_back(SessionEvent::Removed { space });
                }
                Ok(())
            }
            // Joined by the frame decoder; vetting refuses one on its own.
            Frame::Part { .. } => Err(SessionError::Malformed("a part of a frame on its own")),
        }
    }

    /// The peer's hello: the spaces both list are shared; buckets for each whose summary differs.
    fn on_hello(
        &mut self,
        version: u16,
        spaces: Vec<SpaceSummary>,
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        if version != PROTOCOL_VERSION {
            return Err(SessionError::VersionMismatch(version));
        }
        // One hello per session, each space once: otherwise a peer could
        // make us rescan every document again and again.
        if self.phase == Phase::Open {
            return Err(SessionError::Malformed("a second hello"));
        }
        let distinct: BTreeSet<SpaceKey> = spaces.iter().map(|s| s.space).collect();
        if distinct.len() != spaces.len() {
            return Err(SessionError::Malformed("a space listed twice in hello"));
        }
        self.start(replicas);
        let ours = replicas.shared_spaces();
        self.shared = spaces
            .iter()
            .map(|s| s.space)
            .filter(|s| ours.contains(s))
            .collect();
        let offered: BTreeSet<SpaceKey> = distinct.difference(&ours).copied().collect();
        if !offered.is_empty() {
            replicas.peer_offers(&offered);
        }
        self.phase = Phase::Open;
        for summary in spaces {
            if !self.shared.contains(&summary.space) {
                continue;
            }
            let space = summary.space;
            let docs = replicas.docs(&space);
            let settled = if summary_hash(&docs) == summary.hash {
                self.remember_equal(&space, &docs, replicas);
                true
            } else {
                summary.changed.is_some_and(|listed| {
                    self.sync_listed(&space, &docs, listed, &summary.hash, replicas)
                })
            };
            if !settled {
                let hashes = buckets(&docs).iter().map(summary_hash).collect();
                self.outbox.push_back(Frame::Buckets { space, hashes });
            }
        }
        self.acknowledged.clear();
        Ok(())
    }

    /// What the peer last acknowledged of `doc`: the shared heads of the
    /// remembered sync state (none if it never acknowledged any).
    fn acknowledged(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        replicas: &mut impl Replicas,
    ) -> &Vec<Hash> {
        self.acknowledged
            .entry((*space, doc.clone()))
            .or_insert_with(|| {
                let state = replicas.load_sync_state(space, doc);
                hashes(&state.shared_heads)
            })
    }

    /// Both sides have exactly `docs`: each document not yet remembered as
    /// acknowledged at these heads (as when both got it from a third device)
    /// is remembered so, so status counts it as in sync.
    fn remember_equal(
        &mut self,
        space: &SpaceKey,
        docs: &BTreeMap<DocKey, Vec<Hash>>,
        replicas: &mut impl Replicas,
    ) {
        for (doc, heads) in docs {
            if !heads.is_empty() && !same_heads(heads, self.acknowledged(space, doc, replicas)) {
                self.assume_in_sync(space, doc, heads, replicas);
            }
        }
    }

    /// The peer listed the documents it changed since we last acknowledged
    /// them. If what it has is then exactly what it listed plus what it last
    /// acknowledged of the rest — its summary hash says whether — the
    /// differences are known without comparing buckets: each document
    /// changed here goes at once, as its changes since the peer's heads
    /// (the first message carries them, with no have/bloom round first), or
    /// whole if the peer has none of it. Returns false (compare buckets
    /// instead) if the summary does not match.
    fn sync_listed(
        &mut self,
        space: &SpaceKey,
        docs: &BTreeMap<DocKey, Vec<Hash>>,
        listed: Vec<DocHeads>,
        their_summary: &Hash,
        replicas: &mut impl Replicas,
    ) -> bool {
        let theirs: BTreeMap<DocKey, Vec<Hash>> =
            listed.into_iter().map(|d| (d.doc, d.heads)).collect();
        let mut predicted = theirs.clone();
        for doc in docs.keys() {
            if !theirs.contains_key(doc) {
                let acknowledged = self.acknowledged(space, doc, replicas);
                if !acknowledged.is_empty() {
                    predicted.insert(doc.clone(), acknowledged.clone());
                }
            }
        }
        if summary_hash(&predicted) != *their_summary {
            return false;
        }
        let index = replicas.index_key(space).filter(|k| docs.contains_key(k));
        let rest = docs.keys().filter(|k| Some(*k) != index.as_ref());
        for doc in index.iter().chain(rest) {
            let ours = &docs[doc];
            let acknowledged = self.acknowledged(space, doc, replicas).clone();
            match theirs.get(doc) {
                Some(their_heads) if same_heads(their_heads, ours) => {
                    if !same_heads(&acknowledged, ours) {
                        self.assume_in_sync(space, doc, ours, replicas);
                    }
                }
                // Both changed it: an ordinary round of the sync protocol.
                Some(_) if !same_heads(ours, &acknowledged) => {
                    self.make_due(space, doc, Due::Sync);
                }
                // Only the peer changed it: it sends.
                Some(_) => {}
                None if same_heads(ours, &acknowledged) => {}
                None if acknowledged.is_empty() => self.make_due(space, doc, Due::Whole),
                // The peer has exactly what it acknowledged: send what came since.
                None => {
                    let state = self.state(space, doc, replicas);
                    expect_peer_at(state, &acknowledged);
                    self.make_due(space, doc, Due::Sync);
                }
            }
        }
        true
    }

    /// The peer's bucket hashes for a space: heads for each bucket that differs.
    fn on_buckets(
        &mut self,
        space: SpaceKey,
        hashes: Vec<Hash>,
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        self.require_shared(&space, "buckets")?;
        if hashes.len() != BUCKETS {
            return Err(SessionError::Malformed("wrong number of buckets"));
        }
        if !self.buckets_seen.insert(space) {
            return Err(SessionError::Malformed("buckets sent twice for a space"));
        }
        let ours = buckets(&replicas.docs(&space));
        for (i, (docs, theirs)) in ours.into_iter().zip(hashes).enumerate() {
            if summary_hash(&docs) != theirs {
                let docs = docs
                    .into_iter()
                    .map(|(doc, heads)| DocHeads { doc, heads })
                    .collect();
                self.outbox.push_back(Frame::Heads {
                    space,
                    bucket: i as u8,
                    docs,
                });
            }
        }
        Ok(())
    }

    /// The peer's heads for one bucket: each document that differs becomes due.
    fn on_heads(
        &mut self,
        space: SpaceKey,
        bucket: u8,
        docs: Vec<DocHeads>,
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        self.require_shared(&space, "heads")?;
        if usize::from(bucket) >= BUCKETS {
            return Err(SessionError::Malformed("bucket out of range"));
        }
        // Once per bucket: heads cost a scan of the space to answer.
        if !self.heads_seen.insert((space, bucket)) {
            return Err(SessionError::Malformed("heads sent twice for a bucket"));
        }
        let bucket = usize::from(bucket);
        let ours = buckets(&replicas.docs(&space)).swap_remove(bucket);
        let theirs: BTreeMap<DocKey, Vec<Hash>> = docs
            .into_iter()
            .filter(|d| bucket_of(&d.doc) == bucket)
            .map(|d| (d.doc, d.heads))
            .collect();
        let all: BTreeSet<&DocKey> = ours.keys().chain(theirs.keys()).collect();
        let lacks = |heads: Option<&Vec<Hash>>| heads.is_none_or(|h| h.is_empty());
        for doc in all {
            let (our_heads, their_heads) = (ours.get(doc), theirs.get(doc));
            if our_heads == their_heads || (lacks(our_heads) && lacks(their_heads)) {
                continue;
            }
            if lacks(their_heads) {
                self.make_due(&space, doc, Due::Whole);
            } else if !lacks(our_heads) {
                self.make_due(&space, doc, Due::Sync);
            }
            // Else we have none of it: the peer sends it whole (or starts
            // the sync protocol if it cannot).
        }
        Ok(())
    }

    /// An Automerge sync message for one document; a refused one is an event, not the end.
    fn on_sync(
        &mut self,
        space: SpaceKey,
        doc: DocKey,
        message: &[u8],
        attestations: &[Attestation],
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        self.require_shared(&space, "sync")?;
        let message = sync::Message::decode(message)
            .map_err(|e| SessionError::BadSyncMessage(e.to_string()))?;
        if self.unacknowledged.remove(&(space, doc.clone())) {
            let state = self.state(&space, &doc, replicas);
            if is_acknowledgement(&message, state) {
                // The peer has exactly what we sent: remembered as synced
                // without touching the document.
                state.in_flight = false;
                expect_peer_at(state, &hashes(&message.heads));
                state.shared_heads = message.heads;
                replicas.save_sync_state(&space, &doc, state);
                return Ok(());
            }
        }
        let changes = !message.changes.is_empty();
        let state = self.state(&space, &doc, replicas);
        if let Err(reason) =
            replicas.receive_sync_message(&space, &doc, state, message, attestations)
        {
            self.events
                .push_back(SessionEvent::Refused { space, doc, reason });
            return Ok(());
        }
        replicas.save_sync_state(&space, &doc, state);
        if changes {
            self.events.push_back(SessionEvent::RemoteChange {
                space,
                doc: doc.clone(),
            });
        }
        self.make_due(&space, &doc, Due::Sync);
        Ok(())
    }

    /// A whole document the peer thinks we lack.
    fn on_document(
        &mut self,
        space: SpaceKey,
        doc: DocKey,
        heads: &[Hash],
        saved: &[u8],
        attestations: &[Attestation],
        replicas: &mut impl Replicas,
    ) -> Result<(), SessionError> {
        self.require_shared(&space, "document")?;
        // A document that does not load or is refused is not fatal:
        // the sync below (from our heads, perhaps none) fetches it
        // change by change.
        let ours = match replicas.receive_document(&space, &doc, saved, attestations) {
            Ok(ours) => ours,
            Err(reason) => {
                self.events.push_back(SessionEvent::Refused {
                    space,
                    doc: doc.clone(),
                    reason,
                });
                None
            }
        };
        if ours.is_some() {
            self.events.push_back(SessionEvent::RemoteChange {
                space,
                doc: doc.clone(),
            });
        }
        if ours.is_some_and(|ours| same_heads(&ours, heads)) {
            // Both now have exactly this: one short message says so, then
            // nothing until it changes.
            self.assume_in_sync(&space, &doc, heads, replicas);
            self.outbox.push_back(Frame::Sync {
                space,
                doc: doc.clone(),
                message: acknowledgement(heads).encode(),
                attestations: Vec::new(),
            });
        } else {
            self.make_due(&space, &doc, Due::Sync);
        }
        Ok(())
    }

    /// Where the peer's cursor is in a document.
    fn on_presence(&mut self, doc: DocKey, payload: Vec<u8>) -> Result<(), SessionError> {
        self.require_open("presence")?;
        if payload.len() > MAX_PRESENCE_BYTES {
            return Err(SessionError::Malformed("presence too large"));
        }
        // Only the newest presence per document matters.
        self.events
            .retain(|e| !matches!(e, SessionEvent::Presence { doc: d, .. } if *d == doc));
        self.events
            .push_back(SessionEvent::Presence { doc, payload });
        Ok(())
    }

    /// The devices the peer is connected to now. What was not relayed to it
    /// because it was connected to a device it no longer is goes now.
    fn on_links(&mut self, devices: Vec<String>) -> Result<(), SessionError> {
        self.require_open("links")?;
        let devices: BTreeSet<String> = devices.into_iter().collect();
        let gone: Vec<String> = self.peer_links.difference(&devices).cloned().collect();
        for device in gone {
            for (space, doc) in self.not_relayed.remove(&device).unwrap_or_default() {
                if self.shared.contains(&space) {
                    self.make_due(&space, &doc, Due::Sync);
                }
            }
        }
        self.peer_links = devices;
        Ok(())
    }

    /// The peer ends the session.
    fn on_goodbye(&mut self, reason: String) {
        self.events.push_back(SessionEvent::Closed {
            reason: format!("the peer said goodbye: {reason}"),
        });
        self.phase = Phase::Closed;
    }

    /// The session is open and both sides share `space`.
    fn require_shared(&self, space: &SpaceKey, what: &'static str) -> Result<(), SessionError> {
        self.require_open(what)?;
        if self.shared.contains(space) {
            Ok(())
        } else {
            Err(SessionError::UnsharedSpace)
        }
    }

    fn require_open(&self, what: &'static str) -> Result<(), SessionError> {
        if self.phase == Phase::Open {
            Ok(())
        } else {
            Err(SessionError::NotStarted(what))
        }
    }

    /// Sends `doc` whole to a peer that has none of it: its compressed save is
    /// far smaller than its history as sync messages (over a frame, it goes
    /// in parts). Too large for one message, or not available, it goes by the
    /// sync protocol instead.
    fn send_document(&mut self, space: &SpaceKey, doc: &DocKey, replicas: &mut impl Replicas) {
        match replicas.saved_document(space, doc) {
            Some(whole) if whole.saved.len() <= MAX_DOCUMENT_BYTES => {
                let heads = whole.heads;
                self.outbox.push_back(Frame::Document {
                    space: *space,
                    doc: doc.clone(),
                    heads: heads.clone(),
                    saved: whole.saved,
                    attestations: whole.attestations,
                });
                // The stream is reliable: the peer will have exactly these
                // heads, so nothing more is said until it changes. It is
                // remembered as synced only once the peer acknowledges it
                // (`acknowledgement`); were it refused, the peer's sync
                // message corrects this.
                let state = self.state(space, doc, replicas);
                assume_synced(state, &heads);
                self.unacknowledged.insert((*space, doc.clone()));
            }
            _ => self.sync_doc(space, doc, replicas),
        }
    }

    /// Records that both sides have exactly `heads` of `doc`, as a finished
    /// round of the sync protocol would: the next local change is sent at once,
    /// and until then there is nothing to say.
    fn assume_in_sync(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        heads: &[Hash],
        replicas: &mut impl Replicas,
    ) {
        let state = self.state(space, doc, replicas);
        assume_synced(state, heads);
        replicas.save_sync_state(space, doc, state);
    }

    /// This session's sync state for `doc`, starting from the remembered one.
    fn state(
        &mut self,
        space: &SpaceKey,
        doc: &DocKey,
        replicas: &mut impl Replicas,
    ) -> &mut sync::State {
        self.states
            .entry((*space, doc.clone()))
            .or_insert_with(|| replicas.load_sync_state(space, doc))
    }

    fn sync_doc(&mut self, space: &SpaceKey, doc: &DocKey, replicas: &mut impl Replicas) {
        let key = (*space, doc.clone());
        if self.too_large.contains(&key) {
            return;
        }
        let state = self.state(space, doc, replicas);
        let before = state.clone();
        let Some((message, attestations)) = replicas.generate_sync_message(space, doc, state)
        else {
            return;
        };
        let message = message.encode();
        if let Some(bytes) = over_frame_limit(&message, &attestations, doc) {
            *state = before;
            self.too_large.insert(key);
            self.events.push_back(SessionEvent::TooLarge {
                space: *space,
                doc: doc.clone(),
                bytes,
            });
            return;
        }
        self.outbox.push_back(Frame::Sync {
            space: *space,
            doc: doc.clone(),
            message,
            attestations,
        });
    }
}

/// Room in a `Sync` frame for what is not its message, attestations or doc
/// key (the variant, the space, the lengths).
const FRAME_OVERHEAD: usize = 64;

/// Room left for a message's attestations (one per author of the document,
/// a few hundred bytes each) below which they are not measured.
const ATTESTATIONS_ROOM: usize = 4 * 1024 * 1024;

/// The size of the `Sync` frame these would make, if it is over the
/// message limit. The attestations are measured only for a message near the
/// limit, so a keystroke's message costs no extra encoding.
fn over_frame_limit(message: &[u8], attestations: &[Attestation], doc: &str) -> Option<usize> {
    let known = message.len() + doc.len() + FRAME_OVERHEAD;
    if known + ATTESTATIONS_ROOM <= MAX_MESSAGE_BYTES {
        return None;
    }
    let attested = postcard::to_stdvec(attestations).map_or(usize::MAX / 2, |bytes| bytes.len());
    Some(known + attested).filter(|bytes| *bytes > MAX_MESSAGE_BYTES)
}

/// Sets `state` as a finished round of the sync protocol at `heads` would.
fn assume_synced(state: &mut sync::State, heads: &[Hash]) {
    expect_peer_at(state, heads);
    let heads = change_hashes(heads);
    state.shared_heads.clone_from(&heads);
    state.last_sent_heads = heads;
    state.have_responded = true;
}

/// Sets `state` as if the peer had said it has exactly `heads` and needs
/// nothing: the next message carries every change since them.
fn expect_peer_at(state: &mut sync::State, heads: &[Hash]) {
    let heads = change_hashes(heads);
    state.their_have = Some(have_exactly(heads.clone()));
    state.their_need = Some(Vec::new());
    state.their_heads = Some(heads);
}

/// A `have` saying its sender has exactly `heads` and nothing since.
fn have_exactly(heads: Vec<ChangeHash>) -> Vec<sync::Have> {
    vec![sync::Have {
        last_sync: heads,
        bloom: Default::default(),
    }]
}

fn change_hashes(heads: &[Hash]) -> Vec<ChangeHash> {
    heads.iter().map(|h| ChangeHash(*h)).collect()
}

/// The sync message that acknowledges a whole document received at `heads`:
/// those heads, nothing needed, nothing since. Built without the document.
fn acknowledgement(heads: &[Hash]) -> sync::Message {
    let heads = change_hashes(heads);
    sync::Message {
        have: have_exactly(heads.clone()),
        heads,
        need: Vec::new(),
        changes: Vec::<Vec<u8>>::new().into(),
        flags: None,
        version: sync::MessageVersion::V1,
    }
}

/// Whether `message` acknowledges exactly what `state` assumed the peer has
/// (a document sent whole): its heads, no changes, nothing needed.
fn is_acknowledgement(message: &sync::Message, state: &sync::State) -> bool {
    message.changes.is_empty()
        && message.need.is_empty()
        && !message.heads.is_empty()
        && message.heads == state.last_sent_heads
        && state.their_heads.as_ref() == Some(&message.heads)
}

/// Most documents a hello lists as changed per space; past it the peer
/// compares buckets instead.
pub const MAX_CHANGED_LISTED: usize = 4096;

/// Largest whole document sent in one `Document` frame (in parts, if over a
/// frame), leaving room for its attestations; larger ones go by the sync
/// protocol.
pub const MAX_DOCUMENT_BYTES: usize = MAX_MESSAGE_BYTES - ATTESTATIONS_ROOM;

/// Largest presence payload accepted (a cursor and a selection need far less).
pub const MAX_PRESENCE_BYTES: usize = 4096;

/// How many buckets a space's documents are split into when summaries differ.
pub const BUCKETS: usize = 64;

/// The bucket a document falls in: by the hash of its key, so buckets stay even.
pub fn bucket_of(doc: &str) -> usize {
    Sha256::digest(doc.as_bytes())[0] as usize % BUCKETS
}

fn buckets(docs: &BTreeMap<DocKey, Vec<Hash>>) -> Vec<BTreeMap<DocKey, Vec<Hash>>> {
    let mut buckets = vec![BTreeMap::new(); BUCKETS];
    for (doc, heads) in docs {
        buckets[bucket_of(doc)].insert(doc.clone(), heads.clone());
    }
    buckets
}

fn same_heads(a: &[Hash], b: &[Hash]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// The hash both sides compare to skip a space whose documents are all equal:
/// SHA-256 over the documents in key order, each with its sorted heads. A
/// document with no heads counts as absent.
pub fn summary_hash(docs: &BTreeMap<DocKey, Vec<Hash>>) -> Hash {
    let mut hasher = Sha256::new();
    for (doc, heads) in docs.iter().filter(|(_, heads)| !heads.is_empty()) {
        hasher.update((doc.len() as u64).to_be_bytes());
        hasher.update(doc.as_bytes());
        let mut heads = heads.clone();
        heads.sort_unstable();
        hasher.update((heads.len() as u64).to_be_bytes());
        for head in heads {
            hasher.update(head);
        }
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(spaces: Vec<SpaceSummary>) -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            spaces,
        }
    }

    fn summary() -> SpaceSummary {
        SpaceSummary {
            space: [1; 16],
            hash: [0; 32],
            changed: None,
        }
    }

    #[test]
    fn a_second_hello_or_a_repeated_space_ends_the_session() {
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut empty())
            .unwrap();
        assert!(s
            .handle_frame(hello(vec![summary()]), &mut empty())
            .is_err());
        assert!(s.is_closed());
        let mut s = Session::new();
        assert!(s
            .handle_frame(hello(vec![summary(), summary()]), &mut empty())
            .is_err());
    }

    #[test]
    fn buckets_are_answered_once_per_space() {
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut empty())
            .unwrap();
        let buckets = || Frame::Buckets {
            space: [1; 16],
            hashes: vec![[9; 32]; BUCKETS],
        };
        s.handle_frame(buckets(), &mut empty()).unwrap();
        assert!(s.handle_frame(buckets(), &mut empty()).is_err());
    }

    /// One shared space; its documents are the given ones (any other is
    /// empty); whole documents are refused (as if they were damaged). With
    /// `primed`, the peer has (by its remembered sync state) none of them, so
    /// the first sync message of each carries all its changes.
    struct Fixture {
        docs: BTreeMap<DocKey, automerge::AutoCommit>,
        primed: bool,
    }

    fn empty() -> Fixture {
        Fixture {
            docs: BTreeMap::new(),
            primed: false,
        }
    }

    impl Replicas for Fixture {
        fn shared_spaces(&self) -> BTreeSet<SpaceKey> {
            BTreeSet::from([[1; 16]])
        }
        fn docs(&mut self, _: &SpaceKey) -> BTreeMap<DocKey, Vec<Hash>> {
            BTreeMap::new()
        }
        fn load_sync_state(&mut self, _: &SpaceKey, _: &DocKey) -> sync::State {
            let mut state = sync::State::new();
            if self.primed {
                expect_peer_at(&mut state, &[]);
            }
            state
        }
        fn generate_sync_message(
            &mut self,
            _: &SpaceKey,
            doc: &DocKey,
            state: &mut sync::State,
        ) -> Option<(sync::Message, Vec<Attestation>)> {
            use automerge::sync::SyncDoc;
            let target = self.docs.entry(doc.clone()).or_default();
            let message = target.sync().generate_sync_message(state)?;
            Some((message, Vec::new()))
        }
        fn receive_sync_message(
            &mut self,
            _: &SpaceKey,
            _: &DocKey,
            _: &mut sync::State,
            _: sync::Message,
            _: &[Attestation],
        ) -> Result<(), String> {
            Ok(())
        }
        fn receive_document(
            &mut self,
            _: &SpaceKey,
            _: &DocKey,
            _: &[u8],
            _: &[Attestation],
        ) -> Result<Option<Vec<Hash>>, String> {
            Err("not an Automerge document".into())
        }
    }

    #[test]
    fn a_whole_document_that_does_not_load_falls_back_to_the_sync_protocol() {
        let mut replicas = empty();
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut replicas)
            .unwrap();
        while s.poll_transmit(&mut replicas).is_some() {}
        let mut other = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut other, automerge::ROOT, "x", 1).unwrap();
        let refused = Frame::Document {
            space: [1; 16],
            doc: "d".into(),
            heads: vec![[7; 32]],
            saved: other.save(),
            attestations: Vec::new(),
        };
        s.handle_frame(refused, &mut replicas).unwrap();
        assert!(s.is_open(), "a refused document does not end the session");
        let sent: Vec<Frame> = std::iter::from_fn(|| s.poll_transmit(&mut replicas)).collect();
        assert!(
            matches!(sent.as_slice(), [Frame::Sync { doc, .. }] if doc == "d"),
            "asks for the document by the sync protocol instead: {sent:?}"
        );
        assert!(
            matches!(s.poll_event(), Some(SessionEvent::Refused { doc, .. }) if doc == "d"),
            "the refusal is reported"
        );
        assert_eq!(s.poll_event(), None, "nothing changed");
    }

    #[test]
    fn a_frame_that_fails_vetting_ends_the_session() {
        let mut replicas = empty();
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut replicas)
            .unwrap();
        let garbage = Frame::Document {
            space: [1; 16],
            doc: "d".into(),
            heads: vec![[7; 32]],
            saved: vec![0xde, 0xad],
            attestations: Vec::new(),
        };
        assert!(s.handle_frame(garbage, &mut replicas).is_err());
        assert!(s.is_closed());
    }

    #[test]
    fn heads_asked_for_again_and_again_cost_one_frame_each_document() {
        let mut replicas = empty();
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut replicas)
            .unwrap();
        while s.poll_transmit(&mut replicas).is_some() {}
        for _ in 0..1000 {
            s.local_change(&[1; 16], &"d".to_string());
        }
        let sent: Vec<Frame> = std::iter::from_fn(|| s.poll_transmit(&mut replicas)).collect();
        assert_eq!(sent.len(), 1, "one sync message, however often it was due");
        let heads = || Frame::Heads {
            space: [1; 16],
            bucket: 3,
            docs: vec![],
        };
        s.handle_frame(heads(), &mut replicas).unwrap();
        assert!(s.handle_frame(heads(), &mut replicas).is_err());
    }

    #[test]
    fn presence_keeps_only_the_newest_per_document_and_refuses_huge_payloads() {
        let mut s = Session::new();
        s.handle_frame(hello(vec![]), &mut empty()).unwrap();
        for i in 0..100u8 {
            let frame = Frame::Presence {
                doc: "d".into(),
                payload: vec![i],
            };
            s.handle_frame(frame, &mut empty()).unwrap();
        }
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            events,
            vec![SessionEvent::Presence {
                doc: "d".into(),
                payload: vec![99]
            }]
        );
        let huge = Frame::Presence {
            doc: "d".into(),
            payload: vec![0; MAX_PRESENCE_BYTES + 1],
        };
        assert!(s.handle_frame(huge, &mut empty()).is_err());
    }

    #[test]
    fn a_document_too_large_for_a_message_is_skipped_and_the_others_still_sync() {
        use automerge::transaction::Transactable;
        // Bytes that do not compress: the change is as large as they are.
        let noise = crate::protocol::noise(MAX_MESSAGE_BYTES + 1024, 0x9e37_79b9_7f4a_7c15);
        let mut big = automerge::AutoCommit::new();
        big.put(
            automerge::ROOT,
            "blob",
            automerge::ScalarValue::Bytes(noise),
        )
        .unwrap();
        let mut small = automerge::AutoCommit::new();
        small.put(automerge::ROOT, "x", 1).unwrap();
        let mut replicas = Fixture {
            docs: BTreeMap::from([("big".to_string(), big), ("small".to_string(), small)]),
            primed: true,
        };
        let mut s = Session::new();
        s.handle_frame(hello(vec![summary()]), &mut replicas)
            .unwrap();
        while s.poll_transmit(&mut replicas).is_some() {}
        while s.poll_event().is_some() {}

        for doc in ["big", "small"] {
            s.local_change(&[1; 16], &doc.to_string());
        }
        let sent: Vec<Frame> = std::iter::from_fn(|| s.poll_transmit(&mut replicas)).collect();
        assert!(
            matches!(sent.as_slice(), [Frame::Sync { doc, message, .. }] if doc == "small" && message.len() < 1024),
            "only the small document is sent: {:?}",
            sent.iter()
                .map(|f| match f {
                    Frame::Sync { doc, message, .. } => format!("{doc}: {} bytes", message.len()),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
        );
        assert!(
            matches!(s.poll_event(), Some(SessionEvent::TooLarge { doc, bytes, .. }) if doc == "big" && bytes > MAX_MESSAGE_BYTES),
            "the large one is reported"
        );
        assert!(s.is_open(), "the session goes on");

        // It is not made again in this session.
        s.local_change(&[1; 16], &"big".to_string());
        assert_eq!(s.poll_transmit(&mut replicas), None);
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn a_change_is_relayed_only_to_a_peer_not_connected_to_where_it_came_from() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "x", 1).unwrap();
        let mut replicas = Fixture {
            docs: BTreeMap::from([("d".to_string(), doc)]),
            primed: true,
        };
        let mut s = Session::new();
        s.start(&mut replicas);
        s.send_links(vec!["ours".into()]);
        let ours: Vec<Frame> = std::iter::from_fn(|| s.poll_transmit(&mut replicas)).collect();
        assert!(
            matches!(ours.as_slice(), [Frame::Hello { .. }, Frame::Links { devices }] if devices == &["ours".to_string()]),
            "the hello, then the links: {ours:?}"
        );
        s.handle_frame(hello(vec![summary()]), &mut replicas)
            .unwrap();
        while s.poll_transmit(&mut replicas).is_some() {}
        let links = |devices: &[&str]| Frame::Links {
            devices: devices.iter().map(|d| d.to_string()).collect(),
        };
        s.handle_frame(links(&["carol", "dave"]), &mut replicas)
            .unwrap();
        let sent = |s: &mut Session, replicas: &mut Fixture| -> Vec<String> {
            std::iter::from_fn(|| s.poll_transmit(replicas))
                .filter_map(|f| match f {
                    Frame::Sync { doc, .. } => Some(doc),
                    _ => None,
                })
                .collect()
        };

        // From Carol, whom the peer is connected to: it has it from her.
        s.relayed_change(&[1; 16], &"d".to_string(), "carol");
        assert!(sent(&mut s, &mut replicas).is_empty());
        // From Erin, whom it is not: relayed.
        s.relayed_change(&[1; 16], &"d".to_string(), "erin");
        assert_eq!(sent(&mut s, &mut replicas), vec!["d".to_string()]);

        // Once its link to Carol goes, what came from her goes too.
        s.relayed_change(&[1; 16], &"e".to_string(), "carol");
        assert!(sent(&mut s, &mut replicas).is_empty());
        s.handle_frame(links(&["dave"]), &mut replicas).unwrap();
        assert_eq!(sent(&mut s, &mut replicas), vec!["e".to_string()]);
        // A local change always goes.
        s.local_change(&[1; 16], &"f".to_string());
        assert_eq!(sent(&mut s, &mut replicas), vec!["f".to_string()]);
    }
}
