use super::*;

fn session(hold: u32, requests: u32) -> (Arc<BoshSession>, mpsc::Receiver<()>) {
    BoshSession::new(
        "sid".into(),
        10,
        Granted {
            wait: Duration::from_secs(30),
            hold,
            requests,
            inactivity: Duration::from_secs(60),
            polling: Duration::from_secs(2),
        },
        "localhost",
        Limits {
            max_inbound: 1 << 20,
            max_outbound: 1 << 20,
            rate: Rate {
                bytes_per_sec: 1 << 20,
                burst: 1 << 20,
            },
        },
    )
}

fn batch(id: &str) -> Batch {
    let element: ClientElement =
        xso::from_bytes(format!("<message xmlns='jabber:client' id='{id}'/>").as_bytes()).unwrap();
    Batch {
        items: vec![Inbound::Element(Box::new(element))],
        bytes: 40,
        terminates: false,
    }
}

/// Whether the first element taken is the message with this id.
fn first_is(items: &[Inbound], id: &str) -> bool {
    match &items[0] {
        Inbound::Element(element) => format!("{element:?}").contains(&format!("\"{id}\"")),
        Inbound::End => false,
    }
}

fn waiting(submitted: Submitted) -> oneshot::Receiver<Arc<[u8]>> {
    match submitted {
        Submitted::Wait(answer) => answer,
        Submitted::Answer(answer) => panic!("answered at once: {}", text(&answer)),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn taken(session: &BoshSession) -> Vec<Inbound> {
    match session.take_inbound(Instant::now()) {
        Taken::Batch(items) => items,
        _ => panic!("nothing to take"),
    }
}

#[tokio::test]
async fn requests_out_of_order_are_processed_in_order() {
    let (session, _woken) = session(1, 3);
    let _first = waiting(session.submit(10, batch("a")));
    assert!(first_is(&taken(&session), "a"));
    // 12 before 11: 12 waits for 11.
    let _third = waiting(session.submit(12, batch("c")));
    assert!(matches!(
        session.take_inbound(Instant::now()),
        Taken::Nothing(_)
    ));
    let _second = waiting(session.submit(11, batch("b")));
    assert!(first_is(&taken(&session), "b"));
    assert!(first_is(&taken(&session), "c"));
}

#[tokio::test]
async fn a_request_sent_again_gets_the_same_answer() {
    let (session, _woken) = session(1, 2);
    let first = waiting(session.submit(10, batch("a")));
    let mut payload = b"<message xmlns='jabber:client' id='out'/>".to_vec();
    session.push_outbound(&mut payload).unwrap();
    let answer = first.await.unwrap();
    assert!(text(&answer).contains("id='out'"), "{}", text(&answer));
    // The creation answer carries the session's parameters.
    assert!(text(&answer).contains("sid='sid'") && text(&answer).contains("ack='10'"));
    match session.submit(10, batch("a")) {
        Submitted::Answer(again) => assert_eq!(again, answer),
        Submitted::Wait(_) => panic!("a retransmission is answered at once"),
    }
    // Processed once only.
    assert!(first_is(&taken(&session), "a"));
    assert!(matches!(
        session.take_inbound(Instant::now()),
        Taken::Nothing(_)
    ));
}

#[tokio::test]
async fn hold_answers_the_oldest_request_and_data_goes_out_once() {
    let (session, _woken) = session(1, 2);
    let first = waiting(session.submit(
        10,
        Batch {
            items: Vec::new(),
            bytes: 0,
            terminates: false,
        },
    ));
    let second = waiting(session.submit(
        11,
        Batch {
            items: Vec::new(),
            bytes: 0,
            terminates: false,
        },
    ));
    let answer = first.await.unwrap();
    assert!(!text(&answer).contains("message"));
    let mut payload = b"<message xmlns='jabber:client' id='out'/>".to_vec();
    session.push_outbound(&mut payload).unwrap();
    assert!(text(&second.await.unwrap()).contains("id='out'"));
    // Nothing held: what comes next waits for the next request.
    let mut payload = b"<presence xmlns='jabber:client'/>".to_vec();
    session.push_outbound(&mut payload).unwrap();
    match session.submit(
        12,
        Batch {
            items: Vec::new(),
            bytes: 0,
            terminates: false,
        },
    ) {
        Submitted::Wait(third) => assert!(text(&third.await.unwrap()).contains("<presence")),
        Submitted::Answer(answer) => panic!("{}", text(&answer)),
    }
}

#[tokio::test]
async fn a_rid_outside_the_window_ends_the_session() {
    let (session, _woken) = session(1, 2);
    let first = waiting(session.submit(10, batch("a")));
    match session.submit(15, batch("far")) {
        Submitted::Answer(answer) => {
            let answer = text(&answer);
            assert!(
                answer.contains("type='terminate'") && answer.contains("item-not-found"),
                "{answer}"
            );
        }
        Submitted::Wait(_) => panic!("outside the window"),
    }
    // The held request ends too, and so does every later one; the link sees the end.
    assert!(text(&first.await.unwrap()).contains("terminate"));
    assert!(matches!(
        session.submit(11, batch("b")),
        Submitted::Answer(_)
    ));
    let _ = taken(&session);
    assert!(matches!(session.take_inbound(Instant::now()), Taken::Ended));
}

#[tokio::test]
async fn a_missing_request_ends_the_session_after_the_wait() {
    let (session, _woken) = session(1, 3);
    let _first = waiting(session.submit(10, batch("a")));
    let _third = waiting(session.submit(12, batch("c")));
    let answer = session.expire(12).expect("answered");
    assert!(text(&answer).contains("item-not-found") && text(&answer).contains("11 never arrived"));
}

#[tokio::test]
async fn an_idle_session_expires() {
    let (session, _woken) = session(1, 2);
    let first = waiting(session.submit(
        10,
        Batch {
            items: Vec::new(),
            bytes: 0,
            terminates: false,
        },
    ));
    assert!(matches!(
        session.take_inbound(Instant::now()),
        Taken::Nothing(None)
    ));
    let answer = session.expire(10).unwrap();
    assert_eq!(first.await.unwrap(), answer);
    let Taken::Nothing(Some(at)) = session.take_inbound(Instant::now()) else {
        panic!("idle: the inactivity clock runs");
    };
    assert!(matches!(session.take_inbound(at), Taken::Ended));
    assert!(matches!(
        session.submit(11, batch("b")),
        Submitted::Answer(_)
    ));
}
