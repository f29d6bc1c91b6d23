//! The ENT's communication rules and profile access, provisioned through the admin API and
//! enforced on real clients; and the admin API's errors.

use crate::common::{Raw, TestServer, Xmpp, http};

const DIRECTORY: &str = r#"{"op":"put_structure","id":"0750001A","name":"Collège Victor Hugo"}
{"op":"put_structure","id":"0750002B","name":"Lycée Jean Moulin"}
{"op":"put_user","username":"eleve1","display_name":"Léa","profile":"student","structures":["0750001A"]}
{"op":"put_user","username":"eleve2","display_name":"Hugo","profile":"student","structures":["0750001A"]}
{"op":"put_user","username":"eleve3","display_name":"Inès","profile":"student","structures":["0750001A"]}
{"op":"put_user","username":"eleve4","display_name":"Tom","profile":"student","structures":["0750002B"]}
{"op":"put_user","username":"prof1","display_name":"M. Durand","profile":"teacher","structures":["0750001A"]}
{"op":"put_user","username":"prof2","display_name":"Mme Moreau","profile":"teacher","structures":["0750001A"]}
{"op":"put_user","username":"parent1","display_name":"Sophie","profile":"parent","structures":["0750001A"]}
{"op":"put_class","id":"6A","structure":"0750001A","name":"6e A","members":["eleve1","eleve2","prof1"]}
{"op":"put_class","id":"6B","structure":"0750001A","name":"6e B","members":["eleve3","prof2"]}
{"op":"link_parent","parent":"parent1","child":"eleve1"}
{"op":"put_group","id":"club","name":"Club théâtre","members":["eleve1","eleve4"]}
"#;

const USERS: [&str; 7] = [
    "eleve1", "eleve2", "eleve3", "eleve4", "prof1", "prof2", "parent1",
];

async fn provisioned() -> TestServer {
    let server = TestServer::start_with(|c| c.tls.allow_plaintext_on_loopback = true).await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(DIRECTORY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"applied\":13"), "{body}");
    for user in USERS {
        let (status, body) = http(
            server.http,
            "PUT",
            &format!("/admin/api/v1/users/{user}"),
            Some(&token),
            Some(&format!(
                r#"{{"display_name":"{user}","profile":"{}","structures":["{}"],"password":"pw"}}"#,
                profile_of(user),
                if user == "eleve4" {
                    "0750002B"
                } else {
                    "0750001A"
                }
            )),
        )
        .await;
        assert_eq!(status, 204, "{body}");
    }
    server
}

fn profile_of(user: &str) -> &'static str {
    if user.starts_with("eleve") {
        "student"
    } else if user.starts_with("prof") {
        "teacher"
    } else {
        "parent"
    }
}

/// Asks `to` for its presence; the answer is what `from` receives about it.
async fn request(from: &mut Xmpp, to: &str, id: &str) -> Option<String> {
    from.send(&format!(
        "<presence xmlns='jabber:client' to='{to}@localhost' type='subscribe' id='{id}'/>"
    ))
    .await;
    let pending = format!("jid='{to}@localhost'");
    let denied = format!("id='{id}'");
    // Either a roster push with ask='subscribe' or an error.
    tokio::time::timeout(crate::common::WAIT, async {
        loop {
            let got = from.expect("<").await;
            if got.contains(&denied) && got.contains("type='error'") {
                return Some(got);
            }
            if got.contains(&pending) && got.contains("ask='subscribe'") {
                return None;
            }
        }
    })
    .await
    .expect("an answer")
}

async fn online(server: &TestServer, user: &str) -> Xmpp {
    let mut client = Xmpp::login(server, user, "pw").await;
    client.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    client
}

#[tokio::test]
async fn rules_decide_who_may_add_whom() {
    let server = provisioned().await;
    let mut eleve1 = online(&server, "eleve1").await;
    let mut parent1 = online(&server, "parent1").await;
    // Same class: allowed.
    assert_eq!(request(&mut eleve1, "eleve2", "a").await, None);
    // Another class: denied with a text in English and French.
    let denied = request(&mut eleve1, "eleve3", "b").await.expect("denied");
    assert!(denied.contains("<forbidden"), "{denied}");
    assert!(
        denied.contains("xml:lang='fr'") && denied.contains("règles de communication"),
        "{denied}"
    );
    assert!(denied.contains("xml:lang='en'"), "{denied}");
    // A shared ENT group goes across schools.
    assert_eq!(request(&mut eleve1, "eleve4", "c").await, None);
    // Parents reach the teachers of their children's classes, and no other.
    assert_eq!(request(&mut parent1, "prof1", "d").await, None);
    assert!(request(&mut parent1, "prof2", "e").await.is_some());
    // The roster set of a person one may not reach is refused too, and nothing is saved.
    let set = eleve1
        .iq(
            "set",
            "<query xmlns='jabber:iq:roster'><item jid='eleve3@localhost'/></query>",
        )
        .await;
    assert!(set.contains("<forbidden"), "{set}");
    let roster = eleve1.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    assert!(!roster.contains("eleve3@"), "{roster}");
    eleve1.logout().await;
    parent1.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn messages_follow_live_directory_changes() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.im.chat_requires_acceptance = false;
    })
    .await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(DIRECTORY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for user in ["eleve1", "eleve2"] {
        http(
            server.http,
            "PUT",
            &format!("/admin/api/v1/users/{user}"),
            Some(&token),
            Some(r#"{"display_name":"x","profile":"student","structures":["0750001A"],"password":"pw"}"#),
        )
        .await;
    }
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve2 = online(&server, "eleve2").await;
    eleve2.send("<presence xmlns='jabber:client'/>").await;
    eleve1
        .send("<message xmlns='jabber:client' to='eleve2@localhost' type='chat' id='m1'><body>coucou</body></message>")
        .await;
    eleve2.expect("coucou").await;
    // Hugo moves to 6e B: no restart, and Léa can no longer write to him.
    for (method, path) in [
        ("DELETE", "/admin/api/v1/classes/6A/members/eleve2"),
        ("PUT", "/admin/api/v1/classes/6B/members/eleve2"),
    ] {
        let (status, body) = http(server.http, method, path, Some(&token), None).await;
        assert_eq!(status, 204, "{path}: {body}");
    }
    eleve1
        .send("<message xmlns='jabber:client' to='eleve2@localhost' type='chat' id='m2'><body>encore</body></message>")
        .await;
    let refused = eleve1.expect_all(&["type='error'", "id='m2'"]).await;
    assert!(refused.contains("<forbidden"), "{refused}");
    eleve2.expect_none("encore").await;
    // Nor with another message type, nor with a directed presence's status.
    eleve1
        .send("<message xmlns='jabber:client' to='eleve2@localhost' type='headline' id='m3'><body>titre</body></message>")
        .await;
    let refused = eleve1.expect_all(&["type='error'", "id='m3'"]).await;
    assert!(refused.contains("<forbidden"), "{refused}");
    eleve1
        .send("<presence xmlns='jabber:client' to='eleve2@localhost' id='p1'><status>psst</status></presence>")
        .await;
    let refused = eleve1.expect_all(&["type='error'", "id='p1'"]).await;
    assert!(refused.contains("<forbidden"), "{refused}");
    eleve2.expect_none("titre").await;
    eleve2.expect_none("psst").await;
    eleve1.logout().await;
    eleve2.logout().await;
    server.stop().await;
}

async fn plain_login(server: &TestServer, user: &str) -> String {
    crate::common::plain_attempt(Raw::connect(server.c2s).await, user, "pw").await
}

#[tokio::test]
async fn profile_access_off_closes_sessions_and_refuses_logins() {
    let server = provisioned().await;
    let token = server.server().admin_token().to_owned();
    let mut student = Raw::connect(server.c2s)
        .await
        .login("eleve1", "pw", "web")
        .await;
    let teacher = online(&server, "prof1").await;
    let off = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/student",
        Some(&token),
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(off.0, 204, "{}", off.1);
    let closed = student.until_closed().await;
    assert!(closed.contains("<policy-violation"), "{closed}");
    // In French too, as every decision of the ENT that a user meets.
    assert!(
        closed.contains("xml:lang='fr'") && closed.contains("n'est plus ouvert"),
        "{closed}"
    );
    // Logins of that profile are refused with a clear text; other profiles go on.
    let refused = plain_login(&server, "eleve1").await;
    assert!(refused.contains("<account-disabled"), "{refused}");
    assert!(
        refused.contains("not available for your profile"),
        "{refused}"
    );
    assert!(plain_login(&server, "prof1").await.contains("<success"));
    let (_, profiles) = http(
        server.http,
        "GET",
        "/admin/api/v1/structures/0750001A/profiles",
        Some(&token),
        None,
    )
    .await;
    assert!(profiles.contains("\"student\":false"), "{profiles}");
    // On again: logins work.
    http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/student",
        Some(&token),
        Some(r#"{"enabled":true}"#),
    )
    .await;
    assert!(plain_login(&server, "eleve1").await.contains("<success"));
    teacher.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn admin_api_errors_and_audit() {
    let server = TestServer::start().await;
    let token = server.server().admin_token().to_owned();
    let api = server.http;
    // 401 without or with a wrong token.
    assert_eq!(
        http(api, "GET", "/admin/api/v1/structures", None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        http(api, "GET", "/admin/api/v1/structures", Some("nope"), None)
            .await
            .0,
        401
    );
    // 400 with a message on bad JSON.
    let (status, body) = http(
        api,
        "PUT",
        "/admin/api/v1/structures/S1",
        Some(&token),
        Some("{\"name\":"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, body) = http(
        api,
        "PUT",
        "/admin/api/v1/structures/S1",
        Some(&token),
        Some("{\"nom\":\"x\"}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // 404 on unknown ids.
    let (status, body) = http(api, "GET", "/admin/api/v1/users/nobody", Some(&token), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(
        api,
        "PUT",
        "/admin/api/v1/classes/6A/members/nobody",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown class"), "{body}");
    let (status, _) = http(
        api,
        "PUT",
        "/admin/api/v1/structures/S1/profiles/pupil",
        Some(&token),
        Some("{\"enabled\":true}"),
    )
    .await;
    assert_eq!(status, 404);
    // A bad line rejects the whole import, and names the line.
    let batch = "{\"op\":\"put_structure\",\"id\":\"S1\",\"name\":\"École\"}\n\
                 {\"op\":\"put_user\",\"username\":\"u1\",\"display_name\":\"U\",\"profile\":\"student\",\"structures\":[\"S1\"]}\n\
                 {\"op\":\"add_class_member\",\"class\":\"missing\",\"username\":\"u1\"}\n";
    let (status, body) = http(
        api,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(batch),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("line 3") && body.contains("unknown class"),
        "{body}"
    );
    let (status, body) = http(
        api,
        "GET",
        "/admin/api/v1/structures/S1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404, "rolled back: {body}");
    let (status, body) = http(
        api,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some("{\"op\":\"explode\"}\n"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("line 1"), "{body}");
    // Import is idempotent.
    let good = "{\"op\":\"put_structure\",\"id\":\"S1\",\"name\":\"École\"}\n";
    for _ in 0..2 {
        assert_eq!(
            http(
                api,
                "POST",
                "/admin/api/v1/import",
                Some(&token),
                Some(good)
            )
            .await
            .0,
            200
        );
    }
    // The audit log tells who did what.
    let (status, body) = http(
        api,
        "GET",
        "/admin/api/v1/audit?limit=5",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("put_structure") && body.contains("admin-api:import"),
        "{body}"
    );
    // The OpenAPI description is served.
    let (status, body) = http(api, "GET", "/admin/api/v1/openapi.json", Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"openapi\": \"3.1.0\""),
        "{}",
        &body[..100.min(body.len())]
    );
    // The console page needs no build step.
    let (status, body) = http(api, "GET", "/admin", None, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Causette"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn demo_directory_on_first_start() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = true).await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "GET",
        "/admin/api/v1/structures",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Collège Victor Hugo") && body.contains("Lycée Jean Moulin"),
        "{body}"
    );
    let mut lea = Xmpp::login(&server, "lea.martin", "demo").await;
    lea.send("<presence xmlns='jabber:client' to='ines.petit@localhost' type='subscribe' id='x'/>")
        .await;
    let denied = lea.expect_all(&["type='error'", "id='x'"]).await;
    assert!(denied.contains("<forbidden"), "{denied}");
    lea.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn search_shows_only_reachable_users_who_logged_in_and_did_not_opt_out() {
    let server = provisioned().await;
    for user in ["eleve2", "eleve3"] {
        online(&server, user).await.logout().await;
    }
    let mut eleve1 = online(&server, "eleve1").await;
    let form = eleve1
        .send_iq_to_server("get", "<query xmlns='jabber:iq:search'/>")
        .await;
    assert!(
        form.contains("jabber:x:data") && form.contains("var='search'"),
        "{form}"
    );
    let search = |term: &str| {
        format!(
            "<query xmlns='jabber:iq:search'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>jabber:iq:search</value></field>\
             <field var='search'><value>{term}</value></field></x></query>"
        )
    };
    let found = eleve1.send_iq_to_server("set", &search("ELEVE")).await;
    assert!(
        found.contains("<value>eleve2@localhost</value>"),
        "same class, logged in once: {found}"
    );
    assert!(
        !found.contains("<value>eleve3@localhost</value>"),
        "another class: {found}"
    );
    assert!(
        !found.contains("<value>eleve4@localhost</value>"),
        "never logged in: {found}"
    );
    assert!(
        !found.contains("<value>eleve1@localhost</value>"),
        "not oneself: {found}"
    );
    // Tom logs in once: the shared ENT group makes him findable.
    online(&server, "eleve4").await.logout().await;
    let found = eleve1.send_iq_to_server("set", &search("eleve")).await;
    assert!(found.contains("<value>eleve4@localhost</value>"), "{found}");
    // Hugo opts out of the directory.
    let mut eleve2 = online(&server, "eleve2").await;
    let set = eleve2
        .iq(
            "set",
            "<query xmlns='urn:causette:directory:0' hidden='true'/>",
        )
        .await;
    assert!(set.contains("type='result'"), "{set}");
    let found = eleve1.send_iq_to_server("set", &search("eleve")).await;
    assert!(
        !found.contains("<value>eleve2@localhost</value>"),
        "opted out: {found}"
    );
    let short = eleve1.send_iq_to_server("set", &search("e")).await;
    assert!(short.contains("<bad-request"), "{short}");
    eleve1.logout().await;
    eleve2.logout().await;
    server.stop().await;
}

/// Every kind of stanza from a pupil to one the rules keep apart is refused or dropped before
/// it reaches them, and the answers tell nothing of whether a resource is online.
#[tokio::test]
async fn no_stanza_kind_gets_around_the_rules() {
    let server = provisioned().await;
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve3 = online(&server, "eleve3").await;
    eleve3.send("<presence xmlns='jabber:client'/>").await;
    let mut eleve3_phone = online(&server, "eleve3").await;
    eleve3_phone.send("<presence xmlns='jabber:client'/>").await;
    let target = eleve3.jid.to_string();
    let offline = "eleve3@localhost/guessed";
    let refused = |answer: &str, id: &str, condition: &str| {
        assert!(
            answer.contains(&format!("id='{id}'"))
                && answer.contains("type='error'")
                && answer.contains(&format!("<{condition}")),
            "{id}: {answer}"
        );
    };

    // Refused with forbidden: everything the rules govern.
    let sends = [
        (
            "headline",
            "<message xmlns='jabber:client' to='eleve3@localhost' type='headline' id='headline'><body>SECRET</body></message>".to_string(),
        ),
        (
            "unavailable",
            "<presence xmlns='jabber:client' to='eleve3@localhost' type='unavailable' id='unavailable'><status>SECRET</status></presence>".to_string(),
        ),
        (
            "available",
            format!(
                "<presence xmlns='jabber:client' to='{target}' id='available'><status>SECRET</status></presence>"
            ),
        ),
    ];
    for (id, xml) in &sends {
        eleve1.send(xml).await;
        refused(&eleve1.expect(&format!("id='{id}'")).await, id, "forbidden");
    }
    // Errors that answer nothing the other side sent are dropped, not delivered.
    eleve1.send("<presence xmlns='jabber:client' to='eleve3@localhost' type='error' id='perr'><status>SECRET</status><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>").await;
    eleve1.send(&format!("<message xmlns='jabber:client' to='{target}' type='error' id='merr'><body>SECRET</body><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")).await;
    eleve1.send(&format!("<iq xmlns='jabber:client' to='{target}' type='result' id='ires'><query xmlns='urn:example'>SECRET</query></iq>")).await;
    // IQ requests get the same answer whether the resource is online or not.
    eleve1.send(&format!("<iq xmlns='jabber:client' to='{target}' type='set' id='online'><query xmlns='urn:example'>SECRET</query></iq>")).await;
    let to_online = eleve1.expect("id='online'").await;
    eleve1.send(&format!("<iq xmlns='jabber:client' to='{offline}' type='set' id='offline'><query xmlns='urn:example'>SECRET</query></iq>")).await;
    let to_offline = eleve1.expect("id='offline'").await;
    refused(&to_online, "online", "service-unavailable");
    assert_eq!(
        to_online.replace(&target, "X").replace("id='online'", "id"),
        to_offline
            .replace(offline, "X")
            .replace("id='offline'", "id"),
    );
    // Neither did disco#info to the bare JID tell the account exists.
    eleve1.send("<iq xmlns='jabber:client' to='eleve3@localhost' type='get' id='disco'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let exists = eleve1.expect("id='disco'").await;
    eleve1.send("<iq xmlns='jabber:client' to='nobody@localhost' type='get' id='disco'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let absent = eleve1.expect("id='disco'").await;
    refused(&exists, "disco", "service-unavailable");
    assert_eq!(
        exists.replace("eleve3@localhost", "X"),
        absent.replace("nobody@localhost", "X")
    );
    // Nothing reached either resource (eleve1's stanzas were all handled before its last
    // answer came back, so before these round trips).
    eleve1.drain().await;
    eleve3.expect_none("SECRET").await;
    eleve3.expect_none("eleve1@localhost").await;
    eleve3_phone.expect_none("SECRET").await;
    eleve3_phone.expect_none("eleve1@localhost").await;

    // Same class, allowed by the rules but not an accepted contact: a headline is not a way
    // around "chat with accepted contacts only".
    let mut eleve2 = online(&server, "eleve2").await;
    eleve1.send("<message xmlns='jabber:client' to='eleve2@localhost' type='headline' id='hl2'><body>SECRET</body></message>").await;
    refused(&eleve1.expect("id='hl2'").await, "hl2", "not-allowed");
    eleve1.drain().await;
    eleve2.expect_none("SECRET").await;
    server.stop().await;
}

/// An answer to a request passes the gate even where the rules forbid the way back, once.
#[tokio::test]
async fn answers_to_requests_pass_once() {
    let server = provisioned().await;
    // prof1 and eleve1 are contacts (same class); then the school forbids pupils to write to
    // teachers, while teachers may still write to their pupils.
    let mut prof1 = online(&server, "prof1").await;
    let mut eleve1 = online(&server, "eleve1").await;
    eleve1.send("<presence xmlns='jabber:client'/>").await;
    prof1.send("<presence xmlns='jabber:client'/>").await;
    prof1
        .send("<presence xmlns='jabber:client' to='eleve1@localhost' type='subscribe'/>")
        .await;
    eleve1.expect("type='subscribe'").await;
    eleve1
        .send("<presence xmlns='jabber:client' to='prof1@localhost' type='subscribed'/>")
        .await;
    prof1.expect("subscription='both'").await;
    prof1.drain().await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/rules/student/teacher",
        Some(&token),
        Some(r#"{"scope":"none"}"#),
    )
    .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    // The teacher may still ask; the pupil's client answers, and the answer arrives once.
    let eleve = eleve1.jid.to_string();
    prof1.send(&format!("<iq xmlns='jabber:client' to='{eleve}' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")).await;
    let request = eleve1.expect("id='v1'").await;
    assert!(request.contains("type='get'"), "{request}");
    let answer = format!(
        "<iq xmlns='jabber:client' to='{}' type='result' id='v1'><query xmlns='jabber:iq:version'><name>ANSWER</name></query></iq>",
        prof1.jid
    );
    eleve1.send(&answer).await;
    assert!(prof1.expect("id='v1'").await.contains("ANSWER"));
    // The same answer again is not an answer any more: the rules apply, and it is dropped.
    eleve1.send(&answer.replace("ANSWER", "AGAIN")).await;
    eleve1.drain().await;
    prof1.expect_none("AGAIN").await;
    // And a request of the pupil's own is refused.
    eleve1.send(&format!("<iq xmlns='jabber:client' to='{}' type='get' id='v2'><query xmlns='jabber:iq:version'/></iq>", prof1.jid)).await;
    assert!(eleve1.expect("id='v2'").await.contains("<forbidden"));
    server.stop().await;
}

/// Contacts whom the rules no longer allow to write to each other still see each other's
/// availability, but no status text.
#[tokio::test]
async fn presence_between_contacts_kept_apart_carries_no_text() {
    let server = provisioned().await;
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve2 = online(&server, "eleve2").await;
    for client in [&mut eleve1, &mut eleve2] {
        client.send("<presence xmlns='jabber:client'/>").await;
    }
    eleve1
        .send("<presence xmlns='jabber:client' to='eleve2@localhost' type='subscribe'/>")
        .await;
    eleve2.expect("type='subscribe'").await;
    eleve2
        .send("<presence xmlns='jabber:client' to='eleve1@localhost' type='subscribed'/>")
        .await;
    eleve1.expect("subscription='both'").await;
    eleve1
        .send("<presence xmlns='jabber:client'><show>away</show><status>BEFORE</status></presence>")
        .await;
    eleve2.expect("BEFORE").await;
    let token = server.server().admin_token().to_owned();
    for (method, path) in [
        ("DELETE", "/admin/api/v1/classes/6A/members/eleve2"),
        ("PUT", "/admin/api/v1/classes/6B/members/eleve2"),
    ] {
        let (status, body) = http(server.http, method, path, Some(&token), None).await;
        assert_eq!(status, 204, "{path}: {body}");
    }
    eleve1
        .send("<presence xmlns='jabber:client'><show>dnd</show><status>AFTER</status></presence>")
        .await;
    let seen = eleve2.expect("<show>dnd</show>").await;
    assert!(!seen.contains("AFTER"), "{seen}");
    // A session of eleve2's that comes online later gets the same, without the text.
    let mut later = online(&server, "eleve2").await;
    later.send("<presence xmlns='jabber:client'/>").await;
    let seen = later
        .expect_all(&["from='eleve1@localhost", "<show>dnd</show>"])
        .await;
    assert!(!seen.contains("AFTER"), "{seen}");
    // And the way back alike.
    eleve2
        .send("<presence xmlns='jabber:client'><show>xa</show><status>BACK</status></presence>")
        .await;
    let seen = eleve1.expect("<show>xa</show>").await;
    assert!(!seen.contains("BACK"), "{seen}");
    server.stop().await;
}

/// Every call of the admin API, as its OpenAPI document lists them, needs the token: the
/// middleware covers each resource's router, and only the document itself is public.
#[tokio::test]
async fn every_admin_call_needs_the_token() {
    let server = TestServer::start().await;
    let api = server.http;
    let (status, body) = http(api, "GET", "/admin/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200, "the document is public: {body}");
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let public = operation["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
            });
            // Path parameters filled with a plausible value.
            let concrete = path
                .replace("{profile}", "student")
                .replace("{from}", "student")
                .replace("{to}", "teacher")
                .replace(['{', '}'], "");
            let url = format!("/admin/api/v1{concrete}");
            let method = method.to_uppercase();
            let (status, text) = http(api, &method, &url, None, Some("{}")).await;
            if public {
                assert_eq!(status, 200, "{method} {url}: {text}");
            } else {
                assert_eq!(status, 401, "{method} {url} without a token: {text}");
                assert!(text.contains("\"error\""), "{method} {url}: {text}");
                let (status, _) = http(api, &method, &url, Some("wrong"), Some("{}")).await;
                assert_eq!(status, 401, "{method} {url} with a wrong token");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 28, "every call was tried");
    server.stop().await;
}

/// A `groupchat` message comes from rooms only: from a user to a user, to a full JID as to a
/// bare one, it is refused, whether the rules keep the two apart or they are simply not
/// contacts yet, and nothing of it arrives (RFC 6121 §8.5.3.2.1).
#[tokio::test]
async fn groupchat_messages_from_users_are_refused() {
    let server = provisioned().await;
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve2 = online(&server, "eleve2").await;
    eleve2.send("<presence xmlns='jabber:client'/>").await;
    let mut eleve3 = online(&server, "eleve3").await;
    eleve3.send("<presence xmlns='jabber:client'/>").await;
    for (n, target) in [
        eleve3.jid.to_string(),
        "eleve3@localhost".to_string(),
        eleve2.jid.to_string(),
        "eleve2@localhost".to_string(),
    ]
    .iter()
    .enumerate()
    {
        eleve1.send(&format!(
            "<message xmlns='jabber:client' type='groupchat' to='{target}' id='gc{n}'><body>SECRET</body></message>"
        ))
        .await;
        let answer = eleve1.expect(&format!("id='gc{n}'")).await;
        assert!(
            answer.contains("type='error'") && answer.contains("<service-unavailable"),
            "{target}: {answer}"
        );
    }
    eleve1.drain().await;
    eleve2.expect_none("SECRET").await;
    eleve3.expect_none("SECRET").await;
    server.stop().await;
}

/// An error that answers nothing, between users the rules allow but who have not accepted
/// each other, arrives as its condition alone: none of the sender's text goes with it.
#[tokio::test]
async fn unsolicited_errors_carry_nothing_the_sender_wrote() {
    let server = provisioned().await;
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve2 = online(&server, "eleve2").await;
    eleve2.send("<presence xmlns='jabber:client'/>").await;
    let target = eleve2.jid.to_string();
    eleve1.send(&format!(
        "<message xmlns='jabber:client' to='{target}' type='error' id='merr'><body>SECRET</body><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>xmpp:SECRET@localhost</gone><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>SECRET</text></error></message>"
    ))
    .await;
    eleve1.send(&format!(
        "<iq xmlns='jabber:client' to='{target}' type='result' id='ires'><query xmlns='urn:example'>SECRET</query></iq>"
    ))
    .await;
    let error = eleve2.expect("id='merr'").await;
    assert!(
        error.contains("<gone") && error.contains("type='error'"),
        "{error}"
    );
    assert!(!error.contains("SECRET"), "{error}");
    let result = eleve2.expect("id='ires'").await;
    assert!(!result.contains("SECRET"), "{result}");
    server.stop().await;
}

/// Without the ENT mode (`im.chat_requires_acceptance = false`) an IQ to an available full
/// JID is delivered to anyone the rules allow (RFC 6121 §8.5.3.1), and one the rules refuse
/// gets the same answer as one to a resource that is not online.
#[tokio::test]
async fn requests_between_strangers_follow_the_rules_alone_without_the_ent_mode() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.im.chat_requires_acceptance = false;
    })
    .await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(DIRECTORY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for user in ["eleve1", "eleve2", "eleve3"] {
        let (status, body) = http(
            server.http,
            "PATCH",
            &format!("/admin/api/v1/users/{user}"),
            Some(&token),
            Some(r#"{"password":"pw"}"#),
        )
        .await;
        assert_eq!(status, 204, "{body}");
    }
    let mut eleve1 = online(&server, "eleve1").await;
    let mut eleve2 = online(&server, "eleve2").await;
    eleve2.send("<presence xmlns='jabber:client'/>").await;
    let mut eleve3 = online(&server, "eleve3").await;
    eleve3.send("<presence xmlns='jabber:client'/>").await;
    // Same class, not contacts: the ping arrives and its answer comes back.
    eleve1.send(&format!(
        "<iq xmlns='jabber:client' to='{}' type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>",
        eleve2.jid
    ))
    .await;
    let ping = eleve2.expect("id='ping1'").await;
    assert!(ping.contains("type='get'"), "{ping}");
    eleve2
        .send(&format!(
            "<iq xmlns='jabber:client' to='{}' type='result' id='ping1'/>",
            eleve1.jid
        ))
        .await;
    assert!(eleve1.expect("id='ping1'").await.contains("type='result'"));
    // Another class: refused exactly as a resource that is not online.
    eleve1.send(&format!(
        "<iq xmlns='jabber:client' to='{}' type='get' id='ping2'><ping xmlns='urn:xmpp:ping'/></iq>",
        eleve3.jid
    ))
    .await;
    let refused = eleve1.expect("id='ping2'").await;
    eleve1
        .send("<iq xmlns='jabber:client' to='eleve3@localhost/absent' type='get' id='ping2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let absent = eleve1.expect("id='ping2'").await;
    assert!(refused.contains("<service-unavailable"), "{refused}");
    assert_eq!(
        refused.replace(&eleve3.jid.to_string(), "X"),
        absent.replace("eleve3@localhost/absent", "X")
    );
    eleve1.drain().await;
    eleve3.expect_none("ping2").await;
    server.stop().await;
}

/// The directory's names where a client shows names: a contact request says who asks
/// (XEP-0172 `<nick/>`), and a new roster item, on either side, is named after the contact's
/// directory name, which the user may change.
#[tokio::test]
async fn contacts_are_named_as_the_directory_names_them() {
    let server = TestServer::start_with(|c| c.tls.allow_plaintext_on_loopback = true).await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(DIRECTORY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let iterations = server.server().config().auth.scram_iterations;
    for user in ["eleve1", "eleve2"] {
        causette::accounts::set_password(&server.server().store(), user, "pw".into(), iterations)
            .await
            .expect("password set");
    }
    let mut lea = online(&server, "eleve1").await;
    let mut hugo = online(&server, "eleve2").await;
    hugo.send("<presence xmlns='jabber:client'/>").await;
    lea.send("<presence xmlns='jabber:client' to='eleve2@localhost' type='subscribe'/>")
        .await;
    let pushed = lea
        .expect_all(&["<item", "jid='eleve2@localhost'", "ask='subscribe'"])
        .await;
    assert!(pushed.contains("name='Hugo'"), "{pushed}");
    let asked = hugo
        .expect_all(&["type='subscribe'", "from='eleve1@localhost'"])
        .await;
    assert!(
        asked.contains("<nick xmlns='http://jabber.org/protocol/nick'>Léa</nick>"),
        "{asked}"
    );
    hugo.send("<presence xmlns='jabber:client' to='eleve1@localhost' type='subscribed'/>")
        .await;
    let accepted = hugo.expect_all(&["<item", "jid='eleve1@localhost'"]).await;
    assert!(accepted.contains("name='Léa'"), "{accepted}");
    // A name the user gives stays.
    let renamed = lea
        .iq(
            "set",
            "<query xmlns='jabber:iq:roster'><item jid='eleve2@localhost' name='Hugo P.'/></query>",
        )
        .await;
    assert!(renamed.contains("type='result'"), "{renamed}");
    let roster = lea.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    assert!(roster.contains("name='Hugo P.'"), "{roster}");
    server.stop().await;
}
