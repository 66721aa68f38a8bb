//! The server's connections: accepted one by one under a connection limit, each served by hyper with a
//! header read timeout (which is also the keep-alive idle timeout), and drained on shutdown within a
//! deadline, after which what is still open is dropped so the process always exits.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::metrics::Metrics;

/// How connections are accepted, timed out and drained.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, counted from when it opens or its last
    /// response was sent (so it is also the idle timeout of a keep-alive connection).
    pub header_timeout: Duration,
    /// After SIGTERM/SIGINT: how long open connections may take to finish before they are dropped.
    pub shutdown_timeout: Duration,
}

/// Accept and serve until SIGTERM or SIGINT, then drain within `limits.shutdown_timeout` (a second signal
/// ends the drain at once). Returns how many connections were still open and dropped.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnLimits, metrics: &Metrics) -> usize {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut full = false;
    loop {
        while conns.try_join_next().is_some() {}
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full {
                    full = true;
                    metrics.connection_limit_hits.inc();
                    eprintln!(
                        "{}",
                        serde_json::json!({"event": "connection_limit", "max_connections": limits.max_connections})
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = &mut stop => break,
                }
            }
        };
        if slots.available_permits() > 0 {
            full = false;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "accept_error", "error": e.to_string()})
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        metrics.connections.inc();
        let gauge = metrics.connections.clone();
        let (app, close) = (app.clone(), close_rx.clone());
        conns.spawn(async move {
            serve_one(stream, app, limits.header_timeout, close).await;
            gauge.dec();
            drop(slot);
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    let deadline = tokio::time::sleep(limits.shutdown_timeout);
    tokio::pin!(deadline);
    let again = shutdown_signal();
    tokio::pin!(again);
    loop {
        tokio::select! {
            next = conns.join_next() => if next.is_none() { return 0 },
            _ = &mut deadline => break,
            _ = &mut again => break,
        }
    }
    let dropped = conns.len();
    conns.abort_all();
    metrics.connections.sub(dropped as i64);
    dropped
}

/// One connection: HTTP/1.1 with the header timeout; on shutdown it finishes the request in progress and
/// closes instead of waiting for another.
async fn serve_one(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut close: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = close.wait_for(|closing| *closing) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
