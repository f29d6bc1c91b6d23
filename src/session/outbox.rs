//! The one way out of a session: every stanza it sends (from its queue, replies, its backlog,
//! pings) is written here and counted, which is what stream management (XEP-0198) needs to
//! acknowledge and replay them.

use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use xmpp_parsers::stanza::Stanza;

use jid::FullJid;

use crate::link::Link;
use crate::metrics::PerKind;
use crate::router::{Queued, SessionControl};

/// Stanzas written to the link before one flush.
const WRITE_BATCH: usize = 64;
/// A client that takes longer than this to accept a batch is gone or hostile.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Outbox<L> {
    link: L,
    /// Stanzas handed to the link since the session began (XEP-0198 counts them modulo 2^32).
    sent: u32,
}

impl<L: Link> Outbox<L> {
    pub fn new(link: L) -> Self {
        Self { link, sent: 0 }
    }

    /// The link, for reading and closing.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// Stanzas handed to the link so far.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "stream management (XEP-0198) reads it")
    )]
    pub fn sent(&self) -> u32 {
        self.sent
    }

    async fn feed(&mut self, stanza: &Stanza, counts: &PerKind) -> std::io::Result<()> {
        self.link.feed(stanza).await?;
        counts.count(stanza);
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Writes stanzas with a single flush, within the write timeout.
    pub async fn write_all(&mut self, stanzas: &[Stanza], counts: &PerKind) -> bool {
        let write = async {
            for stanza in stanzas {
                self.feed(stanza, counts).await?;
            }
            self.link.flush().await
        };
        matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
    }

    /// Writes a long run of stanzas with a timeout for each, so that a slow reader gets them
    /// at its own pace (the backlog).
    pub async fn write_paced(&mut self, stanzas: &[Stanza], counts: &PerKind) -> bool {
        for stanza in stanzas {
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, self.feed(stanza, counts)).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
        true
    }

    /// Writes top-level elements that are not stanzas; they are not counted.
    pub async fn write_nonzas(&mut self, elements: &[Element]) -> bool {
        let write = async {
            for element in elements {
                self.link.feed(element).await?;
            }
            self.link.flush().await
        };
        matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
    }

    async fn feed_queued(
        &mut self,
        queued: &Queued,
        jid: &FullJid,
        counts: &PerKind,
    ) -> std::io::Result<()> {
        match queued {
            Queued::Stanza(stanza) => {
                self.link.feed(&**stanza).await?;
                counts.count(stanza);
            }
            Queued::Shared(shared) => {
                self.link.feed_shared(shared, jid).await?;
                counts.count_encoded(shared.xml());
            }
        }
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Writes what the queue holds for the session `jid`, from `first`, up to a batch, with a
    /// single flush.
    pub async fn write_queued(
        &mut self,
        first: Queued,
        queue: &mut mpsc::Receiver<Queued>,
        control: &SessionControl,
        jid: &FullJid,
        counts: &PerKind,
    ) -> bool {
        let write = async {
            control.dequeued(&first);
            self.feed_queued(&first, jid, counts).await?;
            for _ in 1..WRITE_BATCH {
                match queue.try_recv() {
                    Ok(next) => {
                        control.dequeued(&next);
                        self.feed_queued(&next, jid, counts).await?
                    }
                    Err(_) => break,
                }
            }
            self.link.flush().await
        };
        matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use xmpp_parsers::message::Message;
    use xso::AsXml;

    use super::*;
    use crate::link::{Fatal, Incoming, SharedStanza};

    /// A link that keeps what it is given, serialised, and counts flushes.
    #[derive(Default)]
    struct Recorder {
        written: Vec<String>,
        flushes: usize,
    }

    impl Link for Recorder {
        fn next_element(&mut self) -> impl Future<Output = Incoming> + Send + '_ {
            std::future::pending()
        }

        async fn feed(&mut self, element: &(impl AsXml + Sync)) -> std::io::Result<()> {
            let element: Element = xso::transform(element).map_err(std::io::Error::other)?;
            self.written.push(String::from(&element));
            Ok(())
        }

        async fn feed_shared(
            &mut self,
            stanza: &SharedStanza,
            to: &FullJid,
        ) -> std::io::Result<()> {
            let mut xml = Vec::new();
            stanza.write_to(to, &mut xml);
            self.written
                .push(String::from_utf8(xml).map_err(std::io::Error::other)?);
            Ok(())
        }

        async fn flush(&mut self) -> std::io::Result<()> {
            self.flushes += 1;
            Ok(())
        }

        async fn close(&mut self, _: Option<&Fatal>) {}
    }

    fn message() -> Stanza {
        Stanza::Message(Message::chat(None))
    }

    #[tokio::test]
    async fn stanzas_are_counted_and_nonzas_are_not() {
        let metrics = crate::metrics::Metrics::new();
        let counts = &metrics.stanzas_out;
        let mut outbox = Outbox::new(Recorder::default());
        assert!(outbox.write_all(&[message(), message()], counts).await);
        assert!(outbox.write_paced(&[message()], counts).await);
        let ack = Element::builder("failed", "urn:xmpp:sm:3").build();
        assert!(outbox.write_nonzas(&[ack]).await);
        let (tx, mut queue) = mpsc::channel(4);
        let control = SessionControl::default();
        tx.try_send(Queued::Stanza(Box::new(message()))).unwrap();
        let mut groupchat =
            Message::new_with_type(xmpp_parsers::message::MessageType::Groupchat, None);
        groupchat.from = Some(jid::Jid::new("room@conference.localhost/Léa & co").unwrap());
        let shared = SharedStanza::encode(&groupchat).unwrap();
        tx.try_send(Queued::Shared(std::sync::Arc::new(shared)))
            .unwrap();
        let first = queue.recv().await.unwrap();
        let me = FullJid::new("lea@localhost/d'Artagnan & <co>").unwrap();
        assert!(
            outbox
                .write_queued(first, &mut queue, &control, &me, counts)
                .await
        );
        assert_eq!(outbox.sent(), 5);
        // Each stanza counted by its kind, the shared one too; the nonza not at all.
        let text = metrics.encode();
        assert!(
            text.contains("causette_stanzas_out_total{kind=\"message\"} 5"),
            "{text}"
        );
        let link = outbox.link();
        assert_eq!(link.written.len(), 6);
        assert!(link.written[3].contains("urn:xmpp:sm:3"));
        // The shared stanza got this session's address, escaped, and stays well-formed.
        let written = &link.written[5];
        assert!(
            written.starts_with("<message to='lea@localhost/d&apos;Artagnan &amp; &lt;co>' "),
            "{written}"
        );
        let parsed: Element = format!("<s xmlns='jabber:client'>{written}</s>")
            .parse()
            .expect("well-formed");
        let parsed = parsed.children().next().unwrap();
        assert_eq!(parsed.attr("to"), Some("lea@localhost/d'Artagnan & <co>"));
        assert_eq!(
            parsed.attr("from"),
            Some("room@conference.localhost/Léa & co")
        );
        // One flush per batch: the pair, the nonza, the queue (the paced run has none).
        assert_eq!(link.flushes, 3);
    }
}
