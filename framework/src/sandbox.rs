//! Sandboxes: a connector's faithful fake application, runnable on loopback by the demo, the
//! tests and integrators (`ferry sandbox <connector>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;

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
