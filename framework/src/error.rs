//! Error kinds the CLI must tell apart: bad input (exit 2) versus everything else.

use std::fmt;

/// Bad input from a user, a config file or a mapping. The CLI exits with 2 on it and nothing
/// has been written. The message names the file, record and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl InputError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Shorthand for returning an [`InputError`] through `anyhow`.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => { anyhow::Error::new($crate::error::InputError(format!($($arg)*))) };
}

/// True when the error chain holds an [`InputError`] (so the CLI exits with 2).
pub fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
}
