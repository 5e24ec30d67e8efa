//! Pairing: how a device joins a space without a server — tickets, short-code
//! offers, the pairing messages, and (in `exchange`) the sans-io state machines
//! that sequence them.
//!
//! A member runs `peernotes invite`, which makes an `Offer` — the space, a
//! one-time secret and an expiry — and prints it as a `Ticket` (text and QR code)
//! that also carries the inviter's node id and addresses. The joiner dials the
//! inviter on ALPN `peernotes/pair/1` and sends a `PairRequest` with the secret
//! and its display name; the inviter checks the secret (in constant time), the
//! expiry and that the offer is unused; the transport (`net::pair`) then adds the
//! joiner as a member and answers.
//! Then both sync as usual. A wrong or reused secret, or an expired offer, gets a
//! refusal that says which — and nothing of the space.
//!
//! Devices on one LAN can pair by short code instead (`code`): the inviter
//! announces the code's number over mDNS and both sides run SPAKE2 with the code
//! as the password, on the same ALPN.

use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::membership::Role;
use crate::space::SpaceId;

mod code;
mod exchange;
pub use code::{InviterExchange, JoinerExchange, ShortCode};
pub use exchange::{Inviter, InviterNext, Joiner, JoinerNext};

/// ALPN of the pairing exchange.
pub const PAIR_ALPN: &[u8] = b"peernotes/pair/1";
/// What every ticket's text starts with.
const TICKET_PREFIX: &str = "peernotes1";
/// A pairing message is small; anything bigger is refused.
pub const MAX_PAIR_MESSAGE: usize = 4096;

/// Everything a joiner needs to find the inviter and prove it was invited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub space: [u8; 16],
    /// The inviter's node id (32 bytes of public key).
    pub inviter: [u8; 32],
    pub addrs: Vec<SocketAddr>,
    /// The inviter's home relay, if it uses one.
    pub relay: Option<String>,
    pub secret: [u8; 16],
    /// Unix seconds after which the inviter refuses the ticket.
    pub expires_at: i64,
}

impl Ticket {
    /// The ticket as text: a prefix and lowercase base32, safe to paste anywhere.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_stdvec(self).expect("a ticket serialises");
        format!(
            "{TICKET_PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase()
        )
    }

    pub fn decode(text: &str) -> Result<Ticket> {
        let text = text.trim();
        let body = text.strip_prefix(TICKET_PREFIX).ok_or_else(|| {
            Error::Invalid(format!(
                "this is not a Peernotes ticket (tickets start with `{TICKET_PREFIX}`)"
            ))
        })?;
        let damaged = || Error::Invalid("the ticket is damaged: copy it again, whole".to_string());
        if body.len() > 2 * MAX_PAIR_MESSAGE {
            return Err(damaged());
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| damaged())?;
        let (ticket, rest) = postcard::take_from_bytes::<Ticket>(&bytes).map_err(|_| damaged())?;
        if !rest.is_empty() || ticket.addrs.len() > 16 {
            return Err(damaged());
        }
        Ok(ticket)
    }

    pub fn space_id(&self) -> SpaceId {
        SpaceId::from_bytes(self.space)
    }

    pub fn inviter_id(&self) -> String {
        self.inviter.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The ticket as a QR code drawn with block characters, for a terminal.
    pub fn qr_code(&self) -> String {
        match qrcode::QrCode::new(self.encode().to_ascii_uppercase()) {
            Ok(code) => code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build(),
            Err(e) => format!("(no QR code: {e})"),
        }
    }

    /// The ticket as a QR code in SVG markup, for the app.
    pub fn qr_svg(&self) -> Option<String> {
        let code = qrcode::QrCode::new(self.encode().to_ascii_uppercase()).ok()?;
        Some(
            code.render::<qrcode::render::svg::Color<'_>>()
                .quiet_zone(true)
                .min_dimensions(220, 220)
                .dark_color(qrcode::render::svg::Color("#000000"))
                .light_color(qrcode::render::svg::Color("#ffffff"))
                .build(),
        )
    }
}

/// What the joiner sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairRequest {
    /// Redeem a ticket.
    Ticket { secret: [u8; 16], name: String },
    /// Start a short-code exchange: the SPAKE2 message.
    CodeStart { nameplate: u16, message: Vec<u8> },
    /// Finish it: the joiner's proof that it derived the same key.
    CodeConfirm { proof: [u8; 32], name: String },
}

/// What the inviter answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairResponse {
    Welcome {
        space: [u8; 16],
        space_name: String,
    },
    Refused {
        reason: String,
    },
    /// The inviter's SPAKE2 message and its proof of the key.
    CodeChallenge {
        message: Vec<u8>,
        proof: [u8; 32],
    },
    /// Admitted as one more device of the inviter's person: `space` is that
    /// person's Private space, and the joiner takes it as its own.
    Linked {
        space: [u8; 16],
        space_name: String,
    },
}

/// What an invitation is redeemed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Ticket([u8; 16]),
    Code(ShortCode),
}

/// Where an offer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OfferState {
    Open,
    Used,
    /// A short-code exchange failed; the code is burnt.
    Failed(String),
}

/// An invitation waiting to be used, held by the inviter.
pub struct Offer {
    pub space: SpaceId,
    pub secret: Secret,
    /// The role the joiner gets.
    pub role: Role,
    /// Whether the joiner becomes one more device of the inviter's person
    /// (`space` is then the inviter's Private space) rather than a member.
    pub link: bool,
    expires_at: i64,
    state: Mutex<OfferState>,
    /// The node id of the device that joined with it, once it has.
    joiner: Mutex<Option<String>>,
}

impl Offer {
    pub fn new(space: SpaceId, secret: Secret, expires_at: i64) -> Offer {
        Offer {
            space,
            secret,
            role: Role::Editor,
            link: false,
            expires_at,
            state: Mutex::new(OfferState::Open),
            joiner: Mutex::new(None),
        }
    }

    /// The same offer, giving the joiner `role`.
    pub fn with_role(mut self, role: Role) -> Offer {
        self.role = role;
        self
    }

    /// The same offer, linking the joiner as a device of this device's person.
    pub fn linking(mut self) -> Offer {
        self.link = true;
        self
    }

    /// Makes a fresh ticket offer with a random secret.
    pub fn generate(space: SpaceId, expires_at: i64) -> Result<Offer> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Invalid(format!("no randomness for a ticket: {e}")))?;
        Ok(Offer::new(space, Secret::Ticket(secret), expires_at))
    }

    /// Makes a fresh short-code offer.
    pub fn generate_code(space: SpaceId, expires_at: i64) -> Result<Offer> {
        Ok(Offer::new(
            space,
            Secret::Code(ShortCode::generate()?),
            expires_at,
        ))
    }

    /// The ticket for a ticket offer (a code offer has none).
    pub fn ticket(
        &self,
        inviter: [u8; 32],
        addrs: Vec<SocketAddr>,
        relay: Option<String>,
    ) -> Option<Ticket> {
        let Secret::Ticket(secret) = self.secret else {
            return None;
        };
        Some(Ticket {
            space: *self.space.as_bytes(),
            inviter,
            addrs,
            relay,
            secret,
            expires_at: self.expires_at,
        })
    }

    pub fn code(&self) -> Option<&ShortCode> {
        match &self.secret {
            Secret::Code(code) => Some(code),
            Secret::Ticket(_) => None,
        }
    }

    /// Checks a ticket's secret at time `now` (unix seconds); on success the
    /// offer is spent. The reason on failure is safe to send to the joiner.
    pub fn redeem(&self, secret: &[u8; 16], now: i64) -> std::result::Result<(), String> {
        let Secret::Ticket(ours) = &self.secret else {
            return Err("this invitation takes a short code, not a ticket".into());
        };
        // Constant time, so timing does not leak how much of a guess was right.
        let matches = ours
            .iter()
            .zip(secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !matches {
            return Err("the ticket's secret is wrong".into());
        }
        self.take(now)
    }

    /// Starts a short-code exchange at time `now`: the code may be tried once,
    /// so the offer is spent whatever the outcome. Returns the code to check
    /// against.
    pub fn begin_code_exchange(
        &self,
        nameplate: u16,
        now: i64,
    ) -> std::result::Result<ShortCode, String> {
        let Secret::Code(code) = &self.secret else {
            return Err("this invitation takes a ticket, not a short code".into());
        };
        if code.nameplate != nameplate {
            return Err("no invitation with that code number here".into());
        }
        self.take(now)?;
        Ok(code.clone())
    }

    /// Records the device that joined with this offer (it is now a member).
    pub fn joined_by(&self, node_id: &str) {
        *self.joiner.lock().unwrap_or_else(|e| e.into_inner()) = Some(node_id.to_string());
    }

    /// The device that joined with this offer, once one has.
    pub fn joiner(&self) -> Option<String> {
        self.joiner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unix seconds after which the offer is refused.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// Records that a short-code exchange failed: the inviter reports it.
    pub fn fail(&self, reason: &str) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) =
            OfferState::Failed(reason.to_string());
    }

    fn take(&self, now: i64) -> std::result::Result<(), String> {
        if now > self.expires_at {
            return Err("the invitation has expired; ask for a new one".into());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != OfferState::Open {
            return Err("the invitation was already used; ask for a new one".into());
        }
        *state = OfferState::Used;
        Ok(())
    }

    /// Whether someone redeemed the offer (a code exchange counts once it starts).
    pub fn is_used(&self) -> bool {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) != OfferState::Open
    }

    /// Why the offer failed, if a short-code exchange went wrong.
    pub fn failure(&self) -> Option<String> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            OfferState::Failed(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

/// Encodes a pairing message with a 4-byte length prefix.
pub fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(message).expect("a pairing message serialises");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Decodes a pairing message body (without its prefix).
pub fn decode_message<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    if body.len() > MAX_PAIR_MESSAGE {
        return Err(Error::Invalid("pairing message too large".into()));
    }
    postcard::from_bytes(body)
        .map_err(|e| Error::Invalid(format!("malformed pairing message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer::new(SpaceId::generate(), Secret::Ticket([7; 16]), 1_000)
    }

    #[test]
    fn tickets_round_trip_as_text() {
        let ticket = offer()
            .ticket(
                [9; 32],
                vec!["127.0.0.1:4433".parse().unwrap()],
                Some("http://127.0.0.1:3340/".into()),
            )
            .unwrap();
        let text = ticket.encode();
        assert!(text.starts_with("peernotes1"));
        assert_eq!(Ticket::decode(&format!("  {text}\n")).unwrap(), ticket);
        assert!(
            Ticket::decode(&text.to_ascii_uppercase()).is_err(),
            "the prefix is case-sensitive"
        );
        assert!(!ticket.qr_code().is_empty());
    }

    #[test]
    fn damaged_or_foreign_tickets_are_refused_clearly() {
        let text = offer().ticket([9; 32], vec![], None).unwrap().encode();
        let cut = Ticket::decode(&text[..text.len() - 5])
            .unwrap_err()
            .to_string();
        assert!(cut.contains("damaged"), "{cut}");
        let foreign = Ticket::decode("hello").unwrap_err().to_string();
        assert!(foreign.contains("not a Peernotes ticket"), "{foreign}");
        assert!(Ticket::decode(&format!("peernotes1{}", "a".repeat(100_000))).is_err());
    }

    #[test]
    fn an_offer_is_single_use_and_expires() {
        let offer = offer();
        assert!(offer.redeem(&[8; 16], 10).unwrap_err().contains("wrong"));
        assert!(offer
            .redeem(&[7; 16], 2_000)
            .unwrap_err()
            .contains("expired"));
        offer.redeem(&[7; 16], 10).unwrap();
        assert!(offer
            .redeem(&[7; 16], 10)
            .unwrap_err()
            .contains("already used"));
    }

    #[test]
    fn a_code_offer_allows_one_exchange_and_remembers_a_failure() {
        let offer = Offer::generate_code(SpaceId::generate(), 1_000).unwrap();
        let nameplate = offer.code().unwrap().nameplate;
        assert!(offer
            .redeem(&[7; 16], 10)
            .unwrap_err()
            .contains("short code"));
        let other = if nameplate == 1 { 2 } else { 1 };
        assert!(offer.begin_code_exchange(other, 10).is_err());
        assert!(
            !offer.is_used(),
            "a different number does not spend the code"
        );
        assert_eq!(
            &offer.begin_code_exchange(nameplate, 10).unwrap(),
            offer.code().unwrap()
        );
        assert!(offer
            .begin_code_exchange(nameplate, 10)
            .unwrap_err()
            .contains("already used"));
        assert_eq!(offer.failure(), None);
        offer.fail("wrong code");
        assert_eq!(offer.failure().as_deref(), Some("wrong code"));
    }
}
