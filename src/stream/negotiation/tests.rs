//! The negotiation machine on its own: elements in, steps out, no connection.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

const PLAIN_ALICE: &str =
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>";

fn element(xml: &str) -> ClientElement {
    xso::from_bytes::<ClientElement>(xml.as_bytes()).expect("a client element")
}

fn negotiator(tls: bool, plaintext_allowed: bool) -> Negotiator {
    let now = Instant::now();
    Negotiator::new(
        Security {
            tls,
            plaintext_allowed,
            starttls: true,
            transport: Transport {
                peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                tls_exporter: None,
                secure: tls || plaintext_allowed,
            },
        },
        Deadlines {
            tls: now + Duration::from_secs(5),
            bound: now + Duration::from_secs(30),
        },
    )
}

fn text(element: impl Into<Element>) -> String {
    String::from(&element.into())
}

fn outgoing(outgoing: &Outgoing) -> String {
    match outgoing {
        Outgoing::Sasl(nonza) => text(xso::transform::<Element, _>(nonza).unwrap()),
        Outgoing::Iq(iq) => text((**iq).clone()),
    }
}

/// What a step tells the link, as text.
fn describe(step: &Step) -> String {
    match step {
        Step::Reply(reply) => format!("reply {}", outgoing(reply)),
        Step::StartTls => "starttls".into(),
        Step::Authenticated(_) => "authenticated".into(),
        Step::Bound(bound) => format!("bound {}", bound.1.jid),
        Step::Close(before, fatal) => format!(
            "close {:?} {} after {:?}",
            fatal.condition,
            fatal.text,
            before.as_ref().map(outgoing)
        ),
    }
}

async fn shared_with_alice() -> (tempfile::TempDir, std::sync::Arc<Shared>) {
    let (dir, shared) = crate::test_shared(|_| {}).await;
    crate::accounts::add(&shared.store, "alice", "pw".into(), 4096)
        .await
        .expect("account");
    (dir, shared)
}

#[tokio::test]
async fn tls_comes_first_when_required() {
    let (_dir, shared) = shared_with_alice().await;
    let mut negotiator = negotiator(false, false);
    let features = text(negotiator.opened(&shared, Some("localhost")).unwrap());
    assert!(features.contains("<required/>"), "{features}");
    assert!(!features.contains("mechanism"), "{features}");
    assert_eq!(negotiator.deadline(), negotiator.deadlines.tls);

    let refused = describe(&negotiator.element(&shared, element(PLAIN_ALICE)).await);
    assert!(refused.contains("encryption-required"), "{refused}");
    let starttls = element("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(
        describe(&negotiator.element(&shared, starttls).await),
        "starttls"
    );

    negotiator.secured(Transport {
        peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls_exporter: None,
        secure: true,
    });
    assert_eq!(negotiator.deadline(), negotiator.deadlines.bound);
    let features = text(negotiator.opened(&shared, None).unwrap());
    assert!(
        features.contains("SCRAM-SHA-256") && !features.contains("starttls"),
        "{features}"
    );
}

#[tokio::test]
async fn plain_login_then_bind() {
    let (_dir, shared) = shared_with_alice().await;
    let mut early = negotiator(false, true);
    let mut negotiator = negotiator(false, true);
    let features = text(negotiator.opened(&shared, Some("LOCALHOST.")).unwrap());
    // Offered, not required, and SCRAM preferred to PLAIN (RFC 6120 §6.3.3).
    assert!(
        features.contains("starttls") && !features.contains("required"),
        "{features}"
    );
    assert!(
        features.find("SCRAM-SHA-256") < features.find("PLAIN"),
        "{features}"
    );

    let stanza = element("<message xmlns='jabber:client' to='bob@localhost'/>");
    let closed = describe(&early.element(&shared, stanza).await);
    assert!(closed.contains("NotAuthorized"), "{closed}");

    let step = negotiator.element(&shared, element(PLAIN_ALICE)).await;
    assert_eq!(describe(&step), "authenticated");
    let features = text(negotiator.opened(&shared, None).unwrap());
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );

    let bad = element(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>\u{1F600}</resource></bind></iq>",
    );
    let refused = describe(&negotiator.element(&shared, bad).await);
    assert!(
        refused.contains("bad-request") && refused.contains("id='b1'"),
        "{refused}"
    );

    let bind = element(
        "<iq xmlns='jabber:client' type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>desk</resource></bind></iq>",
    );
    let Step::Bound(bound) = negotiator.element(&shared, bind).await else {
        panic!("not bound");
    };
    let (result, bound) = *bound;
    assert_eq!(bound.jid.to_string(), "alice@localhost/desk");
    assert!(text(result).contains("<jid>alice@localhost/desk</jid>"));
    assert_eq!(shared.router.online_count(), 1);
    bound.abandon(&shared).await;
    assert_eq!(shared.router.online_count(), 0);
}

#[tokio::test]
async fn another_host_is_refused() {
    let (_dir, shared) = shared_with_alice().await;
    let fatal = negotiator(true, false)
        .opened(&shared, Some("example.org"))
        .unwrap_err();
    assert_eq!(fatal.condition, DefinedCondition::HostUnknown);
}

#[tokio::test]
async fn the_third_failure_closes_the_stream() {
    let (_dir, shared) = shared_with_alice().await;
    let mut negotiator = negotiator(true, false);
    let wrong = element(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>",
    );
    let unknown = element("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'/>");
    let reply = describe(&negotiator.element(&shared, unknown).await);
    assert!(reply.contains("invalid-mechanism"), "{reply}");
    let not_base64 =
        element("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!</auth>");
    let reply = describe(&negotiator.element(&shared, not_base64).await);
    assert!(reply.contains("incorrect-encoding"), "{reply}");
    let abort = element("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let reply = describe(&negotiator.element(&shared, abort).await);
    assert!(reply.contains("aborted"), "{reply}");
    let last = describe(&negotiator.element(&shared, wrong).await);
    assert!(
        last.starts_with("close PolicyViolation") && last.contains("not-authorized"),
        "{last}"
    );
}

#[tokio::test]
async fn a_disabled_profile_is_refused_in_both_languages() {
    let (_dir, shared) = shared_with_alice().await;
    let changes: Vec<crate::directory::DirectoryChange> = serde_json::from_value(
        serde_json::json!([
            {"op": "put_structure", "id": "s1", "name": "Collège"},
            {"op": "put_user", "username": "alice", "display_name": "Alice", "profile": "student", "structures": ["s1"]},
            {"op": "set_profile_access", "id": "s1", "profile": "student", "enabled": false}
        ]),
    )
    .expect("changes");
    shared
        .policy
        .apply(&shared.store, "test", &changes, &[])
        .await
        .expect("applied");
    let mut negotiator = negotiator(true, false);
    let reply = describe(&negotiator.element(&shared, element(PLAIN_ALICE)).await);
    assert!(
        reply.contains("account-disabled") && reply.contains("xml:lang='fr'"),
        "{reply}"
    );
}
