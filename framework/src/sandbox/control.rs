//! One fault, clock and call-count facility for every fake application: what a test or the
//! conformance kit does to a fake (inject a status, lose a write's answer, move the clock or
//! the tenant's time zone, count calls, act during a listing) reads the same for all of them.
//! A fake keeps only what is its own: its routes, its records, its error body.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde_json::Value;

use super::ListHooks;

/// A failure a fake serves instead of (or after) a normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This HTTP status with the application's error body; a 429 says `Retry-After: 1`.
    Status(u16),
    /// 429 with `Retry-After` in seconds (RFC 9110 §10.2.3, delay-seconds).
    RetryAfterSeconds(u64),
    /// 429 with `Retry-After` as an HTTP date this long from now (RFC 9110 §10.2.3,
    /// HTTP-date; whole seconds).
    RetryAfterDate(Duration),
    /// Answer normally after this long (a timeout, for a client with a shorter one).
    Delay(Duration),
    /// Perform the write, then answer this status (the connection broke after the commit).
    StoreThenFail(u16),
    /// Perform the write, then take this long to answer: a client that gives up first never
    /// learns the write happened.
    StoreThenHang(Duration),
    /// Perform the write, then answer with the stored entity as this function changes it
    /// (bad data in an answer: an id of the wrong type, another record's id).
    StoreThenTamper(fn(&mut Value)),
    /// HTTP 200 carrying the application's own error envelope with this text (WorkflowMax's
    /// `<Status>ERROR</Status>`, BlizWork's non-zero `resultCode`).
    Envelope(String),
    /// HTTP 200 with a body in no format the application uses.
    Garbled,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every counted request but token requests.
    Any,
    /// List requests of any entity.
    List,
    /// List requests of one entity (the fake's own name for it: `Person`, `Client`...).
    ListOf(&'static str),
    Get,
    Create,
    Update,
    Delete,
    Token,
    /// Requests of one kind the fake names (`customfield_put`, `trigger`...).
    Kind(&'static str),
}

impl Target {
    fn matches(self, kind: &str, entity: &str) -> bool {
        match self {
            Target::Any => kind != "token",
            Target::List => kind == "list",
            Target::ListOf(e) => kind == "list" && entity.eq_ignore_ascii_case(e),
            Target::Get => kind == "get",
            Target::Create => kind == "create",
            Target::Update => kind == "update",
            Target::Delete => kind == "delete",
            Target::Token => kind == "token",
            Target::Kind(k) => kind == k,
        }
    }
}

/// What remains to do once a write is stored: the part of a [`Fault`] that comes after.
#[derive(Debug, Clone, Copy)]
pub enum AfterStore {
    Fail(u16),
    Hang(Duration),
    Tamper(fn(&mut Value)),
}

/// How a fake words its errors, so shared faults answer in the application's format.
pub trait ErrorBody: Sync {
    /// An error answer with this HTTP status.
    fn status(&self, status: StatusCode, message: &str) -> Response;
    /// HTTP 200 with the application's error envelope; `status(500)` for applications
    /// without one.
    fn envelope(&self, message: &str) -> Response {
        self.status(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// HTTP 200 whose body is in no format the application uses.
    fn garbled(&self) -> Response {
        let mut r = Response::new(axum::body::Body::from("<html><body>Service Unavailable"));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/html"));
        r
    }
}

/// How many arrival times a fake keeps (a sandbox may serve for days).
const ARRIVALS_KEPT: usize = 10_000;

#[derive(Default)]
struct State {
    calls: HashMap<String, u64>,
    /// The latest arrivals (at most [`ARRIVALS_KEPT`]), oldest first.
    log: VecDeque<(Instant, String)>,
    faults: VecDeque<(Target, Fault)>,
    clock: Option<DateTime<Utc>>,
    zone: Option<FixedOffset>,
    hooks: ListHooks<dyn FnOnce() + Send>,
    malformed: Vec<String>,
    latency: Option<std::time::Duration>,
}

/// The shared control of one fake: call counts by kind, queued faults, the fake's clock and
/// time zone, hooks run during listings, and the off-contract requests it refused.
#[derive(Default)]
pub struct FakeControl {
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeControl").finish_non_exhaustive()
    }
}

impl FakeControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request of `kind`; returns how many of that kind there have been.
    pub fn count(&self, kind: &str) -> u64 {
        let mut s = self.lock();
        if s.log.len() == ARRIVALS_KEPT {
            s.log.pop_front();
        }
        s.log.push_back((Instant::now(), kind.to_string()));
        let n = s.calls.entry(kind.to_string()).or_default();
        *n += 1;
        *n
    }

    /// Requests received of `kind`.
    pub fn calls(&self, kind: &str) -> u64 {
        self.lock().calls.get(kind).copied().unwrap_or(0)
    }

    /// Every request but token requests.
    pub fn api_calls(&self) -> u64 {
        let s = self.lock();
        s.calls
            .iter()
            .filter(|(k, _)| *k != "token")
            .map(|(_, v)| v)
            .sum()
    }

    /// When each of the latest requests of `kind` arrived, oldest first.
    pub fn arrivals(&self, kind: &str) -> Vec<Instant> {
        let s = self.lock();
        s.log
            .iter()
            .filter(|(_, k)| k == kind)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Serves `fault` for the next request `target` matches.
    pub fn fail_next(&self, target: Target, fault: Fault) {
        self.lock().faults.push_back((target, fault));
    }

    /// Faults queued and not yet served.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    fn take_fault(&self, kind: &str, entity: &str) -> Option<Fault> {
        let mut s = self.lock();
        let i = s.faults.iter().position(|(t, _)| t.matches(kind, entity))?;
        s.faults.remove(i).map(|(_, f)| f)
    }

    /// Counts a request and serves the fault due for it, if any: `Err` is the answer to
    /// give instead; `Ok(Some)` is what to do after storing the write. Delays sleep here.
    pub async fn gate(
        &self,
        kind: &str,
        entity: &str,
        errors: &dyn ErrorBody,
    ) -> Result<Option<AfterStore>, Response> {
        self.count(kind);
        self.serve_fault(kind, entity, errors).await
    }

    /// As [`gate`](Self::gate) for a request already counted.
    pub async fn serve_fault(
        &self,
        kind: &str,
        entity: &str,
        errors: &dyn ErrorBody,
    ) -> Result<Option<AfterStore>, Response> {
        let latency = self.lock().latency;
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        match self.take_fault(kind, entity) {
            None => Ok(None),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::StoreThenFail(s)) => Ok(Some(AfterStore::Fail(s))),
            Some(Fault::StoreThenHang(d)) => Ok(Some(AfterStore::Hang(d))),
            Some(Fault::StoreThenTamper(f)) => Ok(Some(AfterStore::Tamper(f))),
            Some(Fault::Envelope(m)) => Err(errors.envelope(&m)),
            Some(Fault::Garbled) => Err(errors.garbled()),
            Some(Fault::Status(s)) => Err(status_answer(errors, s, Some("1".into()))),
            Some(Fault::RetryAfterSeconds(n)) => {
                Err(status_answer(errors, 429, Some(n.to_string())))
            }
            Some(Fault::RetryAfterDate(d)) => {
                let at = Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
                let date = crate::http::http_date(at);
                Err(status_answer(errors, 429, Some(date)))
            }
        }
    }

    /// Makes every answer take `d` longer (a network between Ferry and the application,
    /// for benchmarks); `None` answers at once.
    pub fn set_latency(&self, d: Option<std::time::Duration>) {
        self.lock().latency = d;
    }

    /// The fake's clock: the time set, or the real time.
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().clock.unwrap_or_else(Utc::now)
    }

    /// The fixed time, if the clock is fixed.
    pub fn fixed_clock(&self) -> Option<DateTime<Utc>> {
        self.lock().clock
    }

    /// Fixes the clock (`None` follows the real time again).
    pub fn set_clock(&self, t: Option<DateTime<Utc>>) {
        self.lock().clock = t;
    }

    /// Moves a fixed clock on (a real clock moves by itself).
    pub fn advance(&self, d: chrono::Duration) {
        let mut s = self.lock();
        if let Some(t) = s.clock.as_mut() {
            *t += d;
        }
    }

    /// The tenant's time zone, for applications that report local times without an offset.
    /// `None` (the default) is UTC.
    pub fn set_zone(&self, zone: Option<FixedOffset>) {
        self.lock().zone = zone;
    }

    pub fn zone(&self) -> FixedOffset {
        self.lock()
            .zone
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"))
    }

    /// `t` as the tenant's wall-clock time.
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.zone()).naive_local()
    }

    /// Runs `hook` just before the `n`-th list request (counted from 1 over the fake's
    /// life) is answered.
    pub fn before_list(&self, n: u64, hook: Box<dyn FnOnce() + Send>) {
        self.lock().hooks.add(n, hook);
    }

    /// Counts a list request (of the fake's `kind` for them) and runs the hooks due at it,
    /// outside the control's lock. Returns the list request's number.
    pub fn list_request(&self, kind: &str) -> u64 {
        let n = self.count(kind);
        let due = self.lock().hooks.take_due(n);
        for hook in due {
            hook();
        }
        n
    }

    /// Counts an arriving request of `kind`: a list request (when `kind` is the fake's
    /// `list_kind`) also runs the hooks due at it.
    pub fn receive(&self, kind: &str, list_kind: &str) -> u64 {
        if kind == list_kind {
            self.list_request(kind)
        } else {
            self.count(kind)
        }
    }

    /// Notes an off-contract request the fake refused (what the contract says, and where).
    pub fn refuse_off_contract(&self, what: &str) {
        self.lock().malformed.push(what.to_string());
    }

    /// The off-contract requests refused so far.
    pub fn off_contract(&self) -> Vec<String> {
        self.lock().malformed.clone()
    }
}

fn status_answer(errors: &dyn ErrorBody, status: u16, retry_after: Option<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = errors.status(code, "Injected failure");
    if status == 429 {
        if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert("Retry-After", v);
        }
    }
    r
}

/// Finishes a write's answer once it is stored: `ok` answers with the stored entity, unless
/// a fault says to fail, hang first or change what is answered.
pub async fn answer_stored(
    after: Option<AfterStore>,
    stored: Value,
    errors: &dyn ErrorBody,
    ok: impl FnOnce(Value) -> Response,
) -> Response {
    match after {
        None => ok(stored),
        Some(AfterStore::Fail(s)) => {
            let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            errors.status(code, "The connection was reset")
        }
        Some(AfterStore::Hang(d)) => {
            tokio::time::sleep(d).await;
            ok(stored)
        }
        Some(AfterStore::Tamper(f)) => {
            let mut v = stored;
            f(&mut v);
            ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;

    impl ErrorBody for Plain {
        fn status(&self, status: StatusCode, message: &str) -> Response {
            let mut r = Response::new(axum::body::Body::from(message.to_string()));
            *r.status_mut() = status;
            r
        }
    }

    #[tokio::test]
    async fn faults_go_to_the_requests_they_target_in_order() {
        let c = FakeControl::default();
        c.fail_next(Target::ListOf("Person"), Fault::Status(503));
        c.fail_next(Target::Create, Fault::StoreThenFail(500));
        c.fail_next(Target::Any, Fault::Status(500));
        // A token request is not "any" request, and a Contact list not a Person one.
        assert!(c.gate("token", "", &Plain).await.unwrap().is_none());
        let r = c.gate("list", "Contact", &Plain).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = c.gate("list", "Person", &Plain).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let after = c.gate("create", "Person", &Plain).await.unwrap();
        assert!(matches!(after, Some(AfterStore::Fail(500))));
        assert_eq!(c.pending_faults(), 0);
        assert_eq!(
            (c.calls("list"), c.calls("create"), c.api_calls()),
            (2, 1, 3)
        );
    }

    #[tokio::test]
    async fn retry_after_is_given_as_seconds_or_as_an_http_date() {
        let c = FakeControl::default();
        c.fail_next(Target::Any, Fault::RetryAfterSeconds(7));
        c.fail_next(Target::Any, Fault::RetryAfterDate(Duration::from_secs(30)));
        let r = c.gate("get", "", &Plain).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["Retry-After"], "7");
        let r = c.gate("get", "", &Plain).await.unwrap_err();
        let date = r.headers()["Retry-After"].to_str().unwrap().to_string();
        let at = httpdate::parse_http_date(&date).unwrap();
        let wait = at.duration_since(std::time::SystemTime::now()).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{date}"
        );
    }

    #[test]
    fn the_clock_is_settable_and_local_times_follow_the_zone() {
        let c = FakeControl::default();
        let t = DateTime::parse_from_rfc3339("2026-03-01T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        c.set_clock(Some(t));
        c.advance(chrono::Duration::minutes(45));
        assert_eq!(c.now(), t + chrono::Duration::minutes(45));
        c.set_zone(FixedOffset::east_opt(9 * 3600));
        let local = c.local(c.now());
        assert_eq!(local.to_string(), "2026-03-02 09:15:00");
    }

    #[test]
    fn list_hooks_run_before_their_list_request() {
        let c = std::sync::Arc::new(FakeControl::default());
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        c.before_list(2, Box::new(move || s.lock().unwrap().push("second")));
        assert_eq!(c.list_request("list"), 1);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(c.list_request("list"), 2);
        assert_eq!(*seen.lock().unwrap(), vec!["second"]);
    }
}

/// Gives an answer the fake's own clock in its `Date` header (RFC 9110 §6.6.1), as an
/// application's answers carry its clock: a fake whose clock is set answers in that time,
/// so record times and `Date` agree as they do in the application. Use with
/// `axum::middleware::map_response_with_state(control, fake_date)`.
pub async fn fake_date(
    axum::extract::State(control): axum::extract::State<std::sync::Arc<FakeControl>>,
    mut resp: Response,
) -> Response {
    let date = crate::http::http_date(control.now());
    if let Ok(v) = HeaderValue::from_str(&date) {
        resp.headers_mut().insert(axum::http::header::DATE, v);
    }
    resp
}
