//! Ferry's application connectors. Each folder holds one application: its connector and
//! entities, its API client, and a faithful fake server of it. Connectors join the registry
//! themselves; binaries only need to link this crate (see [`link`]).

pub mod blizwork;
pub mod phixflow;
pub mod superoffice;
pub mod workflowmax;

/// Serves a fake application's router on `addr` until the runtime stops; returns the bound
/// address (port 0 picks a free one).
pub(crate) async fn serve(
    router: axum::Router,
    addr: std::net::SocketAddr,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(bound)
}

/// Call (or `use ferry_connectors as _;`) from a binary so the linker keeps the connectors'
/// registrations.
pub fn link() {}
