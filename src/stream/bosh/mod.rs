//! XMPP over BOSH (XEP-0124, XEP-0206): HTTP requests carry bodies of stanzas to a session
//! that outlives each of them. `session` is the binding (rids, holds, answers kept for
//! retransmissions, expiry); `link` is the session's `Link`; this module takes a request's
//! bytes and gives its answer. Negotiation is the TCP path's `Negotiator`: session creation
//! and restarts stand for the `<open/>` of the framed links.

mod body;
mod link;
mod session;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use minidom::Element;
use rand::Rng;

use super::framed::FRAMING;
use super::negotiation::{Deadlines, Negotiator};
use super::websocket::WebClient;
use crate::Shared;
use crate::link::ClientElement;
use crate::transport::admission::LoggingIn;
use body::RequestBody;
use link::BoshLink;
use session::{Batch, BoshSession, Granted, Inbound, Limits, Submitted};

/// The largest rid a client may use (XEP-0124 §14.1: 2^53 - 1, what JavaScript counts exactly).
const MAX_RID: u64 = (1 << 53) - 1;

/// The shortest polling interval announced (`polling`), for clients that hold no request.
const POLLING: Duration = Duration::from_secs(2);

/// The BOSH sessions alive, by sid.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<String, Arc<BoshSession>>,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}

/// Removes a session from the registry when its task ends, however it ends.
struct Registered<'a> {
    registry: &'a Registry,
    sid: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.sid);
    }
}

/// A terminal binding condition (XEP-0124 §17) for a request, with what went wrong.
pub(crate) fn terminal(condition: &str, text: &str) -> Arc<[u8]> {
    tracing::debug!(condition, text, "BOSH request refused");
    body::terminate(condition, text, &[]).into()
}

/// Takes one HTTP request's body and gives the body to answer it with, when it is time.
pub(crate) async fn request(shared: &Arc<Shared>, client: WebClient, bytes: &[u8]) -> Arc<[u8]> {
    let limits = shared.config.limits.xml();
    // The body is the stream element's level: its children are the stanzas.
    let mut guard =
        crate::transport::guard::XmlGuard::new(limits.max_depth, limits.max_stanza_size);
    if let Err((_, exceeded)) = guard.scan(bytes) {
        let fatal = super::errors::limit_exceeded(exceeded);
        return terminal("policy-violation", &fatal.text);
    }
    let body = match xso::from_bytes::<RequestBody>(bytes) {
        Ok(body) => body,
        Err(err) => {
            return terminal(
                "bad-request",
                &format!("not a BOSH body (XEP-0124 §4): {err}"),
            );
        }
    };
    let Some(rid) = body.rid.filter(|rid| *rid <= MAX_RID) else {
        return terminal(
            "bad-request",
            "every request needs a rid, at most 2^53 - 1 (XEP-0124 §7.1, §14.1)",
        );
    };
    let Some(sid) = body.sid.as_deref() else {
        return create(shared, client, rid, body).await;
    };
    let Some(session) = shared.bosh.sessions.get(sid).map(|s| s.clone()) else {
        return terminal(
            "item-not-found",
            "no such session: it ended or expired; start a new one",
        );
    };
    let mut items = Vec::new();
    let terminates = body.terminates();
    if body.restarts() {
        items.push(Inbound::Element(Box::new(open(body.to.as_deref()))));
    } else {
        items.extend(
            body.payload
                .into_iter()
                .map(|element| Inbound::Element(Box::new(element))),
        );
        if terminates {
            items.push(Inbound::End);
        }
    }
    if let Some(delay) = session.charge(bytes.len()) {
        // Past its budget the client is served more slowly, as on TCP.
        tokio::time::sleep(delay).await;
    }
    let batch = Batch {
        items,
        bytes: bytes.len(),
        terminates,
    };
    answer(&session, rid, batch).await
}

/// Waits for the answer to request `rid`.
async fn answer(session: &BoshSession, rid: u64, batch: Batch) -> Arc<[u8]> {
    let mut waiting = match session.submit(rid, batch) {
        Submitted::Answer(answer) => return answer,
        Submitted::Wait(waiting) => waiting,
    };
    loop {
        tokio::select! {
            answer = &mut waiting => {
                return answer.unwrap_or_else(|_| terminal("item-not-found", "the session ended"));
            }
            () = tokio::time::sleep(session.granted.wait) => {
                if let Some(answer) = session.expire(rid) {
                    return answer;
                }
            }
        }
    }
}

/// The `<open/>` a session creation or restart stands for.
fn open(to: Option<&str>) -> ClientElement {
    let mut open = Element::builder("open", FRAMING).attr(crate::ns::name("version"), "1.0");
    if let Some(to) = to {
        open = open.attr(crate::ns::name("to"), to);
    }
    ClientElement::Unknown(open.build())
}

/// Session creation (XEP-0124 §7.1): the session's task starts, and the answer carries its
/// parameters and the stream features.
async fn create(shared: &Arc<Shared>, client: WebClient, rid: u64, body: RequestBody) -> Arc<[u8]> {
    let domain = shared.config.domain.as_str();
    if body
        .to
        .as_deref()
        .is_some_and(|to| !to.trim_end_matches('.').eq_ignore_ascii_case(domain))
    {
        return terminal("host-unknown", &format!("this server serves {domain} only"));
    }
    let settings = &shared.config.http.bosh_settings;
    if shared.bosh.len() >= settings.max_sessions {
        shared.metrics.refused("max_bosh_sessions");
        return terminal(
            "policy-violation",
            "the server has as many BOSH sessions as it takes; try again later",
        );
    }
    let logging_in = match shared.admission.admit(client.ip) {
        Ok(logging_in) => logging_in,
        Err(refusal) => {
            shared.metrics.refused(refusal.limit());
            return terminal(
                "policy-violation",
                "too many connections logging in; try again shortly",
            );
        }
    };
    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
        shared.metrics.refused("max_connections");
        return terminal(
            "policy-violation",
            "the server has as many connections as it takes",
        );
    };
    let max_wait = Duration::from_secs(settings.max_wait_secs);
    let hold = body.hold.unwrap_or(1).min(settings.max_hold);
    let granted = Granted {
        wait: body
            .wait
            .map_or(max_wait, Duration::from_secs)
            .clamp(Duration::from_secs(1), max_wait),
        hold,
        requests: settings.max_requests.max(hold + 1),
        inactivity: Duration::from_secs(settings.inactivity_secs),
        polling: POLLING,
    };
    let limits = &shared.config.limits;
    let http = &shared.config.http;
    let sid = {
        let bytes: [u8; 16] = rand::thread_rng().r#gen();
        hex::encode(bytes)
    };
    let (session, woken) = BoshSession::new(
        sid.clone(),
        rid,
        granted,
        domain,
        Limits {
            max_inbound: http.max_body_bytes * 2,
            max_outbound: limits.session_queue_bytes,
            rate: limits.xml().rate,
        },
    );
    shared.bosh.sessions.insert(sid.clone(), session.clone());
    let link = BoshLink::new(session.clone(), woken);
    let task_shared = shared.clone();
    let counted = shared.metrics.connection(crate::metrics::Transport::Bosh);
    shared.tasks.spawn(async move {
        let _slot = (slot, counted);
        let _registered = Registered {
            registry: &task_shared.bosh,
            sid,
        };
        serve(link, client, logging_in, &task_shared).await;
    });
    let batch = Batch {
        items: vec![Inbound::Element(Box::new(open(body.to.as_deref())))],
        bytes: 0,
        terminates: false,
    };
    answer(&session, rid, batch).await
}

/// The session's task: negotiation, then the bound session.
async fn serve(mut link: BoshLink, client: WebClient, logging_in: LoggingIn, shared: &Arc<Shared>) {
    let span = tracing::info_span!("bosh", peer = %client.ip, jid = tracing::field::Empty);
    let bound_by = tokio::time::Instant::now() + shared.config.negotiation_timeout();
    let negotiator = Negotiator::new(
        client.security(shared),
        Deadlines {
            tls: bound_by,
            bound: bound_by,
        },
    );
    let negotiated = tracing::Instrument::instrument(
        Box::pin(super::framed::negotiate(&mut link, negotiator, shared)),
        span.clone(),
    )
    .await;
    let Some(bound) = negotiated else {
        return;
    };
    drop(logging_in);
    span.record("jid", tracing::field::display(&bound.jid));
    tracing::Instrument::instrument(crate::session::start(link, bound, shared.clone()), span).await;
}

/// What the server computes of a request body, and a session's state machine driven by the
/// same bytes (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub fn fuzz_request(bytes: &[u8], limits: &crate::transport::XmlLimits) {
    let mut guard =
        crate::transport::guard::XmlGuard::new(limits.max_depth, limits.max_stanza_size);
    if guard.scan(bytes).is_ok()
        && let Ok(body) = xso::from_bytes::<RequestBody>(bytes)
    {
        let _ = (
            body.terminates(),
            body.restarts(),
            body.rid,
            body.payload.len(),
        );
    }
    session::fuzz_operations(bytes);
}
