//! Sandboxes: a connector's faithful fake application, runnable on loopback by the demo, the
//! tests and integrators (`ferry sandbox <connector>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;

pub mod control;

pub use control::{answer_stored, fake_date, AfterStore, ErrorBody, FakeControl, Fault, Target};

/// The token of a request's `Authorization: Bearer <token>` header (RFC 6750 §2.1), as
/// fakes read it; empty when there is none.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Starts a connector's fake application.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Serves the fake on `addr` (port 0 picks a free one) until the handle is dropped.
    async fn start(&self, addr: SocketAddr) -> Result<SandboxHandle>;
}

/// A running fake and how to connect to it.
pub struct SandboxHandle {
    pub addr: SocketAddr,
    /// Connection `settings` that point a connection at this fake.
    pub settings: serde_json::Value,
    /// Secrets the fake accepts (sandbox values, not real credentials).
    pub secrets: BTreeMap<String, String>,
    /// The call limits the fake enforces, when they differ from the connector's defaults.
    pub rate_limit: Option<crate::http::rate::RateLimits>,
    pub app: Arc<dyn SandboxApp>,
}

impl SandboxHandle {
    /// A connection named `name` of `connector` to this fake, syncing `entities` with the
    /// default selection: its settings and call limits, no secrets from the environment
    /// (the sandbox's are passed to [`Engine::prepare`](crate::sync::Engine::prepare)).
    pub fn connection(
        &self,
        name: &str,
        connector: &str,
        entities: impl IntoIterator<Item = String>,
    ) -> crate::config::ConnectionConfig {
        crate::config::ConnectionConfig {
            name: name.into(),
            connector: connector.into(),
            settings: self.settings.clone(),
            secrets: BTreeMap::new(),
            parameters: BTreeMap::new(),
            rate_limit: self.rate_limit,
            page_size: None,
            webhooks: None,
            line: None,
            entities: entities
                .into_iter()
                .map(|e| (e, crate::config::EntitySelection::default()))
                .collect(),
        }
    }
}

/// Acting on the fake as the application's own users would, for the demo.
pub trait SandboxApp: Send + Sync {
    /// Loads a few realistic records.
    fn seed_demo(&self);
    /// Changes a record as a user would; returns what was done.
    fn user_edit(&self) -> String;
    /// One line per stored record, for showing what is where.
    fn describe(&self) -> Vec<String>;
    /// Create and update calls received so far.
    fn write_calls(&self) -> u64;
    /// Loads `n` synthetic records last changed a day ago, for benchmarks; false when the
    /// fake cannot.
    fn seed_many(&self, _n: usize) -> bool {
        false
    }
    /// Stops enforcing the application's call limits (benchmarks measure Ferry, not them).
    fn lift_limits(&self) {}
    /// The fake's fault, clock and call-count control.
    fn control(&self) -> &FakeControl;
    /// How the conformance kit acts on this fake as the application's users would; `None`
    /// when the fake does not take part.
    fn user(&self) -> Option<&dyn AppUser> {
        None
    }
}

/// A fake's names for its kinds of call, as its [`FakeControl`] counts them.
#[derive(Debug, Clone, Copy)]
pub struct CallKinds {
    /// A list request (one page).
    pub list: &'static str,
    /// Reads of one record.
    pub reads: &'static [&'static str],
    /// The call that creates a record.
    pub create: &'static str,
    /// Every call that writes.
    pub writes: &'static [&'static str],
}

impl Default for CallKinds {
    fn default() -> Self {
        CallKinds {
            list: "list",
            reads: &["get"],
            create: "create",
            writes: &["create", "update"],
        }
    }
}

/// A known failure of one case, waived until the connector's issue fixes it. Only a
/// failure whose text holds `failure` is waived; any other failure of the case still fails.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub case: &'static str,
    /// The variant it fails under; empty for every variant.
    pub variant: &'static str,
    /// A fragment of the expected failure's text.
    pub failure: &'static str,
    /// The issue that fixes it, and why it fails until then.
    pub why: &'static str,
}

/// A behaviour the official contract leaves open, offered by a fake both ways; the
/// conformance kit runs every case under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    /// What the variant does and which source leaves it open.
    pub about: &'static str,
}

/// What the conformance kit needs from a fake: acting as the application's users on one
/// kind of record whose name is mapped both ways to a hub text field (`Organization.name`
/// in the shipped hub model), and the fake's declared limits.
pub trait AppUser: Send + Sync {
    /// The connection's entity the cases sync (`contact`, `client`...).
    fn entity(&self) -> &'static str;
    /// The hub entity and text field that entity's name maps to.
    fn hub_field(&self) -> (&'static str, &'static str) {
        ("Organization", "name")
    }
    /// Whether Ferry reads records from this application (false for push-only ones).
    fn readable(&self) -> bool {
        true
    }
    /// Whether the application lists records page by page (false when one call answers
    /// them all).
    fn pages(&self) -> bool {
        true
    }
    /// The fake's names for its kinds of call (as counted by its [`FakeControl`]).
    fn call_kinds(&self) -> CallKinds {
        CallKinds::default()
    }
    /// Creates a record with this name as a user would; returns its id.
    fn create(&self, name: &str) -> String;
    /// Renames a record as a user would (its update time moves); false when it is gone.
    fn rename(&self, id: &str, name: &str) -> bool;
    /// Deletes a record as a user would; false when the application cannot or it is gone.
    fn delete(&self, _id: &str) -> bool {
        false
    }
    /// Every record the application holds: `(id, name)`.
    fn names(&self) -> Vec<(String, String)>;
    /// Adds data Ferry does not map to a record (extra list items with their descriptions,
    /// user-defined fields); false when the application has none.
    fn add_unmapped(&self, _id: &str) -> bool {
        false
    }
    /// `Ok` when what [`add_unmapped`](Self::add_unmapped) added is still there unchanged;
    /// `Err` says what is missing.
    fn unmapped_intact(&self, _id: &str) -> std::result::Result<(), String> {
        Err("this fake has no unmapped data".into())
    }
    /// Makes a record malformed in the application's answers (a wrong type where the
    /// contract says otherwise); false when the fake cannot.
    fn corrupt(&self, _id: &str) -> bool {
        false
    }
    /// Invalidates every access token issued (as their expiry would); false without OAuth.
    fn expire_access_tokens(&self) -> bool {
        false
    }
    /// Revokes the refresh token (an admin removed the app's access); false without one.
    fn revoke_refresh_token(&self) -> bool {
        false
    }
    /// List calls an idle run needs under the current variant: one, unless the contract
    /// leaves the application no single query for "changed since" (the fake says why).
    fn idle_list_calls(&self) -> u64 {
        1
    }
    /// Whether the application reports update times (needed by the time zone cases).
    fn reports_times(&self) -> bool {
        true
    }
    /// Behaviours the contract leaves open, which the kit runs every case under.
    fn variants(&self) -> Vec<Variant> {
        Vec::new()
    }
    /// Switches to one of [`variants`](Self::variants); false for an unknown name.
    fn set_variant(&self, _name: &str) -> bool {
        false
    }
    /// Cases known to fail until a connector issue is done, and how they fail.
    fn waiting(&self) -> Vec<Waiting> {
        Vec::new()
    }
    /// Secrets the fake handed out (access tokens, rotated refresh tokens), which must no
    /// more appear in anything Ferry stores than the configured ones.
    fn issued_secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a fake's users do while a listing is under way: each hook runs just before the
/// n-th list request (counted from 1 over the fake's life) is answered. One facility for
/// every fake, so tests of edits, deletions and shifts during a listing read the same.
pub struct ListHooks<F: ?Sized> {
    due: Vec<(u64, Box<F>)>,
}

impl<F: ?Sized> Default for ListHooks<F> {
    fn default() -> Self {
        ListHooks { due: Vec::new() }
    }
}

impl<F: ?Sized> ListHooks<F> {
    /// Runs `hook` before the `n`-th list request.
    pub fn add(&mut self, n: u64, hook: Box<F>) {
        self.due.push((n, hook));
    }

    /// The hooks due at list request `n`, taken out (run them without the fake's lock).
    pub fn take_due(&mut self, n: u64) -> Vec<Box<F>> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|(at, _)| *at == n);
        self.due = later;
        now.into_iter().map(|(_, h)| h).collect()
    }
}
