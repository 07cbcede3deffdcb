//! `ferry serve` (server, worker and scheduler in one process: the embedded default) and
//! `ferry worker` (workers only, for more machines on PostgreSQL). Both stop gracefully on
//! SIGTERM or Ctrl-C: the running job finishes, requests in flight are answered.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use ferry_framework::config::Settings;
use ferry_framework::input_error;
use ferry_framework::runtime::{scheduler, worker, Runtime};
use ferry_framework::store::Backend;
use tokio::sync::watch;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (default: settings' `runtime.listen`).
    #[arg(long)]
    pub listen: Option<String>,
}

/// Turns true on SIGTERM or Ctrl-C.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing the running job");
        let _ = tx.send(true);
    });
    rx
}

/// On SQLite one process runs jobs: a lock file next to the database says which.
fn single_worker_lock(settings: &Settings, rt: &Runtime) -> Result<Option<std::fs::File>> {
    if rt.store().backend != Backend::Sqlite {
        return Ok(None);
    }
    let path = format!("{}.worker.lock", settings.database_url());
    let file = ferry_framework::store::open_lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(_) => Err(input_error!(
            "another Ferry process already runs jobs on the SQLite database {} (lock {path}); \
             SQLite supports one worker process (`ferry serve` includes one). \
             Use PostgreSQL to run several workers.",
            settings.database_url()
        )),
    }
}

pub async fn serve(settings: &Settings, args: ServeArgs) -> Result<ExitCode> {
    let rt = Runtime::start(settings)?;
    let _lock = single_worker_lock(settings, &rt)?;
    let listen = args
        .listen
        .unwrap_or_else(|| settings.runtime.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| input_error!("cannot listen on {listen}: {e}"))?;
    // A closed stdout must not stop a server (`ferry serve | head -0`).
    let _ = out!(
        "ferry serve: listening on http://{} ({} connection(s); webhooks at /webhooks/<org>/<connection>)",
        listener.local_addr()?,
        rt.connections.len()
    );
    let stop = shutdown_signal();
    let w = tokio::spawn(worker::run(rt.clone(), stop.clone()));
    let s = tokio::spawn(scheduler::run(rt.clone(), stop.clone()));
    ferry_framework::server::serve(rt.clone(), listener, stop).await?;
    let _ = s.await;
    w.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(settings: &Settings) -> Result<ExitCode> {
    let rt: Arc<Runtime> = Runtime::start(settings)?;
    let _lock = single_worker_lock(settings, &rt)?;
    let _ = out!(
        "ferry worker: running jobs from {:?} ({} connection(s))",
        rt.store().backend,
        rt.connections.len()
    );
    worker::run(rt, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
