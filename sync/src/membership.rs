//! A space's membership as signed authority: a log of signed operations
//! (create, add with a role, change a role, remove, leave) forming a causal
//! graph, and the deterministic rules every device uses to compute the member
//! list from it. No I/O: ops arrive from anywhere, in any order, and every
//! device that has the same ops computes the same members.
//!
//! Each op names its author (a device's node id, its Ed25519 public key), the
//! heads of the log its author had seen (`parents`), and is signed by the
//! author's device key. An op whose signature fails is never inserted, and
//! neither is one its own causal past already refuses (rules 1, 2 and 4
//! below): its author was no member with the role it needs there. That
//! depends on the op alone, so every device refuses it alike, never stores or
//! forwards it, and a member that tries what it may not costs the others one
//! check and nothing more.
//!
//! **Roles.** `Owner` (adds, removes, changes roles), `Editor` (edits notes),
//! `Viewer` (reads). Anyone may leave.
//!
//! **People.** A member may link one more device of its own person (`Link`),
//! with at most its own role; every member records its person (the device
//! that joined first). A device of a person may remove another device of the
//! same person, whatever their roles: a lost laptop is revoked by the
//! desktop, alone, and the person's other devices keep their access.
//!
//! **The rules.** Ops are put in one canonical order (a topological order of
//! the graph, concurrent ops by hash). An op is valid when:
//! 1. *Authority from its past*: its author holds the role it needs in the
//!    membership computed from the op's causal past (its ancestors) — never
//!    from ops it did not know of.
//! 2. *Seniority*: owners are ranked by when they became owner (the creator
//!    first); an owner may remove or demote only owners junior to it. So two
//!    owners removing each other concurrently cannot both succeed: the senior
//!    one's removal stands, the junior one's is refused.
//! 3. *Removal is strong*: once a device is removed (or demoted from owner),
//!    every op it authored that did not come before that removal — concurrent
//!    with it or after it — is invalid, whoever forwards it. What it did
//!    before still counts.
//! 4. *The last owner stays*: an op that would leave the space without an
//!    owner is invalid; if concurrent ops still do, the one latest in the
//!    canonical order is set aside until an owner remains.
//!
//! A device is a member when some valid op granted it a role after every
//! valid removal of it (a removal beats a concurrent re-add); its role is the
//! lowest among its latest concurrent grants.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A device: its node id's 32 bytes.
pub type DeviceKey = [u8; 32];
/// An op's hash: SHA-256 of its signed encoding.
pub type OpHash = [u8; 32];

/// Most ops one space's log holds; more are refused.
pub const MAX_OPS: usize = 4_096;
/// Most ops one device may author in one space's log.
pub const MAX_OPS_PER_AUTHOR: usize = 1_024;
/// Longest encoded op accepted, in bytes.
pub const MAX_OP_BYTES: usize = 4_096;
/// Most parents one op may name.
pub const MAX_PARENTS: usize = 64;
/// Longest member name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

const SIGNING_CONTEXT: &[u8] = b"peernotes membership op v1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    Editor,
    Owner,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "owner" => Ok(Role::Owner),
            _ => Err(Error::Invalid(format!(
                "`{s}` is not a role (owner, editor or viewer)"
            ))),
        }
    }
}

/// What an op does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// The root of a space's log: its author is the first owner, under
    /// `name` (its display name).
    Create {
        name: String,
    },
    Add {
        member: DeviceKey,
        role: Role,
        name: String,
    },
    SetRole {
        member: DeviceKey,
        role: Role,
    },
    Remove {
        member: DeviceKey,
    },
    Leave,
    /// The author's person gets one more device, with `role` (at most the
    /// author's own), shown as `name` (the device's name).
    Link {
        device: DeviceKey,
        role: Role,
        name: String,
    },
}

/// The signed part of an op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    space: [u8; 16],
    author: DeviceKey,
    parents: Vec<OpHash>,
    action: Action,
}

/// One signed membership operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    body: Body,
    #[serde(with = "crate::signature")]
    signature: [u8; 64],
}

impl Op {
    /// Makes and signs an op with the author's device key.
    pub fn sign(space: [u8; 16], key: &[u8; 32], parents: Vec<OpHash>, action: Action) -> Op {
        let signing = SigningKey::from_bytes(key);
        let body = Body {
            space,
            author: signing.verifying_key().to_bytes(),
            parents,
            action,
        };
        let signature = signing.sign(&signed_bytes(&body)).to_bytes();
        Op { body, signature }
    }

    pub fn author(&self) -> &DeviceKey {
        &self.body.author
    }

    pub fn parents(&self) -> &[OpHash] {
        &self.body.parents
    }

    pub fn action(&self) -> &Action {
        &self.body.action
    }

    pub fn space(&self) -> &[u8; 16] {
        &self.body.space
    }

    /// The op as it is stored and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a membership op encodes")
    }

    /// Decodes and verifies an op.
    pub fn from_bytes(bytes: &[u8]) -> Result<Op> {
        if bytes.len() > MAX_OP_BYTES {
            return Err(Error::Invalid("a membership op is too large".into()));
        }
        let op: Op = postcard::from_bytes(bytes)
            .map_err(|_| Error::Invalid("a membership op that does not decode".into()))?;
        op.verify()?;
        Ok(op)
    }

    /// SHA-256 of the signed encoding: the op's identity.
    pub fn hash(&self) -> OpHash {
        let mut hasher = Sha256::new();
        hasher.update(signed_bytes(&self.body));
        hasher.update(self.signature);
        hasher.finalize().into()
    }

    /// Checks the signature against the author's key and the op's bounds.
    pub fn verify(&self) -> Result<()> {
        if self.body.parents.len() > MAX_PARENTS {
            return Err(Error::Invalid(
                "a membership op names too many parents".into(),
            ));
        }
        let name = match &self.body.action {
            Action::Create { name } | Action::Add { name, .. } | Action::Link { name, .. } => {
                name.len()
            }
            _ => 0,
        };
        if name > MAX_NAME_BYTES {
            return Err(Error::Invalid("a membership op's name is too long".into()));
        }
        let key = VerifyingKey::from_bytes(&self.body.author)
            .map_err(|_| Error::Invalid("a membership op's author is not a device key".into()))?;
        key.verify(
            &signed_bytes(&self.body),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Error::Invalid("a membership op's signature does not verify".into()))
    }
}

fn signed_bytes(body: &Body) -> Vec<u8> {
    let mut bytes = SIGNING_CONTEXT.to_vec();
    bytes.extend(postcard::to_stdvec(body).expect("a membership op encodes"));
    bytes
}

/// A member as the rules compute it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub device: DeviceKey,
    pub role: Role,
    pub name: String,
    /// Who granted the role it has now (itself, for the creator).
    pub granted_by: DeviceKey,
    /// For owners, their seniority: lower is more senior (the creator is 0).
    pub rank: Option<usize>,
    /// The person this device is a device of: the device that joined first
    /// (itself, unless another device of the person linked it).
    pub person: DeviceKey,
}

/// The outcome of the rules over a log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    pub members: BTreeMap<DeviceKey, Member>,
    /// Ops that are in the log but do not count, with why.
    pub refused: BTreeMap<OpHash, String>,
}

impl Membership {
    pub fn role(&self, device: &DeviceKey) -> Option<Role> {
        self.members.get(device).map(|m| m.role)
    }

    pub fn owners(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.role == Role::Owner)
    }
}

/// A space's membership log. Ops are inserted once their parents are here.
#[derive(Debug, Clone)]
pub struct Log {
    space: [u8; 16],
    ops: HashMap<OpHash, Op>,
    /// Each op's ancestors.
    ancestors: HashMap<OpHash, BTreeSet<OpHash>>,
    /// The members of each causal past the log has met, by its heads (an
    /// op's sorted parents). A past never changes once its ops are here, so
    /// this is computed once per past.
    pasts: HashMap<Vec<OpHash>, BTreeMap<DeviceKey, Member>>,
    /// Ops whose causal past, with themselves, is one chain (each names at
    /// most one parent, and that one is linear too). After a linear op the
    /// rules reduce to applying ops in turn, which is how most logs grow.
    linear: BTreeSet<OpHash>,
    /// How many ops each device authored here.
    by_author: HashMap<DeviceKey, usize>,
    /// The membership of the whole log, until the next insert.
    current: OnceCell<Membership>,
}

impl Log {
    pub fn new(space: [u8; 16]) -> Log {
        Log {
            space,
            ops: HashMap::new(),
            ancestors: HashMap::new(),
            pasts: HashMap::new(),
            linear: BTreeSet::new(),
            by_author: HashMap::new(),
            current: OnceCell::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn contains(&self, hash: &OpHash) -> bool {
        self.ops.contains_key(hash)
    }

    /// Every op, in canonical order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        canonical_order(&self.ops)
            .into_iter()
            .map(move |h| &self.ops[&h])
    }

    /// The ops no other op names as a parent: what a new op's parents are.
    pub fn heads(&self) -> Vec<OpHash> {
        let named: BTreeSet<&OpHash> = self.ops.values().flat_map(|op| op.parents()).collect();
        let mut heads: Vec<OpHash> = self
            .ops
            .keys()
            .filter(|h| !named.contains(h))
            .copied()
            .collect();
        heads.sort();
        heads
    }

    /// Adds a verified op whose parents are all here, unless its own causal
    /// past refuses it. `Ok(false)` if it was here already.
    pub fn insert(&mut self, op: Op) -> Result<bool> {
        if op.space() != &self.space {
            return Err(Error::Invalid("a membership op for another space".into()));
        }
        op.verify()?;
        let hash = op.hash();
        if self.ops.contains_key(&hash) {
            return Ok(false);
        }
        if self.ops.len() >= MAX_OPS {
            return Err(Error::Invalid("the space's membership log is full".into()));
        }
        if self.by_author.get(op.author()).copied().unwrap_or(0) >= MAX_OPS_PER_AUTHOR {
            return Err(Error::Invalid(
                "one device authored too many of the space's membership ops".into(),
            ));
        }
        let is_root = matches!(op.action(), Action::Create { .. });
        if is_root != op.parents().is_empty() {
            return Err(Error::Invalid(
                "only the op creating a space has no parents".into(),
            ));
        }
        if is_root && !self.ops.is_empty() {
            return Err(Error::Invalid("a space is created once".into()));
        }
        if let Some(missing) = op.parents().iter().find(|p| !self.ops.contains_key(*p)) {
            return Err(Error::Invalid(format!(
                "a membership op's parent {} is not here yet",
                short(missing)
            )));
        }
        let mut ancestors = BTreeSet::new();
        for parent in op.parents() {
            ancestors.insert(*parent);
            ancestors.extend(self.ancestors[parent].iter().copied());
        }
        let past = past_key(op.parents());
        if !self.pasts.contains_key(&past) {
            let members = self.members_of_past(&ancestors);
            self.pasts.insert(past.clone(), members);
        }
        let before = Membership {
            members: self.pasts[&past].clone(),
            refused: BTreeMap::new(),
        };
        check(&op, &before)
            .map_err(|why| Error::Invalid(format!("a membership op refused: {why}")))?;
        *self.by_author.entry(*op.author()).or_default() += 1;
        let linear = match op.parents() {
            [] => true,
            [parent] => self.linear.contains(parent),
            _ => false,
        };
        if linear {
            // The past the next op in the chain will name: this op applied
            // to its own past, which it passed.
            let after = apply(&op, ancestors.len(), self.pasts[&past].clone());
            self.pasts.insert(vec![hash], after);
            self.linear.insert(hash);
        }
        self.ancestors.insert(hash, ancestors);
        self.ops.insert(hash, op);
        self.current = OnceCell::new();
        Ok(true)
    }

    /// The members, by the module's rules.
    pub fn membership(&self) -> &Membership {
        self.current.get_or_init(|| match self.heads().as_slice() {
            [head] if self.linear.contains(head) => Membership {
                members: self.pasts[&vec![*head]].clone(),
                refused: BTreeMap::new(),
            },
            _ => Resolver::new(self).resolve_all(),
        })
    }

    /// Whether any op of the log grants `device` a role, takes its standing
    /// or is by it: it is or was a member (or was named as one).
    pub fn names(&self, device: &DeviceKey) -> bool {
        self.ops().any(|op| {
            op.author() == device
                || grants(op) == Some(*device)
                || takes_standing(op).is_some_and(|(target, _)| target == *device)
        })
    }

    /// Who removed `device`, if a counted removal of it stands (its own
    /// leave names itself).
    pub fn removed_by(&self, device: &DeviceKey) -> Option<DeviceKey> {
        let membership = self.membership();
        if membership.members.contains_key(device) {
            return None;
        }
        self.ops()
            .filter(|op| !membership.refused.contains_key(&op.hash()))
            .filter(|op| match op.action() {
                Action::Remove { member } => member == device,
                Action::Leave => op.author() == device,
                _ => false,
            })
            .last()
            .map(|op| *op.author())
    }

    /// The members of a down-closed set of this log's ops.
    fn members_of_past(&self, past: &BTreeSet<OpHash>) -> BTreeMap<DeviceKey, Member> {
        let mut resolver = Resolver::new(self);
        let mut set: Vec<OpHash> = past.iter().copied().collect();
        set.sort_by_key(|h| resolver.position[h]);
        resolver.resolve(&set).members
    }
}

/// The members after `op`, when `members` are those of its past and its past
/// is one chain: nothing is concurrent, so an op that passed `check` simply
/// takes effect, as `Resolver::members_of` would compute it. `place` is the
/// op's place in the chain (how many ops came before it), which is its place
/// in the canonical order of a log that is this chain.
fn apply(
    op: &Op,
    place: usize,
    mut members: BTreeMap<DeviceKey, Member>,
) -> BTreeMap<DeviceKey, Member> {
    let author = *op.author();
    match op.action() {
        Action::Create { name } => {
            members.insert(
                author,
                Member {
                    device: author,
                    role: Role::Owner,
                    name: name.clone(),
                    granted_by: author,
                    rank: Some(place),
                    person: author,
                },
            );
        }
        Action::Add { member, role, name } => {
            let rank = (*role == Role::Owner).then_some(place);
            members.insert(
                *member,
                Member {
                    device: *member,
                    role: *role,
                    name: name.clone(),
                    granted_by: author,
                    rank,
                    person: *member,
                },
            );
        }
        Action::Link { device, role, name } => {
            let rank = (*role == Role::Owner).then_some(place);
            let person = members.get(&author).map_or(author, |m| m.person);
            members.insert(
                *device,
                Member {
                    device: *device,
                    role: *role,
                    name: name.clone(),
                    granted_by: author,
                    rank,
                    person,
                },
            );
        }
        Action::SetRole { member, role } => {
            let rank = match members.get(member).and_then(|m| m.rank) {
                Some(rank) if *role == Role::Owner => Some(rank),
                _ if *role == Role::Owner => Some(place),
                _ => None,
            };
            if let Some(m) = members.get_mut(member) {
                m.role = *role;
                m.granted_by = author;
                m.rank = rank;
            }
        }
        Action::Remove { member } => {
            members.remove(member);
        }
        Action::Leave => {
            members.remove(&author);
        }
    }
    members
}

/// The key a causal past is remembered by: its heads, sorted, once each.
fn past_key(parents: &[OpHash]) -> Vec<OpHash> {
    let mut key = parents.to_vec();
    key.sort();
    key.dedup();
    key
}

/// A node id (64 hex digits) as the log records devices.
pub fn device_key(node_id: &str) -> Option<DeviceKey> {
    if node_id.len() != 64 || !node_id.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&node_id[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A device as its node id: 64 lowercase hex digits.
pub fn node_id(device: &DeviceKey) -> String {
    hex(device)
}

/// A hash or key as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(hash: &OpHash) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Kahn's algorithm, always taking the ready op with the smallest hash: every
/// device with the same ops gets the same order, and the order of any
/// down-closed subset is this order restricted to it.
fn canonical_order(ops: &HashMap<OpHash, Op>) -> Vec<OpHash> {
    let mut waiting: HashMap<OpHash, usize> = HashMap::new();
    let mut children: HashMap<OpHash, Vec<OpHash>> = HashMap::new();
    let mut ready = BTreeSet::new();
    for (hash, op) in ops {
        let parents: BTreeSet<&OpHash> = op.parents().iter().collect();
        waiting.insert(*hash, parents.len());
        for parent in parents {
            children.entry(*parent).or_default().push(*hash);
        }
        if op.parents().is_empty() {
            ready.insert(*hash);
        }
    }
    let mut order = Vec::with_capacity(ops.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for child in children.get(&next).into_iter().flatten() {
            let count = waiting.get_mut(child).expect("every op is counted");
            *count -= 1;
            if *count == 0 {
                ready.insert(*child);
            }
        }
    }
    order
}

/// Evaluates the rules, memoising each op's state before it.
struct Resolver<'a> {
    log: &'a Log,
    /// The log's ops in canonical order, and each op's place in it.
    order: Vec<OpHash>,
    position: HashMap<OpHash, usize>,
}

impl<'a> Resolver<'a> {
    fn new(log: &'a Log) -> Resolver<'a> {
        let order = canonical_order(&log.ops);
        let position = order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        Resolver {
            log,
            order,
            position,
        }
    }

    fn resolve_all(mut self) -> Membership {
        let all = self.order.clone();
        self.resolve(&all)
    }

    /// The membership of a down-closed set of ops, given in canonical order.
    fn resolve(&mut self, set: &[OpHash]) -> Membership {
        let mut refused = BTreeMap::new();
        // Rules 1, 2 and 4 against each op's own past.
        let mut candidates: Vec<OpHash> = Vec::new();
        for hash in set {
            let past = self.before(hash);
            match check(&self.log.ops[hash], &past) {
                Ok(()) => candidates.push(*hash),
                Err(why) => {
                    refused.insert(*hash, why);
                }
            }
        }
        // Rule 3 (strong removal), then authority again: an op whose author's
        // role came from an op now refused fails too. Repeat until stable;
        // what failed for authority stays refused.
        let mut lost_authority: BTreeSet<OpHash> = BTreeSet::new();
        let mut valid = loop {
            let start: Vec<OpHash> = candidates
                .iter()
                .filter(|h| !lost_authority.contains(*h))
                .copied()
                .collect();
            let (valid, beaten) = self.strong_removal(&start);
            if beaten.is_empty() {
                // Nothing fell, so each op's past here is the past it was
                // checked against: no authority was lost.
                break valid;
            }
            let kept: BTreeSet<OpHash> = valid.iter().copied().collect();
            let mut failed = Vec::new();
            for h in &valid {
                let mut past: Vec<OpHash> = self.log.ancestors[h]
                    .iter()
                    .filter(|a| kept.contains(*a))
                    .copied()
                    .collect();
                past.sort_by_key(|a| self.position[a]);
                let members = Membership {
                    members: self.members_of(&past),
                    refused: BTreeMap::new(),
                };
                if let Err(why) = check(&self.log.ops[h], &members) {
                    failed.push((*h, why));
                }
            }
            if failed.is_empty() {
                for h in beaten {
                    refused.insert(
                        h,
                        "its author was removed or demoted before it or concurrently".into(),
                    );
                }
                break valid;
            }
            for (h, why) in failed {
                lost_authority.insert(h);
                refused.insert(h, why);
            }
        };
        // Rule 4: an owner remains.
        loop {
            let members = self.members_of(&valid);
            let had_owner = valid.iter().any(|h| grants_owner(self.log.ops[h].action()));
            if !had_owner || members.values().any(|m| m.role == Role::Owner) {
                return Membership { members, refused };
            }
            let last = valid
                .iter()
                .rev()
                .find(|h| ends_ownership(&self.log.ops[*h]))
                .copied();
            match last {
                Some(h) => {
                    valid.retain(|v| *v != h);
                    refused.insert(h, "it would leave the space without an owner".into());
                }
                None => return Membership { members, refused },
            }
        }
    }

    /// Rule 3: removals (and demotions from owner) are confirmed from the
    /// most senior remover down, each unless a confirmed one already took its
    /// author's standing; then every op by a removed device that did not come
    /// before its removal goes. Returns the ops kept and those that went.
    fn strong_removal(&mut self, set: &[OpHash]) -> (Vec<OpHash>, Vec<OpHash>) {
        let mut removals: Vec<(Option<usize>, usize, OpHash)> = Vec::new();
        for h in set {
            if takes_standing(&self.log.ops[h]).is_none() {
                continue;
            }
            let author = *self.log.ops[h].author();
            let rank = self.before(h).members.get(&author).and_then(|m| m.rank);
            removals.push((rank, self.position[h], *h));
        }
        // Owners by seniority, then everyone else; ties in canonical order.
        removals.sort_by_key(|(rank, position, _)| (rank.unwrap_or(usize::MAX), *position));
        let mut confirmed: Vec<OpHash> = Vec::new();
        for (_, _, r) in &removals {
            if !self.beaten(r, &confirmed, set) {
                confirmed.push(*r);
            }
        }
        let (mut kept, mut gone) = (Vec::new(), Vec::new());
        for h in set {
            if self.beaten(h, &confirmed, set) {
                gone.push(*h);
            } else {
                kept.push(*h);
            }
        }
        (kept, gone)
    }

    /// Whether a confirmed removal or demotion of `hash`'s author, that
    /// `hash` did not come before, takes the standing `hash` needs — unless
    /// the author was granted it again (by an op in `set`) between the two.
    fn beaten(&self, hash: &OpHash, confirmed: &[OpHash], set: &[OpHash]) -> bool {
        let op = &self.log.ops[hash];
        let author = *op.author();
        let ancestors = &self.log.ancestors;
        confirmed.iter().any(|r| {
            let Some((target, removal)) = takes_standing(&self.log.ops[r]) else {
                return false;
            };
            let takes = r != hash
                && target == author
                && !ancestors[r].contains(hash)
                && (removal || needs(op.action()) == Role::Owner);
            let granted_again = || {
                set.iter().any(|g| {
                    grants(&self.log.ops[g]) == Some(author)
                        && ancestors[g].contains(r)
                        && ancestors[hash].contains(g)
                })
            };
            takes && !granted_again()
        })
    }

    /// The membership of an op's causal past, as the log remembered it when
    /// the op went in.
    fn before(&self, hash: &OpHash) -> Membership {
        let past = past_key(self.log.ops[hash].parents());
        Membership {
            members: self.log.pasts.get(&past).cloned().unwrap_or_default(),
            refused: BTreeMap::new(),
        }
    }

    /// Who is a member after the valid ops (in canonical order).
    fn members_of(&self, valid: &[OpHash]) -> BTreeMap<DeviceKey, Member> {
        let mut grants: BTreeMap<DeviceKey, Vec<OpHash>> = BTreeMap::new();
        let mut removals: BTreeMap<DeviceKey, Vec<OpHash>> = BTreeMap::new();
        for h in valid {
            let op = &self.log.ops[h];
            match op.action() {
                Action::Create { .. } => grants.entry(*op.author()).or_default().push(*h),
                Action::Add { member, .. } | Action::SetRole { member, .. } => {
                    grants.entry(*member).or_default().push(*h)
                }
                Action::Link { device, .. } => grants.entry(*device).or_default().push(*h),
                Action::Remove { member } => removals.entry(*member).or_default().push(*h),
                Action::Leave => removals.entry(*op.author()).or_default().push(*h),
            }
        }
        let before = |a: &OpHash, b: &OpHash| self.log.ancestors[b].contains(a);
        let mut members = BTreeMap::new();
        for (device, device_grants) in grants {
            let removed = removals.get(&device).cloned().unwrap_or_default();
            // Grants that came after every removal: a removal beats a
            // concurrent grant.
            let effective: Vec<OpHash> = device_grants
                .iter()
                .filter(|g| removed.iter().all(|r| before(r, g)))
                .copied()
                .collect();
            if effective.is_empty() {
                continue;
            }
            let latest: Vec<OpHash> = effective
                .iter()
                .filter(|g| !effective.iter().any(|other| before(g, other)))
                .copied()
                .collect();
            let role = latest
                .iter()
                .map(|g| granted_role(self.log.ops[g].action()))
                .min()
                .expect("at least one latest grant");
            let name = effective
                .iter()
                .rev()
                .find_map(|g| match self.log.ops[g].action() {
                    Action::Add { name, .. } | Action::Link { name, .. } => Some(name.clone()),
                    Action::Create { name } => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            // Whose device it is: as the grant that brought it in says.
            let person = effective
                .iter()
                .rev()
                .find_map(|g| {
                    let op = &self.log.ops[g];
                    match op.action() {
                        Action::Link { .. } => Some(
                            self.before(g)
                                .members
                                .get(op.author())
                                .map_or(*op.author(), |m| m.person),
                        ),
                        Action::Add { .. } | Action::Create { .. } => Some(device),
                        _ => None,
                    }
                })
                .unwrap_or(device);
            let rank = (role == Role::Owner).then(|| {
                // Owner since the first owner grant with no demotion after it.
                effective
                    .iter()
                    .filter(|g| granted_role(self.log.ops[*g].action()) == Role::Owner)
                    .filter(|g| {
                        !effective.iter().any(|d| {
                            granted_role(self.log.ops[d].action()) < Role::Owner && before(g, d)
                        })
                    })
                    .map(|g| self.position[g])
                    .min()
                    .unwrap_or(usize::MAX)
            });
            let granted_by = *self.log.ops[latest
                .iter()
                .max_by_key(|g| self.position[*g])
                .expect("at least one latest grant")]
            .author();
            members.insert(
                device,
                Member {
                    device,
                    role,
                    name,
                    granted_by,
                    rank,
                    person,
                },
            );
        }
        members
    }
}

/// Rules 1, 2 and 4 for one op, against the membership of its past.
fn check(op: &Op, past: &Membership) -> std::result::Result<(), String> {
    if let Action::Create { .. } = op.action() {
        return Ok(());
    }
    let author = op.author();
    let same_person = |device: &DeviceKey| {
        let person = |d: &DeviceKey| past.members.get(d).map(|m| m.person);
        device != author && person(device).is_some() && person(device) == person(author)
    };
    let needed = match op.action() {
        // A person's device revokes another of the same person.
        Action::Remove { member } if same_person(member) => Role::Viewer,
        action => needs(action),
    };
    if past.role(author).is_none_or(|r| r < needed) {
        return Err(format!(
            "its author is not {} here",
            match needed {
                Role::Owner => "an owner",
                Role::Editor => "an editor",
                Role::Viewer => "a member",
            }
        ));
    }
    if let Action::Add { member, .. } | Action::Link { device: member, .. } = op.action() {
        if past.members.contains_key(member) {
            return Err(
                "it adds a device that is a member already (change its role instead)".into(),
            );
        }
    }
    if let Action::Link { role, .. } = op.action() {
        if past.role(author).is_none_or(|r| r < *role) {
            return Err("it links a device with a role above its author's".into());
        }
    }
    let target = match op.action() {
        Action::Remove { member } | Action::SetRole { member, .. } => Some(*member),
        Action::Leave => Some(*author),
        _ => None,
    };
    if let Some(target) = target {
        let target_member = past.members.get(&target);
        if let (Some(t), Some(a)) = (target_member, past.members.get(author)) {
            if t.role == Role::Owner
                && target != *author
                && t.rank < a.rank
                && !same_person(&target)
            {
                return Err("an owner may remove or demote only owners junior to it".into());
            }
        }
        if matches!(op.action(), Action::Remove { .. } | Action::SetRole { .. })
            && target_member.is_none()
        {
            return Err("it names a device that is not a member".into());
        }
        let ends = ends_ownership(op) && target_member.is_some_and(|t| t.role == Role::Owner);
        if ends && past.owners().filter(|o| o.device != target).count() == 0 {
            return Err("it would leave the space without an owner".into());
        }
    }
    Ok(())
}

/// The device an op takes standing from, and whether it removes it (rather
/// than demoting it from owner).
fn takes_standing(op: &Op) -> Option<(DeviceKey, bool)> {
    match op.action() {
        Action::Remove { member } => Some((*member, true)),
        Action::Leave => Some((*op.author(), true)),
        Action::SetRole { member, role } if *role < Role::Owner => Some((*member, false)),
        _ => None,
    }
}

/// The device an op grants a role to, if it does.
fn grants(op: &Op) -> Option<DeviceKey> {
    match op.action() {
        Action::Create { .. } => Some(*op.author()),
        Action::Add { member, .. } | Action::SetRole { member, .. } => Some(*member),
        Action::Link { device, .. } => Some(*device),
        _ => None,
    }
}

/// The role an op's author needs.
fn needs(action: &Action) -> Role {
    match action {
        Action::Create { .. } | Action::Leave | Action::Link { .. } => Role::Viewer,
        Action::Add { .. } | Action::SetRole { .. } | Action::Remove { .. } => Role::Owner,
    }
}

fn granted_role(action: &Action) -> Role {
    match action {
        Action::Create { .. } => Role::Owner,
        Action::Add { role, .. } | Action::SetRole { role, .. } | Action::Link { role, .. } => {
            *role
        }
        _ => Role::Viewer,
    }
}

fn grants_owner(action: &Action) -> bool {
    granted_role(action) == Role::Owner
        && matches!(
            action,
            Action::Create { .. }
                | Action::Add { .. }
                | Action::SetRole { .. }
                | Action::Link { .. }
        )
}

/// Whether an op takes a device's ownership away (if it was an owner).
fn ends_ownership(op: &Op) -> bool {
    match op.action() {
        Action::Remove { .. } | Action::Leave => true,
        Action::SetRole { role, .. } => *role < Role::Owner,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPACE: [u8; 16] = [5; 16];

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn device(n: u8) -> DeviceKey {
        SigningKey::from_bytes(&key(n)).verifying_key().to_bytes()
    }

    /// Signs `action` by device `n` on top of `parents`, inserts it, returns its hash.
    fn op(log: &mut Log, n: u8, parents: &[OpHash], action: Action) -> OpHash {
        let op = Op::sign(SPACE, &key(n), parents.to_vec(), action);
        let hash = op.hash();
        log.insert(op).unwrap();
        hash
    }

    fn add(member: u8, role: Role) -> Action {
        Action::Add {
            member: device(member),
            role,
            name: format!("d{member}"),
        }
    }

    /// A space created by 1, with 2 an owner and 3 an editor, all in a line.
    fn team() -> (Log, OpHash) {
        let mut log = Log::new(SPACE);
        let root = op(
            &mut log,
            1,
            &[],
            Action::Create {
                name: "Team".into(),
            },
        );
        let two = op(&mut log, 1, &[root], add(2, Role::Owner));
        let three = op(&mut log, 1, &[two], add(3, Role::Editor));
        (log, three)
    }

    /// Whether `action` by device `n` on top of `parents` is refused at insert.
    fn refused_at_insert(log: &mut Log, n: u8, parents: &[OpHash], action: Action) -> bool {
        let op = Op::sign(SPACE, &key(n), parents.to_vec(), action);
        log.insert(op).is_err()
    }

    fn roles(log: &Log) -> Vec<(u8, Role)> {
        let m = log.membership();
        (1..=9)
            .filter_map(|n| m.role(&device(n)).map(|r| (n, r)))
            .collect()
    }

    #[test]
    fn only_owners_change_membership_and_forged_or_foreign_ops_are_refused() {
        let (mut log, head) = team();
        assert_eq!(
            roles(&log),
            vec![(1, Role::Owner), (2, Role::Owner), (3, Role::Editor)]
        );
        // An editor adds a stranger, removes the creator or changes a role:
        // refused before they go in, so they are never stored or forwarded.
        assert!(refused_at_insert(&mut log, 3, &[head], add(9, Role::Owner)));
        let removes_creator = Action::Remove { member: device(1) };
        assert!(refused_at_insert(&mut log, 3, &[head], removes_creator));
        let promotes = Action::SetRole {
            member: device(3),
            role: Role::Owner,
        };
        assert!(refused_at_insert(&mut log, 3, &[head], promotes));
        assert_eq!(log.len(), 3);
        assert_eq!(log.membership().role(&device(9)), None);
        // A forged signature never gets in.
        let mut forged = Op::sign(SPACE, &key(3), vec![head], add(8, Role::Owner));
        forged.body.author = device(1);
        assert!(log.insert(forged).is_err());
        let other = Op::sign([6; 16], &key(1), vec![head], add(8, Role::Owner));
        assert!(log.insert(other).is_err());
        // Nor does one that does not decode.
        assert!(Op::from_bytes(&[1, 2, 3]).is_err());
        let good = Op::sign(SPACE, &key(1), vec![head], add(8, Role::Viewer));
        assert_eq!(Op::from_bytes(&good.to_bytes()).unwrap(), good);
    }

    #[test]
    fn a_removal_beats_a_concurrent_re_add_and_whatever_the_removed_device_does_after() {
        let (mut log, head) = team();
        // 2 (owner) is removed by 1; concurrently 2 adds 4 and grants
        // itself its role again.
        let removal = op(&mut log, 1, &[head], Action::Remove { member: device(2) });
        let adds_four = op(&mut log, 2, &[head], add(4, Role::Editor));
        let re_adds = op(
            &mut log,
            2,
            &[adds_four],
            Action::SetRole {
                member: device(2),
                role: Role::Owner,
            },
        );
        // And 4, added by the removed device, acts too.
        let four_acts = op(&mut log, 4, &[re_adds], Action::Leave);
        let m = log.membership();
        assert_eq!(m.role(&device(2)), None, "{m:?}");
        assert_eq!(m.role(&device(4)), None);
        for refused in [adds_four, re_adds, four_acts] {
            assert!(m.refused.contains_key(&refused));
        }
        assert!(!m.refused.contains_key(&removal));
        // Re-adding itself after seeing the removal is refused outright.
        assert!(refused_at_insert(
            &mut log,
            2,
            &[removal, four_acts],
            add(2, Role::Owner)
        ));
        // An owner may deliberately add it back afterwards.
        let merged = op(&mut log, 1, &[removal, four_acts], add(2, Role::Editor));
        assert_eq!(log.membership().role(&device(2)), Some(Role::Editor));
        let after = op(&mut log, 2, &[merged], Action::Leave);
        assert!(!log.membership().refused.contains_key(&after));
    }

    #[test]
    fn adding_a_member_again_cannot_demote_it_and_roles_change_only_for_members() {
        let (mut log, head) = team();
        // 2 (a junior owner) "adds" the creator as a viewer: refused.
        assert!(refused_at_insert(
            &mut log,
            2,
            &[head],
            add(1, Role::Viewer)
        ));
        let stranger = Action::SetRole {
            member: device(7),
            role: Role::Owner,
        };
        assert!(refused_at_insert(&mut log, 1, &[head], stranger));
        let m = log.membership();
        assert_eq!(m.role(&device(1)), Some(Role::Owner));
        assert_eq!(m.role(&device(7)), None);
        // The creator may demote the junior owner; the junior may not demote it.
        let demote = op(
            &mut log,
            1,
            &[head],
            Action::SetRole {
                member: device(2),
                role: Role::Editor,
            },
        );
        let back = Action::SetRole {
            member: device(2),
            role: Role::Owner,
        };
        assert!(refused_at_insert(&mut log, 2, &[demote], back));
        assert_eq!(log.membership().role(&device(2)), Some(Role::Editor));
    }

    #[test]
    fn what_a_removed_device_did_before_its_removal_still_counts() {
        let (mut log, head) = team();
        let adds_five = op(&mut log, 2, &[head], add(5, Role::Viewer));
        op(
            &mut log,
            1,
            &[adds_five],
            Action::Remove { member: device(2) },
        );
        assert_eq!(log.membership().role(&device(5)), Some(Role::Viewer));
    }

    #[test]
    fn of_two_owners_removing_each_other_the_senior_one_wins() {
        let (mut log, head) = team();
        let one_removes_two = op(&mut log, 1, &[head], Action::Remove { member: device(2) });
        // The junior one's removal of the senior is refused by its own past.
        let removes_senior = Action::Remove { member: device(1) };
        assert!(refused_at_insert(&mut log, 2, &[head], removes_senior));
        let m = log.membership();
        assert_eq!(m.role(&device(1)), Some(Role::Owner));
        assert_eq!(m.role(&device(2)), None);
        assert!(!m.refused.contains_key(&one_removes_two));
    }

    #[test]
    fn the_last_owner_cannot_leave_even_when_two_leave_at_once() {
        let (mut log, head) = team();
        let one = op(&mut log, 1, &[head], Action::Leave);
        let two = op(&mut log, 2, &[head], Action::Leave);
        let m = log.membership();
        assert_eq!(m.owners().count(), 1, "{m:?}");
        assert!(m.refused.contains_key(&one) != m.refused.contains_key(&two));
        // Alone, the last owner's leave is refused outright.
        let mut solo = Log::new(SPACE);
        let root = op(&mut solo, 1, &[], Action::Create { name: "Me".into() });
        assert!(refused_at_insert(&mut solo, 1, &[root], Action::Leave));
        assert_eq!(solo.membership().role(&device(1)), Some(Role::Owner));
    }

    #[test]
    fn the_same_ops_in_any_order_give_the_same_members() {
        let (mut log, head) = team();
        let a = op(&mut log, 1, &[head], Action::Remove { member: device(2) });
        let b = op(&mut log, 2, &[head], add(6, Role::Editor));
        op(&mut log, 3, &[a, b], Action::Leave);
        let expected = log.membership();
        let ops: Vec<Op> = log.ops().cloned().collect();
        let mut again = Log::new(SPACE);
        let mut pending = ops.clone();
        pending.reverse();
        while !pending.is_empty() {
            pending.retain(|op| again.insert(op.clone()).is_err());
        }
        assert_eq!(again.membership(), expected);
    }

    #[test]
    fn a_chain_of_ops_gives_what_the_full_rules_give() {
        let (mut log, mut head) = team();
        // Owners 1 and 2 take turns adding, promoting, demoting and removing.
        for i in 0..120u8 {
            let author = 1 + i % 2;
            let member = 10 + i % 7;
            let action = match i % 4 {
                0 => add(member, Role::Editor),
                1 => Action::SetRole {
                    member: device(member),
                    role: Role::Owner,
                },
                2 => Action::SetRole {
                    member: device(member),
                    role: Role::Viewer,
                },
                _ => Action::Remove {
                    member: device(member),
                },
            };
            let op = Op::sign(SPACE, &key(author), vec![head], action);
            if let Ok(true) = log.insert(op.clone()) {
                head = op.hash();
            }
            let full = Resolver::new(&log).resolve_all();
            assert_eq!(log.membership(), &full, "after op {i}");
        }
        assert!(log.len() > 60, "most of the chain went in: {}", log.len());
    }

    #[test]
    fn one_device_authors_a_bounded_number_of_ops() {
        let (mut log, head) = team();
        // Device 1 adds new devices, all on the same past, up to its share.
        let mut refused = None;
        for i in 0..MAX_OPS_PER_AUTHOR {
            let member = Op::sign(SPACE, &[9; 32], Vec::new(), Action::Leave).hash();
            let member = Sha256::digest([member.as_slice(), &i.to_le_bytes()].concat()).into();
            let action = Action::Add {
                member,
                role: Role::Viewer,
                name: String::new(),
            };
            if let Err(e) = log.insert(Op::sign(SPACE, &key(1), vec![head], action)) {
                refused = Some((i, e.to_string()));
                break;
            }
        }
        let (at, why) = refused.expect("the cap is reached");
        assert!(why.contains("too many"), "{why}");
        assert_eq!(at + 3, MAX_OPS_PER_AUTHOR, "3 ops by device 1 were there");
    }

    fn link(device_n: u8, role: Role) -> Action {
        Action::Link {
            device: device(device_n),
            role,
            name: format!("laptop {device_n}"),
        }
    }

    #[test]
    fn a_member_links_its_own_devices_with_at_most_its_role() {
        let (mut log, head) = team();
        // Editor 3 links its laptop 4 as an editor; 4 links 5.
        let four = op(&mut log, 3, &[head], link(4, Role::Editor));
        let five = op(&mut log, 4, &[four], link(5, Role::Viewer));
        let m = log.membership().clone();
        assert_eq!(m.role(&device(4)), Some(Role::Editor));
        assert_eq!(m.members[&device(4)].person, device(3));
        assert_eq!(
            m.members[&device(5)].person,
            device(3),
            "a person's device links for the person"
        );
        assert_eq!(m.members[&device(3)].person, device(3));
        // Not above its own role, and not a device already in.
        assert!(refused_at_insert(
            &mut log,
            3,
            &[five],
            link(6, Role::Owner)
        ));
        assert!(refused_at_insert(
            &mut log,
            3,
            &[five],
            link(2, Role::Viewer)
        ));
        // The owner's links may be owners, junior to it.
        op(&mut log, 1, &[five], link(6, Role::Owner));
        let m = log.membership();
        assert_eq!(m.members[&device(6)].person, device(1));
        assert!(m.members[&device(6)].rank > m.members[&device(2)].rank);
    }

    #[test]
    fn a_persons_device_revokes_another_of_the_same_person_alone() {
        let (mut log, head) = team();
        let four = op(&mut log, 3, &[head], link(4, Role::Editor));
        let five = op(&mut log, 3, &[four], link(5, Role::Editor));
        // Editor 3 revokes its lost laptop 4; 5 and 3 keep their access.
        let revoke = op(&mut log, 3, &[five], Action::Remove { member: device(4) });
        let m = log.membership().clone();
        assert_eq!(m.role(&device(4)), None);
        assert_eq!(m.role(&device(5)), Some(Role::Editor));
        assert_eq!(m.role(&device(3)), Some(Role::Editor));
        // An editor cannot revoke another person's device...
        assert!(refused_at_insert(
            &mut log,
            3,
            &[revoke],
            Action::Remove { member: device(2) }
        ));
        // ...and what the lost laptop did concurrently with its revocation
        // does not count: here, linking one more device.
        op(&mut log, 4, &[five], link(7, Role::Editor));
        assert_eq!(
            log.membership().role(&device(7)),
            None,
            "the lost laptop's link counted"
        );
        // The creator's own laptop, an owner senior to owner 2, is revoked
        // by the creator: the same person, whatever the seniority.
        let (mut log, head) = team();
        let laptop = op(&mut log, 1, &[head], link(8, Role::Owner));
        op(&mut log, 1, &[laptop], Action::Remove { member: device(8) });
        assert_eq!(log.membership().role(&device(8)), None);
        assert_eq!(log.membership().role(&device(1)), Some(Role::Owner));
    }
}
