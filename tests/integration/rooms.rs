//! Conversations (XEP-0045 rooms at conference.localhost): the manual's story with the ENT's
//! rules, persistence across a restart, discovery, limits and hostile input, with real clients.

use crate::common::{TestServer, Xmpp, http};

const SERVICE: &str = "conference.localhost";

const DIRECTORY: &str = r#"{"op":"put_structure","id":"0750001A","name":"Collège Victor Hugo"}
{"op":"put_structure","id":"0750002B","name":"Lycée Jean Moulin"}
{"op":"put_user","username":"prof","display_name":"DURAND Marc","profile":"teacher","structures":["0750001A"]}
{"op":"put_user","username":"lea","display_name":"MARTIN Léa","profile":"student","structures":["0750001A"]}
{"op":"put_user","username":"hugo","display_name":"PETIT Hugo","profile":"student","structures":["0750001A"]}
{"op":"put_user","username":"tom","display_name":"BERNARD Tom","profile":"student","structures":["0750002B"]}
{"op":"put_user","username":"mme","display_name":"PETIT Sophie","profile":"parent","structures":["0750001A"]}
{"op":"put_class","id":"6A","structure":"0750001A","name":"6e A","members":["prof","lea","hugo"]}
{"op":"link_parent","parent":"mme","child":"hugo"}
"#;

/// A server with the ENT directory above; every user's password is `pw`.
async fn school(adjust: impl FnOnce(&mut causette::Config)) -> TestServer {
    let server = TestServer::start_with(adjust).await;
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
    for user in ["prof", "lea", "hugo", "tom", "mme"] {
        causette::accounts::set_password(&server.server().store(), user, "pw".into(), iterations)
            .await
            .expect("password set");
    }
    server
}

async fn online(server: &TestServer, user: &str) -> Xmpp {
    let mut client = Xmpp::login(server, user, "pw").await;
    client.send("<presence xmlns='jabber:client'/>").await;
    client.expect("<presence").await;
    client
}

fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

/// Sends a join and returns the room's answer: the self-presence (status 110) or an error.
async fn join(client: &mut Xmpp, room: &str, nick: &str) -> String {
    join_with(client, room, nick, "").await
}

async fn join_with(client: &mut Xmpp, room: &str, nick: &str, inner: &str) -> String {
    client
        .send(&format!(
            "<presence xmlns='jabber:client' to='{room}/{nick}'>\
             <x xmlns='http://jabber.org/protocol/muc'>{inner}</x></presence>"
        ))
        .await;
    let from = format!("from='{room}");
    client
        .expect_where(&[&from, "110 or error"], |s| {
            s.starts_with("<presence")
                && s.contains(&from)
                && (s.contains("code='110'") || s.contains("type='error'"))
        })
        .await
}

/// Sends an IQ to `to` and returns its answer.
async fn ask(client: &mut Xmpp, to: &str, type_: &str, payload: &str, id: &str) -> String {
    client
        .send(&format!(
            "<iq xmlns='jabber:client' type='{type_}' to='{to}' id='{id}'>{payload}</iq>"
        ))
        .await;
    client.expect(&format!("id='{id}'")).await
}

/// Sends a groupchat message to a room.
async fn say(client: &mut Xmpp, room: &str, body: &str) {
    client
        .send(&format!(
            "<message xmlns='jabber:client' to='{room}' type='groupchat'><body>{body}</body></message>"
        ))
        .await;
}

async fn configure(client: &mut Xmpp, room: &str, fields: &[(&str, &str)], id: &str) -> String {
    let fields: String = fields
        .iter()
        .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
        .collect();
    ask(
        client,
        room,
        "set",
        &format!(
            "<query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             {fields}</x></query>"
        ),
        id,
    )
    .await
}

async fn invite(client: &mut Xmpp, room: &str, to: &str) {
    client
        .send(&format!(
            "<message xmlns='jabber:client' to='{room}'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <invite to='{to}'><reason>On parle de la sortie</reason></invite></x></message>"
        ))
        .await;
}

/// The manual's story: start a conversation (locked, then unlocked), invite, chat, invite
/// from a participant, remove a participant (the creator only), under the ENT's rules.
#[tokio::test]
async fn a_conversation_as_the_manual_tells_it() {
    let server = school(|_| {}).await;
    let mut prof = online(&server, "prof").await;
    let mut lea = online(&server, "lea").await;
    let mut hugo = online(&server, "hugo").await;
    let sortie = room("sortie");

    // Created by joining: owner, statuses 110 and 201; the directory's name as nickname (210).
    let created = join(&mut prof, &sortie, "prof").await;
    for needle in [
        "code='110'",
        "code='201'",
        "code='210'",
        "affiliation='owner'",
        "role='moderator'",
        "from='sortie@conference.localhost/DURAND Marc'",
    ] {
        assert!(created.contains(needle), "{needle}: {created}");
    }
    let locked = prof.expect("verrouillé").await;
    assert!(
        locked.contains("type='groupchat'") && locked.contains("xml:lang='en'"),
        "{locked}"
    );

    // Locked: nobody else enters, whatever they know.
    let refused = join(&mut lea, &sortie, "lea").await;
    assert!(refused.contains("<item-not-found"), "{refused}");
    assert!(refused.contains("locked"), "{refused}");

    // The owner confirms the configuration: the room says it is unlocked.
    let form = ask(
        &mut prof,
        &sortie,
        "get",
        "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        "form",
    )
    .await;
    assert!(
        form.contains("muc#roomconfig_membersonly") && form.contains("type='form'"),
        "{form}"
    );
    let done = configure(
        &mut prof,
        &sortie,
        &[("muc#roomconfig_roomname", "Sortie au musée")],
        "conf",
    )
    .await;
    assert!(done.contains("type='result'"), "{done}");
    prof.expect("maintenant déverrouillé").await;

    // Members only: Léa needs an invitation.
    let refused = join(&mut lea, &sortie, "lea").await;
    assert!(refused.contains("<registration-required"), "{refused}");

    // An invitation across the ENT's rules is refused, in French too, and changes nothing.
    invite(&mut prof, &sortie, "tom@localhost").await;
    let denied = prof.expect("type='error'").await;
    assert!(
        denied.contains("<forbidden") && denied.contains("xml:lang='fr'"),
        "{denied}"
    );

    // The invitation: Léa becomes a member and may enter.
    invite(&mut prof, &sortie, "lea@localhost").await;
    let invitation = lea.expect("<invite").await;
    assert!(
        invitation.contains("from='prof@localhost'")
            && invitation.contains("On parle de la sortie")
            && invitation.contains("Sortie au musée"),
        "{invitation}"
    );
    // The same invitation in XEP-0249's form, for clients that know only that one.
    assert!(
        invitation.contains(&format!("<x xmlns='jabber:x:conference' jid='{sortie}'")),
        "{invitation}"
    );
    // §7.2.4: before joining, her nickname here is the directory's name.
    let reserved = ask(
        &mut lea,
        &sortie,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>",
        "nick",
    )
    .await;
    assert!(
        reserved.contains("node='x-roomuser-item'") && reserved.contains("name='MARTIN Léa'"),
        "{reserved}"
    );
    let joined = join(&mut lea, &sortie, "lea").await;
    assert!(
        joined.contains("affiliation='member'")
            && joined.contains("from='sortie@conference.localhost/MARTIN Léa'")
            && joined.contains("code='100'"),
        "{joined}"
    );
    // The others' presence came first, with real JIDs (members see them), then the subject.
    lea.expect_all(&[
        "from='sortie@conference.localhost/DURAND Marc'",
        "jid='prof@localhost/",
    ])
    .await;
    lea.expect("<subject").await;
    prof.expect("from='sortie@conference.localhost/MARTIN Léa'")
        .await;

    // Any participant may invite.
    invite(&mut lea, &sortie, "hugo@localhost").await;
    let invitation = hugo.expect("<invite").await;
    assert!(invitation.contains("from='lea@localhost'"), "{invitation}");
    join(&mut hugo, &sortie, "hugo").await;
    prof.expect("/PETIT Hugo'").await;
    lea.expect("/PETIT Hugo'").await;

    // Chat: everyone gets it from the sender's nickname.
    hugo.send(&format!(
        "<message xmlns='jabber:client' to='{sortie}' type='groupchat' id='m1'><body>Bonjour !</body></message>"
    ))
    .await;
    for client in [&mut prof, &mut lea, &mut hugo] {
        let got = client.expect("Bonjour !").await;
        assert!(
            got.contains("from='sortie@conference.localhost/PETIT Hugo'"),
            "{got}"
        );
    }

    // Only the creator removes participants.
    let refused = ask(
        &mut lea,
        &sortie,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='PETIT Hugo' role='none'/></query>",
        "kick1",
    )
    .await;
    assert!(
        refused.contains("<not-allowed") && refused.contains("only the creator"),
        "{refused}"
    );
    let kicked = ask(
        &mut prof,
        &sortie,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='PETIT Hugo' role='none'>\
         <reason>Hors sujet</reason></item></query>",
        "kick2",
    )
    .await;
    assert!(kicked.contains("type='result'"), "{kicked}");
    // The removed person reads who removed them (the manual's "[NOM Prénom] vous a retiré").
    let gone = hugo.expect_all(&["type='unavailable'", "code='307'"]).await;
    assert!(
        gone.contains("nick='DURAND Marc'")
            && gone.contains("Hors sujet")
            && gone.contains("code='110'"),
        "{gone}"
    );
    // The others see them leave.
    let left = lea
        .expect_all(&["type='unavailable'", "/PETIT Hugo'"])
        .await;
    assert!(left.contains("code='307'"), "{left}");
    // Removed from a members-only conversation: back only with a new invitation.
    let refused = join(&mut hugo, &sortie, "hugo").await;
    assert!(refused.contains("<registration-required"), "{refused}");

    server.stop().await;
}

/// Configuration, affiliations, subject and history are stored: the room comes back after a
/// restart, with its history sent on join.
#[tokio::test]
async fn rooms_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/rooms.db?mode=rwc", data.path().display());
    restart_story(url, "classe").await;
}

pub async fn restart_story(url: String, name: &str) {
    let config = |c: &mut causette::Config| {
        c.database.url = url.clone();
        c.admin.demo_directory = false;
    };
    let alice = format!("{name}a");
    let bob = format!("{name}b");
    let server = TestServer::start_with(config).await;
    server.add_user(&alice, "pw").await;
    server.add_user(&bob, "pw").await;
    let lobby = room(name);
    {
        let mut a = online(&server, &alice).await;
        join(&mut a, &lobby, "alice").await;
        let done = configure(
            &mut a,
            &lobby,
            &[("muc#roomconfig_roomname", "Classe de 6e A")],
            "conf",
        )
        .await;
        assert!(done.contains("type='result'"), "{done}");
        invite(&mut a, &lobby, &format!("{bob}@localhost")).await;
        a.send(&format!(
            "<message xmlns='jabber:client' to='{lobby}' type='groupchat'><subject>Devoirs</subject></message>"
        ))
        .await;
        a.expect("<subject>Devoirs").await;
        for text in ["premier", "second"] {
            say(&mut a, &lobby, text).await;
            a.expect(text).await;
        }
        a.logout().await;
    }
    server.stop().await;

    let server = TestServer::start_with(config).await;
    let mut b = online(&server, &bob).await;
    // The invitation was kept for Bob, who was online then too; his rooms list it.
    let mine = ask(
        &mut b,
        SERVICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items' node='urn:causette:rooms:mine'/>",
        "mine",
    )
    .await;
    assert!(
        mine.contains(&format!("jid='{lobby}'")) && mine.contains("name='Classe de 6e A'"),
        "{mine}"
    );
    let joined = join(&mut b, &lobby, "bob").await;
    assert!(joined.contains("affiliation='member'"), "{joined}");
    let first = b.expect("premier").await;
    assert!(first.contains("urn:xmpp:delay"), "{first}");
    b.expect("second").await;
    b.expect("<subject>Devoirs").await;
    server.stop().await;
}

/// Discovery: the service in the server's items, its features, public rooms with paging, and
/// hidden rooms hidden.
#[tokio::test]
async fn discovery_lists_public_rooms_only() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = false).await;
    server.add_user("owner", "pw").await;
    server.add_user("stranger", "pw").await;
    let mut owner = online(&server, "owner").await;
    let mut stranger = online(&server, "stranger").await;

    let items = ask(
        &mut owner,
        "localhost",
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        "items",
    )
    .await;
    assert!(items.contains(&format!("jid='{SERVICE}'")), "{items}");
    let info = ask(
        &mut owner,
        SERVICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "info",
    )
    .await;
    assert!(
        info.contains("category='conference'")
            && info.contains("var='http://jabber.org/protocol/muc'"),
        "{info}"
    );

    for (name, public) in [("club-a", "1"), ("club-b", "1"), ("secret", "0")] {
        join(&mut owner, &room(name), "o").await;
        let done = configure(
            &mut owner,
            &room(name),
            &[
                ("muc#roomconfig_publicroom", public),
                ("muc#roomconfig_roomname", name),
            ],
            &format!("c-{name}"),
        )
        .await;
        assert!(done.contains("type='result'"), "{done}");
    }
    let page = ask(
        &mut stranger,
        SERVICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query>",
        "p1",
    )
    .await;
    assert!(page.contains("jid='club-a@conference.localhost'"), "{page}");
    assert!(
        page.contains("<count>2</count>") && !page.contains("club-b"),
        "{page}"
    );
    let page = ask(
        &mut stranger,
        SERVICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>5</max><after>club-a</after></set></query>",
        "p2",
    )
    .await;
    assert!(
        page.contains("club-b") && !page.contains("secret"),
        "{page}"
    );

    // A hidden room tells strangers nothing; its members see its features.
    let hidden = ask(
        &mut stranger,
        &room("secret"),
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "h1",
    )
    .await;
    assert!(hidden.contains("<item-not-found"), "{hidden}");
    let seen = ask(
        &mut owner,
        &room("secret"),
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "h2",
    )
    .await;
    for feature in [
        "muc_membersonly",
        "muc_hidden",
        "muc_persistent",
        "muc#roominfo",
    ] {
        assert!(seen.contains(feature), "{feature}: {seen}");
    }
    server.stop().await;
}

/// Hostile and broken input gets standard errors with a text; the room keeps serving.
#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_room_goes_on() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = false).await;
    server.add_user("owner", "pw").await;
    server.add_user("guest", "pw").await;
    server.add_user("outsider", "pw").await;
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;
    let mut outsider = online(&server, "outsider").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;
    invite(&mut owner, &lobby, "guest@localhost").await;
    join(&mut guest, &lobby, "guest").await;

    // A join without a nickname.
    guest
        .send(&format!("<presence xmlns='jabber:client' to='{lobby}'/>"))
        .await;
    let err = guest.expect("<jid-malformed").await;
    assert!(err.contains("nickname is needed"), "{err}");
    // A nickname too long.
    let long = "n".repeat(200);
    let err = join(&mut outsider, &room("other"), &long).await;
    assert!(err.contains("<not-acceptable"), "{err}");
    // History asked with nonsense.
    let err = join_with(
        &mut outsider,
        &room("third"),
        "x",
        "<history maxstanzas='-3'/>",
    )
    .await;
    assert!(err.contains("<bad-request"), "{err}");
    // A form with an unknown field or a bad value changes nothing.
    for (field, value) in [
        ("muc#roomconfig_whatever", "1"),
        ("muc#roomconfig_membersonly", "perhaps"),
    ] {
        let err = configure(&mut owner, &lobby, &[(field, value)], field).await;
        assert!(
            err.contains("<not-acceptable") && err.contains(field),
            "{err}"
        );
    }
    // Invitations to nobody sensible.
    for to in ["someone@elsewhere.example", "localhost"] {
        invite(&mut owner, &lobby, to).await;
        let err = owner.expect("<jid-malformed").await;
        assert!(err.contains("only users of this server"), "{err}");
    }
    // Messages from someone not in the room, and of the wrong kind.
    say(&mut outsider, &lobby, "spam").await;
    let err = outsider.expect("<not-acceptable").await;
    assert!(err.contains("not in this conversation"), "{err}");
    guest
        .send(&format!(
            "<message xmlns='jabber:client' to='{lobby}' type='chat'><body>hm</body></message>"
        ))
        .await;
    guest.expect("<not-acceptable").await;
    // A private message to a nickname nobody has.
    guest
        .send(&format!(
            "<message xmlns='jabber:client' to='{lobby}/nobody' type='chat'><body>psst</body></message>"
        ))
        .await;
    guest.expect("<item-not-found").await;
    // Owner requests from a member.
    let err = ask(
        &mut guest,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        "own",
    )
    .await;
    assert!(err.contains("<forbidden"), "{err}");
    // Through all of it the room serves its occupants, and private messages work.
    guest
        .send(&format!(
            "<message xmlns='jabber:client' to='{lobby}/owner' type='chat'><body>psst</body></message>"
        ))
        .await;
    let pm = owner.expect("psst").await;
    assert!(pm.contains(&format!("from='{lobby}/guest'")), "{pm}");
    say(&mut guest, &lobby, "still here").await;
    owner.expect("still here").await;
    server.stop().await;
}

/// Rooms per user and occupants per room are bounded, with clear errors.
#[tokio::test]
async fn limits_on_rooms_and_occupants() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.max_rooms_per_user = 1;
        c.rooms.defaults.members_only = false;
    })
    .await;
    for user in ["a", "b", "c"] {
        server.add_user(user, "pw").await;
    }
    let mut a = online(&server, "a").await;
    let mut b = online(&server, "b").await;
    let mut c = online(&server, "c").await;
    join(&mut a, &room("one"), "a").await;
    // Locked rooms count: a second one is refused at once.
    let err = join(&mut a, &room("two"), "a").await;
    assert!(
        err.contains("<not-allowed") && err.contains("as many conversations"),
        "{err}"
    );
    let done = configure(
        &mut a,
        &room("one"),
        &[("muc#roomconfig_maxusers", "2")],
        "max",
    )
    .await;
    assert!(done.contains("type='result'"), "{done}");
    join(&mut b, &room("one"), "b").await;
    let err = join(&mut c, &room("one"), "c").await;
    assert!(
        err.contains("<service-unavailable") && err.contains("as many participants"),
        "{err}"
    );
    server.stop().await;
}

/// The owner destroys a room with a reason and an alternate venue; a room never configured is
/// destroyed after the timeout; a session that ends leaves its rooms.
#[tokio::test]
async fn destruction_timeout_and_departure() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.locked_timeout_secs = 1;
    })
    .await;
    server.add_user("owner", "pw").await;
    server.add_user("guest", "pw").await;
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;

    // Never configured: destroyed, and the creator is told.
    join(&mut owner, &room("forgotten"), "owner").await;
    let gone = owner.expect("<destroy").await;
    assert!(
        gone.contains("type='unavailable'") && gone.contains("never configured"),
        "{gone}"
    );

    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;
    invite(&mut owner, &lobby, "guest@localhost").await;
    join(&mut guest, &lobby, "guest").await;
    owner.expect(&format!("from='{lobby}/guest'")).await;

    // A session that ends leaves: the others see it go.
    guest.logout().await;
    let left = owner
        .expect_all(&["type='unavailable'", &format!("from='{lobby}/guest'")])
        .await;
    assert!(left.contains("role='none'"), "{left}");

    let mut guest = online(&server, "guest").await;
    join(&mut guest, &lobby, "guest").await;
    let done = ask(
        &mut owner,
        &lobby,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#owner'>\
         <destroy jid='new@conference.localhost'><reason>On déménage</reason></destroy></query>",
        "destroy",
    )
    .await;
    assert!(done.contains("type='result'"), "{done}");
    let told = guest.expect("<destroy").await;
    assert!(
        told.contains("jid='new@conference.localhost'") && told.contains("On déménage"),
        "{told}"
    );
    // Gone: joining again creates a new, locked room.
    let again = join(&mut guest, &lobby, "guest").await;
    assert!(again.contains("code='201'"), "{again}");
    server.stop().await;
}

/// A user whose profile loses chat access leaves every room at once; joins and private
/// messages follow the ENT's rules.
#[tokio::test]
async fn the_ent_rules_hold_in_rooms() {
    let server = school(|_| {}).await;
    let token = server.server().admin_token().to_owned();
    let mut prof = online(&server, "prof").await;
    let mut lea = online(&server, "lea").await;
    let classe = room("classe");
    join(&mut prof, &classe, "x").await;
    configure(
        &mut prof,
        &classe,
        &[("muc#roomconfig_membersonly", "0")],
        "open",
    )
    .await;
    // Open, but not to someone the rules keep from its owner.
    let mut tom = online(&server, "tom").await;
    let refused = join(&mut tom, &classe, "tom").await;
    assert!(
        refused.contains("<forbidden") && refused.contains("xml:lang='fr'"),
        "{refused}"
    );
    join(&mut lea, &classe, "x").await;
    prof.expect("/MARTIN Léa'").await;
    // The room stays within the rules of everyone in it: another pupil's parent, whom the
    // teacher could let in, may not meet Léa, who is in.
    let mut parent = online(&server, "mme").await;
    let refused = join(&mut parent, &classe, "x").await;
    assert!(
        refused.contains("<forbidden") && refused.contains("xml:lang='fr'"),
        "{refused}"
    );
    lea.expect_none("PETIT Sophie").await;
    // Private messages between occupants follow the rules too: a pupil may write to the
    // teacher.
    lea.send(&format!(
        "<message xmlns='jabber:client' to='{classe}/DURAND Marc' type='chat'><body>Bonjour Monsieur</body></message>"
    ))
    .await;
    let pm = prof.expect("Bonjour Monsieur").await;
    assert!(pm.contains(&format!("from='{classe}/MARTIN Léa'")), "{pm}");
    // A fixed directory name cannot be changed.
    lea.send(&format!(
        "<presence xmlns='jabber:client' to='{classe}/Le Prof'/>"
    ))
    .await;
    let err = lea.expect("<not-acceptable").await;
    assert!(err.contains("ENT directory"), "{err}");

    let off = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/student",
        Some(&token),
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(off.0, 204, "{}", off.1);
    let left = prof
        .expect_all(&["type='unavailable'", "/MARTIN Léa'"])
        .await;
    assert!(left.contains("role='none'"), "{left}");
    server.stop().await;
}

/// XEP-0249: a direct invitation from an occupant who may invite makes the invitee a member;
/// one from someone outside the room is refused and not delivered.
#[tokio::test]
async fn direct_invitations_grant_membership() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        // The invitation is a one-to-one message: these users are not contacts.
        c.im.chat_requires_acceptance = false;
    })
    .await;
    for user in ["owner", "guest", "outsider"] {
        server.add_user(user, "pw").await;
    }
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;
    let mut outsider = online(&server, "outsider").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;

    outsider
        .send(&format!(
            "<message xmlns='jabber:client' to='guest@localhost' id='d1'>\
             <x xmlns='jabber:x:conference' jid='{lobby}'/></message>"
        ))
        .await;
    let refused = outsider.expect("id='d1'").await;
    assert!(
        refused.contains("type='error'") && refused.contains("not in this conversation"),
        "{refused}"
    );
    guest.expect_none("jabber:x:conference").await;

    owner
        .send(&format!(
            "<message xmlns='jabber:client' to='guest@localhost' id='d2'>\
             <x xmlns='jabber:x:conference' jid='{lobby}' reason='Viens'/></message>"
        ))
        .await;
    let invitation = guest.expect("jabber:x:conference").await;
    assert!(
        invitation.contains("from='owner@localhost/"),
        "{invitation}"
    );
    let joined = join(&mut guest, &lobby, "guest").await;
    assert!(joined.contains("affiliation='member'"), "{joined}");
    server.stop().await;
}

/// Nicknames, several resources under one nickname, affiliations and their lists, bans,
/// voice in a moderated room, who may change the subject, the room's logo.
#[tokio::test]
async fn roles_affiliations_and_nicknames() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.defaults.members_only = false;
    })
    .await;
    for user in ["owner", "guest", "quiet", "banned"] {
        server.add_user(user, "pw").await;
    }
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(
        &mut owner,
        &lobby,
        &[("muc#roomconfig_changesubject", "0")],
        "conf",
    )
    .await;
    join(&mut guest, &lobby, "guest").await;

    // A nickname change (§7.6): 303 under the old nickname, then the new one.
    guest
        .send(&format!(
            "<presence xmlns='jabber:client' to='{lobby}/guest2'/>"
        ))
        .await;
    let changed = owner
        .expect_all(&["type='unavailable'", "code='303'"])
        .await;
    assert!(
        changed.contains(&format!("from='{lobby}/guest'")) && changed.contains("nick='guest2'"),
        "{changed}"
    );
    owner.expect(&format!("from='{lobby}/guest2'")).await;
    // Taken nicknames are refused.
    let mut quiet = online(&server, "quiet").await;
    let taken = join(&mut quiet, &lobby, "guest2").await;
    assert!(taken.contains("<conflict"), "{taken}");

    // A second resource of the same user joins under the same nickname (210 if it asked
    // for another).
    let mut guest_phone = online(&server, "guest").await;
    let second = join(&mut guest_phone, &lobby, "phone").await;
    assert!(
        second.contains(&format!("from='{lobby}/guest2'")) && second.contains("code='210'"),
        "{second}"
    );

    // Subjects: occupants may not change it here, the owner may.
    guest
        .send(&format!(
            "<message xmlns='jabber:client' to='{lobby}' type='groupchat'><subject>Hack</subject></message>"
        ))
        .await;
    let err = guest.expect("<forbidden").await;
    assert!(err.contains("subject"), "{err}");

    // Affiliations: admin for the guest (a moderator now), a ban for someone absent.
    let done = ask(
        &mut owner,
        &lobby,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='guest@localhost' affiliation='admin'/>\
         <item jid='banned@localhost' affiliation='outcast'><reason>Insultes</reason></item>\
         </query>",
        "aff",
    )
    .await;
    assert!(done.contains("type='result'"), "{done}");
    let promoted = owner
        .expect_all(&[&format!("from='{lobby}/guest2'"), "affiliation='admin'"])
        .await;
    assert!(promoted.contains("role='moderator'"), "{promoted}");
    let list = ask(
        &mut owner,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query>",
        "list",
    )
    .await;
    assert!(list.contains("jid='banned@localhost'"), "{list}");
    let err = ask(
        &mut quiet,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='owner'/></query>",
        "list2",
    )
    .await;
    assert!(err.contains("<forbidden"), "{err}");
    let mut banned = online(&server, "banned").await;
    let refused = join(&mut banned, &lobby, "b").await;
    assert!(
        refused.contains("<forbidden") && refused.contains("banned"),
        "{refused}"
    );
    // The last owner stays.
    let err = ask(
        &mut owner,
        &lobby,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item jid='owner@localhost' affiliation='member'/></query>",
        "last",
    )
    .await;
    assert!(err.contains("<conflict"), "{err}");

    // A moderated room: newcomers without affiliation are visitors until given voice.
    configure(
        &mut owner,
        &lobby,
        &[("muc#roomconfig_moderatedroom", "1")],
        "mod",
    )
    .await;
    let joined = join(&mut quiet, &lobby, "quiet").await;
    assert!(joined.contains("role='visitor'"), "{joined}");
    say(&mut quiet, &lobby, "hello?").await;
    let err = quiet.expect("<forbidden").await;
    assert!(err.contains("no voice"), "{err}");
    let voiced = ask(
        &mut guest,
        &lobby,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='quiet' role='participant'/></query>",
        "voice",
    )
    .await;
    assert!(voiced.contains("type='result'"), "{voiced}");
    say(&mut quiet, &lobby, "merci").await;
    owner.expect("merci").await;

    // The room's logo (vCard) is announced with 104 and hashed in its disco#info.
    let set = ask(
        &mut owner,
        &lobby,
        "set",
        "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>",
        "logo",
    )
    .await;
    assert!(set.contains("type='result'"), "{set}");
    guest.expect("code='104'").await;
    let info = ask(
        &mut guest,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "info",
    )
    .await;
    // SHA-1 of "hello".
    assert!(
        info.contains("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"),
        "{info}"
    );
    let vcard = ask(
        &mut quiet,
        &lobby,
        "get",
        "<vCard xmlns='vcard-temp'/>",
        "getlogo",
    )
    .await;
    assert!(vcard.contains("aGVsbG8="), "{vcard}");
    let err = ask(
        &mut quiet,
        &lobby,
        "set",
        "<vCard xmlns='vcard-temp'/>",
        "setlogo",
    )
    .await;
    assert!(err.contains("<forbidden"), "{err}");
    server.stop().await;
}

/// An invitation to someone offline is kept for their next login, once: inviting again does
/// not fill their offline storage.
#[tokio::test]
async fn an_offline_invitee_finds_one_invitation() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = false).await;
    server.add_user("owner", "pw").await;
    server.add_user("away", "pw").await;
    let mut owner = online(&server, "owner").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;
    for _ in 0..3 {
        invite(&mut owner, &lobby, "away@localhost").await;
    }
    owner.expect_none("type='error'").await;
    let mut away = online(&server, "away").await;
    away.expect("<invite").await;
    away.expect_none("<invite").await;

    // The owner, out of the room, still manages its members (§9).
    owner
        .send(&format!(
            "<presence xmlns='jabber:client' to='{lobby}/owner' type='unavailable'/>"
        ))
        .await;
    owner.expect("type='unavailable'").await;
    let revoked = ask(
        &mut owner,
        &lobby,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='away@localhost' affiliation='none'/></query>",
        "revoke",
    )
    .await;
    assert!(revoked.contains("type='result'"), "{revoked}");
    let refused = join(&mut away, &lobby, "away").await;
    assert!(refused.contains("<registration-required"), "{refused}");
    server.stop().await;
}

/// A session that sends its join again (a client that lost track, a window reloaded) gets
/// the occupants, its own presence and the subject again, and stays one occupant.
#[tokio::test]
async fn a_session_that_joins_again_gets_the_room_again() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = false).await;
    server.add_user("owner", "pw").await;
    server.add_user("guest", "pw").await;
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;
    invite(&mut owner, &lobby, "guest@localhost").await;
    join(&mut guest, &lobby, "guest").await;
    say(&mut owner, &lobby, "avant").await;
    guest.expect("avant").await;
    guest.drain().await;

    let again = join_with(&mut guest, &lobby, "guest", "<history maxstanzas='5'/>").await;
    assert!(again.contains("code='110'"), "{again}");
    guest.expect(&format!("from='{lobby}/owner'")).await;
    let history = guest.expect("avant").await;
    assert!(history.contains("urn:xmpp:delay"), "{history}");
    guest.expect("<subject").await;
    owner.expect(&format!("from='{lobby}/guest'")).await;
    let occupants = ask(
        &mut owner,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "count",
    )
    .await;
    assert!(
        occupants.contains("<field var='muc#roominfo_occupants'><value>2</value>"),
        "{occupants}"
    );
    server.stop().await;
}

/// How many times the store has run `operation`, from `/metrics`.
async fn store_calls(server: &TestServer, operation: &str) -> u64 {
    let (status, text) = http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    let series = format!("causette_store_query_seconds_count{{operation=\"{operation}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

/// Stored history is bounded in bytes as in memory; a room read back from the store for
/// discovery or a refused join leaves its history unread; room loads have a budget per user.
#[tokio::test]
async fn stored_history_is_bounded_and_read_only_for_those_admitted() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.max_history_bytes = 2000;
        c.rooms.max_loads_per_minute = 5;
    })
    .await;
    for user in ["owner", "stranger", "prowler"] {
        server.add_user(user, "pw").await;
    }
    let lobby = room("archives");
    let mut owner = online(&server, "owner").await;
    join(&mut owner, &lobby, "owner").await;
    let done = configure(
        &mut owner,
        &lobby,
        &[("muc#roomconfig_publicroom", "1")],
        "conf",
    )
    .await;
    assert!(done.contains("type='result'"), "{done}");
    let filler = "x".repeat(600);
    for i in 0..10 {
        say(&mut owner, &lobby, &format!("m{i}-{filler}")).await;
        owner.expect(&format!("m{i}-")).await;
    }
    owner
        .send(&format!(
            "<presence xmlns='jabber:client' to='{lobby}/owner' type='unavailable'/>"
        ))
        .await;
    owner.expect("type='unavailable'").await;

    // Nobody is in: discovery and a refused join (members only) read the room, not its history.
    let mut stranger = online(&server, "stranger").await;
    let info = ask(
        &mut stranger,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "info",
    )
    .await;
    assert!(info.contains("type='result'"), "{info}");
    let refused = join(&mut stranger, &lobby, "stranger").await;
    assert!(refused.contains("<registration-required"), "{refused}");
    assert!(store_calls(&server, "load_room").await >= 2);
    assert_eq!(store_calls(&server, "load_room_history").await, 0);

    // The owner comes back: the history is read once, the newest messages within 2000 bytes.
    let joined = join(&mut owner, &lobby, "owner").await;
    assert!(joined.contains("code='110'"), "{joined}");
    let newest = owner.expect("m9-").await;
    assert!(newest.contains("urn:xmpp:delay"), "{newest}");
    owner.expect("<subject").await;
    assert_eq!(store_calls(&server, "load_room_history").await, 1);
    let everything = causette::storage::HistoryBound {
        messages: 1000,
        bytes: u64::MAX,
    };
    let stored = server
        .server()
        .store()
        .load_room_history("archives", everything)
        .await
        .expect("history read");
    let bytes: usize = stored.iter().map(|(xml, _)| xml.len()).sum();
    assert!(
        (1..=3).contains(&stored.len()) && bytes <= 2000,
        "{} messages, {bytes} bytes",
        stored.len()
    );
    assert!(stored.last().is_some_and(|(xml, _)| xml.contains("m9-")));
    assert!(stored.iter().all(|(xml, _)| !xml.contains("m6-")));

    // Rooms nobody is in, looked up one after another: past the budget, resource-constraint.
    let mut prowler = online(&server, "prowler").await;
    for i in 0..5 {
        let answer = ask(
            &mut prowler,
            &room(&format!("nowhere{i}")),
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
            &format!("look{i}"),
        )
        .await;
        assert!(answer.contains("<item-not-found"), "{answer}");
    }
    let spent = ask(
        &mut prowler,
        &room("nowhere5"),
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "look5",
    )
    .await;
    assert!(spent.contains("<resource-constraint"), "{spent}");
    // Others' budgets are their own, and a room in memory costs none.
    let info = ask(
        &mut stranger,
        &lobby,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "again",
    )
    .await;
    assert!(info.contains("type='result'"), "{info}");
    server.stop().await;
}

/// `rooms.max_rooms_per_user` counts every room a user owns: locked, temporary or persistent,
/// created or granted; and where only owners remove participants, an admin cannot remove
/// them by a ban or a revoked membership either.
#[tokio::test]
async fn every_room_owned_counts_and_only_owners_remove() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.max_rooms_per_user = 2;
    })
    .await;
    for user in ["a", "b", "c"] {
        server.add_user(user, "pw").await;
    }
    let mut a = online(&server, "a").await;
    let mut b = online(&server, "b").await;
    let mut c = online(&server, "c").await;
    // Two temporary rooms: the limit is reached, whatever their kind.
    for name in ["temp1", "temp2"] {
        join(&mut a, &room(name), "a").await;
        let done = configure(
            &mut a,
            &room(name),
            &[("muc#roomconfig_persistentroom", "0")],
            name,
        )
        .await;
        assert!(done.contains("type='result'"), "{done}");
    }
    let err = join(&mut a, &room("third"), "a").await;
    assert!(
        err.contains("<not-allowed") && err.contains("as many conversations"),
        "{err}"
    );
    // Nor can someone else make her the owner of one more.
    join(&mut b, &room("bees"), "b").await;
    let done = configure(&mut b, &room("bees"), &[], "bees").await;
    assert!(done.contains("type='result'"), "{done}");
    let granted = ask(
        &mut b,
        &room("bees"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='a@localhost' affiliation='owner'/></query>",
        "grant",
    )
    .await;
    assert!(
        granted.contains("<not-allowed") && granted.contains("cannot own another"),
        "{granted}"
    );
    // A temporary room destroyed frees its place.
    let destroyed = ask(
        &mut a,
        &room("temp1"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query>",
        "destroy",
    )
    .await;
    assert!(destroyed.contains("type='result'"), "{destroyed}");
    let granted = ask(
        &mut b,
        &room("bees"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='a@localhost' affiliation='owner'/></query>",
        "grant2",
    )
    .await;
    assert!(granted.contains("type='result'"), "{granted}");
    let err = join(&mut a, &room("fourth"), "a").await;
    assert!(err.contains("<not-allowed"), "{err}");

    // An admin may not remove a member by revoking or banning (only_owners_kick, the default).
    let made = ask(
        &mut b,
        &room("bees"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='c@localhost' affiliation='member'/></query>",
        "member",
    )
    .await;
    assert!(made.contains("type='result'"), "{made}");
    let joined = join(&mut c, &room("bees"), "c").await;
    assert!(joined.contains("code='110'"), "{joined}");
    server.add_user("adm", "pw").await;
    let mut adm = online(&server, "adm").await;
    let made = ask(
        &mut b,
        &room("bees"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='adm@localhost' affiliation='admin'/></query>",
        "admin",
    )
    .await;
    assert!(made.contains("type='result'"), "{made}");
    for (affiliation, id) in [("outcast", "ban"), ("none", "revoke")] {
        let refused = ask(
            &mut adm,
            &room("bees"),
            "set",
            &format!(
                "<query xmlns='http://jabber.org/protocol/muc#admin'>\
                 <item jid='c@localhost' affiliation='{affiliation}'/></query>"
            ),
            id,
        )
        .await;
        assert!(refused.contains("<not-allowed"), "{refused}");
    }
    // The owner may.
    let banned = ask(
        &mut b,
        &room("bees"),
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='c@localhost' affiliation='outcast'/></query>",
        "ownerban",
    )
    .await;
    assert!(banned.contains("type='result'"), "{banned}");
    server.stop().await;
}

/// A room stays within the rules of everyone in it, whoever owns it: a collégienne makes a
/// lycéen she may meet (an ENT group) owner and steps down; a teacher of his lycée, whom the
/// rules keep from her both ways, can be neither invited, nor made a member, nor let in.
#[tokio::test]
async fn a_room_stays_within_the_rules_after_the_owner_steps_down() {
    let server = school(|c| c.rooms.defaults.members_only = true).await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(
            "{\"op\":\"put_user\",\"username\":\"mlycee\",\"display_name\":\"LEROY Anne\",\"profile\":\"teacher\",\"structures\":[\"0750002B\"]}\n\
             {\"op\":\"put_group\",\"id\":\"club\",\"name\":\"Club échecs\",\"members\":[\"lea\",\"tom\"]}\n",
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let iterations = server.server().config().auth.scram_iterations;
    causette::accounts::set_password(&server.server().store(), "mlycee", "pw".into(), iterations)
        .await
        .expect("password set");
    let mut lea = online(&server, "lea").await;
    let mut tom = online(&server, "tom").await;
    let mut teacher = online(&server, "mlycee").await;
    let club = room("club");
    join(&mut lea, &club, "x").await;
    let done = configure(&mut lea, &club, &[], "conf").await;
    assert!(done.contains("type='result'"), "{done}");
    invite(&mut lea, &club, "tom@localhost").await;
    tom.expect("<invite").await;
    let joined = join(&mut tom, &club, "x").await;
    assert!(joined.contains("code='110'"), "{joined}");
    let owner = ask(
        &mut lea,
        &club,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='tom@localhost' affiliation='owner'/></query>",
        "owner",
    )
    .await;
    assert!(owner.contains("type='result'"), "{owner}");
    let down = ask(
        &mut tom,
        &club,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='lea@localhost' affiliation='member'/></query>",
        "down",
    )
    .await;
    assert!(down.contains("type='result'"), "{down}");
    // Tom's invitation is refused, and nothing is sent.
    tom.send(&format!(
        "<message xmlns='jabber:client' to='{club}' id='inv'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite to='mlycee@localhost'/></x></message>"
    ))
    .await;
    let refused = tom.expect("id='inv'").await;
    assert!(refused.contains("<forbidden"), "{refused}");
    teacher.expect_none("<invite").await;
    // Nor may he make her a member.
    let refused = ask(
        &mut tom,
        &club,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='mlycee@localhost' affiliation='member'/></query>",
        "grant",
    )
    .await;
    assert!(refused.contains("<forbidden"), "{refused}");
    // Opened to all, the room still keeps her out while Léa is a member.
    let open = configure(
        &mut tom,
        &club,
        &[("muc#roomconfig_membersonly", "0")],
        "open",
    )
    .await;
    assert!(open.contains("type='result'"), "{open}");
    let refused = join(&mut teacher, &club, "x").await;
    assert!(refused.contains("<forbidden"), "{refused}");
    lea.expect_none("LEROY Anne").await;
    server.stop().await;
}

/// §7.8.2: a decline goes to the inviter only, once per invitation; anything else is refused
/// and delivered to nobody. Invitations have a budget per inviter.
#[tokio::test]
async fn declines_go_once_to_the_inviter_and_invitations_have_a_budget() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.im.chat_requires_acceptance = false;
        c.rooms.max_invitations_per_minute = 3;
    })
    .await;
    for user in ["host", "guest", "stranger", "victim"] {
        server.add_user(user, "pw").await;
    }
    let mut host = online(&server, "host").await;
    let mut guest = online(&server, "guest").await;
    let mut stranger = online(&server, "stranger").await;
    let mut victim = online(&server, "victim").await;
    let salon = room("salon");
    join(&mut host, &salon, "host").await;
    let done = configure(&mut host, &salon, &[], "conf").await;
    assert!(done.contains("type='result'"), "{done}");
    let decline = |to: &str, id: &str| {
        format!(
            "<message xmlns='jabber:client' to='{salon}' id='{id}'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <decline to='{to}'><reason>texte libre</reason></decline></x></message>"
        )
    };
    // Nobody invited the stranger: his decline to the victim goes nowhere.
    stranger.send(&decline("victim@localhost", "d0")).await;
    let refused = stranger.expect("id='d0'").await;
    assert!(refused.contains("<not-acceptable"), "{refused}");
    victim.expect_none("texte libre").await;

    invite(&mut host, &salon, "guest@localhost").await;
    guest.expect("<invite").await;
    // The guest declines to someone else than the inviter: refused.
    guest.send(&decline("victim@localhost", "d1")).await;
    let refused = guest.expect("id='d1'").await;
    assert!(refused.contains("<not-acceptable"), "{refused}");
    victim.expect_none("texte libre").await;
    // To the inviter: relayed, once.
    guest.send(&decline("host@localhost", "d2")).await;
    let relayed = host.expect("texte libre").await;
    assert!(
        relayed.contains("<decline") && relayed.contains("from='guest@localhost'"),
        "{relayed}"
    );
    guest.send(&decline("host@localhost", "d3")).await;
    let refused = guest.expect("id='d3'").await;
    assert!(refused.contains("<not-acceptable"), "{refused}");
    host.expect_none("texte libre").await;

    // Three invitations a minute: the fourth is refused and not sent.
    invite(&mut host, &salon, "victim@localhost").await;
    victim.expect("<invite").await;
    invite(&mut host, &salon, "stranger@localhost").await;
    stranger.expect("<invite").await;
    host.send(&format!(
        "<message xmlns='jabber:client' to='{salon}' id='inv4'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <invite to='victim@localhost'><reason>encore</reason></invite></x></message>"
    ))
    .await;
    let refused = host.expect("id='inv4'").await;
    assert!(refused.contains("<resource-constraint"), "{refused}");
    victim.expect_none("encore").await;
    server.stop().await;
}

/// XEP-0045 details found by slixmpp and aioxmpp: the exit status passed on (§7.14) with the
/// full JID (§7.2.3), status 333 for a client bouncing errors, a kick that keeps the
/// membership when `rooms.kick_revokes_membership` is off (§8.2), millisecond delay stamps.
#[tokio::test]
async fn departures_bounces_kicks_and_stamps_as_the_xep_says() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = false;
        c.rooms.kick_revokes_membership = false;
        c.rooms.defaults.members_only = false;
    })
    .await;
    for user in ["owner", "b", "c"] {
        server.add_user(user, "pw").await;
    }
    let mut owner = online(&server, "owner").await;
    let mut b = online(&server, "b").await;
    let mut c = online(&server, "c").await;
    let hall = room("hall");
    join(&mut owner, &hall, "owner").await;
    let done = configure(&mut owner, &hall, &[], "conf").await;
    assert!(done.contains("type='result'"), "{done}");
    say(&mut owner, &hall, "avant").await;
    owner.expect("avant").await;

    // History stamps: at most milliseconds.
    join(&mut b, &hall, "b").await;
    let old = b.expect("avant").await;
    let stamp = old
        .split("stamp='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("a stamp");
    let digits = stamp.split_once('.').map_or(0, |(_, f)| {
        f.chars().take_while(char::is_ascii_digit).count()
    });
    assert!(digits <= 3, "{stamp}");

    // The exit status is passed on, with the full JID.
    b.send(&format!(
        "<presence xmlns='jabber:client' to='{hall}/b' type='unavailable'><status>Je file</status></presence>"
    ))
    .await;
    let own = b.expect("type='unavailable'").await;
    assert!(
        own.contains("<status>Je file</status>") && own.contains("code='110'"),
        "{own}"
    );
    let seen = owner.expect_all(&["type='unavailable'", "/b'"]).await;
    assert!(seen.contains("<status>Je file</status>"), "{seen}");
    assert!(seen.contains("jid='b@localhost/"), "{seen}");

    // A client answering the room with service-unavailable has gone: status 333.
    join(&mut c, &hall, "c").await;
    owner.expect_all(&["<presence", "/c'"]).await;
    c.send(&format!(
        "<message xmlns='jabber:client' to='{hall}' type='error'>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    ))
    .await;
    let gone = owner.expect_all(&["type='unavailable'", "/c'"]).await;
    assert!(gone.contains("code='333'"), "{gone}");

    // Kicking a member keeps the membership with the setting off.
    let member = ask(
        &mut owner,
        &hall,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='b@localhost' affiliation='member'/></query>",
        "member",
    )
    .await;
    assert!(member.contains("type='result'"), "{member}");
    let members_only = configure(
        &mut owner,
        &hall,
        &[("muc#roomconfig_membersonly", "1")],
        "mo",
    )
    .await;
    assert!(members_only.contains("type='result'"), "{members_only}");
    join(&mut b, &hall, "b").await;
    let kicked = ask(
        &mut owner,
        &hall,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item nick='b' role='none'/></query>",
        "kick",
    )
    .await;
    assert!(kicked.contains("type='result'"), "{kicked}");
    let out = b.expect("code='307'").await;
    assert!(
        out.contains("affiliation='member'") && !out.contains("code='321'"),
        "{out}"
    );
    let back = join(&mut b, &hall, "b").await;
    assert!(back.contains("code='110'"), "{back}");
    server.stop().await;
}

/// XEP-0410: an occupant's ping to its own occupant JID is answered by the room; one from a
/// session that is not in the room says so (`not-acceptable`), so that the client rejoins;
/// pings to another occupant are not relayed.
#[tokio::test]
async fn self_ping_tells_a_session_whether_it_is_still_in_the_room() {
    let server = TestServer::start_with(|c| c.admin.demo_directory = false).await;
    server.add_user("owner", "pw").await;
    server.add_user("guest", "pw").await;
    let mut owner = online(&server, "owner").await;
    let mut guest = online(&server, "guest").await;
    let lobby = room("lobby");
    join(&mut owner, &lobby, "owner").await;
    configure(&mut owner, &lobby, &[], "instant").await;
    const PING: &str = "<ping xmlns='urn:xmpp:ping'/>";
    let own = ask(&mut owner, &format!("{lobby}/owner"), "get", PING, "p1").await;
    assert!(own.contains("type='result'"), "{own}");
    // The room answers for itself too (XEP-0199 to the room's JID).
    let room_itself = ask(&mut owner, &lobby, "get", PING, "p2").await;
    assert!(room_itself.contains("type='result'"), "{room_itself}");
    // Not joined: told so, whatever nick it names.
    let outsider = ask(&mut guest, &format!("{lobby}/owner"), "get", PING, "p3").await;
    assert!(
        outsider.contains("type='error'") && outsider.contains("<not-acceptable"),
        "{outsider}"
    );
    // Joined, but pinging someone else's nick: not relayed, and the session is still there.
    invite(&mut owner, &lobby, "guest@localhost").await;
    join(&mut guest, &lobby, "guest").await;
    let other = ask(&mut guest, &format!("{lobby}/owner"), "get", PING, "p4").await;
    assert!(
        other.contains("type='error'") && !other.contains("<not-acceptable"),
        "{other}"
    );
    // After leaving, its own nick is no longer its own.
    guest
        .send(&format!(
            "<presence xmlns='jabber:client' to='{lobby}/guest' type='unavailable'/>"
        ))
        .await;
    guest.expect("type='unavailable'").await;
    let gone = ask(&mut guest, &format!("{lobby}/guest"), "get", PING, "p5").await;
    assert!(gone.contains("<not-acceptable"), "{gone}");
    server.stop().await;
}
