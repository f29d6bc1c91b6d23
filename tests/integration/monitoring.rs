//! What monitoring reads on the HTTP listener: `/metrics` (OpenMetrics text: what happened,
//! counted; who may read it), `/healthz` and `/readyz`.

use crate::common::{Raw, TestServer, Xmpp, http, http_authorized, plain_attempt};

/// The value of one sample (`name{labels}`) in OpenMetrics text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(server: &TestServer) -> String {
    let (status, text) = http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test]
async fn metrics_count_logins_stanzas_denials_and_offline_messages() {
    let server = TestServer::start_with(|c| {
        c.admin.demo_directory = true;
        // Offline storage without a contact request first, to keep the test short.
        c.im.chat_requires_acceptance = false;
    })
    .await;
    let before = scrape(&server).await;
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert!(
        before.contains(&format!(
            "causette_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{before}"
    );
    assert_eq!(sample(&before, "causette_logins_total"), 0.0);

    // A failed login is counted by its condition, a good one as a login.
    let raw = Raw::starttls(server.c2s, server.tls_client_config()).await;
    let answer = plain_attempt(raw, "lea.martin", "wrong").await;
    assert!(answer.contains("not-authorized"), "{answer}");
    let mut lea = Xmpp::login(&server, "lea.martin", "demo").await;
    // A pupil may not write to a pupil of another class: a denial, by action and reason.
    lea.send("<message xmlns='jabber:client' to='ines.petit@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    lea.expect("forbidden").await;
    // A classmate offline: the message is kept, then delivered at login.
    lea.send(
        "<message xmlns='jabber:client' to='hugo.bernard@localhost' type='chat' id='m2'><body>devoirs ?</body></message>",
    )
    .await;
    lea.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
    let mut hugo = Xmpp::login(&server, "hugo.bernard", "demo").await;
    hugo.send("<presence xmlns='jabber:client'/>").await;
    hugo.expect("devoirs ?").await;
    hugo.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;

    let text = scrape(&server).await;
    assert_eq!(sample(&text, "causette_logins_total"), 2.0);
    assert_eq!(
        sample(
            &text,
            "causette_login_failures_total{condition=\"not-authorized\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "causette_policy_denials_total{action=\"message\",reason=\"rules\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "causette_offline_messages_stored_total"), 1.0);
    assert_eq!(
        sample(&text, "causette_offline_messages_delivered_total"),
        1.0
    );
    assert!(sample(&text, "causette_stanzas_in_total{kind=\"message\"}") >= 2.0);
    assert!(sample(&text, "causette_stanzas_in_total{kind=\"iq\"}") >= 2.0);
    assert!(sample(&text, "causette_stanzas_out_total{kind=\"message\"}") >= 2.0);
    assert_eq!(sample(&text, "causette_sessions_bound"), 2.0);
    // The failed attempt's connection goes when the server reads its end: soon, not at once.
    let mut open = sample(&text, "causette_connections{transport=\"tcp\"}");
    for _ in 0..50 {
        if open == 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        open = sample(
            &scrape(&server).await,
            "causette_connections{transport=\"tcp\"}",
        );
    }
    assert_eq!(open, 2.0);
    assert!(
        sample(
            &text,
            "causette_connections_accepted_total{transport=\"tcp\"}"
        ) >= 3.0
    );
    // Every store operation is timed: the logins read credentials.
    assert!(
        sample(
            &text,
            "causette_store_query_seconds_count{operation=\"credential\"}"
        ) >= 2.0
    );
    assert!(
        text.contains(
            "causette_store_query_seconds_bucket{le=\"0.0001\",operation=\"push_offline\"}"
        ) || text.contains(
            "causette_store_query_seconds_bucket{operation=\"push_offline\",le=\"0.0001\"}"
        ),
        "{text}"
    );

    // The directory's changes are counted too.
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/partner",
        Some(&token),
        Some("{\"enabled\":false}"),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    let text = scrape(&server).await;
    assert!(sample(&text, "causette_admin_changes_total") >= 1.0);

    lea.logout().await;
    hugo.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_need_an_allowed_address_or_the_admin_token() {
    let server = TestServer::start_with(|c| c.http.metrics_allowed = Vec::new()).await;
    let (status, body) = http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("causette_"), "{body}");
    let (status, _) = http(server.http, "GET", "/metrics", Some("not-the-token"), None).await;
    assert_eq!(status, 403);
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(server.http, "GET", "/metrics", Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("causette_sessions_bound"), "{body}");
    server.stop().await;

    // Behind the (loopback) proxy, the forwarded address is what counts: a client outside
    // does not get the metrics because the proxy happens to be on an allowed address.
    let server = TestServer::start().await;
    let (status, body) = http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = forwarded_get(&server, "/metrics", "203.0.113.9").await;
    assert_eq!(status, 403, "{body}");
    server.stop().await;

    let server = TestServer::start_with(|c| c.http.metrics = false).await;
    let (status, _) = http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 404);
    server.stop().await;
}

async fn forwarded_get(server: &TestServer, path: &str, client: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let (status, body) = http(server.http, "GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, "alive\n"));
    let (status, body) = http(server.http, "GET", "/readyz", None, None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // No token needed, and nothing to learn from them but the state.
    let (status, body) =
        http_authorized(server.http, "GET", "/readyz", Some("Bearer x"), None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // A store that no longer answers makes the server not ready, while it stays alive.
    server.server().store().close().await;
    let (status, body) = http(server.http, "GET", "/readyz", None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: the store fails\n")
    );
    let (status, _) = http(server.http, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// HTTP connections past the per-address limit are closed at once, and counted, when none
/// from that address is idle (each has a request in progress: its body is awaited).
#[tokio::test]
async fn http_connections_past_the_address_limit_are_refused_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.http.max_connections_per_ip = 2;
        // Loopback is a trusted proxy by default, and proxies are not limited.
        c.http.trusted_proxies = Vec::new();
    })
    .await;
    let mut first = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(server.http).await.unwrap();
    for busy in [&mut first, &mut second] {
        busy.write_all(
            b"POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n<body",
        )
        .await
        .unwrap();
    }
    // The two are accepted, counted and in progress before the third arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(crate::common::WAIT, third.read(&mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop((first, second, third));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = scrape(&server).await;
    assert_eq!(
        sample(
            &text,
            "causette_connections_refused_total{limit=\"http_connections_per_ip\"}"
        ),
        1.0
    );
    server.stop().await;
}
