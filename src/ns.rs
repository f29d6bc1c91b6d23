//! Namespaces Causette uses, beside those xmpp-parsers names.

pub use xmpp_parsers::ns::*;

/// RFC 3921 session establishment, answered for old clients (RFC 6121 Appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
