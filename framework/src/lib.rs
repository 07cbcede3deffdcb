//! Ferry's generic sync engine. Nothing in this crate names a connector: applications plug in
//! through the contracts in [`connector`] and [`entity`] and register themselves with
//! [`register_connector!`].

pub mod config;
pub mod connector;
pub mod entity;
pub mod error;
pub mod http;
pub mod hub;
pub mod listing;
pub mod mapping;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod webhook;

pub use error::InputError;

#[doc(hidden)]
pub use inventory as __inventory;
