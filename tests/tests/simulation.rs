//! The sync protocol's sessions driven over a simulated network: 3–5 peers, random
//! edits everywhere, and seeded faults — connections that drop with frames in
//! flight, partitions, frames from different connections delivered in any order,
//! and frames duplicated or swapped within a connection. A session that rejects
//! what it receives is closed, as the real driver does. After healing, every
//! replica of every document must be identical. Also the pairing exchange,
//! both sides sans-io, with a meddler replaying, dropping and replacing its
//! messages.

use std::collections::{BTreeMap, VecDeque};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use peernotes_sync::protocol::frame::{DocKey, SpaceKey};
use peernotes_sync::protocol::session::bucket_of;
use peernotes_sync::protocol::{Frame, Session};
use peernotes_tests::replica::DocReplica;
use peernotes_tests::Rng;

const SPACE: SpaceKey = [7; 16];
const DEFAULT_SEEDS: u64 = 200;
const STEPS: usize = 400;

/// Half of the documents go whole; the other half exercise the fallback to the
/// sync protocol.
fn sends_whole(doc: &DocKey) -> bool {
    bucket_of(doc).is_multiple_of(2)
}

/// A connection between peers `a` and `b`: a session at each end and the frames
/// in flight each way.
struct Link {
    a: usize,
    b: usize,
    up: Option<(Session, Session)>,
    to_b: VecDeque<Frame>,
    to_a: VecDeque<Frame>,
}

struct Net {
    peers: Vec<DocReplica>,
    /// Documents each peer has created so far (their keys are numbered).
    created: Vec<usize>,
    links: Vec<Link>,
    rng: Rng,
    frames_delivered: usize,
}

impl Net {
    fn new(seed: u64) -> Net {
        let mut rng = Rng::new(seed);
        let n = 3 + rng.below(3) as usize;
        let peers = (0..n)
            .map(|_| DocReplica::new(SPACE, sends_whole))
            .collect();
        let mut links = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                links.push(Link {
                    a,
                    b,
                    up: None,
                    to_b: VecDeque::new(),
                    to_a: VecDeque::new(),
                });
            }
        }
        let mut net = Net {
            peers,
            created: vec![0; n],
            links,
            rng,
            frames_delivered: 0,
        };
        for l in 0..net.links.len() {
            net.connect(l);
        }
        net
    }

    fn connect(&mut self, l: usize) {
        let (a, b) = (self.links[l].a, self.links[l].b);
        let (mut sa, mut sb) = (Session::new(), Session::new());
        sa.start(&mut self.peers[a]);
        sb.start(&mut self.peers[b]);
        let link = &mut self.links[l];
        link.to_a.clear();
        link.to_b.clear();
        link.up = Some((sa, sb));
        self.pump(l);
    }

    fn disconnect(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.up = None;
        link.to_a.clear();
        link.to_b.clear();
    }

    /// Moves every frame the link's sessions want to send onto the wire.
    fn pump(&mut self, l: usize) {
        let link = &mut self.links[l];
        let (a, b) = (link.a, link.b);
        if let Some((sa, sb)) = &mut link.up {
            while let Some(f) = sa.poll_transmit(&mut self.peers[a]) {
                link.to_b.push_back(f);
            }
            while let Some(f) = sb.poll_transmit(&mut self.peers[b]) {
                link.to_a.push_back(f);
            }
        }
    }

    /// Delivers the next frame on link `l` in one direction.
    fn deliver(&mut self, l: usize, to_b: bool) {
        let link = &mut self.links[l];
        let (a, b) = (link.a, link.b);
        let Some((sa, sb)) = &mut link.up else { return };
        let queue = if to_b { &mut link.to_b } else { &mut link.to_a };
        let Some(frame) = queue.pop_front() else {
            return;
        };
        self.frames_delivered += 1;
        let result = if to_b {
            sb.handle_frame(frame, &mut self.peers[b])
        } else {
            sa.handle_frame(frame, &mut self.peers[a])
        };
        let closed = sa.is_closed() || sb.is_closed();
        if result.is_err() || closed {
            // The driver closes a connection whose session ended or failed.
            self.disconnect(l);
        } else {
            self.pump(l);
        }
    }

    fn local_change(&mut self, peer: usize, doc: &DocKey) {
        for l in 0..self.links.len() {
            let link = &mut self.links[l];
            let (a, b) = (link.a, link.b);
            if let Some((sa, sb)) = &mut link.up {
                if a == peer {
                    sa.local_change(&SPACE, doc);
                } else if b == peer {
                    sb.local_change(&SPACE, doc);
                }
            }
            self.pump(l);
        }
    }

    fn random_edit(&mut self) {
        let p = self.rng.below(self.peers.len() as u64) as usize;
        let editable: Vec<DocKey> = self.peers[p]
            .docs
            .iter()
            .filter(|(_, d)| d.get(ROOT, "text").ok().flatten().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if editable.is_empty() || self.rng.below(10) == 0 {
            // Each document is created once, by one peer.
            let key = format!("p{p}-{}", self.created[p]);
            self.created[p] += 1;
            let mut doc = AutoCommit::new();
            let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
            doc.splice_text(&text, 0, 0, &format!("doc {key}\n"))
                .unwrap();
            doc.commit();
            self.peers[p].docs.insert(key.clone(), doc);
            self.local_change(p, &key);
            return;
        }
        let key = editable[self.rng.below(editable.len() as u64) as usize].clone();
        let doc = self.peers[p].docs.get_mut(&key).unwrap();
        let (_, text) = doc.get(ROOT, "text").unwrap().unwrap();
        let len = doc.length(&text);
        let pos = self.rng.below(len as u64 + 1) as usize;
        let delete = if pos < len && self.rng.below(3) == 0 {
            1 + self.rng.below((len - pos).min(5) as u64) as usize
        } else {
            0
        };
        let insert = format!("{p}:{}", self.rng.below(1000));
        doc.splice_text(&text, pos, delete as isize, &insert)
            .unwrap();
        doc.commit();
        self.local_change(p, &key);
    }

    fn random_fault(&mut self) {
        let l = self.rng.below(self.links.len() as u64) as usize;
        match self.rng.below(4) {
            0 => {
                if self.links[l].up.is_some() {
                    self.disconnect(l); // drop, frames in flight lost
                } else {
                    self.connect(l);
                }
            }
            1 => {
                // Duplicate the frame at the head of a queue.
                let link = &mut self.links[l];
                if let Some(f) = link.to_b.front().cloned() {
                    link.to_b.push_front(f);
                }
            }
            2 => {
                // Swap the two frames at the head of a queue.
                let link = &mut self.links[l];
                if link.to_a.len() >= 2 {
                    link.to_a.swap(0, 1);
                }
            }
            _ => {
                // A partition: one peer loses every link.
                let p = self.rng.below(self.peers.len() as u64) as usize;
                for l in 0..self.links.len() {
                    if self.links[l].a == p || self.links[l].b == p {
                        self.disconnect(l);
                    }
                }
            }
        }
    }

    fn deliver_random(&mut self) {
        let busy: Vec<(usize, bool)> = (0..self.links.len())
            .flat_map(|l| [(l, true), (l, false)])
            .filter(|&(l, to_b)| {
                let link = &self.links[l];
                if to_b {
                    !link.to_b.is_empty()
                } else {
                    !link.to_a.is_empty()
                }
            })
            .collect();
        if !busy.is_empty() {
            let (l, to_b) = busy[self.rng.below(busy.len() as u64) as usize];
            self.deliver(l, to_b);
        }
    }

    /// Reconnects everything with fresh sessions and runs until no frame is in flight.
    fn heal(&mut self) {
        for l in 0..self.links.len() {
            self.disconnect(l);
            self.connect(l);
        }
        for _ in 0..1_000_000 {
            let idle = self
                .links
                .iter()
                .all(|l| l.to_a.is_empty() && l.to_b.is_empty());
            if idle {
                return;
            }
            self.deliver_random();
        }
        panic!("the network did not go quiet after healing");
    }
}

fn run(seed: u64) -> usize {
    let mut net = Net::new(seed);
    for _ in 0..STEPS {
        match net.rng.below(100) {
            0..=29 => net.random_edit(),
            30..=37 => net.random_fault(),
            _ => net.deliver_random(),
        }
    }
    net.heal();
    let reference: BTreeMap<DocKey, String> = net.peers[0]
        .docs
        .iter()
        .map(|(k, d)| {
            let (_, text) = d
                .get(ROOT, "text")
                .unwrap()
                .expect("every doc has its text");
            (k.clone(), d.text(&text).unwrap())
        })
        .collect();
    for (i, peer) in net.peers.iter_mut().enumerate() {
        let keys: Vec<&DocKey> = peer.docs.keys().collect();
        assert_eq!(
            keys,
            reference.keys().collect::<Vec<_>>(),
            "seed {seed}: peer {i} documents"
        );
        for (key, doc) in &peer.docs {
            let (_, text) = doc.get(ROOT, "text").unwrap().unwrap();
            assert_eq!(
                &doc.text(&text).unwrap(),
                &reference[key],
                "seed {seed}: peer {i} doc {key}"
            );
        }
    }
    let heads: Vec<_> = net.peers.iter_mut().map(|p| p.heads()).collect();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: heads differ"
    );
    assert!(!reference.is_empty());
    net.frames_delivered
}

#[test]
fn replicas_converge_after_faults_heal() {
    let seeds = peernotes_tests::count_from_env("PEERNOTES_SIM_SEEDS", DEFAULT_SEEDS);
    let frames: usize = (1..=seeds).map(run).sum();
    println!("{seeds} seeds converged; {frames} frames delivered");
}

// ---- pairing ------------------------------------------------------------------

/// What the meddler between a joiner and an inviter does to one message.
#[derive(Debug, Clone, Copy)]
enum Meddle {
    Deliver,
    /// Delivered twice (a replay).
    Twice,
    /// Replaced by a message of another step.
    OutOfTurn,
    /// Never delivered: the exchange ends there.
    Drop,
}

fn meddle(rng: &mut Rng) -> Meddle {
    match rng.below(10) {
        0 => Meddle::Twice,
        1 => Meddle::OutOfTurn,
        2 => Meddle::Drop,
        _ => Meddle::Deliver,
    }
}

/// One pairing exchange, both sides sans-io, with a meddler in between. The
/// joiner presents a ticket or a code, right or wrong. Whatever happens: no
/// panic; a joiner is admitted only with the right secret, to the offer's
/// space, at most once per offer, and only by spending the offer; a ticket
/// offer survives a wrong secret. (A joiner believes
/// a welcome from its inviter, whose identity QUIC proves; with responses
/// forged in between, only the inviter's side is checked.)
fn pairing_run(seed: u64) {
    use peernotes_sync::pairing::{
        Inviter, InviterNext, Joiner, JoinerNext, Offer, PairRequest, PairResponse, ShortCode,
    };
    use peernotes_sync::SpaceId;
    use std::sync::Arc;

    const INVITER: [u8; 32] = [1; 32];
    const JOINER: [u8; 32] = [2; 32];
    const NOW: i64 = 1_000;
    let mut rng = Rng::new(seed);
    let space = SpaceId::from_bytes([seed as u8; 16]);
    let by_code = rng.below(2) == 0;
    let right = rng.below(3) != 0;
    let offer = Arc::new(if by_code {
        Offer::generate_code(space, NOW + 60).unwrap()
    } else {
        Offer::generate(space, NOW + 60).unwrap()
    });
    let (mut joiner, first) = if by_code {
        let code = offer.code().unwrap().clone();
        let presented = if right {
            code.clone()
        } else {
            loop {
                let other = ShortCode::generate().unwrap().to_string();
                let words = other.split_once('-').unwrap().1;
                let wrong = ShortCode::parse(&format!("{}-{words}", code.nameplate)).unwrap();
                if wrong != code {
                    break wrong;
                }
            }
        };
        Joiner::with_code(&presented, "Bee", &JOINER, &INVITER)
    } else {
        let mut ticket = offer.ticket(INVITER, Vec::new(), None).unwrap();
        if !right {
            ticket.secret[rng.below(16) as usize] ^= 1 << rng.below(8);
        }
        Joiner::with_ticket(&ticket, "Bee", NOW).unwrap()
    };
    let mut inviter = Inviter::new(vec![offer.clone()], INVITER, JOINER, NOW);
    let junk_request = |rng: &mut Rng| match rng.below(3) {
        0 => PairRequest::Ticket {
            secret: [rng.below(256) as u8; 16],
            name: "x".into(),
        },
        1 => PairRequest::CodeStart {
            nameplate: rng.below(1000) as u16,
            message: vec![rng.below(256) as u8; 33],
        },
        _ => PairRequest::CodeConfirm {
            proof: [rng.below(256) as u8; 32],
            name: "x".into(),
        },
    };
    let junk_response = |rng: &mut Rng| match rng.below(3) {
        0 => PairResponse::Welcome {
            space: [9; 16],
            space_name: "Elsewhere".into(),
        },
        1 => PairResponse::CodeChallenge {
            message: vec![rng.below(256) as u8; 33],
            proof: [0; 32],
        },
        _ => PairResponse::Refused {
            reason: "no".into(),
        },
    };

    let mut admitted = 0;
    let mut joined = None;
    let mut forged = false;
    let mut request = Some(first);
    'exchange: for _ in 0..8 {
        let Some(sent) = request.take() else { break };
        let deliveries = match meddle(&mut rng) {
            Meddle::Deliver => vec![sent],
            Meddle::Twice => vec![sent.clone(), sent],
            Meddle::OutOfTurn => vec![junk_request(&mut rng)],
            Meddle::Drop => break,
        };
        let mut response = None;
        for delivered in deliveries {
            match inviter.receive(delivered) {
                Ok(InviterNext::Send(r)) | Ok(InviterNext::Refuse(r)) => response = Some(r),
                Ok(InviterNext::Admit { space: s, .. }) => {
                    assert_eq!(s, space, "seed {seed}: admitted to another space");
                    admitted += 1;
                    response = Some(inviter.welcome(s, "Team".into()));
                }
                Err(_) => break,
            }
        }
        let Some(response) = response else { break };
        let responses = match meddle(&mut rng) {
            Meddle::Deliver => vec![response],
            Meddle::Twice => vec![response.clone(), response],
            Meddle::OutOfTurn => {
                forged = true;
                vec![junk_response(&mut rng)]
            }
            Meddle::Drop => break,
        };
        for delivered in responses {
            match joiner.receive(delivered) {
                Ok(JoinerNext::Send(next)) => request = Some(next),
                Ok(JoinerNext::Joined { space: s, .. }) => {
                    joined = Some(s);
                    break 'exchange;
                }
                Err(_) => break 'exchange,
            }
        }
    }
    assert!(admitted <= 1, "seed {seed}: admitted {admitted} times");
    if !right {
        assert_eq!(admitted, 0, "seed {seed}: admitted with a wrong secret");
        if !forged {
            assert_eq!(joined, None, "seed {seed}: joined with a wrong secret");
        }
        if !by_code {
            assert!(
                !offer.is_used(),
                "seed {seed}: a wrong secret spent the ticket"
            );
        }
    }
    if let Some(s) = joined.filter(|_| !forged) {
        assert_eq!(s, space, "seed {seed}: joined another space");
        assert_eq!(admitted, 1, "seed {seed}: joined without being admitted");
    }
    if admitted == 1 {
        assert!(
            offer.is_used(),
            "seed {seed}: admitted without spending the offer"
        );
    }
}

#[test]
fn pairing_exchanges_hold_up_against_replays_drops_and_messages_out_of_turn() {
    let seeds = peernotes_tests::count_from_env("PEERNOTES_SIM_SEEDS", DEFAULT_SEEDS);
    for seed in 1..=seeds {
        pairing_run(seed);
    }
}
