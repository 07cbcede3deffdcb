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
