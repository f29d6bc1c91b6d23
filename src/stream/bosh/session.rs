//! One BOSH session (XEP-0124): a stream that outlives each HTTP request. Requests are
//! processed strictly in `rid` order, whatever order they arrive in; processed requests are
//! held until there is something to send or their `wait` runs out; the last answers are kept
//! so that a request sent again gets the same answer, and nothing the client was sent is lost
//! with a dropped connection.
//!
//! No I/O here: the HTTP handlers submit requests and wait on their answer; the link takes
//! the stanzas out and puts the server's in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::body;
use crate::link::ClientElement;
use crate::transport::{Rate, Shaper};

/// What the server granted at creation (XEP-0124 §7.1).
#[derive(Debug, Clone, Copy)]
pub struct Granted {
    pub wait: Duration,
    pub hold: u32,
    pub requests: u32,
    pub inactivity: Duration,
    pub polling: Duration,
}

/// What the link reads, request by request.
pub enum Inbound {
    /// Boxed: the session hands it on boxed (`Incoming::Element`).
    Element(Box<ClientElement>),
    /// The client ended the session (`type='terminate'`), after the stanzas before.
    End,
}

/// The elements of one request, in order.
pub struct Batch {
    pub items: Vec<Inbound>,
    pub bytes: usize,
    /// The request ends the session (`type='terminate'`): it is answered with the end.
    pub terminates: bool,
}

/// What a submitted request gets.
pub enum Submitted {
    /// Its answer comes later (`BoshSession::expire` after the wait).
    Wait(oneshot::Receiver<Arc<[u8]>>),
    /// Its answer now: a retransmission, or the end of the session.
    Answer(Arc<[u8]>),
}

struct Pending {
    batch: Batch,
    responder: oneshot::Sender<Arc<[u8]>>,
}

struct Held {
    rid: u64,
    responder: oneshot::Sender<Arc<[u8]>>,
    terminates: bool,
}

struct State {
    /// The next rid to process; everything below was processed.
    next_rid: u64,
    /// Requests that arrived ahead of a missing one, or while the link had no room.
    early: BTreeMap<u64, Pending>,
    /// Processed requests waiting for something to send.
    held: VecDeque<Held>,
    inbound: VecDeque<Batch>,
    inbound_bytes: usize,
    /// The server's stanzas, encoded, for the next answer.
    outbound: Vec<u8>,
    /// The last answers by rid, for requests sent again.
    answered: VecDeque<(u64, Arc<[u8]>)>,
    /// Once the session is over: what every request gets.
    terminal: Option<Arc<[u8]>>,
    /// Since when no request is held (the inactivity clock).
    idle_since: Option<Instant>,
    shaper: Shaper,
}

pub struct BoshSession {
    pub sid: String,
    pub granted: Granted,
    creation_rid: u64,
    /// The creation answer's attributes: the session's parameters (XEP-0124 §7.1).
    creation_attributes: String,
    /// Bytes of stanzas the link has not taken yet, and of answers not yet collected, past
    /// which the session stops taking requests or ends.
    max_inbound: usize,
    max_outbound: usize,
    state: Mutex<State>,
    wake: mpsc::Sender<()>,
}

/// How the session is sized.
pub struct Limits {
    pub max_inbound: usize,
    pub max_outbound: usize,
    pub rate: Rate,
}

impl BoshSession {
    pub fn new(
        sid: String,
        rid: u64,
        granted: Granted,
        domain: &str,
        limits: Limits,
    ) -> (Arc<Self>, mpsc::Receiver<()>) {
        let (wake, woken) = mpsc::channel(1);
        let creation_attributes = format!(
            " sid='{sid}' wait='{}' hold='{}' requests='{}' inactivity='{}' polling='{}' \
             ver='1.11' from='{}' ack='{rid}' xmpp:version='1.0' xmpp:restartlogic='true' \
             xmlns:xmpp='{}' xmlns:stream='http://etherx.jabber.org/streams'",
            granted.wait.as_secs(),
            granted.hold,
            granted.requests,
            granted.inactivity.as_secs(),
            granted.polling.as_secs(),
            body::escape(domain),
            body::XBOSH,
        );
        let session = Arc::new(Self {
            sid,
            granted,
            creation_rid: rid,
            creation_attributes,
            max_inbound: limits.max_inbound,
            max_outbound: limits.max_outbound,
            state: Mutex::new(State {
                next_rid: rid,
                early: BTreeMap::new(),
                held: VecDeque::new(),
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                outbound: Vec::new(),
                answered: VecDeque::new(),
                terminal: None,
                idle_since: Some(Instant::now()),
                shaper: Shaper::new(limits.rate),
            }),
            wake,
        });
        (session, woken)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it would be a bug; the state is still consistent enough to end.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long the client must wait before its request of `bytes` is taken (the inbound
    /// rate, as on TCP).
    pub fn charge(&self, bytes: usize) -> Option<Duration> {
        let mut state = self.state();
        state.shaper.spend(bytes);
        state.shaper.wait(Instant::now())
    }

    /// Takes request `rid`.
    pub fn submit(&self, rid: u64, batch: Batch) -> Submitted {
        let mut state = self.state();
        if let Some(terminal) = &state.terminal {
            return Submitted::Answer(terminal.clone());
        }
        if rid < state.next_rid {
            if let Some((_, answer)) = state.answered.iter().find(|(r, _)| *r == rid) {
                return Submitted::Answer(answer.clone());
            }
            if let Some(held) = state.held.iter_mut().find(|h| h.rid == rid) {
                // The client gave up on the first copy: this one takes its place.
                let (responder, answer) = oneshot::channel();
                let _ = std::mem::replace(&mut held.responder, responder).send(empty());
                return Submitted::Wait(answer);
            }
            let text = format!("request {rid} is too old to be answered again");
            return Submitted::Answer(self.fail(&mut state, "item-not-found", &text));
        }
        let window_end = state.next_rid + u64::from(self.granted.requests);
        if rid >= window_end {
            let text = format!(
                "request {rid} is outside the window ({} to {})",
                state.next_rid,
                window_end - 1
            );
            return Submitted::Answer(self.fail(&mut state, "item-not-found", &text));
        }
        let (responder, answer) = oneshot::channel();
        if let Some(pending) = state.early.get_mut(&rid) {
            // Sent again before it could be processed: the same request, a new connection.
            let _ = std::mem::replace(&mut pending.responder, responder).send(empty());
            return Submitted::Wait(answer);
        }
        state.early.insert(rid, Pending { batch, responder });
        self.advance(&mut state);
        Submitted::Wait(answer)
    }

    /// The wait of request `rid` ran out: its answer, or `None` if it must wait more (the
    /// link has no room for it yet).
    pub fn expire(&self, rid: u64) -> Option<Arc<[u8]>> {
        let mut state = self.state();
        if let Some(terminal) = &state.terminal {
            return Some(terminal.clone());
        }
        if let Some(at) = state.held.iter().position(|h| h.rid == rid) {
            let held = state.held.remove(at).expect("found");
            let answer = self.answer(&mut state, held.rid, &[]);
            let _ = held.responder.send(answer.clone());
            self.note_idle(&mut state);
            return Some(answer);
        }
        if state.early.contains_key(&rid) {
            if state.early.keys().next() == Some(&state.next_rid) {
                return None;
            }
            let text = format!(
                "request {} never arrived, and the requests after it cannot wait longer",
                state.next_rid
            );
            return Some(self.fail(&mut state, "item-not-found", &text));
        }
        // Answered meanwhile: the answer is on its way to the waiting handler.
        state
            .answered
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, answer)| answer.clone())
    }

    /// Processes the requests that are next in order, as far as the link has room.
    fn advance(&self, state: &mut State) {
        let mut woke = false;
        while let Some(entry) = state.early.first_entry() {
            if *entry.key() != state.next_rid {
                break;
            }
            let bytes = entry.get().batch.bytes;
            if state.inbound_bytes > 0 && state.inbound_bytes + bytes > self.max_inbound {
                break;
            }
            let (rid, mut pending) = entry.remove_entry();
            state.inbound_bytes += bytes;
            if !pending.batch.items.is_empty() {
                let items = std::mem::take(&mut pending.batch.items);
                state.inbound.push_back(Batch {
                    items,
                    bytes,
                    terminates: false,
                });
                woke = true;
            }
            state.held.push_back(Held {
                rid,
                responder: pending.responder,
                terminates: pending.batch.terminates,
            });
            state.next_rid += 1;
        }
        if woke {
            let _ = self.wake.try_send(());
        }
        self.dispatch(state);
    }

    /// Answers held requests: the oldest with whatever waits to be sent, and the oldest ones
    /// beyond `hold` with nothing (XEP-0124 §10).
    fn dispatch(&self, state: &mut State) {
        if state.held.iter().any(|held| held.terminates) {
            // The session is ending: its last answer is the end (`close`).
            return;
        }
        if !state.outbound.is_empty()
            && let Some(held) = state.held.pop_front()
        {
            let payload = std::mem::take(&mut state.outbound);
            let answer = self.answer(state, held.rid, &payload);
            let _ = held.responder.send(answer);
        }
        while state.held.len() > self.granted.hold as usize {
            let held = state.held.pop_front().expect("not empty");
            let answer = self.answer(state, held.rid, &[]);
            let _ = held.responder.send(answer);
        }
        self.note_idle(state);
    }

    fn note_idle(&self, state: &mut State) {
        if state.held.is_empty() {
            if state.idle_since.is_none() {
                state.idle_since = Some(Instant::now());
                // The link arms its inactivity clock.
                let _ = self.wake.try_send(());
            }
        } else {
            state.idle_since = None;
        }
    }

    /// The answer to request `rid`, kept for a retransmission.
    fn answer(&self, state: &mut State, rid: u64, payload: &[u8]) -> Arc<[u8]> {
        let attributes = if rid == self.creation_rid {
            self.creation_attributes.clone()
        } else if rid + 1 != state.next_rid {
            // Not the latest request: say which is (XEP-0124 §9.2).
            format!(" ack='{}'", state.next_rid - 1)
        } else {
            String::new()
        };
        let answer: Arc<[u8]> = body::response(&attributes, payload).into();
        state.answered.push_back((rid, answer.clone()));
        while state.answered.len() > self.granted.requests as usize {
            state.answered.pop_front();
        }
        answer
    }

    /// Ends the session with a terminal condition: every waiting request gets it, and so does
    /// every later one; the link sees the end.
    fn fail(&self, state: &mut State, condition: &str, text: &str) -> Arc<[u8]> {
        tracing::info!(sid = %self.sid, condition, text, "BOSH session terminated");
        let terminal: Arc<[u8]> = body::terminate(condition, text, &[]).into();
        self.end_with(state, terminal.clone(), terminal.clone());
        let _ = self.wake.try_send(());
        terminal
    }

    /// Answers every waiting request: the oldest held one with `first` (what was left to
    /// send), the others with `rest`. Later requests get `first` if nobody took it.
    fn end_with(&self, state: &mut State, first: Arc<[u8]>, rest: Arc<[u8]>) {
        let mut first = Some(first);
        for held in state.held.drain(..) {
            let _ = held
                .responder
                .send(first.take().unwrap_or_else(|| rest.clone()));
        }
        for (_, pending) in std::mem::take(&mut state.early) {
            let _ = pending.responder.send(rest.clone());
        }
        state.terminal = Some(first.unwrap_or(rest));
    }

    /// For the link: the next request's elements, or why there are none.
    pub(super) fn take_inbound(&self, now: Instant) -> Taken {
        let mut state = self.state();
        if let Some(batch) = state.inbound.pop_front() {
            state.inbound_bytes -= batch.bytes;
            self.advance(&mut state);
            return Taken::Batch(batch.items);
        }
        if state.terminal.is_some() {
            return Taken::Ended;
        }
        match state.idle_since {
            Some(since) if now >= since + self.granted.inactivity => {
                tracing::info!(sid = %self.sid, "BOSH session expired");
                let terminal: Arc<[u8]> = body::terminate(
                    "item-not-found",
                    "the session expired: no request for longer than its inactivity",
                    &[],
                )
                .into();
                self.end_with(&mut state, terminal.clone(), terminal);
                Taken::Ended
            }
            Some(since) => Taken::Nothing(Some(since + self.granted.inactivity)),
            None => Taken::Nothing(None),
        }
    }

    /// For the link: stanzas to send with the next answer.
    pub(super) fn push_outbound(&self, payload: &mut Vec<u8>) -> Result<(), ()> {
        let mut state = self.state();
        if state.terminal.is_some() {
            payload.clear();
            return Err(());
        }
        if state.outbound.len() + payload.len() > self.max_outbound {
            // The client stopped collecting what it is sent: it is a slow reader.
            return Err(());
        }
        if state.outbound.is_empty() {
            std::mem::swap(&mut state.outbound, payload);
        } else {
            state.outbound.append(payload);
        }
        self.dispatch(&mut state);
        Ok(())
    }

    /// For the link: the end of the stream, with what was still to send (a stream error
    /// included).
    pub(super) fn close(&self, condition: &str, payload: &[u8]) {
        let mut state = self.state();
        if state.terminal.is_some() {
            return;
        }
        let mut last = std::mem::take(&mut state.outbound);
        last.extend_from_slice(payload);
        let first = body::terminate(condition, "", &last).into();
        let rest = body::terminate(condition, "", &[]).into();
        self.end_with(&mut state, first, rest);
    }
}

/// What the link finds.
pub(super) enum Taken {
    Batch(Vec<Inbound>),
    Ended,
    /// Nothing yet; the session expires at this time unless a request comes.
    Nothing(Option<Instant>),
}

/// Drives a session with operations read from `bytes`: requests with rids around the
/// window, expiries, the link taking and sending, the end (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub fn fuzz_operations(bytes: &[u8]) {
    let granted = Granted {
        wait: Duration::from_secs(1),
        hold: 1,
        requests: 3,
        inactivity: Duration::from_secs(1),
        polling: Duration::from_secs(1),
    };
    let limits = Limits {
        max_inbound: 64,
        max_outbound: 256,
        rate: Rate {
            bytes_per_sec: 1024,
            burst: 4096,
        },
    };
    let first = bytes.first().map_or(0, |b| u64::from(*b));
    let (session, _woken) = BoshSession::new("fuzz".into(), first, granted, "localhost", limits);
    let mut waiting = Vec::new();
    for pair in bytes.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let rid = first + u64::from(arg % 8);
        match op % 6 {
            0 | 1 => {
                let batch = Batch {
                    items: Vec::new(),
                    bytes: usize::from(arg),
                    terminates: op % 6 == 1 && arg % 3 == 0,
                };
                if let Submitted::Wait(answer) = session.submit(rid, batch) {
                    waiting.push(answer);
                }
            }
            2 => {
                let _ = session.expire(rid);
            }
            3 => {
                let _ = session.take_inbound(Instant::now());
            }
            4 => {
                let mut payload = vec![b'x'; usize::from(arg)];
                let _ = session.push_outbound(&mut payload);
            }
            _ => session.close("", &[]),
        }
    }
    for mut answer in waiting {
        let _ = answer.try_recv();
    }
}

fn empty() -> Arc<[u8]> {
    body::response("", &[]).into()
}

#[cfg(test)]
mod tests;
