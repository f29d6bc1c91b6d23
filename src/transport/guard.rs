//! Limits on the XML a client sends, enforced on its bytes before any parser sees them:
//! the nesting depth of elements and the size of each stanza.
//!
//! Element builders (minidom's, xso's) and the code that clones, serialises and drops their
//! trees recurse once per level: a few thousand nested elements overflow a worker thread's
//! stack and abort the whole process. rxml has no depth or size limit of its own, and
//! negotiation runs on tokio-xmpp's stream, whose events we never see; checking the bytes
//! covers every stream of every connection, before and after authentication alike.
//!
//! The scanner knows only as much XML as it needs to count levels: tags, quoted attribute
//! values (which may hold `>` and `/`), CDATA sections, comments and processing instructions
//! (whose contents are not markup). Anything else that is malformed is the parser's to refuse.

use memchr::memchr;

/// A limit a client went past. Carried as the source of the `io::Error` a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("stanza larger than {0} bytes")]
    StanzaSize(usize),
    #[error("elements nested deeper than {0} levels")]
    Depth(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data: only `<` matters.
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start tag; `slash` when the last byte was `/` (an empty-element tag if `>`
    /// follows).
    StartTag { slash: bool },
    /// Inside a quoted attribute value, ended by this byte.
    Quoted(u8),
    /// Inside an end tag.
    EndTag,
    /// Just after `<!`.
    Bang,
    /// After `<!-`: a comment if another `-` follows.
    CommentStart,
    /// Inside a comment; how many `-` were just seen.
    Comment(u8),
    /// Inside `<![` … `]]>`; how many `]` were just seen.
    CData(u8),
    /// A declaration (`<!DOCTYPE`…) or a processing instruction (`<?`…`?>`), up to `>`.
    Declaration,
}

/// Counts levels and stanza bytes across reads.
#[derive(Debug)]
pub struct XmlGuard {
    state: State,
    /// Open elements, the stream element included.
    depth: u32,
    /// Bytes since the last point between stanzas.
    in_stanza: u32,
    // u32s: every connection keeps a guard.
    max_depth: u32,
    max_stanza: u32,
}

/// Elements at this depth are stanzas: the stream element is depth 1.
const STANZA_DEPTH: u32 = 2;

impl XmlGuard {
    /// `max_depth`: levels a stanza may nest, the stanza itself included (a `<message>` with a
    /// `<body>` has 2). `max_stanza`: bytes of a stanza, markup included.
    pub fn new(max_depth: usize, max_stanza: usize) -> Self {
        Self {
            state: State::Text,
            depth: 0,
            in_stanza: 0,
            max_depth: u32::try_from(max_depth).unwrap_or(u32::MAX / 2),
            max_stanza: u32::try_from(max_stanza).unwrap_or(u32::MAX),
        }
    }

    /// A new stream header follows on the same connection (after SASL, RFC 6120 §6.4.6): the
    /// old stream element is never closed, and the new one takes its level.
    pub fn stream_restarted(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Scans bytes read from the client. On a violation, returns how many of them are still
    /// within the limits (they may be handed to the parser) and which limit the next one broke.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<(), (usize, LimitExceeded)> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Text {
                let rest = &bytes[i..];
                let skip = memchr(b'<', rest).unwrap_or(rest.len());
                if self.depth < STANZA_DEPTH {
                    // Between stanzas: whitespace keepalives, or text the parser refuses.
                    self.in_stanza = 0;
                } else {
                    self.count(skip)
                        .map_err(|over| (i + over, self.size_error()))?;
                }
                i += skip;
                if i == bytes.len() {
                    break;
                }
            }
            // One byte of markup.
            let byte = bytes[i];
            self.count(1).map_err(|_| (i, self.size_error()))?;
            self.state = match (self.state, byte) {
                (State::Text, b'<') => State::Open,
                (State::Open, b'/') => State::EndTag,
                (State::Open, b'!') => State::Bang,
                (State::Open, b'?') => State::Declaration,
                (State::Open, _) => {
                    self.depth += 1;
                    if self.depth > self.max_depth + STANZA_DEPTH - 1 {
                        return Err((i, LimitExceeded::Depth(self.max_depth as usize)));
                    }
                    State::StartTag { slash: false }
                }
                (State::StartTag { .. }, quote @ (b'"' | b'\'')) => {
                    // The whole value at once: it is where most of a tag's bytes are.
                    let rest = &bytes[i + 1..];
                    match memchr(quote, rest) {
                        Some(end) => {
                            self.count(end + 1)
                                .map_err(|over| (i + 1 + over, self.size_error()))?;
                            i += end + 1;
                            State::StartTag { slash: false }
                        }
                        None => {
                            self.count(rest.len())
                                .map_err(|over| (i + 1 + over, self.size_error()))?;
                            i = bytes.len() - 1;
                            State::Quoted(quote)
                        }
                    }
                }
                (State::StartTag { slash }, b'>') => {
                    if slash {
                        self.depth -= 1;
                    }
                    self.after_tag()
                }
                (State::StartTag { .. }, b'/') => State::StartTag { slash: true },
                (State::StartTag { .. }, _) => State::StartTag { slash: false },
                (State::Quoted(quote), b) if b == quote => State::StartTag { slash: false },
                (State::Quoted(quote), _) => {
                    let rest = &bytes[i + 1..];
                    let skip = memchr(quote, rest).unwrap_or(rest.len());
                    self.count(skip)
                        .map_err(|over| (i + 1 + over, self.size_error()))?;
                    i += skip;
                    State::Quoted(quote)
                }
                (State::EndTag, b'>') => {
                    self.depth = self.depth.saturating_sub(1);
                    self.after_tag()
                }
                (State::EndTag, _) => State::EndTag,
                (State::Bang, b'-') => State::CommentStart,
                (State::Bang, b'[') => State::CData(0),
                (State::Bang, b'>') => self.after_tag(),
                (State::Bang, _) => State::Declaration,
                (State::CommentStart, b'-') => State::Comment(0),
                (State::CommentStart, _) => State::Declaration,
                (State::Comment(dashes), b'>') if dashes >= 2 => self.after_tag(),
                (State::Comment(dashes), b'-') => State::Comment(dashes.saturating_add(1)),
                (State::Comment(_), _) => State::Comment(0),
                (State::CData(brackets), b'>') if brackets >= 2 => self.after_tag(),
                (State::CData(brackets), b']') => State::CData(brackets.saturating_add(1)),
                (State::CData(_), _) => {
                    let rest = &bytes[i + 1..];
                    let skip = memchr(b']', rest).unwrap_or(rest.len());
                    self.count(skip)
                        .map_err(|over| (i + 1 + over, self.size_error()))?;
                    i += skip;
                    State::CData(0)
                }
                (State::Declaration, b'>') => self.after_tag(),
                (State::Declaration, _) => {
                    let rest = &bytes[i + 1..];
                    let skip = memchr(b'>', rest).unwrap_or(rest.len());
                    self.count(skip)
                        .map_err(|over| (i + 1 + over, self.size_error()))?;
                    i += skip;
                    State::Declaration
                }
                (State::Text, _) => unreachable!("text is skipped up to the next '<'"),
            };
            i += 1;
        }
        Ok(())
    }

    /// After a tag's `>`: a stanza that is complete leaves nothing to count.
    fn after_tag(&mut self) -> State {
        if self.depth < STANZA_DEPTH {
            self.in_stanza = 0;
        }
        State::Text
    }

    /// Counts `n` more bytes of a stanza; on going past the limit, how many of them fit.
    fn count(&mut self, n: usize) -> Result<(), usize> {
        let room = (self.max_stanza - self.in_stanza) as usize;
        if n > room {
            self.in_stanza = self.max_stanza;
            return Err(room);
        }
        // n <= room, and room fits in a u32.
        self.in_stanza += n as u32;
        Ok(())
    }

    fn size_error(&self) -> LimitExceeded {
        LimitExceeded::StanzaSize(self.max_stanza as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn guard() -> XmlGuard {
        let mut guard = XmlGuard::new(4, 200);
        guard.scan(HEADER).unwrap();
        guard
    }

    #[test]
    fn depth_counts_from_the_stanza() {
        let mut g = guard();
        assert!(g.scan(b"<a><b><c><d/></c></b></a>").is_ok());
        assert!(g.scan(b"<a><b><c><d>x</d></c></b></a>").is_ok());
        let deep = b"<a><b><c><d><e/></d></c></b></a>";
        assert_eq!(
            g.scan(deep),
            Err((
                deep.iter().position(|&b| b == b'e').unwrap(),
                LimitExceeded::Depth(4)
            ))
        );
    }

    #[test]
    fn markup_inside_values_cdata_and_comments_is_not_counted() {
        let mut g = guard();
        let tricky = b"<a x='<b>' y=\"/>\"><![CDATA[<c><d><e><f>]]><!-- <g><h><i> --><b/></a>";
        assert!(g.scan(tricky).is_ok());
        assert_eq!(g.depth, 1);
        // The same, one byte at a time.
        let mut g = guard();
        for byte in tricky.iter() {
            g.scan(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!((g.depth, g.in_stanza), (1, 0));
    }

    #[test]
    fn stanza_size_is_exact_and_resets_between_stanzas() {
        let mut g = guard();
        let fits = format!("<m>{}</m>", "x".repeat(200 - 7));
        assert_eq!(fits.len(), 200);
        for _ in 0..3 {
            assert!(g.scan(fits.as_bytes()).is_ok());
            // Whitespace between stanzas is not a stanza's.
            assert!(g.scan(&[b' '; 500]).is_ok());
        }
        let over = format!("<m>{}</m>", "x".repeat(200 - 6));
        assert_eq!(
            g.scan(over.as_bytes()),
            Err((200, LimitExceeded::StanzaSize(200)))
        );
    }

    #[test]
    fn size_counts_across_reads_and_inside_values() {
        let mut g = guard();
        assert!(g.scan(b"<m a='").is_ok());
        assert!(g.scan(&[b'v'; 190]).is_ok());
        assert_eq!(
            g.scan(&[b'v'; 10]),
            Err((4, LimitExceeded::StanzaSize(200)))
        );
    }

    #[test]
    fn a_restart_keeps_stanzas_at_their_level() {
        let mut g = guard();
        g.stream_restarted();
        g.scan(HEADER).unwrap();
        assert!(g.scan(b"<a><b><c><d/></c></b></a>").is_ok());
        assert!(g.scan(b"<a><b><c><d><e/></d></c></b></a>").is_err());
    }
}
