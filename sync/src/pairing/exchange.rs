//! The pairing exchange as two sans-io state machines, `Joiner` and
//! `Inviter`: each takes the other's message and says what to send next or
//! how the exchange ended. No socket, clock or store: the transport moves the
//! messages (`net::pair`), the caller adds the member, and this module's tests
//! and the protocol simulation (`tests/tests/simulation.rs`) drive both sides
//! in memory.
//!
//! The sequences:
//! - ticket: joiner `Ticket` → inviter `Welcome` | `Refused`;
//! - short code: joiner `CodeStart` → inviter `CodeChallenge` (its SPAKE2
//!   message and proof of the key) → joiner `CodeConfirm` (its proof) →
//!   inviter `Welcome` | `Refused`. A code offer is spent by the first
//!   exchange that starts, whatever its outcome.
//!
//! Anything out of turn ends the exchange with an error.

use std::sync::Arc;

use super::{InviterExchange, JoinerExchange};
use super::{Offer, PairRequest, PairResponse, ShortCode, Ticket};
use crate::error::{Error, Result};
use crate::space::SpaceId;

/// Longest member name kept from a joiner, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// What the joiner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinerNext {
    /// Send this and wait for the answer.
    Send(PairRequest),
    /// Admitted: this device is now a member of `space`, or (`linked`) one
    /// more device of the inviter's person, `space` being its Private space.
    Joined {
        space: SpaceId,
        space_name: String,
        linked: bool,
    },
}

enum JoinerState {
    /// A ticket was presented: the answer is the last message.
    AwaitingWelcome {
        space: SpaceId,
    },
    /// A code exchange started: the inviter's challenge comes next.
    AwaitingChallenge {
        exchange: JoinerExchange,
        name: String,
    },
    /// The joiner proved the code: the answer is the last message.
    AwaitingCodeWelcome,
    Done,
}

/// The joiner's side of one exchange.
pub struct Joiner {
    state: JoinerState,
}

impl Joiner {
    /// Presents a ticket; the request goes to the inviter.
    pub fn with_ticket(ticket: &Ticket, name: &str, now: i64) -> Result<(Joiner, PairRequest)> {
        if now > ticket.expires_at {
            return Err(Error::Pairing(
                "the ticket has expired; ask for a new one".into(),
            ));
        }
        let joiner = Joiner {
            state: JoinerState::AwaitingWelcome {
                space: ticket.space_id(),
            },
        };
        let request = PairRequest::Ticket {
            secret: ticket.secret,
            name: name.to_string(),
        };
        Ok((joiner, request))
    }

    /// Starts a short-code exchange with the inviter `inviter`.
    pub fn with_code(
        code: &ShortCode,
        name: &str,
        joiner: &[u8; 32],
        inviter: &[u8; 32],
    ) -> (Joiner, PairRequest) {
        let (exchange, message) = JoinerExchange::start(code, joiner, inviter);
        let request = PairRequest::CodeStart {
            nameplate: code.nameplate,
            message,
        };
        let joiner = Joiner {
            state: JoinerState::AwaitingChallenge {
                exchange,
                name: name.to_string(),
            },
        };
        (joiner, request)
    }

    /// Takes the inviter's answer.
    pub fn receive(&mut self, response: PairResponse) -> Result<JoinerNext> {
        let state = std::mem::replace(&mut self.state, JoinerState::Done);
        match (state, response) {
            (_, PairResponse::Refused { reason }) => {
                Err(Error::Pairing(format!("the inviter refused: {reason}")))
            }
            (JoinerState::AwaitingWelcome { space }, PairResponse::Welcome { space_name, .. }) => {
                // A ticket names its space: the welcome cannot move the joiner elsewhere.
                Ok(JoinerNext::Joined {
                    space,
                    space_name,
                    linked: false,
                })
            }
            (JoinerState::AwaitingWelcome { space }, PairResponse::Linked { space_name, .. }) => {
                Ok(JoinerNext::Joined {
                    space,
                    space_name,
                    linked: true,
                })
            }
            (
                JoinerState::AwaitingChallenge { exchange, name },
                PairResponse::CodeChallenge { message, proof },
            ) => {
                let proof = exchange.finish(&message, &proof)?;
                self.state = JoinerState::AwaitingCodeWelcome;
                Ok(JoinerNext::Send(PairRequest::CodeConfirm { proof, name }))
            }
            (JoinerState::AwaitingCodeWelcome, PairResponse::Welcome { space, space_name }) => {
                Ok(JoinerNext::Joined {
                    space: SpaceId::from_bytes(space),
                    space_name,
                    linked: false,
                })
            }
            (JoinerState::AwaitingCodeWelcome, PairResponse::Linked { space, space_name }) => {
                Ok(JoinerNext::Joined {
                    space: SpaceId::from_bytes(space),
                    space_name,
                    linked: true,
                })
            }
            _ => Err(Error::Pairing("the inviter answered out of turn".into())),
        }
    }
}

/// What the inviter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviterNext {
    /// Send this and wait for the joiner's next message.
    Send(PairResponse),
    /// The joiner proved its invitation: add it to `space` under `name`, then
    /// send `Inviter::welcome`.
    Admit { space: SpaceId, name: String },
    /// Send this refusal and end the exchange.
    Refuse(PairResponse),
}

enum InviterState {
    AwaitingRequest,
    AwaitingConfirm { exchange: InviterExchange },
    Done,
}

/// The inviter's side of one exchange, against the invitations open when the
/// joiner arrived.
pub struct Inviter {
    offers: Vec<Arc<Offer>>,
    inviter: [u8; 32],
    joiner: [u8; 32],
    now: i64,
    chosen: Option<Arc<Offer>>,
    state: InviterState,
}

impl Inviter {
    pub fn new(offers: Vec<Arc<Offer>>, inviter: [u8; 32], joiner: [u8; 32], now: i64) -> Inviter {
        Inviter {
            offers,
            inviter,
            joiner,
            now,
            chosen: None,
            state: InviterState::AwaitingRequest,
        }
    }

    /// The invitation the joiner is redeeming, once known.
    pub fn chosen(&self) -> Option<&Arc<Offer>> {
        self.chosen.as_ref()
    }

    /// What it means that the joiner hung up now: after the challenge, its
    /// code did not give it the key (a joiner with the right code goes on).
    pub fn hung_up(&self) -> Error {
        match self.state {
            InviterState::AwaitingConfirm { .. } => {
                Error::Pairing("a device tried a different code".into())
            }
            _ => Error::Pairing("the joiner hung up mid-exchange".into()),
        }
    }

    /// Takes the joiner's message.
    pub fn receive(&mut self, request: PairRequest) -> Result<InviterNext> {
        let state = std::mem::replace(&mut self.state, InviterState::Done);
        match (state, request) {
            (InviterState::AwaitingRequest, PairRequest::Ticket { secret, name }) => {
                // Every ticket offer checks the secret (in constant time); the
                // one that takes it is the invitation being redeemed.
                let mut outcome = Err("this device is not inviting with a ticket now".to_string());
                for offer in self.offers.iter().filter(|o| o.code().is_none()) {
                    outcome = offer.redeem(&secret, self.now);
                    if outcome.is_ok() {
                        self.chosen = Some(offer.clone());
                        break;
                    }
                }
                Ok(self.admit_or_refuse(outcome, &name))
            }
            (InviterState::AwaitingRequest, PairRequest::CodeStart { nameplate, message }) => {
                let offer = self
                    .offers
                    .iter()
                    .find(|o| o.code().is_some_and(|c| c.nameplate == nameplate))
                    .or_else(|| self.offers.iter().find(|o| o.code().is_some()))
                    .cloned();
                let begun = match &offer {
                    Some(offer) => offer.begin_code_exchange(nameplate, self.now),
                    None => Err("this device is not inviting with a short code now".to_string()),
                };
                self.chosen = offer;
                let code = match begun {
                    Ok(code) => code,
                    Err(reason) => {
                        return Ok(InviterNext::Refuse(PairResponse::Refused { reason }))
                    }
                };
                let (exchange, message, proof) =
                    InviterExchange::respond(&code, &self.joiner, &self.inviter, &message)?;
                self.state = InviterState::AwaitingConfirm { exchange };
                Ok(InviterNext::Send(PairResponse::CodeChallenge {
                    message,
                    proof,
                }))
            }
            (
                InviterState::AwaitingConfirm { exchange },
                PairRequest::CodeConfirm { proof, name },
            ) if exchange.check(&proof) => Ok(self.admit_or_refuse(Ok(()), &name)),
            (InviterState::AwaitingConfirm { .. }, _) => {
                Err(Error::Pairing("a device tried a different code".into()))
            }
            _ => Err(Error::Pairing("the joiner spoke out of turn".into())),
        }
    }

    fn admit_or_refuse(&self, outcome: std::result::Result<(), String>, name: &str) -> InviterNext {
        match (outcome, &self.chosen) {
            (Ok(()), Some(offer)) => InviterNext::Admit {
                space: offer.space,
                name: name.chars().take(MAX_NAME_CHARS).collect(),
            },
            (Ok(()), None) => InviterNext::Refuse(PairResponse::Refused {
                reason: "no invitation matches".into(),
            }),
            (Err(reason), _) => InviterNext::Refuse(PairResponse::Refused { reason }),
        }
    }

    /// The welcome for an admitted joiner (a linked device is told so).
    pub fn welcome(&self, space: SpaceId, space_name: String) -> PairResponse {
        let space = *space.as_bytes();
        if self.chosen().is_some_and(|offer| offer.link) {
            PairResponse::Linked { space, space_name }
        } else {
            PairResponse::Welcome { space, space_name }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITER: [u8; 32] = [1; 32];
    const JOINER: [u8; 32] = [2; 32];
    const NOW: i64 = 1_000;

    fn space() -> SpaceId {
        SpaceId::from_bytes([9; 16])
    }

    /// Runs a whole exchange in memory; the joiner's result.
    fn run(joiner: &mut Joiner, first: PairRequest, inviter: &mut Inviter) -> Result<JoinerNext> {
        let mut request = first;
        loop {
            let response = match inviter.receive(request)? {
                InviterNext::Send(response) | InviterNext::Refuse(response) => response,
                InviterNext::Admit { space, .. } => inviter.welcome(space, "Team".into()),
            };
            match joiner.receive(response)? {
                JoinerNext::Send(next) => request = next,
                joined => return Ok(joined),
            }
        }
    }

    #[test]
    fn a_ticket_joins_once_and_a_wrong_secret_is_refused_without_spending_it() {
        let offer = Arc::new(Offer::generate(space(), NOW + 60).unwrap());
        let ticket = offer.ticket(INVITER, Vec::new(), None).unwrap();
        let mut forged = ticket.clone();
        forged.secret[0] ^= 1;
        let (mut j, first) = Joiner::with_ticket(&forged, "Bee", NOW).unwrap();
        let mut i = Inviter::new(vec![offer.clone()], INVITER, JOINER, NOW);
        let err = run(&mut j, first, &mut i).unwrap_err().to_string();
        assert!(err.contains("secret is wrong"), "{err}");
        assert!(!offer.is_used());

        let (mut j, first) = Joiner::with_ticket(&ticket, "Bee", NOW).unwrap();
        let mut i = Inviter::new(vec![offer.clone()], INVITER, JOINER, NOW);
        let joined = run(&mut j, first, &mut i).unwrap();
        assert_eq!(
            joined,
            JoinerNext::Joined {
                space: space(),
                space_name: "Team".into(),
                linked: false,
            }
        );
        let (mut j, first) = Joiner::with_ticket(&ticket, "Bee", NOW).unwrap();
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        let again = run(&mut j, first, &mut i).unwrap_err().to_string();
        assert!(again.contains("already used"), "{again}");
    }

    #[test]
    fn a_link_ticket_tells_the_joiner_it_is_linked_by_ticket_or_code() {
        let offer = Arc::new(Offer::generate(space(), NOW + 60).unwrap().linking());
        let ticket = offer.ticket(INVITER, Vec::new(), None).unwrap();
        let (mut j, first) = Joiner::with_ticket(&ticket, "laptop", NOW).unwrap();
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        assert!(matches!(
            run(&mut j, first, &mut i).unwrap(),
            JoinerNext::Joined { space: s, linked: true, .. } if s == space()
        ));
        let offer = Arc::new(Offer::generate_code(space(), NOW + 60).unwrap().linking());
        let code = offer.code().unwrap().clone();
        let (mut j, first) = Joiner::with_code(&code, "laptop", &JOINER, &INVITER);
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        assert!(matches!(
            run(&mut j, first, &mut i).unwrap(),
            JoinerNext::Joined { linked: true, .. }
        ));
    }

    #[test]
    fn a_short_code_joins_and_a_wrong_one_fails_on_both_sides_and_burns_it() {
        let offer = Arc::new(Offer::generate_code(space(), NOW + 60).unwrap());
        let code = offer.code().unwrap().clone();
        let (mut j, first) = Joiner::with_code(&code, "Bee", &JOINER, &INVITER);
        let mut i = Inviter::new(vec![offer.clone()], INVITER, JOINER, NOW);
        assert!(matches!(
            run(&mut j, first, &mut i).unwrap(),
            JoinerNext::Joined { space: s, .. } if s == space()
        ));

        let offer = Arc::new(Offer::generate_code(space(), NOW + 60).unwrap());
        let right = offer.code().unwrap().clone();
        // The same number with other words: what a mistyped code looks like.
        let wrong = loop {
            let other = ShortCode::generate().unwrap().to_string();
            let words = other.split_once('-').unwrap().1;
            let wrong = ShortCode::parse(&format!("{}-{words}", right.nameplate)).unwrap();
            if wrong != right {
                break wrong;
            }
        };
        let (mut j, first) = Joiner::with_code(&wrong, "Bee", &JOINER, &INVITER);
        let mut i = Inviter::new(vec![offer.clone()], INVITER, JOINER, NOW);
        let err = run(&mut j, first, &mut i).unwrap_err().to_string();
        assert!(err.contains("code is wrong"), "{err}");
        assert!(offer.is_used(), "a wrong code burns the offer");
        // The right code no longer works either.
        let (mut j, first) = Joiner::with_code(&right, "Bee", &JOINER, &INVITER);
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        assert!(run(&mut j, first, &mut i).is_err());
    }

    #[test]
    fn a_joiner_hanging_up_after_the_challenge_tried_a_different_code() {
        let offer = Arc::new(Offer::generate_code(space(), NOW + 60).unwrap());
        let code = offer.code().unwrap().clone();
        let (_, first) = Joiner::with_code(&code, "Bee", &JOINER, &INVITER);
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        assert!(i.hung_up().to_string().contains("hung up"));
        assert!(matches!(i.receive(first).unwrap(), InviterNext::Send(_)));
        assert!(i.hung_up().to_string().contains("different code"));
    }

    #[test]
    fn messages_out_of_turn_end_the_exchange() {
        let offer = Arc::new(Offer::generate_code(space(), NOW + 60).unwrap());
        let mut i = Inviter::new(vec![offer], INVITER, JOINER, NOW);
        let confirm = PairRequest::CodeConfirm {
            proof: [0; 32],
            name: "x".into(),
        };
        assert!(i.receive(confirm).is_err());
        let ticket_offer = Arc::new(Offer::generate(space(), NOW + 60).unwrap());
        let ticket = ticket_offer.ticket(INVITER, Vec::new(), None).unwrap();
        let (mut j, _) = Joiner::with_ticket(&ticket, "Bee", NOW).unwrap();
        let challenge = PairResponse::CodeChallenge {
            message: vec![1, 2, 3],
            proof: [0; 32],
        };
        assert!(j.receive(challenge).is_err());
        assert!(
            Joiner::with_ticket(&ticket, "Bee", NOW + 61).is_err(),
            "expired"
        );
    }
}
