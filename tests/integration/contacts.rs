//! The ENT manual's contact scenarios ("Gérer ses contacts", "Gérer les demandes", "Chatter"),
//! each played by tokio-xmpp clients over STARTTLS + SCRAM, on SQLite and on PostgreSQL.

use crate::common::{TestServer, Xmpp};

const ROSTER: &str = "jabber:iq:roster";
const CATEGORIES: &str = "urn:causette:categories:0";

/// Users of one scenario: unique names, since the PostgreSQL database outlives a run.
struct Names {
    alice: String,
    bob: String,
    carol: String,
}

impl Names {
    fn new() -> Self {
        use rand::Rng;
        let n: u32 = rand::thread_rng().r#gen();
        Self {
            alice: format!("alice{n}"),
            bob: format!("bob{n}"),
            carol: format!("carol{n}"),
        }
    }
}

async fn setup(server: &TestServer) -> Names {
    let names = Names::new();
    for user in [&names.alice, &names.bob, &names.carol] {
        server.add_user(user, "pw").await;
    }
    names
}

async fn online(server: &TestServer, user: &str) -> Xmpp {
    let mut client = Xmpp::login(server, user, "pw").await;
    client
        .iq("get", &format!("<query xmlns='{ROSTER}'/>"))
        .await;
    client.send("<presence xmlns='jabber:client'/>").await;
    // Its own presence comes back (RFC 6121 §4.2.2).
    let own = format!("from='{}'", client.jid);
    client.expect_all(&["<presence", &own]).await;
    client
}

fn jid(user: &str) -> String {
    format!("{user}@localhost")
}

/// Alice adds Bob into a category and asks for his presence; Bob accepts.
async fn befriend(alice: &mut Xmpp, bob: &mut Xmpp, names: &Names, category: &str) {
    let b = jid(&names.bob);
    let set = alice
        .iq(
            "set",
            &format!(
                "<query xmlns='{ROSTER}'><item jid='{b}'><group>{category}</group></item></query>"
            ),
        )
        .await;
    assert!(set.contains("type='result'"), "{set}");
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    bob.expect_all(&["type='subscribe'", &jid(&names.alice)])
        .await;
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{}' type='subscribed'/>",
        jid(&names.alice)
    ))
    .await;
    alice.expect_all(&["type='subscribed'", &b]).await;
}

pub async fn add_contact_pending_then_accept(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    let b = jid(&names.bob);
    let a = jid(&names.alice);

    alice
        .iq("set", &format!("<query xmlns='{ROSTER}'><item jid='{b}' name='Bob'><group>Classe 6e B</group></item></query>"))
        .await;
    let push = alice.expect_all(&["<item", &b, "name='Bob'"]).await;
    assert!(push.contains("<group>Classe 6e B</group>"), "{push}");
    // No subscription yet: the attribute is absent, which means none (RFC 6121 §2.1.2.5).
    assert!(
        !push.contains("subscription=") && !push.contains("ask="),
        "{push}"
    );
    alice.send(&format!("<presence xmlns='jabber:client' to='{b}' type='subscribe'><status>Bonjour !</status></presence>")).await;
    // "Invitation en attente": the pending request shows as ask='subscribe'.
    let pending = alice.expect_all(&["<item", &b, "ask='subscribe'"]).await;
    assert!(pending.contains("<group>Classe 6e B</group>"), "{pending}");
    let request = bob.expect_all(&["type='subscribe'", &a]).await;
    assert!(
        request.contains("Bonjour !"),
        "the request carries its status: {request}"
    );

    // "Accepter une demande": mutual, both end with subscription='both'.
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{a}' type='subscribed'/>"
    ))
    .await;
    let alice_item = alice
        .expect_all(&["<item", &b, "subscription='both'"])
        .await;
    assert!(!alice_item.contains("ask="), "{alice_item}");
    assert!(
        alice_item.contains("<group>Classe 6e B</group>"),
        "category kept: {alice_item}"
    );
    bob.expect_all(&["<item", &a, "subscription='both'"]).await;
    // Each sees the other's presence.
    alice
        .expect_all(&["<presence", &format!("from='{b}/")])
        .await;
    bob.expect_all(&["<presence", &format!("from='{a}/")]).await;

    let roster = bob.iq("get", &format!("<query xmlns='{ROSTER}'/>")).await;
    assert!(
        roster.contains(&a) && roster.contains("subscription='both'"),
        "{roster}"
    );
    alice.logout().await;
    bob.logout().await;
}

pub async fn refused_request_stays_visible(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    let b = jid(&names.bob);
    let a = jid(&names.alice);
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    bob.expect_all(&["type='subscribe'", &a]).await;
    // "Refuser une demande".
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{a}' type='unsubscribed'/>"
    ))
    .await;
    alice.expect_all(&["type='unsubscribed'", &b]).await;
    let refused = alice
        .expect_all(&["<item", &b, "urn:causette:roster:0"])
        .await;
    assert!(refused.contains("<refused"), "{refused}");
    assert!(!refused.contains("ask="), "{refused}");
    alice.logout().await;

    // "Invitation refusée" survives reconnection.
    let mut alice = Xmpp::login(server, &names.alice, "pw").await;
    let roster = alice.iq("get", &format!("<query xmlns='{ROSTER}'/>")).await;
    assert!(
        roster.contains(&b) && roster.contains("<refused"),
        "{roster}"
    );
    // Bob's "Mes demandes" is empty now.
    bob.logout().await;
    let mut bob = online(server, &names.bob).await;
    bob.expect_none("type='subscribe'").await;
    // Asking again clears the refusal.
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    let again = alice.expect_all(&["<item", &b, "ask='subscribe'"]).await;
    assert!(!again.contains("<refused"), "{again}");
    bob.expect_all(&["type='subscribe'", &a]).await;
    alice.logout().await;
    bob.logout().await;
}

pub async fn request_to_offline_user_waits_for_login(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let b = jid(&names.bob);
    let a = jid(&names.alice);
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    alice.expect_all(&["<item", &b, "ask='subscribe'"]).await;
    // Bob logs in later: the request is in "Mes demandes", at every login until answered.
    for _ in 0..2 {
        let mut bob = online(server, &names.bob).await;
        bob.expect_all(&["type='subscribe'", &a]).await;
        bob.logout().await;
    }
    let mut bob = online(server, &names.bob).await;
    bob.expect_all(&["type='subscribe'", &a]).await;
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{a}' type='subscribed'/>"
    ))
    .await;
    alice
        .expect_all(&["<item", &b, "subscription='both'"])
        .await;
    bob.logout().await;
    let mut bob = online(server, &names.bob).await;
    bob.expect_none("type='subscribe'").await;
    alice.logout().await;
    bob.logout().await;
}

pub async fn deleting_a_contact_removes_it_on_both_sides(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    befriend(&mut alice, &mut bob, &names, "Amis").await;
    let b = jid(&names.bob);
    let a = jid(&names.alice);
    bob.expect_all(&["<presence", &format!("from='{a}/")]).await;
    alice.drain().await;
    bob.drain().await;

    let removed = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{b}' subscription='remove'/></query>"),
        )
        .await;
    assert!(removed.contains("type='result'"), "{removed}");
    alice
        .expect_all(&["<item", &b, "subscription='remove'"])
        .await;
    bob.expect_all(&["<item", &a, "subscription='remove'"])
        .await;
    // Each sees the other go unavailable.
    bob.expect_all(&["type='unavailable'", &format!("from='{a}/")])
        .await;
    alice
        .expect_all(&["type='unavailable'", &format!("from='{b}/")])
        .await;
    for (client, other) in [(&mut alice, &b), (&mut bob, &a)] {
        let roster = client
            .iq("get", &format!("<query xmlns='{ROSTER}'/>"))
            .await;
        assert!(!roster.contains(other.as_str()), "{roster}");
    }
    // Removing it again: no such item.
    let again = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{b}' subscription='remove'/></query>"),
        )
        .await;
    assert!(again.contains("<item-not-found"), "{again}");
    alice.logout().await;
    bob.logout().await;
}

pub async fn categories_create_rename_delete(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let b = jid(&names.bob);
    let c = jid(&names.carol);
    let list = |xml: &str, name: &str, count: usize| {
        xml.contains(&format!("<category name='{name}' count='{count}'"))
            || xml.contains(&format!("<category count='{count}' name='{name}'"))
    };

    // An empty category is kept.
    let created = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><create name='Projet'/></query>"),
        )
        .await;
    assert!(created.contains("type='result'"), "{created}");
    let listed = alice
        .iq("get", &format!("<query xmlns='{CATEGORIES}'/>"))
        .await;
    assert!(list(&listed, "Projet", 0), "{listed}");
    let duplicate = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><create name='Projet'/></query>"),
        )
        .await;
    assert!(duplicate.contains("<conflict"), "{duplicate}");

    for contact in [&b, &c] {
        alice
            .iq("set", &format!("<query xmlns='{ROSTER}'><item jid='{contact}'><group>Projet</group></item></query>"))
            .await;
    }
    let listed = alice
        .iq("get", &format!("<query xmlns='{CATEGORIES}'/>"))
        .await;
    assert!(list(&listed, "Projet", 2), "{listed}");
    alice.drain().await;

    // Rename: every contact moves, one push each.
    let renamed = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><rename from='Projet' to='Sciences'/></query>"),
        )
        .await;
    assert!(renamed.contains("type='result'"), "{renamed}");
    for contact in [&b, &c] {
        alice
            .expect_all(&["<item", contact, "<group>Sciences</group>"])
            .await;
    }
    // Delete: the contacts move to "Autres contacts", created on the fly.
    let deleted = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><delete name='Sciences'/></query>"),
        )
        .await;
    assert!(deleted.contains("type='result'"), "{deleted}");
    for contact in [&b, &c] {
        alice
            .expect_all(&["<item", contact, "<group>Autres contacts</group>"])
            .await;
    }
    let listed = alice
        .iq("get", &format!("<query xmlns='{CATEGORIES}'/>"))
        .await;
    assert!(list(&listed, "Autres contacts", 2), "{listed}");
    assert!(!listed.contains("Sciences"), "{listed}");

    // A category that loses its last contact disappears.
    for contact in [&b, &c] {
        alice
            .iq(
                "set",
                &format!(
                    "<query xmlns='{ROSTER}'><item jid='{contact}' subscription='remove'/></query>"
                ),
            )
            .await;
    }
    let listed = alice
        .iq("get", &format!("<query xmlns='{CATEGORIES}'/>"))
        .await;
    assert!(!listed.contains("Autres contacts"), "{listed}");

    // Unknown categories and bad names get clear errors.
    let unknown = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><rename from='Nope' to='X'/></query>"),
        )
        .await;
    assert!(
        unknown.contains("<item-not-found") && unknown.contains("no such category"),
        "{unknown}"
    );
    let long = "x".repeat(500);
    let too_long = alice
        .iq(
            "set",
            &format!("<query xmlns='{CATEGORIES}'><create name='{long}'/></query>"),
        )
        .await;
    assert!(too_long.contains("<not-acceptable"), "{too_long}");
    let nothing = alice
        .iq("set", &format!("<query xmlns='{CATEGORIES}'/>"))
        .await;
    assert!(nothing.contains("<bad-request"), "{nothing}");
    alice.logout().await;
}

pub async fn presence_states_are_seen_by_the_contact(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    befriend(&mut alice, &mut bob, &names, "Amis").await;
    let a = format!("from='{}/", jid(&names.alice));
    bob.expect_all(&["<presence", &a]).await;
    // "Absent", "Ne pas déranger", "Disponible".
    for (show, expect) in [("away", "<show>away</show>"), ("dnd", "<show>dnd</show>")] {
        alice
            .send(&format!("<presence xmlns='jabber:client'><show>{show}</show><status>{show} now</status></presence>"))
            .await;
        let seen = bob.expect_all(&["<presence", &a, expect]).await;
        assert!(seen.contains(&format!("{show} now")), "{seen}");
    }
    alice.send("<presence xmlns='jabber:client'/>").await;
    let seen = bob
        .expect_all(&["<presence", &a, "<priority>0</priority>"])
        .await;
    assert!(!seen.contains("<show>"), "available: {seen}");
    // Disconnecting says unavailable.
    alice.logout().await;
    bob.expect_all(&["type='unavailable'", &a]).await;
    bob.logout().await;
}

pub async fn offline_message_arrives_with_delay(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    befriend(&mut alice, &mut bob, &names, "Amis").await;
    bob.logout().await;
    let b = jid(&names.bob);
    for body in ["premier", "second"] {
        alice
            .send(&format!(
                "<message xmlns='jabber:client' to='{b}' type='chat'><body>{body}</body></message>"
            ))
            .await;
    }
    alice.expect_none("type='error'").await;
    let mut bob = online(server, &names.bob).await;
    let first = bob.expect("premier").await;
    assert!(
        first.contains("urn:xmpp:delay") && first.contains("stamp="),
        "{first}"
    );
    bob.expect("second").await;
    // Delivered once only.
    bob.logout().await;
    let mut bob = online(server, &names.bob).await;
    bob.expect_none("premier").await;
    alice.logout().await;
    bob.logout().await;
}

/// XEP-0160/XEP-0085: a chat state alone (`<composing/>`) to an offline contact is dropped
/// without an error, as is a message that says `<no-store/>`; a message with a body, or one
/// that asks `<store/>`, is kept.
pub async fn only_messages_with_content_are_kept_offline(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    befriend(&mut alice, &mut bob, &names, "Amis").await;
    bob.logout().await;
    let b = jid(&names.bob);
    let sent = [
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        "<paused xmlns='http://jabber.org/protocol/chatstates'/>",
        "<body>jetable</body><no-store xmlns='urn:xmpp:hints'/>",
        "<body>gardé</body><active xmlns='http://jabber.org/protocol/chatstates'/>",
        "<received xmlns='urn:xmpp:receipts' id='r1'/><store xmlns='urn:xmpp:hints'/>",
    ];
    for (n, payload) in sent.iter().enumerate() {
        alice
            .send(&format!(
                "<message xmlns='jabber:client' to='{b}' type='chat' id='o{n}'>{payload}</message>"
            ))
            .await;
    }
    alice.expect_none("type='error'").await;
    let mut bob = online(server, &names.bob).await;
    let kept = bob.expect("gardé").await;
    assert!(
        !kept.contains("composing") && !kept.contains("paused"),
        "{kept}"
    );
    assert!(!kept.contains("jetable"), "{kept}");
    bob.expect("urn:xmpp:receipts").await;
    bob.expect_none("composing").await;
    alice.logout().await;
    bob.logout().await;
}

pub async fn chat_needs_an_accepted_contact(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut carol = online(server, &names.carol).await;
    let c = jid(&names.carol);
    alice
        .send(&format!("<message xmlns='jabber:client' to='{c}' type='chat' id='m1'><body>salut</body></message>"))
        .await;
    let refused = alice.expect_all(&["type='error'", "id='m1'"]).await;
    assert!(
        refused.contains("<not-allowed") && refused.contains("accepted"),
        "{refused}"
    );
    carol.expect_none("salut").await;
    // A pending request is not enough either.
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{c}' type='subscribe'/>"
        ))
        .await;
    carol.expect("type='subscribe'").await;
    alice
        .send(&format!("<message xmlns='jabber:client' to='{c}' type='chat' id='m2'><body>salut</body></message>"))
        .await;
    alice.expect_all(&["type='error'", "id='m2'"]).await;
    alice.logout().await;
    carol.logout().await;
}

pub async fn roster_versioning(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = Xmpp::login(server, &names.alice, "pw").await;
    let b = jid(&names.bob);
    let first = alice.iq("get", &format!("<query xmlns='{ROSTER}'/>")).await;
    let version = |xml: &str| -> String {
        let at = xml.find("ver='").expect("a version") + 5;
        xml[at..].split('\'').next().unwrap().to_owned()
    };
    let v0 = version(&first);
    // Current version: an empty result.
    let same = alice
        .iq("get", &format!("<query xmlns='{ROSTER}' ver='{v0}'/>"))
        .await;
    assert!(
        same.contains("type='result'") && !same.contains("<query"),
        "{same}"
    );
    alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{b}'/></query>"),
        )
        .await;
    let push = alice.expect_all(&["<item", &b]).await;
    let v1 = version(&push);
    assert_ne!(v0, v1, "a change bumps the version");
    // An old version gets the whole roster.
    let full = alice
        .iq("get", &format!("<query xmlns='{ROSTER}' ver='{v0}'/>"))
        .await;
    assert!(
        full.contains(&b) && full.contains(&format!("ver='{v1}'")),
        "{full}"
    );
    alice.logout().await;
}

pub async fn bad_roster_input_gets_errors_and_saves_nothing(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let b = jid(&names.bob);
    let c = jid(&names.carol);
    let two = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{b}'/><item jid='{c}'/></query>"),
        )
        .await;
    assert!(
        two.contains("<bad-request") && two.contains("exactly one item"),
        "{two}"
    );
    let long = "x".repeat(500);
    let long_group = alice
        .iq(
            "set",
            &format!(
                "<query xmlns='{ROSTER}'><item jid='{b}'><group>{long}</group></item></query>"
            ),
        )
        .await;
    assert!(long_group.contains("<not-acceptable"), "{long_group}");
    let empty_group = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{b}'><group> </group></item></query>"),
        )
        .await;
    assert!(empty_group.contains("<not-acceptable"), "{empty_group}");
    let malformed = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='a@@b'/></query>"),
        )
        .await;
    assert!(
        malformed.contains("type='error'") && malformed.contains("<bad-request"),
        "{malformed}"
    );
    let own = jid(&names.alice);
    let myself = alice
        .iq(
            "set",
            &format!("<query xmlns='{ROSTER}'><item jid='{own}'/></query>"),
        )
        .await;
    assert!(myself.contains("<not-allowed"), "{myself}");
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{own}' type='subscribe' id='self'/>"
        ))
        .await;
    let to_self = alice.expect_all(&["type='error'", "id='self'"]).await;
    assert!(
        to_self.contains("<bad-request") && to_self.contains("yourself"),
        "{to_self}"
    );
    alice
        .send(
            "<presence xmlns='jabber:client' to='nobody@localhost' type='subscribe' id='nobody'/>",
        )
        .await;
    // A request to an account that does not exist is answered as one to an account that has
    // not answered yet: the item waits, and nothing tells whether the account exists.
    let pending = alice
        .expect_all(&["<item", "nobody@localhost", "ask='subscribe'"])
        .await;
    assert!(!pending.contains("type='error'"), "{pending}");
    alice.expect_none("id='nobody'").await;
    alice.logout().await;
}

pub async fn pre_approved_request_is_accepted_at_once(server: &TestServer) {
    let names = setup(server).await;
    let mut alice = online(server, &names.alice).await;
    let mut bob = online(server, &names.bob).await;
    let a = jid(&names.alice);
    let b = jid(&names.bob);
    // RFC 6121 §3.4: Bob approves before Alice asks.
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{a}' type='subscribed'/>"
    ))
    .await;
    let approved = bob.expect_all(&["<item", &a, "approved='true'"]).await;
    assert!(!approved.contains("subscription="), "{approved}");
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    alice.expect_all(&["type='subscribed'", &b]).await;
    alice
        .expect_all(&["<item", &b, "subscription='both'"])
        .await;
    let final_item = bob.expect_all(&["<item", &a, "subscription='both'"]).await;
    assert!(!final_item.contains("approved="), "{final_item}");
    bob.expect_none("type='subscribe'").await;
    alice.logout().await;
    bob.logout().await;
}

/// One test per backend for each scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let server = crate::common::TestServer::start().await;
                    super::$scenario(&server).await;
                    server.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
                async fn $scenario() {
                    let url = crate::postgres::postgres_url();
                    let server =
                        crate::common::TestServer::start_with(|c| c.database.url = url).await;
                    super::$scenario(&server).await;
                    server.stop().await;
                }
            )*
        }
    };
}

on_both_backends!(
    add_contact_pending_then_accept,
    refused_request_stays_visible,
    request_to_offline_user_waits_for_login,
    deleting_a_contact_removes_it_on_both_sides,
    categories_create_rename_delete,
    presence_states_are_seen_by_the_contact,
    offline_message_arrives_with_delay,
    only_messages_with_content_are_kept_offline,
    chat_needs_an_accepted_contact,
    roster_versioning,
    bad_roster_input_gets_errors_and_saves_nothing,
    pre_approved_request_is_accepted_at_once,
);
