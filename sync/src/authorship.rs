//! Signed authorship (not yet wired into sync): a device vouches for its own
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

/// "These are my latest changes to this document", signed by the author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub doc: String,
    pub author: DeviceKey,
    pub heads: Vec<ChangeHash>,
    #[serde(with = "crate::signature")]
    signature: [u8; 64],
}

impl Attestation {
    /// Signs `heads` (the author's latest changes to `doc`) with its device key.
    pub fn sign(doc: &str, key: &[u8; 32], mut heads: Vec<ChangeHash>) -> Attestation {
        heads.sort();
        heads.dedup();
        let signing = SigningKey::from_bytes(key);
        let author = signing.verifying_key().to_bytes();
        let signature = signing.sign(&signed_bytes(doc, &author, &heads)).to_bytes();
        Attestation {
            doc: doc.to_string(),
            author,
            heads,
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
            &signed_bytes(&self.doc, &self.author, &self.heads),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Error::Invalid("an attestation's signature does not verify".into()))
    }
}

fn signed_bytes(doc: &str, author: &DeviceKey, heads: &[ChangeHash]) -> Vec<u8> {
    let mut bytes = SIGNING_CONTEXT.to_vec();
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

/// A change refused for its authorship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unvouched {
    pub change: ChangeHash,
    /// The device its actor id claims, if any.
    pub claimed: Option<DeviceKey>,
}

/// Which of `changes` (for `doc`) are not vouched for by their claimed author
/// through `attestations`. Attestations that fail their signature, or are for
/// another document, are ignored. A change is vouched for when an attestation
/// by the device its actor names has a head that is the change or descends
/// from it through `changes`. Cost: one signature check per attestation and
/// one walk over `changes` per author.
pub fn unvouched(
    doc: &str,
    changes: &[ChangeNode],
    attestations: &[Attestation],
) -> Vec<Unvouched> {
    let by_hash: HashMap<ChangeHash, &ChangeNode> = changes.iter().map(|c| (c.hash, c)).collect();
    let mut heads_by_author: BTreeMap<DeviceKey, Vec<ChangeHash>> = BTreeMap::new();
    for attestation in attestations {
        if attestation.doc == doc && attestation.verify().is_ok() {
            heads_by_author
                .entry(attestation.author)
                .or_default()
                .extend(attestation.heads.iter().copied());
        }
    }
    let mut vouched: BTreeSet<ChangeHash> = BTreeSet::new();
    for (author, heads) in &heads_by_author {
        // Walk back from the author's attested heads through the new changes.
        let mut seen: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut stack: Vec<ChangeHash> = heads.clone();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) {
                continue;
            }
            let Some(change) = by_hash.get(&hash) else {
                continue;
            };
            if change.author().as_ref() == Some(author) {
                vouched.insert(hash);
            }
            stack.extend(change.deps.iter().copied());
        }
    }
    changes
        .iter()
        .filter(|c| !vouched.contains(&c.hash))
        .map(|c| Unvouched {
            change: c.hash,
            claimed: c.author(),
        })
        .collect()
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
}
