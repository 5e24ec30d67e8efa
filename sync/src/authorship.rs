//! Signed authorship: a device vouches for its own
//! changes to a document by signing the hashes of its latest ones. A change's
//! hash covers the hashes it depends on, so one signature over an author's
//! latest change covers every earlier change of that author it descends from:
//! checking a whole 260k-change note costs one signature per author, not one
//! per change.
//!
//! `Attestation` is that signed statement (document, author, heads); `check`
//! decides, for changes about to be applied, whether each one's claimed
//! author — the node id its actor id starts with — vouched for it. A change
//! nobody vouched for, or vouched for by someone other than the device its
//! actor names, is refused with both names, so "edited by" cannot be forged.
//! No I/O; the check itself sees only each change's hash, actor and
//! dependencies (`ChangeNode`, made from an Automerge change).
//!
//! Changes made before Peernotes signed them (by a device that has not
//! signed anything in the document since) can be vouched for by a *legacy*
//! attestation: one an owner of the space signs, once, over what its store
//! held when it upgraded. The caller says who may vouch that way; what is
//! accepted so is reported as legacy, for "edited by" to mark.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device's node id bytes.
pub type DeviceKey = [u8; 32];
/// A change's hash.
pub type ChangeHash = [u8; 32];

/// Most heads one attestation may name.
pub const MAX_HEADS: usize = 1024;

const SIGNING_CONTEXT: &[u8] = b"peernotes authorship v1\0";
const LEGACY_CONTEXT: &[u8] = b"peernotes legacy authorship v1\0";

/// "These are my latest changes to this document", signed by the author; or,
/// when `legacy`, "this is what my store held of it before changes were
/// signed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub doc: String,
    pub author: DeviceKey,
    pub heads: Vec<ChangeHash>,
    pub legacy: bool,
    #[serde(with = "crate::signature")]
    signature: [u8; 64],
}

impl Attestation {
    /// Signs `heads` (the author's latest changes to `doc`) with its device key.
    pub fn sign(doc: &str, key: &[u8; 32], heads: Vec<ChangeHash>) -> Attestation {
        Attestation::signed(doc, key, heads, false)
    }

    /// Signs `heads` as what this device's store held of `doc` when it
    /// upgraded, for the unsigned changes in their past.
    pub fn sign_legacy(doc: &str, key: &[u8; 32], heads: Vec<ChangeHash>) -> Attestation {
        Attestation::signed(doc, key, heads, true)
    }

    fn signed(doc: &str, key: &[u8; 32], mut heads: Vec<ChangeHash>, legacy: bool) -> Attestation {
        heads.sort();
        heads.dedup();
        let signing = SigningKey::from_bytes(key);
        let author = signing.verifying_key().to_bytes();
        let signature = signing
            .sign(&signed_bytes(doc, &author, &heads, legacy))
            .to_bytes();
        Attestation {
            doc: doc.to_string(),
            author,
            heads,
            legacy,
            signature,
        }
    }

    /// Checks the signature against the author's key.
    pub fn verify(&self) -> Result<()> {
        if self.heads.len() > MAX_HEADS {
            return Err(Error::Invalid("an attestation names too many heads".into()));
        }
        let key = VerifyingKey::from_bytes(&self.author)
            .map_err(|_| Error::Invalid("an attestation's author is not a device key".into()))?;
        key.verify(
            &signed_bytes(&self.doc, &self.author, &self.heads, self.legacy),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Error::Invalid("an attestation's signature does not verify".into()))
    }
}

fn signed_bytes(doc: &str, author: &DeviceKey, heads: &[ChangeHash], legacy: bool) -> Vec<u8> {
    let mut bytes = if legacy {
        LEGACY_CONTEXT.to_vec()
    } else {
        SIGNING_CONTEXT.to_vec()
    };
    bytes.extend_from_slice(&(doc.len() as u32).to_be_bytes());
    bytes.extend_from_slice(doc.as_bytes());
    bytes.extend_from_slice(author);
    for head in heads {
        bytes.extend_from_slice(head);
    }
    bytes
}

/// One change about to be applied, as far as authorship is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNode {
    pub hash: ChangeHash,
    /// The change's actor id; its first 32 bytes name the authoring device.
    pub actor: Vec<u8>,
    pub deps: Vec<ChangeHash>,
}

impl ChangeNode {
    /// The device the actor id names, if it names one.
    pub fn author(&self) -> Option<DeviceKey> {
        self.actor.get(..32)?.try_into().ok()
    }
}

impl From<&automerge::Change> for ChangeNode {
    fn from(change: &automerge::Change) -> ChangeNode {
        ChangeNode {
            hash: change.hash().0,
            actor: change.actor_id().to_bytes().to_vec(),
            deps: change.deps().iter().map(|d| d.0).collect(),
        }
    }
}

impl From<&automerge::ChangeMetadata<'_>> for ChangeNode {
    fn from(meta: &automerge::ChangeMetadata<'_>) -> ChangeNode {
        ChangeNode {
            hash: meta.hash.0,
            actor: meta.actor.to_bytes().to_vec(),
            deps: meta.deps.iter().map(|d| d.0).collect(),
        }
    }
}

/// A change refused for its authorship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unvouched {
    pub change: ChangeHash,
    /// The device its actor id claims, if any.
    pub claimed: Option<DeviceKey>,
}

/// Most attestations checked per author in one set of changes. A device
/// keeps at most `MAX_KEPT_PER_AUTHOR` per author and sends those, so an
/// honest sender stays within it; the rest are ignored unchecked, so a peer
/// cannot make this device verify signatures for nothing. Legacy
/// attestations count against their signer's.
pub const MAX_CHECKED_PER_AUTHOR: usize = 4;
/// Most attestations a device keeps per author and document: the newest that
/// each vouched for something the others did not.
pub const MAX_KEPT_PER_AUTHOR: usize = 4;
/// Most signers whose offered attestations one check verifies and walks
/// from: each walk may visit the whole set, so this bounds what one frame
/// costs (a note written by more devices than this arrives by the sync
/// protocol, a few authors at a time, only if its messages stay within it).
pub const MAX_SIGNERS_PER_CHECK: usize = 64;

/// What `check` found about a set of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Changes no attestation by their claimed author vouches for.
    pub unvouched: Vec<Unvouched>,
    /// Changes accepted only through a legacy attestation.
    pub legacy: Vec<ChangeHash>,
    /// Offered attestations that verified and vouched for a change of the set
    /// that nothing kept did: to keep and pass on with those changes.
    pub newer: Vec<Attestation>,
}

/// What a device already holds that `check` trusts as it is: heads from
/// attestations it verified earlier, by author, and from legacy ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub signed: BTreeMap<DeviceKey, Vec<ChangeHash>>,
    pub legacy: Vec<ChangeHash>,
}

/// Which of `changes` (new to `doc` here) are vouched for by their claimed
/// author. `offered` came with the changes and are verified here: at most
/// `MAX_CHECKED_PER_AUTHOR` per signer, from at most `MAX_SIGNERS_PER_CHECK`
/// signers; any for another document, by a device
/// that wrote none of the set (or, for a legacy one, that `may_vouch_legacy`
/// refuses), or past that limit, are ignored unchecked. `known` is trusted as
/// it is. A change is vouched for when a head attested by the device its
/// actor names is the change or descends from it through `changes`. One not
/// vouched for that way is accepted as legacy when a legacy head descends
/// from it, its author has signed nothing in the document, and its author is
/// not `me` (this device knows its own changes). Walks also pass through
/// `through`: changes vouched for before that wait for their dependencies
/// (a change the sync protocol sends again, after a gap, may descend to its
/// author's heads only through them). Cost: at most `MAX_CHECKED_PER_AUTHOR`
/// signature checks and walks per signer, and one walk more per author.
pub fn check(
    doc: &str,
    changes: &[ChangeNode],
    through: &[ChangeNode],
    offered: &[Attestation],
    known: &Known,
    may_vouch_legacy: &dyn Fn(&DeviceKey) -> bool,
    me: Option<DeviceKey>,
) -> Checked {
    let by_hash: HashMap<ChangeHash, &ChangeNode> =
        through.iter().chain(changes).map(|c| (c.hash, c)).collect();
    let authors: BTreeSet<DeviceKey> = changes.iter().filter_map(|c| c.author()).collect();
    let mut vouched: BTreeSet<ChangeHash> = BTreeSet::new();
    let vouch = |author: &DeviceKey, heads: &[ChangeHash], vouched: &mut BTreeSet<ChangeHash>| {
        let mut any = false;
        walk(&by_hash, heads, |change| {
            if change.author().as_ref() == Some(author) && vouched.insert(change.hash) {
                any = true;
            }
        });
        any
    };
    let mut signers: BTreeSet<DeviceKey> = BTreeSet::new();
    for author in &authors {
        if let Some(heads) = known.signed.get(author) {
            signers.insert(*author);
            vouch(author, heads, &mut vouched);
        }
    }
    let mut checked: BTreeMap<DeviceKey, usize> = BTreeMap::new();
    let mut newer = Vec::new();
    let mut legacy_offered = Vec::new();
    for attestation in offered {
        let wanted = if attestation.legacy {
            may_vouch_legacy(&attestation.author)
        } else {
            authors.contains(&attestation.author)
        };
        if !wanted || attestation.doc != doc {
            continue;
        }
        if !checked.contains_key(&attestation.author) && checked.len() >= MAX_SIGNERS_PER_CHECK {
            continue;
        }
        let count = checked.entry(attestation.author).or_default();
        if *count >= MAX_CHECKED_PER_AUTHOR {
            continue;
        }
        *count += 1;
        if attestation.verify().is_err() {
            continue;
        }
        if attestation.legacy {
            legacy_offered.push(attestation);
            continue;
        }
        signers.insert(attestation.author);
        if vouch(&attestation.author, &attestation.heads, &mut vouched) {
            newer.push(attestation.clone());
        }
    }
    // What is left, made before signing by devices that signed nothing here.
    let mut legacy: BTreeSet<ChangeHash> = BTreeSet::new();
    let take_legacy = |heads: &[ChangeHash], legacy: &mut BTreeSet<ChangeHash>| {
        let mut any = false;
        walk(&by_hash, heads, |change| {
            let unsigned = change
                .author()
                .is_some_and(|a| !signers.contains(&a) && Some(a) != me);
            if unsigned && !vouched.contains(&change.hash) && legacy.insert(change.hash) {
                any = true;
            }
        });
        any
    };
    take_legacy(&known.legacy, &mut legacy);
    for attestation in legacy_offered {
        if take_legacy(&attestation.heads, &mut legacy) {
            newer.push(attestation.clone());
        }
    }
    vouched.extend(legacy.iter().copied());
    let unvouched = changes
        .iter()
        .filter(|c| !vouched.contains(&c.hash))
        .map(|c| Unvouched {
            change: c.hash,
            claimed: c.author(),
        })
        .collect();
    Checked {
        unvouched,
        legacy: legacy.into_iter().collect(),
        newer,
    }
}

/// Calls `visit` on each change of `by_hash` that `heads` are or descend
/// from through `by_hash`, once each.
fn walk<'a>(
    by_hash: &HashMap<ChangeHash, &'a ChangeNode>,
    heads: &[ChangeHash],
    mut visit: impl FnMut(&'a ChangeNode),
) {
    let mut seen: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut stack: Vec<ChangeHash> = heads.to_vec();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let Some(change) = by_hash.get(&hash) else {
            continue;
        };
        visit(change);
        stack.extend(change.deps.iter().copied());
    }
}

/// Which of `changes` are not vouched for through `attestations` alone.
pub fn unvouched(
    doc: &str,
    changes: &[ChangeNode],
    attestations: &[Attestation],
) -> Vec<Unvouched> {
    check(
        doc,
        changes,
        &[],
        attestations,
        &Known::default(),
        &|_| false,
        None,
    )
    .unvouched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn device(n: u8) -> DeviceKey {
        SigningKey::from_bytes(&key(n)).verifying_key().to_bytes()
    }

    fn change(hash: u8, author: u8, deps: &[u8]) -> ChangeNode {
        let mut actor = device(author).to_vec();
        actor.push(1);
        ChangeNode {
            hash: [hash; 32],
            actor,
            deps: deps.iter().map(|d| [*d; 32]).collect(),
        }
    }

    #[test]
    fn one_signature_on_the_latest_change_vouches_for_the_whole_chain() {
        // Alice: 1 ← 2 ← 3; Bob: 4 on top of 2.
        let changes = vec![
            change(1, 1, &[]),
            change(2, 1, &[1]),
            change(3, 1, &[2]),
            change(4, 2, &[2]),
        ];
        let alice = Attestation::sign("note", &key(1), vec![[3; 32]]);
        let bob = Attestation::sign("note", &key(2), vec![[4; 32]]);
        assert_eq!(unvouched("note", &changes, &[alice.clone(), bob]), vec![]);
        // Without Bob's, only his change is refused, naming him.
        let refused = unvouched("note", &changes, &[alice]);
        assert_eq!(
            refused,
            vec![Unvouched {
                change: [4; 32],
                claimed: Some(device(2))
            }]
        );
    }

    #[test]
    fn real_automerge_changes_are_vouched_for_by_their_device() {
        use automerge::transaction::Transactable;
        use automerge::{ActorId, AutoCommit, ObjType, ROOT};
        let mut actor = device(1).to_vec();
        actor.push(0);
        let mut doc = AutoCommit::new().with_actor(ActorId::from(actor));
        let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
        for word in ["one ", "two ", "three"] {
            doc.splice_text(&text, 0, 0, word).unwrap();
            doc.commit();
        }
        let mut other = doc.fork().with_actor(ActorId::from(vec![7u8; 33]));
        other.splice_text(&text, 0, 0, "forged ").unwrap();
        other.commit();
        let changes: Vec<ChangeNode> = other
            .get_changes(&[])
            .iter()
            .map(ChangeNode::from)
            .collect();
        assert_eq!(changes.len(), 4);
        let heads: Vec<ChangeHash> = doc.get_heads().iter().map(|h| h.0).collect();
        let alice = Attestation::sign("note", &key(1), heads);
        let refused = unvouched("note", &changes, &[alice]);
        assert_eq!(
            refused.len(),
            1,
            "only the other actor's change: {refused:?}"
        );
        assert_eq!(refused[0].claimed, Some([7u8; 32]));
    }

    #[test]
    fn a_change_forged_under_another_devices_actor_is_refused() {
        // Mallory (3) makes change 5 with Alice's actor and vouches for it herself.
        let changes = vec![change(1, 1, &[]), change(5, 1, &[1])];
        let alice = Attestation::sign("note", &key(1), vec![[1; 32]]);
        let mallory = Attestation::sign("note", &key(3), vec![[5; 32]]);
        let refused = unvouched("note", &changes, &[alice, mallory]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].change, [5; 32]);
        assert_eq!(refused[0].claimed, Some(device(1)));
    }

    #[test]
    fn tampered_or_misdirected_attestations_vouch_for_nothing() {
        let changes = vec![change(1, 1, &[])];
        let mut tampered = Attestation::sign("note", &key(1), vec![[9; 32]]);
        tampered.heads = vec![[1; 32]];
        let elsewhere = Attestation::sign("other", &key(1), vec![[1; 32]]);
        assert!(tampered.verify().is_err());
        assert_eq!(unvouched("note", &changes, &[tampered, elsewhere]).len(), 1);
        let round_trip: Attestation = postcard::from_bytes(
            &postcard::to_stdvec(&Attestation::sign("note", &key(1), vec![[1; 32]])).unwrap(),
        )
        .unwrap();
        assert!(round_trip.verify().is_ok());
        assert_eq!(unvouched("note", &changes, &[round_trip]), vec![]);
    }

    #[test]
    fn an_owners_legacy_attestation_vouches_only_for_authors_who_never_signed() {
        // Carl (4) wrote 1 before signing existed; Bob (2) wrote 2 and has
        // signed it; the owner (1) vouches for both as legacy.
        let changes = vec![change(1, 4, &[]), change(2, 2, &[1])];
        let owner = Attestation::sign_legacy("note", &key(1), vec![[2; 32]]);
        let owner_only = |d: &DeviceKey| *d == device(1);
        let bob = Known {
            signed: BTreeMap::from([(device(2), vec![[9; 32]])]),
            legacy: Vec::new(),
        };
        let checked = check(
            "note",
            &changes,
            &[],
            std::slice::from_ref(&owner),
            &bob,
            &owner_only,
            None,
        );
        assert_eq!(checked.legacy, vec![[1; 32]], "Carl's change is legacy");
        assert_eq!(checked.unvouched.len(), 1, "Bob signs for himself");
        assert_eq!(checked.unvouched[0].claimed, Some(device(2)));
        assert_eq!(checked.newer, vec![owner.clone()]);
        // Nobody has signed: both are legacy.
        let none = Known::default();
        let checked = check(
            "note",
            &changes,
            &[],
            std::slice::from_ref(&owner),
            &none,
            &owner_only,
            None,
        );
        assert!(checked.unvouched.is_empty());
        assert_eq!(checked.legacy.len(), 2);
        // A device's own changes are never taken on someone's word.
        let checked = check(
            "note",
            &changes,
            &[],
            std::slice::from_ref(&owner),
            &none,
            &owner_only,
            Some(device(4)),
        );
        assert_eq!(checked.unvouched.len(), 1);
        assert_eq!(checked.unvouched[0].claimed, Some(device(4)));
        // A legacy attestation by someone who may not vouch is not even checked.
        let checked = check(
            "note",
            &changes,
            &[],
            std::slice::from_ref(&owner),
            &none,
            &|_| false,
            None,
        );
        assert_eq!(checked.unvouched.len(), 2);
        assert!(checked.newer.is_empty());
        // A legacy signature is not a normal one, nor the other way round.
        let mut forged = Attestation::sign("note", &key(1), vec![[2; 32]]);
        forged.legacy = true;
        assert!(forged.verify().is_err());
        let checked = check("note", &changes, &[], &[forged], &none, &owner_only, None);
        assert_eq!(checked.unvouched.len(), 2);
    }

    #[test]
    fn only_attestations_for_authors_of_the_set_are_checked_and_only_new_ones_kept() {
        let changes = vec![change(1, 1, &[])];
        let stale = Attestation::sign("note", &key(1), vec![[8; 32]]);
        let fresh = Attestation::sign("note", &key(1), vec![[1; 32]]);
        let stranger = Attestation::sign("note", &key(5), vec![[1; 32]]);
        let mut tampered = fresh.clone();
        tampered.heads = vec![[7; 32]];
        // The fifth of Alice's is past the limit and ignored unchecked.
        let checked = check(
            "note",
            &changes,
            &[],
            &[
                stranger,
                tampered.clone(),
                tampered.clone(),
                tampered,
                stale.clone(),
                fresh.clone(),
            ],
            &Known::default(),
            &|_| false,
            None,
        );
        assert_eq!(checked.unvouched.len(), 1, "fresh came after the limit");
        let checked = check(
            "note",
            &changes,
            &[],
            &[stale, fresh.clone()],
            &Known::default(),
            &|_| false,
            None,
        );
        assert!(checked.unvouched.is_empty());
        assert_eq!(checked.newer, vec![fresh], "the stale one is not kept");
    }

    #[test]
    fn one_check_walks_from_a_bounded_number_of_signers() {
        // A chain of changes, each by another device that signs its own.
        let n = MAX_SIGNERS_PER_CHECK as u8 + 1;
        let changes: Vec<ChangeNode> = (1..=n)
            .map(|i| {
                let deps: Vec<u8> = (i > 1).then(|| i - 1).into_iter().collect();
                change(i, i, &deps)
            })
            .collect();
        let offered: Vec<Attestation> = (1..=n)
            .map(|i| Attestation::sign("note", &key(i), vec![[i; 32]]))
            .collect();
        let checked = check(
            "note",
            &changes,
            &[],
            &offered,
            &Known::default(),
            &|_| false,
            None,
        );
        assert_eq!(checked.unvouched.len(), 1, "only the signer past the limit");
        assert_eq!(checked.unvouched[0].claimed, Some(device(n)));
        assert_eq!(checked.newer.len(), MAX_SIGNERS_PER_CHECK);
    }
}
