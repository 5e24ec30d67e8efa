//! Pairing by ticket: how a device joins a space without a server.
//!
//! A member runs `peernotes invite`, which makes an `Offer` — the space, a
//! one-time secret and an expiry — and prints it as a `Ticket` (text and QR code)
//! that also carries the inviter's node id and addresses. The joiner dials the
//! inviter on ALPN `peernotes/pair/1` and sends a `PairRequest` with the secret
//! and its display name; the inviter checks the secret (in constant time), the
//! expiry and that the offer is unused, adds the joiner as a member and answers.
//! Then both sync as usual. A wrong or reused secret, or an expired offer, gets a
//! refusal that says which — and nothing of the space.

use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::SpaceId;

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
}

/// What the joiner sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequest {
    pub secret: [u8; 16],
    pub name: String,
}

/// What the inviter answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairResponse {
    Welcome { space_name: String },
    Refused { reason: String },
}

/// An invitation waiting to be used, held by the inviter.
pub struct Offer {
    pub space: SpaceId,
    secret: [u8; 16],
    expires_at: i64,
    used: Mutex<bool>,
}

impl Offer {
    pub fn new(space: SpaceId, secret: [u8; 16], expires_at: i64) -> Offer {
        Offer {
            space,
            secret,
            expires_at,
            used: Mutex::new(false),
        }
    }

    /// Makes a fresh offer with a random secret.
    pub fn generate(space: SpaceId, expires_at: i64) -> Result<Offer> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Invalid(format!("no randomness for a ticket: {e}")))?;
        Ok(Offer::new(space, secret, expires_at))
    }

    pub fn ticket(&self, inviter: [u8; 32], addrs: Vec<SocketAddr>) -> Ticket {
        Ticket {
            space: *self.space.as_bytes(),
            inviter,
            addrs,
            secret: self.secret,
            expires_at: self.expires_at,
        }
    }

    /// Checks a request at time `now` (unix seconds); on success the offer is
    /// spent. The reason on failure is safe to send to the joiner.
    pub fn redeem(&self, request: &PairRequest, now: i64) -> std::result::Result<(), String> {
        // Constant time, so timing does not leak how much of a guess was right.
        let matches = self
            .secret
            .iter()
            .zip(request.secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !matches {
            return Err("the ticket's secret is wrong".into());
        }
        if now > self.expires_at {
            return Err("the ticket has expired; ask for a new one".into());
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if *used {
            return Err("the ticket was already used; ask for a new one".into());
        }
        *used = true;
        Ok(())
    }

    pub fn is_used(&self) -> bool {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
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
        Offer::new(SpaceId::generate(), [7; 16], 1_000)
    }

    #[test]
    fn tickets_round_trip_as_text() {
        let ticket = offer().ticket([9; 32], vec!["127.0.0.1:4433".parse().unwrap()]);
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
        let text = offer().ticket([9; 32], vec![]).encode();
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
        let wrong = PairRequest {
            secret: [8; 16],
            name: "x".into(),
        };
        let right = PairRequest {
            secret: [7; 16],
            name: "x".into(),
        };
        assert!(offer.redeem(&wrong, 10).unwrap_err().contains("wrong"));
        assert!(offer.redeem(&right, 2_000).unwrap_err().contains("expired"));
        offer.redeem(&right, 10).unwrap();
        assert!(offer
            .redeem(&right, 10)
            .unwrap_err()
            .contains("already used"));
    }
}
