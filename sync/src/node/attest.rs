//! Signed authorship as this device keeps it (`authorship` has the rules):
//! per document, each author's newest attestation (and any owner's legacy
//! one), loaded from the store the first time a document needs them and
//! written by the group commit with the changes they vouch for. What this
//! device sends carries this device's attestation, signed when the
//! document's heads moved since the last one, the kept one of every other
//! author whose changes go with it, and the legacy ones. What arrives is
//! refused unless each change's claimed author vouched for it, or an owner
//! vouched for it as made before changes were signed.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{AutoCommit, ChangeHash};

use super::{decode_heads, State};
use crate::authorship::{self, Attestation, ChangeNode, DeviceKey, Known};
use crate::membership;
use crate::note::NoteId;
use crate::protocol::vet;
use crate::space::SpaceId;

/// Most changes remembered as waiting for their dependencies, per document.
const MAX_WAITING: usize = 100_000;

/// Kept attestations of one document: by author, and whether legacy, the
/// newest last (at most `authorship::MAX_KEPT_PER_AUTHOR`).
pub(super) type Kept = BTreeMap<(DeviceKey, bool), Vec<Attestation>>;

/// What `check_authorship` found: attestations to keep once the changes are
/// applied, and how many changes were accepted as legacy.
pub(super) struct Vouched {
    pub(super) newer: Vec<Attestation>,
    pub(super) legacy: usize,
}

impl State {
    /// The attestations kept for `doc` (loaded the first time).
    fn kept(&mut self, doc: &str) -> &mut Kept {
        if !self.attestations.contains_key(doc) {
            let kept = match self.store.attestations(doc) {
                Ok(rows) => rows
                    .iter()
                    .filter_map(|bytes| postcard::from_bytes::<Vec<Attestation>>(bytes).ok())
                    .filter_map(|list| {
                        let first = list.first()?;
                        let key = (first.author, first.legacy);
                        let list: Vec<Attestation> = list
                            .into_iter()
                            .filter(|a| a.doc == doc && (a.author, a.legacy) == key)
                            .collect();
                        Some((key, list))
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(doc, "cannot read attestations: {e}");
                    Kept::new()
                }
            };
            self.attestations.insert(doc.to_string(), kept);
        }
        self.attestations.get_mut(doc).expect("inserted above")
    }

    /// This device as an author, if it can sign (a writer).
    pub(super) fn own_device(&self) -> Option<DeviceKey> {
        self.author_key().map(|(_, mine)| mine)
    }

    /// This device's key and its author key (its node id's bytes), if it
    /// can sign (a writer).
    fn author_key(&self) -> Option<([u8; 32], DeviceKey)> {
        Some((self.key?, membership::device_key(&self.node_id)?))
    }

    /// What to send with changes of `doc` by `authors` (`None`: any author
    /// may be among them): an attestation by each of those authors this
    /// device has one of — its own over its latest change (`own_attestation`)
    /// — and every legacy one kept. `owner`: this device may vouch for the
    /// document's unsigned past, and does once, over what its store held at
    /// upgrade.
    pub(super) fn attestations_for(
        &mut self,
        doc: &str,
        authors: Option<&BTreeSet<DeviceKey>>,
        owner: bool,
    ) -> Vec<Attestation> {
        let named = |author: &DeviceKey| authors.is_none_or(|set| set.contains(author));
        let me = self.author_key();
        let mut out = Vec::new();
        if let Some((key, mine)) = me {
            if named(&mine) {
                out.extend(self.own_attestation(doc));
            }
            if owner {
                out.extend(self.own_legacy_attestation(doc, key, mine));
            }
        }
        let kept = self.kept(doc);
        out.extend(
            kept.iter()
                .filter(|((author, legacy), _)| {
                    let mine = me.is_some_and(|(_, mine)| *author == mine);
                    if *legacy {
                        !(mine && owner)
                    } else {
                        !mine && named(author)
                    }
                })
                .flat_map(|(_, list)| list.iter().cloned()),
        );
        out
    }

    /// A document this device holds in memory that it may have written: a
    /// note in use, or a space's index.
    fn own_doc(&mut self, doc: &str) -> Option<&mut AutoCommit> {
        match DocRef::parse(doc)? {
            DocRef::Index(id) => self.spaces.get_mut(&id).map(|open| open.space.doc_mut()),
            DocRef::Note(id) => self.open.peek_mut(&id).map(|open| open.note.doc_mut()),
        }
    }

    /// This device's attestation of `doc` as it holds it: a signature over
    /// the document's heads covers every change of its own in their past
    /// (the window's too: their actors start with this device's node id),
    /// through their hashes. The newest kept one if it names those heads,
    /// else one signed now and kept. For a document not in memory, the newest
    /// kept one (every change this device commits is signed by the group
    /// commit). `None` if this device cannot sign.
    pub(super) fn own_attestation(&mut self, doc: &str) -> Option<Attestation> {
        let (key, mine) = self.author_key()?;
        let newest = |st: &mut State| {
            st.kept(doc)
                .get(&(mine, false))
                .and_then(|list| list.last().cloned())
        };
        let Some(target) = self.own_doc(doc) else {
            return newest(self);
        };
        let mut heads: Vec<[u8; 32]> = target.get_heads().iter().map(|h| h.0).collect();
        heads.sort();
        if heads.is_empty() {
            return None;
        }
        if let Some(kept) = newest(self) {
            if kept.heads == heads {
                return Some(kept);
            }
        }
        let signed = Attestation::sign(doc, &key, heads);
        self.keep(doc, signed.clone());
        Some(signed)
    }

    /// Whether this device has an attestation kept for `doc`.
    pub(super) fn has_own_attestation(&mut self, doc: &str) -> bool {
        match self.author_key() {
            Some((_, mine)) => self.kept(doc).contains_key(&(mine, false)),
            None => false,
        }
    }

    /// This device's legacy attestation of `doc` (what its store held when
    /// it upgraded to signed authorship), signed the first time it is
    /// needed; `None` if the document did not exist here then.
    fn own_legacy_attestation(
        &mut self,
        doc: &str,
        key: [u8; 32],
        mine: DeviceKey,
    ) -> Option<Attestation> {
        if let Some(kept) = self.kept(doc).get(&(mine, true)).and_then(|l| l.last()) {
            return Some(kept.clone());
        }
        if self.no_legacy.contains(doc) {
            return None;
        }
        let heads = match self.store.legacy_heads(doc) {
            Ok(Some(heads)) if !heads.is_empty() => heads,
            Ok(_) => {
                self.no_legacy.insert(doc.to_string());
                return None;
            }
            Err(e) => {
                tracing::warn!(doc, "cannot read what the document was at upgrade: {e}");
                return None;
            }
        };
        let signed = Attestation::sign_legacy(doc, &key, decode_heads(&heads));
        self.keep(doc, signed.clone());
        Some(signed)
    }

    /// Keeps `attestation` as its author's newest word on `doc`: with at most
    /// `MAX_KEPT_PER_AUTHOR - 1` older ones of the same author. This
    /// device's own, and a legacy one, replace what was kept.
    fn keep(&mut self, doc: &str, attestation: Attestation) {
        let key = (attestation.author, attestation.legacy);
        let alone = attestation.legacy || self.own_device() == Some(attestation.author);
        let list = self.kept(doc).entry(key).or_default();
        if alone {
            list.clear();
        }
        list.retain(|a| *a != attestation);
        list.push(attestation);
        let excess = list.len().saturating_sub(authorship::MAX_KEPT_PER_AUTHOR);
        list.drain(..excess);
        let list = list.clone();
        self.new_attestations.insert((doc.to_string(), key), list);
    }

    /// Keeps the attestations `check_authorship` found newer.
    pub(super) fn keep_newer(&mut self, doc: &str, newer: Vec<Attestation>) {
        for attestation in newer {
            self.keep(doc, attestation);
        }
    }

    /// Refuses `new` (changes to `doc` this device does not have yet) unless
    /// each one is vouched for by the device its actor names, through
    /// `offered` or an attestation kept from before, or as legacy by a device
    /// `may_vouch_legacy` allows. The error names the first change refused and
    /// the author it claimed.
    pub(super) fn check_authorship(
        &mut self,
        doc: &str,
        new: &[ChangeNode],
        offered: &[Attestation],
        may_vouch_legacy: &dyn Fn(&DeviceKey) -> bool,
    ) -> std::result::Result<Vouched, String> {
        if new.is_empty() {
            return Ok(Vouched {
                newer: Vec::new(),
                legacy: 0,
            });
        }
        let mut known = Known::default();
        for ((author, legacy), list) in self.kept(doc).iter() {
            let heads = list.iter().flat_map(|a| a.heads.iter().copied());
            if *legacy {
                known.legacy.extend(heads);
            } else {
                known.signed.entry(*author).or_default().extend(heads);
            }
        }
        let me = self.author_key().map(|(_, mine)| mine);
        let through: Vec<ChangeNode> = self
            .waiting
            .get(doc)
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        let checked = authorship::check(doc, new, &through, offered, &known, may_vouch_legacy, me);
        if let Some(refused) = checked.unvouched.first() {
            let claimed = refused
                .claimed
                .map(|d| membership::hex(&d[..6]))
                .unwrap_or_else(|| "no device".into());
            return Err(format!(
                "change {} claims to be by device {claimed}, which did not sign it{}",
                membership::hex(&refused.change[..4]),
                match checked.unvouched.len() {
                    1 => String::new(),
                    n => format!(" ({} more changes refused with it)", n - 1),
                },
            ));
        }
        Ok(Vouched {
            newer: checked.newer,
            legacy: checked.legacy.len(),
        })
    }

    /// Takes out of the next group commit the attestations of documents
    /// still arriving (held per peer until they become a note or an index),
    /// to put back after it; and forgets those of documents that are
    /// neither held nor arriving, which are never stored, so a peer cannot
    /// fill the disk with them.
    pub(super) fn take_unwritten_attestations(
        &mut self,
    ) -> BTreeMap<(String, (DeviceKey, bool)), Vec<Attestation>> {
        let pending: BTreeSet<String> = self
            .new_attestations
            .keys()
            .map(|(d, _)| d.clone())
            .collect();
        let mut arriving = BTreeMap::new();
        for doc in pending {
            if self.holds_doc(&doc) {
                continue;
            }
            let keep = self.is_arriving(&doc);
            let taken: Vec<_> = self
                .new_attestations
                .keys()
                .filter(|(d, _)| *d == doc)
                .cloned()
                .collect();
            for key in taken {
                if let Some(list) = self.new_attestations.remove(&key) {
                    if keep {
                        arriving.insert(key, list);
                    }
                }
            }
            if !keep {
                self.attestations.remove(&doc);
            }
        }
        arriving
    }

    /// Whether `doc` is arriving from some peer, not whole yet.
    fn is_arriving(&self, doc: &str) -> bool {
        self.incoming
            .values()
            .any(|slots| slots.keys().any(|(_, key)| key == doc))
    }

    /// Whether `doc` is a space's index or a note this device holds.
    fn holds_doc(&self, doc: &str) -> bool {
        match DocRef::parse(doc) {
            Some(DocRef::Index(id)) => self.spaces.contains_key(&id),
            Some(DocRef::Note(id)) => matches!(self.note_space(&id), Ok(Some(_))),
            None => false,
        }
    }

    /// Whether a note's latest change, by `author` (a node id), is shown
    /// unverified: by another device that has signed nothing in it here.
    pub(super) fn unverified_author(&mut self, doc: &str, author: &str) -> bool {
        if author.is_empty() || author == self.node_id {
            return false;
        }
        let Some(device) = membership::device_key(author) else {
            return false;
        };
        !self.kept(doc).contains_key(&(device, false))
    }
}

/// What a document key names: a space's index (`SpaceId::doc_key`) or a note.
enum DocRef {
    Index(SpaceId),
    Note(NoteId),
}

impl DocRef {
    fn parse(doc: &str) -> Option<DocRef> {
        match doc.strip_prefix("space-") {
            Some(id) => id.parse().ok().map(DocRef::Index),
            None => doc.parse().ok().map(DocRef::Note),
        }
    }
}

/// The devices Automerge chunks (changes, or a saved document) name as
/// actors; `None` if that cannot be told without inflating them.
pub(super) fn authors_in<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Option<BTreeSet<DeviceKey>> {
    let mut authors = BTreeSet::new();
    for chunk in chunks {
        for actor in vet::actors_named(chunk)? {
            if let Some(device) = actor.get(..32).and_then(|d| d.try_into().ok()) {
                authors.insert(device);
            }
        }
    }
    Some(authors)
}

/// The changes of `changes` that `target` does not have yet, as authorship
/// sees them.
pub(super) fn new_to(target: &mut AutoCommit, changes: &[ChangeNode]) -> Vec<ChangeNode> {
    changes
        .iter()
        .filter(|c| {
            target
                .get_change_meta_by_hash(&ChangeHash(c.hash))
                .is_none()
        })
        .cloned()
        .collect()
}

/// Which changes still wait in `target` for their dependencies: those that
/// waited before and `new` (vouched for, just given to it), less those it
/// has now applied.
pub(super) fn still_waiting(
    mut waiting: BTreeMap<[u8; 32], ChangeNode>,
    target: &mut AutoCommit,
    new: &[ChangeNode],
) -> BTreeMap<[u8; 32], ChangeNode> {
    for change in new {
        waiting.insert(change.hash, change.clone());
    }
    waiting.retain(|hash, _| target.get_change_meta_by_hash(&ChangeHash(*hash)).is_none());
    if waiting.len() > MAX_WAITING {
        // Beyond what an honest peer leaves waiting: what goes is checked
        // again when it is sent again.
        let keep: BTreeMap<[u8; 32], ChangeNode> = waiting.into_iter().take(MAX_WAITING).collect();
        return keep;
    }
    waiting
}
