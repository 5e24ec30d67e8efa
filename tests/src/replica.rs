//! `DocReplica`: the documents of one space as plain Automerge documents, for
//! tests that drive `Session`s without a `Node` (the protocol simulation's
//! peers, a member in the fuzz). It signs nothing and checks no
//! attestations: authorship is the `Node`'s, tested over iroh.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::{self, SyncDoc};
use automerge::AutoCommit;
use peernotes_sync::protocol::frame::{Attestation, DocKey, Hash, SpaceKey};
use peernotes_sync::protocol::{Replicas, SavedDocument};

pub struct DocReplica {
    pub space: SpaceKey,
    pub docs: BTreeMap<DocKey, AutoCommit>,
    /// Which documents are sent whole to a peer that has none of them (the
    /// others go by the sync protocol).
    pub sends_whole: fn(&DocKey) -> bool,
}

impl DocReplica {
    pub fn new(space: SpaceKey, sends_whole: fn(&DocKey) -> bool) -> DocReplica {
        DocReplica {
            space,
            docs: BTreeMap::new(),
            sends_whole,
        }
    }

    /// Every document with its heads.
    pub fn heads(&mut self) -> BTreeMap<DocKey, Vec<Hash>> {
        self.docs
            .iter_mut()
            .map(|(k, d)| (k.clone(), d.get_heads().into_iter().map(|h| h.0).collect()))
            .collect()
    }
}

impl Replicas for DocReplica {
    fn shared_spaces(&self) -> BTreeSet<SpaceKey> {
        BTreeSet::from([self.space])
    }

    fn docs(&mut self, _space: &SpaceKey) -> BTreeMap<DocKey, Vec<Hash>> {
        self.heads()
    }

    fn generate_sync_message(
        &mut self,
        _space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
    ) -> Option<(sync::Message, Vec<Attestation>)> {
        let message = self
            .docs
            .entry(doc.clone())
            .or_default()
            .sync()
            .generate_sync_message(state)?;
        Some((message, Vec::new()))
    }

    fn receive_sync_message(
        &mut self,
        _space: &SpaceKey,
        doc: &DocKey,
        state: &mut sync::State,
        message: sync::Message,
        _attestations: &[Attestation],
    ) -> Result<(), String> {
        self.docs
            .entry(doc.clone())
            .or_default()
            .sync()
            .receive_sync_message(state, message)
            .map_err(|e| e.to_string())
    }

    fn saved_document(&mut self, _space: &SpaceKey, doc: &DocKey) -> Option<SavedDocument> {
        if !(self.sends_whole)(doc) {
            return None;
        }
        self.docs.get_mut(doc).map(|d| SavedDocument {
            saved: d.save(),
            heads: d.get_heads().into_iter().map(|h| h.0).collect(),
            attestations: Vec::new(),
        })
    }

    fn receive_document(
        &mut self,
        _space: &SpaceKey,
        doc: &DocKey,
        saved: &[u8],
        _attestations: &[Attestation],
    ) -> Result<Option<Vec<Hash>>, String> {
        let target = self.docs.entry(doc.clone()).or_default();
        let before = target.get_heads();
        target.load_incremental(saved).map_err(|e| e.to_string())?;
        let after = target.get_heads();
        Ok((after != before).then(|| after.into_iter().map(|h| h.0).collect()))
    }
}
