//! Ferry's application connectors. Each folder holds one application: its connector and
//! entities, its API client, and a faithful fake server of it. Connectors join the registry
//! themselves; binaries only need to link this crate (see [`link`]).

pub mod superoffice;
pub mod workflowmax;

/// Call (or `use ferry_connectors as _;`) from a binary so the linker keeps the connectors'
/// registrations.
pub fn link() {}
