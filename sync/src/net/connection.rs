//! One sync connection: the membership check before anything is written, a
//! `Session` fed by frames read from the stream (each vetted before the
//! Node's lock is taken), a writer task that sends what the session queues
//! (bounded by `MAX_QUEUED_BYTES`), local changes and presence pushed as they
//! happen, the membership re-checked every `MEMBERSHIP_CHECK`, and at the end
//! the session's last frames (its `Goodbye` included) flushed before the
//! connection closes. Also the per-peer connection count and who connected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{
    Activity, Connected, Cursor, Outgoing, FRAMES_AHEAD, MAX_CONNECTIONS_PER_PEER,
    MAX_QUEUED_BYTES, MEMBERSHIP_CHECK, READ_BUFFER,
};
use crate::node::{Node, NodeEvent, Preloaded};
use crate::note::NoteId;
use crate::protocol::frame::SpaceKey;
use crate::protocol::{
    Frame, FrameDecoder, Replicas, Session, SessionEvent, Vetted, MAX_FRAME_BYTES,
};

/// Messages larger than a frame (a long note, joined from its parts) are
/// taken in one at a time on this device, whichever peer sent them: loading
/// one costs far more memory than its bytes (a 50 MB note, about 5 GB), so
/// two at once must not happen. A connection whose next message waits for
/// this reads nothing more meanwhile, so its peer waits too.
static LARGE_MESSAGES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Numbers connections, so a guard can find its own.
static CONNECTION_NUMBER: AtomicU64 = AtomicU64::new(0);

/// Counts a connection, overall and per peer, for as long as it lives, and
/// tells the Node when a peer's first connection opens and its last one closes
/// (forgetting what that peer was still sending). A peer's connections beyond
/// `MAX_CONNECTIONS_PER_PEER` close, oldest first.
struct ConnectionGuard {
    node: Arc<Node>,
    activity: Arc<Activity>,
    connected: Connected,
    /// Told when a peer's first connection opens or its last one closes:
    /// every session then tells its peer (`Frame::Links`).
    links: broadcast::Sender<Outgoing>,
    peer: String,
    number: u64,
}

impl ConnectionGuard {
    fn new(
        node: Arc<Node>,
        activity: Arc<Activity>,
        connected: Connected,
        links: broadcast::Sender<Outgoing>,
        conn: &Connection,
        addrs: &[SocketAddr],
    ) -> ConnectionGuard {
        let peer = conn.remote_id().to_string();
        let number = CONNECTION_NUMBER.fetch_add(1, Ordering::SeqCst);
        activity.connections.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        let (first, replaced) = {
            let mut open = connected.lock().unwrap_or_else(|e| e.into_inner());
            let conns = open.entry(peer.clone()).or_default();
            conns.push((number, conn.clone()));
            let excess = conns.len().saturating_sub(MAX_CONNECTIONS_PER_PEER);
            let replaced: Vec<Connection> = conns.drain(..excess).map(|(_, c)| c).collect();
            (conns.len() == 1, replaced)
        };
        for old in replaced {
            old.close(4u32.into(), b"replaced by a newer connection");
        }
        if first {
            if let Err(e) = node.peer_connected(&peer, true, addrs) {
                tracing::warn!("cannot record the connection: {e}");
            }
            let _ = links.send(Outgoing::Links);
        }
        ConnectionGuard {
            node,
            activity,
            connected,
            links,
            peer,
            number,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.activity.connections.fetch_sub(1, Ordering::SeqCst);
        let last = {
            let mut open = self.connected.lock().unwrap_or_else(|e| e.into_inner());
            match open.get_mut(&self.peer) {
                Some(conns) => {
                    conns.retain(|(n, _)| *n != self.number);
                    if conns.is_empty() {
                        open.remove(&self.peer);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last {
            let _ = self.links.send(Outgoing::Links);
            self.node.drop_incoming_from(&self.peer);
            if let Err(e) = self.node.peer_connected(&self.peer, false, &[]) {
                tracing::warn!("cannot record the disconnection: {e}");
            }
        }
    }
}

/// Runs one connection: membership check, then frames in, frames out. Logged
/// under the peer's short id, from "connected" to what was synced.
pub(super) async fn drive(
    node: Arc<Node>,
    conn: Connection,
    initiator: bool,
    outgoing: broadcast::Sender<Outgoing>,
    activity: Arc<Activity>,
    connected: Connected,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("peer", peer = %conn.remote_id().fmt_short());
    run(node, conn, initiator, outgoing, activity, connected)
        .instrument(span)
        .await
}

/// What one connection moved, for its last log line.
#[derive(Debug, Default)]
struct Moved {
    bytes_received: u64,
    /// Documents the peer's frames changed here (counted once per frame).
    changed_here: u64,
}

async fn run(
    node: Arc<Node>,
    conn: Connection,
    initiator: bool,
    outgoing: broadcast::Sender<Outgoing>,
    activity: Arc<Activity>,
    connected: Connected,
) -> anyhow::Result<()> {
    let mut changes = outgoing.subscribe();
    let peer = conn.remote_id().to_string();
    if node.with_peer(&peer, |r| r.shared_spaces().is_empty()) {
        let notices = node.with_peer(&peer, |r| r.removal_notices());
        if !notices.is_empty() {
            tell_removed(&conn, initiator, notices).await;
        }
        tracing::info!("closing: shares no space with us");
        conn.close(1u32.into(), b"not a member of a shared space");
        return Ok(());
    }
    let (send, recv) = if initiator {
        conn.open_bi().await?
    } else {
        conn.accept_bi().await?
    };
    let addrs: Vec<SocketAddr> = conn
        .paths()
        .iter()
        .filter_map(|path| match path.remote_addr() {
            iroh::TransportAddr::Ip(addr) => Some(*addr),
            _ => None,
        })
        .collect();
    let _counted = ConnectionGuard::new(
        node.clone(),
        activity.clone(),
        connected.clone(),
        outgoing,
        &conn,
        &addrs,
    );
    tracing::info!(?addrs, initiator, "connected");
    // Writing has its own task, so this loop always keeps reading: two peers that
    // both have more to send than the stream window cannot block each other.
    // What waits for the writer is bounded (`MAX_QUEUED_BYTES`): past it the
    // session makes no more frames until the writer has room.
    let out = spawn_writer(send, activity.clone());
    let mut moved = Moved::default();
    let mut session = Session::new();
    node.with_peer(&peer, |r| session.start(r));
    session.send_links(links_of(&connected, &peer));
    queue_out(&mut session, &out, &node, &peer, &mut moved)?;
    let (mut incoming, reader) = spawn_reader(recv, activity.clone());
    let mut membership = tokio::time::interval(MEMBERSHIP_CHECK);
    let mut peer_hung_up = false;
    loop {
        tokio::select! {
            next = incoming.recv() => {
                // A large message's permit is held until the session has it.
                let (next, _large) = match next {
                    Some((item, large)) => (Some(item), large),
                    None => (None, None),
                };
                match next {
                    Some(Incoming::Frame(frame)) => {
                        let _ = node.with_peer(&peer, |r| session.handle_vetted(frame, r));
                    }
                    Some(Incoming::Loading(task)) => match task.await {
                        Ok((frame, preloaded)) => {
                            let _ = node.with_peer_preloaded(&peer, preloaded, |r| {
                                session.handle_vetted(frame, r)
                            });
                        }
                        Err(e) => session.close(format!("cannot load the document sent: {e}")),
                    },
                    // A protocol error closes the session, which queues a
                    // goodbye saying why; it is sent below before the
                    // connection closes.
                    Some(Incoming::Bad(reason)) => session.close(reason),
                    None => {
                        moved.bytes_received = reader.received.load(Ordering::SeqCst);
                        match reader.task.await {
                            Ok(Ok(())) => peer_hung_up = true,
                            Ok(Err(e)) => return Err(e),
                            Err(e) => anyhow::bail!("the connection's reader failed: {e}"),
                        }
                        break;
                    }
                }
            }
            () = out.room.notified(), if session.wants_to_transmit() => {}
            _ = membership.tick() => {
                let shared = node.with_peer(&peer, |r| r.shared_spaces());
                if shared.is_empty() {
                    for (space, ops) in node.with_peer(&peer, |r| r.removal_notices()) {
                        session.tell_removed(space, ops);
                    }
                    session.close("no longer a member of a space we share".into());
                } else if session.shares_more_than_announced(&shared) {
                    // E.g. the peer was just added to a space, or linked:
                    // the next session lists it.
                    session.close("a space is newly shared; reconnecting".into());
                }
            }
            change = changes.recv() => match change {
                Ok(Outgoing::Change(space, doc, by_peer)) => match by_peer {
                    // This peer's own change: answering its message says so.
                    Some(from) if from == peer => {}
                    Some(from) => session.relayed_change(space.as_bytes(), &doc, &from),
                    None => session.local_change(space.as_bytes(), &doc),
                },
                Ok(Outgoing::Links) => session.send_links(links_of(&connected, &peer)),
                Ok(Outgoing::Presence(space, doc, payload)) => {
                    let shared = node.with_peer(&peer, |r| r.shared_spaces().contains(space.as_bytes()));
                    if shared {
                        session.send_presence(doc, payload);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    session.close(format!("fell {missed} changes behind; reconnect"));
                }
                Err(broadcast::error::RecvError::Closed) => session.close("shutting down".into()),
            },
        }
        queue_out(&mut session, &out, &node, &peer, &mut moved)?;
        if session.is_closed() {
            break;
        }
    }
    // Let the peer read our last frames: the writer finishes the stream once it
    // has sent everything; wait (briefly) for the peer's end, then close.
    let sent = out.sent.clone();
    let writer = out.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    if !peer_hung_up {
        let drain = async { while incoming.recv().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    moved.bytes_received = reader.received.load(Ordering::SeqCst);
    conn.close(0u32.into(), b"done");
    tracing::info!(
        bytes_sent = sent.load(Ordering::SeqCst),
        bytes_received = moved.bytes_received,
        documents_changed_here = moved.changed_here,
        "disconnected"
    );
    Ok(())
}

/// The devices this one has sync connections to, `peer` aside.
fn links_of(connected: &Connected, peer: &str) -> Vec<String> {
    let open = connected.lock().unwrap_or_else(|e| e.into_inner());
    open.keys()
        .filter(|device| *device != peer)
        .cloned()
        .collect()
}

/// Tells a device that shares no space with us any more that it was removed
/// (one `Frame::Removed` per space), on the stream it opens, then waits
/// briefly for it to read them.
async fn tell_removed(conn: &Connection, initiator: bool, notices: Vec<(SpaceKey, Vec<Vec<u8>>)>) {
    let told = async {
        let (mut send, _recv) = if initiator {
            conn.open_bi().await?
        } else {
            conn.accept_bi().await?
        };
        for (space, ops) in notices {
            let frame = Frame::Removed { space, ops };
            send.write_all(&frame.encode()?).await?;
        }
        let goodbye = Frame::Goodbye {
            reason: "removed from the space".into(),
        };
        send.write_all(&goodbye.encode()?).await?;
        send.finish()?;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(5), told).await {
        Ok(Ok(())) => tracing::info!("told the peer it was removed"),
        Ok(Err(e)) => tracing::info!("could not tell the peer it was removed: {e:#}"),
        Err(_) => tracing::info!("the peer did not hear that it was removed in time"),
    }
}

/// Acts on the session's events — the peer's presence goes to the Node's
/// subscribers, only for a note in use here in a space both share (other
/// events need nothing: the Node raises its own change events), a refusal is
/// logged and published — then queues frames for the writer while it has
/// room.
fn queue_out(
    session: &mut Session,
    out: &Writer,
    node: &Node,
    peer: &str,
    moved: &mut Moved,
) -> anyhow::Result<()> {
    while let Some(event) = session.poll_event() {
        match event {
            SessionEvent::Presence { doc, payload } => {
                let Ok(note) = doc.parse::<NoteId>() else {
                    continue;
                };
                let Ok((cursor, _)) = postcard::take_from_bytes::<Cursor>(&payload) else {
                    continue;
                };
                if node.shares_open_note(peer, &note) {
                    node.publish(NodeEvent::PeerPresence {
                        peer: peer.to_string(),
                        note,
                        anchor: cursor.anchor,
                        head: cursor.head,
                    });
                }
            }
            SessionEvent::Refused { doc, reason, .. } => {
                tracing::warn!(doc, "refused what the peer sent: {reason}");
                node.publish(NodeEvent::PeerRefused {
                    peer: peer.to_string(),
                    doc,
                    reason,
                });
            }
            SessionEvent::RemoteChange { .. } => moved.changed_here += 1,
            // The Node told its subscribers; sync of that space stops here.
            SessionEvent::Removed { .. } => {}
            SessionEvent::TooLarge { doc, bytes, .. } => tracing::warn!(
                doc,
                bytes,
                "not sent to the peer in this session: more than fits in one message"
            ),
            // The reason may be the peer's words: logged quoted, never raw.
            SessionEvent::Closed { reason } => tracing::info!(?reason, "session closed"),
        }
    }
    if !session.wants_to_transmit() {
        return Ok(());
    }
    let frames = node.with_peer(peer, |r| {
        let mut frames = Vec::new();
        let mut queued = out.queued.load(Ordering::SeqCst);
        while queued < MAX_QUEUED_BYTES {
            let Some(frame) = session.poll_transmit(r) else {
                break;
            };
            let bytes = frame.encode()?;
            queued += bytes.len();
            frames.push(bytes);
        }
        anyhow::Ok(frames)
    })?;
    for bytes in frames {
        out.send(bytes)?;
    }
    Ok(())
}

/// What the reader task hands the session, in the order it arrived.
enum Incoming {
    /// A vetted frame.
    Frame(Vetted),
    /// A vetted frame whose document a worker thread is loading; the worker
    /// gives the frame back with the load.
    Loading(JoinHandle<(Vetted, Option<Preloaded>)>),
    /// The stream broke framing or vetting: the session ends, saying why.
    Bad(String),
}

/// An `Incoming` item, with the permit of a large message
/// (`LARGE_MESSAGES`) while it is one.
type Arrived = (Incoming, Option<tokio::sync::SemaphorePermit<'static>>);

/// The reader task: its frames, and how many bytes it read.
struct Reader {
    task: JoinHandle<anyhow::Result<()>>,
    received: Arc<AtomicU64>,
}

/// Reads, decodes and vets frames (none of it under the Node's lock) and
/// starts loading each whole document on a worker thread, up to
/// `FRAMES_AHEAD` frames ahead of the session: both cores load while the
/// session takes in the frames before; a message larger than a frame waits
/// for `LARGE_MESSAGES` first. The channel closes when the peer finishes its
/// stream or after a frame that is not acceptable.
fn spawn_reader(
    mut recv: RecvStream,
    activity: Arc<Activity>,
) -> (tokio::sync::mpsc::Receiver<Arrived>, Reader) {
    let (frames, incoming) = tokio::sync::mpsc::channel(FRAMES_AHEAD);
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    let task = tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; READ_BUFFER];
        while let Some(n) = recv.read(&mut buf).await? {
            activity.touch();
            activity
                .bytes_received
                .fetch_add(n as u64, Ordering::SeqCst);
            counted.fetch_add(n as u64, Ordering::SeqCst);
            decoder.push(&buf[..n]);
            loop {
                let mut large = None;
                let item = match decoder.next_frame().map_err(|e| e.to_string()) {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        let checked = if decoder.last_len() > MAX_FRAME_BYTES {
                            // Vetting it inflates what it carries: seconds,
                            // kept off the runtime's threads.
                            large = Some(LARGE_MESSAGES.acquire().await?);
                            tokio::task::spawn_blocking(move || Vetted::check(frame)).await?
                        } else {
                            Vetted::check(frame)
                        };
                        match checked {
                            Ok(frame) if Preloaded::wanted(&frame) => {
                                Incoming::Loading(tokio::task::spawn_blocking(move || {
                                    let preloaded = Preloaded::of(&frame);
                                    (frame, preloaded)
                                }))
                            }
                            Ok(frame) => Incoming::Frame(frame),
                            Err(e) => Incoming::Bad(e.to_string()),
                        }
                    }
                    Err(e) => Incoming::Bad(e),
                };
                let bad = matches!(item, Incoming::Bad(_));
                if frames.send((item, large)).await.is_err() || bad {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    (incoming, Reader { task, received })
}

/// The queue to a connection's writer task: frames in order, and how many
/// bytes wait in it.
struct Writer {
    queue: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// Bytes this connection's writer has sent.
    sent: Arc<AtomicU64>,
    /// Notified each time the writer has written a frame.
    room: Arc<tokio::sync::Notify>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Writer {
    fn send(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.queued.fetch_add(bytes.len(), Ordering::SeqCst);
        self.queue
            .send(bytes)
            .map_err(|_| anyhow::anyhow!("the connection's writer stopped"))
    }

    /// Closes the queue: the writer sends what is in it, then finishes the
    /// stream.
    fn close(self) -> JoinHandle<anyhow::Result<()>> {
        self.task
    }
}

/// Writes queued frames to the stream in order; finishes it when the queue
/// closes.
fn spawn_writer(mut send: SendStream, activity: Arc<Activity>) -> Writer {
    let (queue, mut frames) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let room = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (queued, room, sent) = (queued.clone(), room.clone(), sent.clone());
        tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                send.write_all(&bytes).await?;
                queued.fetch_sub(bytes.len(), Ordering::SeqCst);
                room.notify_one();
                sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                activity
                    .bytes_sent
                    .fetch_add(bytes.len() as u64, Ordering::SeqCst);
                activity.touch();
            }
            send.finish().ok();
            Ok(())
        })
    };
    Writer {
        queue,
        queued,
        sent,
        room,
        task,
    }
}
