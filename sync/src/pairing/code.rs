//! Pairing by short code, for two devices on the same LAN: `7-amber-falcon`.
//!
//! The number (the "nameplate") is public: the inviter announces it over mDNS so
//! the joiner can find it. The whole code is the password of a SPAKE2 exchange
//! bound to both devices' node ids (which QUIC has already authenticated), and
//! each side proves it derived the same key before anything else is said. A
//! wrong code therefore fails on both sides and teaches an attacker nothing but
//! that one guess was wrong — and a code offer is spent by the first exchange
//! that starts (`Offer::begin_code_exchange`), so there is no second guess.
//! Everything here is sans-io.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::error::{Error, Result};

/// The highest nameplate: codes start with a number from 1 to this.
const MAX_NAMEPLATE: u16 = 999;
/// What an inviter's mDNS announcement says, followed by its nameplate.
const ANNOUNCE_PREFIX: &str = "peernotes-invite=";

/// A short pairing code: a public nameplate and two secret words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortCode {
    pub nameplate: u16,
    words: [u16; 2],
}

impl ShortCode {
    pub fn generate() -> Result<ShortCode> {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Invalid(format!("no randomness for a code: {e}")))?;
        let nameplate = 1 + u16::from_le_bytes([bytes[0], bytes[1]]) % MAX_NAMEPLATE;
        Ok(ShortCode {
            nameplate,
            words: [bytes[2] as u16, bytes[3] as u16],
        })
    }

    /// Reads a code as a person types it: spaces or dashes, any case.
    pub fn parse(text: &str) -> Result<ShortCode> {
        let bad = || {
            Error::Invalid(format!(
                "`{}` is not a pairing code: it looks like 7-amber-falcon",
                text.trim()
            ))
        };
        let normalised = text.trim().to_ascii_lowercase().replace([' ', '_'], "-");
        let parts: Vec<&str> = normalised.split('-').filter(|p| !p.is_empty()).collect();
        let [number, first, second] = parts[..] else {
            return Err(bad());
        };
        let nameplate: u16 = number.parse().map_err(|_| bad())?;
        if nameplate == 0 || nameplate > MAX_NAMEPLATE {
            return Err(bad());
        }
        let word = |w: &str| {
            WORDS
                .iter()
                .position(|known| *known == w)
                .map(|i| i as u16)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "`{w}` is not a word used in pairing codes: check the spelling"
                    ))
                })
        };
        Ok(ShortCode {
            nameplate,
            words: [word(first)?, word(second)?],
        })
    }

    /// What the inviter announces over mDNS: the nameplate only.
    pub fn announcement(&self) -> String {
        format!("{ANNOUNCE_PREFIX}{}", self.nameplate)
    }

    /// Whether an mDNS announcement is an inviter waiting for this code.
    pub fn matches_announcement(&self, announcement: &str) -> bool {
        announcement == self.announcement()
    }
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate, WORDS[self.words[0] as usize], WORDS[self.words[1] as usize]
        )
    }
}

/// The joiner's half of the exchange.
pub struct JoinerExchange {
    spake: Spake2<Ed25519Group>,
}

/// The inviter's half, after it has answered the joiner's first message.
pub struct InviterExchange {
    key: Vec<u8>,
}

impl JoinerExchange {
    /// Starts the exchange; the message goes to the inviter.
    pub fn start(
        code: &ShortCode,
        joiner: &[u8; 32],
        inviter: &[u8; 32],
    ) -> (JoinerExchange, Vec<u8>) {
        let (spake, message) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.to_string().as_bytes()),
            &Identity::new(joiner),
            &Identity::new(inviter),
        );
        (JoinerExchange { spake }, message)
    }

    /// Checks the inviter's reply. On success returns the joiner's proof for the
    /// inviter; on failure the code was wrong (or the peer is not the inviter).
    pub fn finish(self, inviter_message: &[u8], inviter_proof: &[u8; 32]) -> Result<[u8; 32]> {
        let wrong = || {
            Error::Pairing("the code is wrong, or it was already used: ask for a new one".into())
        };
        let key = self.spake.finish(inviter_message).map_err(|_| wrong())?;
        if !verify(&key, INVITER_LABEL, inviter_proof) {
            return Err(wrong());
        }
        Ok(proof(&key, JOINER_LABEL))
    }
}

impl InviterExchange {
    /// Answers the joiner's first message: returns the exchange, the inviter's
    /// message and its proof of the key.
    pub fn respond(
        code: &ShortCode,
        joiner: &[u8; 32],
        inviter: &[u8; 32],
        joiner_message: &[u8],
    ) -> Result<(InviterExchange, Vec<u8>, [u8; 32])> {
        let (spake, message) = Spake2::<Ed25519Group>::start_b(
            &Password::new(code.to_string().as_bytes()),
            &Identity::new(joiner),
            &Identity::new(inviter),
        );
        let key = spake
            .finish(joiner_message)
            .map_err(|_| Error::Pairing("the joiner's pairing message is malformed".into()))?;
        let proof = proof(&key, INVITER_LABEL);
        Ok((InviterExchange { key }, message, proof))
    }

    /// Whether the joiner proved it knows the code.
    pub fn check(&self, joiner_proof: &[u8; 32]) -> bool {
        verify(&self.key, JOINER_LABEL, joiner_proof)
    }
}

const INVITER_LABEL: &[u8] = b"peernotes pairing: inviter";
const JOINER_LABEL: &[u8] = b"peernotes pairing: joiner";

fn proof(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison, through the MAC's own verifier.
fn verify(key: &[u8], label: &[u8], claimed: &[u8; 32]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.verify_slice(claimed).is_ok()
}

/// 256 short, distinct, easy-to-say words: each word of a code carries 8 bits.
const WORDS: [&str; 256] = [
    "acorn",
    "adobe",
    "agent",
    "alarm",
    "album",
    "alloy",
    "amber",
    "anchor",
    "angle",
    "anvil",
    "apple",
    "apron",
    "arbor",
    "arrow",
    "aspen",
    "atlas",
    "autumn",
    "badge",
    "badger",
    "bagel",
    "baker",
    "bamboo",
    "banjo",
    "barley",
    "basil",
    "beacon",
    "beetle",
    "berry",
    "birch",
    "biscuit",
    "bison",
    "blaze",
    "bloom",
    "border",
    "bramble",
    "breeze",
    "brick",
    "bridge",
    "bronze",
    "cabin",
    "cactus",
    "camel",
    "candle",
    "canoe",
    "canyon",
    "carbon",
    "cargo",
    "cedar",
    "cello",
    "chalk",
    "cherry",
    "chestnut",
    "cider",
    "circle",
    "citrus",
    "clover",
    "cobalt",
    "cobra",
    "comet",
    "condor",
    "copper",
    "coral",
    "cotton",
    "crane",
    "crater",
    "cricket",
    "crystal",
    "cypress",
    "dagger",
    "daisy",
    "delta",
    "desert",
    "dingo",
    "dolphin",
    "dove",
    "dragon",
    "drum",
    "dune",
    "eagle",
    "ember",
    "emerald",
    "engine",
    "falcon",
    "feather",
    "fennel",
    "fern",
    "ferry",
    "fiddle",
    "flannel",
    "flint",
    "forest",
    "fossil",
    "fox",
    "frost",
    "galaxy",
    "garden",
    "garnet",
    "gazelle",
    "gecko",
    "geyser",
    "ginger",
    "glacier",
    "globe",
    "goblet",
    "granite",
    "grape",
    "gravel",
    "hammock",
    "harbor",
    "harp",
    "hazel",
    "helmet",
    "heron",
    "hickory",
    "honey",
    "hornet",
    "husky",
    "igloo",
    "indigo",
    "iris",
    "island",
    "ivory",
    "jacket",
    "jade",
    "jaguar",
    "jasmine",
    "jelly",
    "jigsaw",
    "jungle",
    "juniper",
    "kayak",
    "kernel",
    "kestrel",
    "kettle",
    "kiwi",
    "koala",
    "ladder",
    "lagoon",
    "lantern",
    "larch",
    "lark",
    "lemon",
    "lentil",
    "lilac",
    "linen",
    "lion",
    "lizard",
    "llama",
    "lobster",
    "lotus",
    "lunar",
    "magnet",
    "mango",
    "maple",
    "marble",
    "marsh",
    "meadow",
    "meadowlark",
    "melon",
    "meteor",
    "mint",
    "mitten",
    "moose",
    "mosaic",
    "muffin",
    "nectar",
    "needle",
    "nickel",
    "noodle",
    "nutmeg",
    "oasis",
    "ocean",
    "olive",
    "onion",
    "opal",
    "orange",
    "orbit",
    "orchid",
    "otter",
    "owl",
    "oyster",
    "paddle",
    "panda",
    "papaya",
    "parrot",
    "pebble",
    "pelican",
    "pepper",
    "piano",
    "pine",
    "planet",
    "plum",
    "polar",
    "poppy",
    "prairie",
    "puffin",
    "quartz",
    "quill",
    "quiver",
    "rabbit",
    "radish",
    "raven",
    "reef",
    "rhubarb",
    "ribbon",
    "river",
    "robin",
    "rocket",
    "rose",
    "ruby",
    "saddle",
    "saffron",
    "salmon",
    "salsa",
    "sandal",
    "sapphire",
    "scarf",
    "seal",
    "sequoia",
    "shadow",
    "shell",
    "silver",
    "sketch",
    "sparrow",
    "spruce",
    "squid",
    "summit",
    "sunset",
    "swan",
    "tablet",
    "tango",
    "teapot",
    "thistle",
    "thunder",
    "tiger",
    "timber",
    "toast",
    "topaz",
    "tornado",
    "tulip",
    "tundra",
    "turtle",
    "umber",
    "valley",
    "velvet",
    "violet",
    "walnut",
    "walrus",
    "willow",
    "window",
    "winter",
    "wolf",
    "yarrow",
    "zebra",
    "zephyr",
    "zinc",
];

#[cfg(test)]
mod tests {
    use super::*;

    const JOINER: [u8; 32] = [1; 32];
    const INVITER: [u8; 32] = [2; 32];

    fn exchange(
        inviter_code: &ShortCode,
        joiner_code: &ShortCode,
    ) -> (Result<[u8; 32]>, Option<bool>) {
        let (joiner, first) = JoinerExchange::start(joiner_code, &JOINER, &INVITER);
        let (inviter, reply, proof) =
            InviterExchange::respond(inviter_code, &JOINER, &INVITER, &first).unwrap();
        match joiner.finish(&reply, &proof) {
            Ok(joiner_proof) => (Ok(joiner_proof), Some(inviter.check(&joiner_proof))),
            Err(e) => (Err(e), None),
        }
    }

    #[test]
    fn codes_round_trip_as_text_and_forgive_case_and_spaces() {
        for _ in 0..100 {
            let code = ShortCode::generate().unwrap();
            assert_eq!(ShortCode::parse(&code.to_string()).unwrap(), code);
            let shouted = code.to_string().to_uppercase().replace('-', " ");
            assert_eq!(ShortCode::parse(&format!(" {shouted} ")).unwrap(), code);
            assert!((1..=MAX_NAMEPLATE).contains(&code.nameplate));
        }
        let words: std::collections::HashSet<_> = WORDS.iter().collect();
        assert_eq!(words.len(), 256, "every word is distinct");
    }

    #[test]
    fn malformed_codes_are_refused_with_a_reason() {
        for bad in [
            "",
            "7",
            "7-amber",
            "0-amber-falcon",
            "1000-amber-falcon",
            "x-amber-falcon",
            "7-amber-falcon-extra",
        ] {
            let err = ShortCode::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not a pairing code"), "{bad}: {err}");
        }
        let err = ShortCode::parse("7-amber-falcoon").unwrap_err().to_string();
        assert!(err.contains("falcoon"), "{err}");
    }

    #[test]
    fn the_same_code_pairs_and_both_sides_agree() {
        let code = ShortCode::parse("7-amber-falcon").unwrap();
        let (joiner, inviter) = exchange(&code, &code);
        assert!(joiner.is_ok());
        assert_eq!(inviter, Some(true));
    }

    #[test]
    fn a_wrong_code_fails_on_the_joiners_side_before_it_proves_anything() {
        let right = ShortCode::parse("7-amber-falcon").unwrap();
        let wrong = ShortCode::parse("7-amber-fossil").unwrap();
        let (joiner, inviter) = exchange(&right, &wrong);
        let err = joiner.unwrap_err().to_string();
        assert!(err.contains("wrong"), "{err}");
        assert_eq!(inviter, None, "the joiner sends no proof");
    }

    #[test]
    fn a_forged_joiner_proof_is_refused() {
        let code = ShortCode::parse("7-amber-falcon").unwrap();
        let (_, first) = JoinerExchange::start(&code, &JOINER, &INVITER);
        let (inviter, _, _) = InviterExchange::respond(&code, &JOINER, &INVITER, &first).unwrap();
        assert!(!inviter.check(&[0; 32]));
    }

    #[test]
    fn the_exchange_is_bound_to_the_devices_ids() {
        let code = ShortCode::parse("7-amber-falcon").unwrap();
        let (joiner, first) = JoinerExchange::start(&code, &JOINER, &INVITER);
        // A device in the middle answers under its own id.
        let (_, reply, proof) = InviterExchange::respond(&code, &JOINER, &[3; 32], &first).unwrap();
        assert!(joiner.finish(&reply, &proof).is_err());
    }

    #[test]
    fn announcements_carry_the_nameplate_only() {
        let code = ShortCode::parse("42-amber-falcon").unwrap();
        assert_eq!(code.announcement(), "peernotes-invite=42");
        assert!(code.matches_announcement("peernotes-invite=42"));
        assert!(!code.matches_announcement("peernotes-invite=4"));
        assert!(!code.announcement().contains("amber"));
    }
}
