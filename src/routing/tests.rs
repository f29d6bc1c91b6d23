//! Address dispatch: components, the server's IQ table, and the bounce of other domains.

use std::sync::{Arc, Mutex};

use jid::{FullJid, Jid};
use tokio::sync::mpsc;
use xmpp_parsers::message::Message;

use super::*;
use crate::router::{Component, Queued, Router, SessionControl, SessionHandle};

/// A component that keeps what it gets and answers each message with a headline.
#[derive(Default)]
struct Echo {
    got: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Component for Echo {
    fn name(&self) -> &str {
        "Echo"
    }

    async fn handle(&self, router: &Router, stanza: Stanza) {
        let Stanza::Message(message) = stanza else {
            return;
        };
        self.got.lock().unwrap().push(
            message
                .to
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
        );
        let mut answer = Message::new(message.from.clone());
        answer.type_ = MessageType::Headline;
        answer.from = message.to.clone();
        let to = message
            .from
            .as_ref()
            .and_then(|f| f.try_as_full().ok())
            .cloned();
        if let Some(to) = to {
            let _ = router.deliver_to_full(&to, Box::new(Stanza::Message(answer)));
        }
    }
}

fn bound(shared: &Shared, jid: &FullJid) -> (Arc<SessionControl>, mpsc::Receiver<Queued>) {
    let (tx, rx) = mpsc::channel(8);
    let control = Arc::new(SessionControl::default());
    let handle = SessionHandle::new(jid.clone(), tx, control.clone());
    assert!(shared.router.register(handle).unwrap().is_none());
    (control, rx)
}

fn queued_text(queued: &Queued) -> String {
    let Queued::Stanza(stanza) = queued else {
        panic!("a stanza for this session alone: {queued:?}");
    };
    text(stanza)
}

fn text(stanza: &Stanza) -> String {
    let element: minidom::Element = match stanza {
        Stanza::Message(m) => m.clone().into(),
        Stanza::Presence(p) => p.clone().into(),
        Stanza::Iq(iq) => iq.clone().into(),
    };
    String::from(&element)
}

fn message_to(from: &FullJid, to: &str) -> Stanza {
    let mut message = Message::chat(Some(Jid::new(to).unwrap()));
    message.from = Some(Jid::from(from.clone()));
    message
        .bodies
        .insert(xmpp_parsers::message::Lang::default(), "hello".into());
    Stanza::Message(message)
}

fn iq_get(from: &FullJid, to: &str, payload: minidom::Element) -> Stanza {
    Stanza::Iq(Iq::Get {
        from: Some(Jid::from(from.clone())),
        to: Some(Jid::new(to).unwrap()),
        id: "q".into(),
        payload,
    })
}

#[tokio::test]
async fn components_take_their_domain_and_other_domains_are_bounced() {
    let (_dir, shared) = crate::test_shared(|_| {}).await;
    let echo = Arc::new(Echo::default());
    shared.router.register_component(
        jid::DomainPart::new("echo.localhost").unwrap().into_owned(),
        echo.clone(),
    );
    let alice = FullJid::new("alice@localhost/desk").unwrap();
    let (control, mut queue) = bound(&shared, &alice);
    let sender = Sender::new(&alice, &control);

    route(&shared.im(), &sender, message_to(&alice, "echo.localhost")).await;
    route(
        &shared.im(),
        &sender,
        message_to(&alice, "room@echo.localhost/nick"),
    )
    .await;
    assert_eq!(
        *echo.got.lock().unwrap(),
        ["echo.localhost", "room@echo.localhost/nick"]
    );
    for _ in 0..2 {
        let answer = queued_text(&queue.try_recv().expect("the component's answer"));
        assert!(answer.contains("type='headline'"), "{answer}");
    }

    route(&shared.im(), &sender, message_to(&alice, "bob@example.org")).await;
    let bounced = sender.take_replies();
    assert_eq!(bounced.len(), 1);
    let bounced = text(&bounced[0]);
    assert!(bounced.contains("remote-server-not-found"), "{bounced}");
    assert_eq!(echo.got.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_server_answers_by_payload_and_lists_its_components() {
    let (_dir, shared) = crate::test_shared(|_| {}).await;
    shared.router.register_component(
        jid::DomainPart::new("conference.localhost")
            .unwrap()
            .into_owned(),
        Arc::new(Echo::default()),
    );
    let alice = FullJid::new("alice@localhost/desk").unwrap();
    let (control, _queue) = bound(&shared, &alice);
    let sender = Sender::new(&alice, &control);
    let ask = |payload: &str| iq_get(&alice, "localhost", payload.parse().unwrap());

    route(
        &shared.im(),
        &sender,
        ask("<query xmlns='http://jabber.org/protocol/disco#items'/>"),
    )
    .await;
    route(
        &shared.im(),
        &sender,
        ask("<query xmlns='jabber:iq:version'/>"),
    )
    .await;
    route(&shared.im(), &sender, ask("<ping xmlns='urn:xmpp:ping'/>")).await;
    route(&shared.im(), &sender, ask("<unknown xmlns='urn:example'/>")).await;
    let answers: Vec<String> = sender.take_replies().iter().map(text).collect();
    assert!(
        answers[0].contains("jid='conference.localhost'") && answers[0].contains("name='Echo'"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].contains("<name>Causette</name>"),
        "{}",
        answers[1]
    );
    assert!(answers[2].contains("type='result'"), "{}", answers[2]);
    assert!(answers[3].contains("service-unavailable"), "{}", answers[3]);

    // A set where only a get is defined gets the same answer as an unknown payload.
    let set = Stanza::Iq(Iq::Set {
        from: Some(Jid::from(alice.clone())),
        to: Some(Jid::new("localhost").unwrap()),
        id: "s".into(),
        payload: "<query xmlns='jabber:iq:version'/>".parse().unwrap(),
    });
    route(&shared.im(), &sender, set).await;
    let answer = text(&sender.take_replies()[0]);
    assert!(answer.contains("service-unavailable"), "{answer}");
}
