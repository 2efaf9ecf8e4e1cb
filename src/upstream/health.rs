//! Per-upstream health: after consecutive transport failures an upstream is tried last, for a
//! back-off that doubles up to a cap; once the back-off has passed it is tried again in its
//! turn, and one good reply makes it healthy. No timer: state changes only when queries run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::Gauge;
use tokio::time::Instant;

/// Consecutive failures before an upstream is skipped.
const FAILURES_TO_DOWN: u32 = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct State {
    failures: u32,
    down_until: Option<Instant>,
}

/// Health of one upstream.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    /// No failure since the last good reply: the per-reply and per-batch checks of a healthy
    /// upstream (the UDP fast path's) read this instead of taking the lock.
    clean: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health { state: Mutex::new(State { failures: 0, down_until: None }), clean: AtomicBool::new(true) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True unless the upstream is within a back-off period at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        if self.clean.load(Ordering::Acquire) {
            return true;
        }
        self.lock().down_until.is_none_or(|t| now >= t)
    }

    /// When the current back-off ends (now, if none).
    pub fn down_until(&self) -> Instant {
        self.lock().down_until.unwrap_or_else(Instant::now)
    }

    /// Records a valid reply.
    pub fn success(&self, gauge: &Gauge) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        self.clean.store(true, Ordering::Release);
        if s.failures != 0 || s.down_until.is_some() {
            s.failures = 0;
            s.down_until = None;
            gauge.set(1.0);
        }
    }

    /// Records a timeout, refusal or broken connection at `now`.
    pub fn failure(&self, now: Instant, gauge: &Gauge) {
        let mut s = self.lock();
        self.clean.store(false, Ordering::Release);
        s.failures = s.failures.saturating_add(1);
        if s.failures >= FAILURES_TO_DOWN {
            let doublings = (s.failures - FAILURES_TO_DOWN).min(16);
            let backoff = FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF);
            s.down_until = Some(now + backoff);
            gauge.set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_and_recovers() {
        let h = Health::new();
        let g = metrics::Gauge::noop();
        let t0 = Instant::now();
        h.failure(t0, &g);
        assert!(h.is_up(t0), "one failure is not enough");
        h.failure(t0, &g);
        assert!(!h.is_up(t0));
        assert!(h.is_up(t0 + FIRST_BACKOFF));
        h.failure(t0, &g);
        assert!(!h.is_up(t0 + FIRST_BACKOFF), "back-off doubled");
        assert!(h.is_up(t0 + FIRST_BACKOFF * 2));
        for _ in 0..40 {
            h.failure(t0, &g);
        }
        assert!(h.is_up(t0 + MAX_BACKOFF), "capped");
        h.success(&g);
        assert!(h.is_up(t0));
    }
}
