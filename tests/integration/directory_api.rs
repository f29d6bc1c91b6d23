//! The directory from the ENT's side: listing users with filters and pages, replacing and
//! patching a user, and import errors that name one line and say nothing was imported.

use serde_json::Value;

use crate::common::{TestServer, http};

async fn demo() -> (TestServer, String) {
    let server = TestServer::start_with(|c| c.admin.demo_directory = true).await;
    let token = server.server().admin_token().to_owned();
    (server, token)
}

async fn get_json(server: &TestServer, token: &str, path: &str) -> Value {
    let (status, body) = http(server.http, "GET", path, Some(token), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn usernames(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_are_listed_by_filter_a_page_at_a_time() {
    let (server, token) = demo().await;
    // Every page, followed to the end, gives every user once, in order.
    let mut all = Vec::new();
    let mut path = "/admin/api/v1/users?limit=3".to_owned();
    loop {
        let page = get_json(&server, &token, &path).await;
        assert_eq!(page["total"], 10);
        let names = usernames(&page);
        assert!(names.len() <= 3);
        all.extend(names);
        match page["next"].as_str() {
            Some(next) => path = format!("/admin/api/v1/users?limit=3&after={next}"),
            None => break,
        }
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 10);

    let students = get_json(
        &server,
        &token,
        "/admin/api/v1/users?structure=0750001A&profile=student",
    )
    .await;
    assert_eq!(
        usernames(&students),
        ["hugo.bernard", "ines.petit", "lea.martin"]
    );
    let class = get_json(&server, &token, "/admin/api/v1/users?class=college-6a").await;
    assert_eq!(
        usernames(&class),
        ["hugo.bernard", "lea.martin", "prof.durand"]
    );
    let lea = &class["users"][1];
    assert_eq!(lea["display_name"], "Léa Martin");
    assert_eq!(lea["structures"][0], "0750001A");
    let group = get_json(&server, &token, "/admin/api/v1/users?group=club-theatre").await;
    assert_eq!(usernames(&group), ["lea.martin", "tom.roux"]);
    assert!(group["next"].is_null());
    let none = get_json(&server, &token, "/admin/api/v1/users?class=nowhere").await;
    assert_eq!(
        (none["total"].clone(), usernames(&none).len()),
        (Value::from(0), 0)
    );

    // Bad queries are refused with what is wrong; no token, no list.
    let (status, body) = http(
        server.http,
        "GET",
        "/admin/api/v1/users?profile=wizard",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid query: ")
            && body.contains("wizard"),
        "{body}"
    );
    let (status, _) = http(server.http, "GET", "/admin/api/v1/users", None, None).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_put_must_name_the_structures_and_a_patch_changes_only_what_it_names() {
    let (server, token) = demo().await;
    let user = "/admin/api/v1/users/lea.martin";
    let (status, body) = http(
        server.http,
        "PUT",
        user,
        Some(&token),
        Some("{\"display_name\":\"Léa M.\",\"profile\":\"student\"}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("structures"), "{body}");
    let lea = get_json(&server, &token, user).await;
    assert_eq!(lea["structures"][0], "0750001A");
    assert_eq!(lea["display_name"], "Léa Martin");

    let (status, body) = http(
        server.http,
        "PATCH",
        user,
        Some(&token),
        Some("{\"display_name\":\"Léa M.\"}"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let lea = get_json(&server, &token, user).await;
    assert_eq!(lea["display_name"], "Léa M.");
    assert_eq!(lea["profile"], "student");
    assert_eq!(lea["structures"][0], "0750001A");
    // Her class stays too: a patch is no removal from the structure.
    assert_eq!(lea["classes"][0], "college-6a");

    for (path, body, expected) in [
        (user, "{\"nickname\":\"L\"}", 400),
        (user, "{\"profile\":\"wizard\"}", 400),
        (
            "/admin/api/v1/users/nobody",
            "{\"display_name\":\"N\"}",
            404,
        ),
        (user, "{\"structures\":[\"unknown\"]}", 404),
    ] {
        let (status, answer) = http(server.http, "PATCH", path, Some(&token), Some(body)).await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let unchanged = get_json(&server, &token, user).await;
    assert_eq!(unchanged, lea);

    // Two patches of different fields at once: both hold, whichever runs first.
    for round in 0..10 {
        let name = format!("{{\"display_name\":\"Léa {round}\"}}");
        let structures = if round % 2 == 0 {
            "{\"structures\":[\"0750001A\",\"0750002B\"]}"
        } else {
            "{\"structures\":[\"0750001A\"]}"
        };
        let (a, b) = tokio::join!(
            http(server.http, "PATCH", user, Some(&token), Some(&name)),
            http(server.http, "PATCH", user, Some(&token), Some(structures)),
        );
        assert_eq!((a.0, b.0), (204, 204), "{a:?} {b:?}");
        let now = get_json(&server, &token, user).await;
        assert_eq!(now["display_name"], format!("Léa {round}"));
        assert_eq!(
            now["structures"].as_array().unwrap().len(),
            if round % 2 == 0 { 2 } else { 1 }
        );
    }

    // A password set by a patch works at the next login.
    let (status, _) = http(
        server.http,
        "PATCH",
        user,
        Some(&token),
        Some("{\"password\":\"nouveau\"}"),
    )
    .await;
    assert_eq!(status, 204);
    let lea = crate::common::Xmpp::login(&server, "lea.martin", "nouveau").await;
    lea.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn import_errors_name_one_line_and_say_nothing_was_imported() {
    let (server, token) = demo().await;
    let cases = [
        (
            "{\"op\":\"put_structure\",\"id\":\"X1\",\"name\":\"X\"}\n{\"op\":\"put_structure\",\"id\":\"X2\",",
            "nothing imported: line 2, column ",
        ),
        (
            "{\"op\":\"put_structure\",\"id\":\"X1\",\"name\":\"X\"}\n\n{\"op\":\"put_user\",\"username\":\"x\",\"display_name\":\"X\",\"profile\":\"student\"}",
            "nothing imported: line 3: missing field `structures`",
        ),
        (
            "{\"op\":\"put_structure\",\"id\":\"X1\",\"name\":\"X\"}\n{\"op\":\"add_class_member\",\"id\":\"nowhere\",\"username\":\"lea.martin\"}",
            "nothing imported: line 2: ",
        ),
    ];
    for (batch, expected) in cases {
        let (status, body) = http(
            server.http,
            "POST",
            "/admin/api/v1/import",
            Some(&token),
            Some(batch),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{error}");
        assert_eq!(error.matches("line").count(), 1, "{error}");
    }
    let (status, body) = http(
        server.http,
        "GET",
        "/admin/api/v1/structures/X1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn online_counts_groups_and_audit_search_for_the_console() {
    let (server, token) = demo().await;
    let lea = crate::common::Xmpp::login(&server, "lea.martin", "demo").await;
    let tom = crate::common::Xmpp::login(&server, "tom.roux", "demo").await;
    let structures = get_json(&server, &token, "/admin/api/v1/structures").await;
    let online: Vec<(String, u64)> = structures
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["online"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        online,
        [("0750001A".to_owned(), 1), ("0750002B".to_owned(), 1)]
    );
    lea.logout().await;
    tom.logout().await;

    let groups = get_json(&server, &token, "/admin/api/v1/groups").await;
    assert_eq!(groups[0]["id"], "club-theatre");
    assert_eq!(groups[0]["members"], 2);

    let (status, _) = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/parent",
        Some(&token),
        Some("{\"enabled\":false}"),
    )
    .await;
    assert_eq!(status, 204);
    let found = get_json(&server, &token, "/admin/api/v1/audit?q=PROFILE_ACCESS").await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["detail"]["profile"], "parent");
    let demo_entries = get_json(&server, &token, "/admin/api/v1/audit?q=demo&limit=1000").await;
    assert!(demo_entries.as_array().unwrap().len() > 10);
    let nothing = get_json(&server, &token, "/admin/api/v1/audit?q=%25").await;
    assert!(nothing.as_array().unwrap().is_empty(), "{nothing}");
    server.stop().await;
}
