//! An orderly stop (`paygate serve` on SIGTERM or Ctrl-C): `/readyz` answers 503 at once and,
//! for `shutdown_drain_ms` (default 0), the gateway goes on serving so that a load balancer
//! polling it stops sending new calls; then the listener stops accepting, requests in flight
//! finish, the outbox stops claiming, waits for the deliveries it made and records their
//! outcomes, and the store closes. All of it within `shutdown_grace_ms`; what still runs then
//! is cut off as in a crash, which the design survives (an acknowledged write is durable, an
//! unrecorded delivery is made again when its lease runs out).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::RunningGateway;

/// Whether a stop has begun; the HTTP server and the outbox wait on it.
pub struct Shutdown {
    /// Not ready any more (the drain before the stop).
    draining: AtomicBool,
    begun: tokio::sync::watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            begun: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Shutdown {
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// True from the drain on (and once the stop has begun).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.is_begun()
    }

    pub fn begin(&self) {
        self.begun.send_replace(true);
    }

    pub fn is_begun(&self) -> bool {
        *self.begun.borrow()
    }

    /// Resolves once [`Shutdown::begin`] has been called (at once if it was).
    pub async fn begun(&self) {
        let mut rx = self.begun.subscribe();
        // The sender lives in the state this borrows, so the channel cannot close first.
        let _ = rx.wait_for(|begun| *begun).await;
    }
}

/// What an orderly stop left undone, if anything (each part that ran out of time).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    pub requests_cut_off: bool,
    pub outbox_cut_off: bool,
}

impl RunningGateway {
    /// Stops the gateway in order (see the module docs), giving it `grace` in all, the
    /// configured drain included.
    pub async fn shutdown(self, grace: Duration) -> Stopped {
        let deadline = tokio::time::Instant::now() + grace;
        let state = Arc::clone(&self.state);
        state.shutdown.drain();
        let drain = Duration::from_millis(state.config.shutdown_drain_ms);
        if !drain.is_zero() {
            tokio::time::sleep(drain.min(grace)).await;
        }
        state.shutdown.begin();
        let mut stopped = Stopped::default();
        match tokio::time::timeout_at(deadline, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server task failed"),
            Err(_) => stopped.requests_cut_off = true,
        }
        match tokio::time::timeout_at(deadline, self.outbox).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the outbox task failed"),
            Err(_) => stopped.outbox_cut_off = true,
        }
        if stopped != Stopped::default() {
            tracing::warn!(
                requests_cut_off = stopped.requests_cut_off,
                outbox_cut_off = stopped.outbox_cut_off,
                grace_ms = grace.as_millis() as u64,
                "shutdown grace ran out"
            );
        }
        state.store.close().await;
        stopped
    }
}
