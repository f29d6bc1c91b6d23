//! Answers and errors (RFC 6120 §8.3): what a failed request gets, in one shape for every
//! handler, and the error reply to a stanza.

use minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::policy::Reason;
use crate::router::Sender;

/// An IQ answer: the result payload (possibly none), or why not.
pub type Answer = Result<Option<Element>, Failure>;

/// Why an IQ fails: a condition with its text, or a policy denial (texts in English and
/// French).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Plain(DefinedCondition, &'static str),
    Denied(crate::policy::Reason),
}

impl From<(DefinedCondition, &'static str)> for Failure {
    fn from((condition, text): (DefinedCondition, &'static str)) -> Self {
        Failure::Plain(condition, text)
    }
}

impl From<crate::policy::Reason> for Failure {
    fn from(reason: crate::policy::Reason) -> Self {
        Failure::Denied(reason)
    }
}

/// The stanza error a failed request gets.
pub fn stanza_error(failure: Failure) -> StanzaError {
    match failure {
        Failure::Plain(condition, text) => {
            StanzaError::new(error_type_of(&condition), condition, "en", text)
        }
        Failure::Denied(reason) => policy_error(reason),
    }
}

pub fn error_type_of(condition: &DefinedCondition) -> ErrorType {
    match condition {
        DefinedCondition::BadRequest
        | DefinedCondition::JidMalformed
        | DefinedCondition::NotAcceptable => ErrorType::Modify,
        DefinedCondition::Forbidden | DefinedCondition::NotAuthorized => ErrorType::Auth,
        DefinedCondition::ResourceConstraint | DefinedCondition::InternalServerError => {
            ErrorType::Wait
        }
        _ => ErrorType::Cancel,
    }
}

/// A policy denial (docs/policy.md): `forbidden` (`not-allowed` for a request not accepted
/// yet), with the reason in English and French.
pub fn policy_error(reason: Reason) -> StanzaError {
    let condition = reason.condition();
    let mut error = StanzaError::new(error_type_of(&condition), condition, "en", reason.english());
    error.texts.insert("fr".into(), reason.french().to_owned());
    error
}

/// The error reply to a stanza (RFC 6120 §8.3.1), or `None` for an error, which is never
/// answered with an error.
pub fn error_reply(stanza: &Stanza, error: StanzaError) -> Option<Stanza> {
    match stanza {
        Stanza::Message(m) => {
            if m.type_ == MessageType::Error {
                return None;
            }
            let mut reply = Message::new_with_type(MessageType::Error, m.from.clone());
            reply.from = m.to.clone();
            reply.id = m.id.clone();
            reply.payloads.push(error.into());
            Some(Stanza::Message(reply))
        }
        Stanza::Presence(p) => {
            if p.type_ == PresenceType::Error {
                return None;
            }
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = p.to.clone();
            reply.to = p.from.clone();
            reply.id = p.id.clone();
            reply.payloads.push(error.into());
            Some(Stanza::Presence(reply))
        }
        Stanza::Iq(iq) => match iq {
            Iq::Error { .. } | Iq::Result { .. } => None,
            _ => Some(Stanza::Iq(Iq::Error {
                from: iq.to().cloned(),
                to: iq.from().cloned(),
                id: iq.id().to_owned(),
                error,
                payload: None,
            })),
        },
    }
}

/// Sends the sender the answer to its IQ.
pub fn reply_iq(sender: &Sender<'_>, iq: &Iq, answer: Answer) {
    sender.reply(Stanza::Iq(iq_answer(iq, answer.map_err(stanza_error))));
}

/// The result or error that answers an IQ, from where it was sent.
pub fn iq_answer(iq: &Iq, answer: Result<Option<Element>, StanzaError>) -> Iq {
    match answer {
        Ok(payload) => Iq::Result {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            payload,
        },
        Err(error) => Iq::Error {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            error,
            payload: None,
        },
    }
}

/// Sends the sender an error for its stanza, unless it was itself an error.
pub fn bounce(
    sender: &Sender<'_>,
    stanza: &Stanza,
    type_: ErrorType,
    condition: DefinedCondition,
    text: &str,
) {
    let error = StanzaError::new(type_, condition, "en", text);
    if let Some(reply) = error_reply(stanza, error) {
        sender.reply(reply);
    }
}
