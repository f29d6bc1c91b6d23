//! Namespaces Causette uses, beside those xmpp-parsers names.

pub use xmpp_parsers::ns::*;

/// RFC 3921 session establishment, answered for old clients (RFC 6121 Appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6121 §2.6.1: roster versioning, advertised as a stream feature.
pub const ROSTER_VERSIONING: &str = "urn:xmpp:features:rosterver";
/// RFC 6121 §3.4.1: subscription pre-approval, advertised as a stream feature.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";

/// An attribute name written as a literal in the code.
pub fn name(text: &'static str) -> rxml::NcName {
    rxml::NcName::try_from(text).expect("static names are valid")
}

/// XEP-0249 direct invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
