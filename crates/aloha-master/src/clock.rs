//! Time, injected: wall-clock timestamps for records, a monotonic clock for timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// The master's source of time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, for timestamps users read.
    fn now(&self) -> DateTime<Utc>;
    /// Milliseconds on a monotonic clock, for timeouts (immune to wall-clock jumps).
    fn mono_ms(&self) -> u64;
}

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + self.mono_ms() as i64)
            .unwrap_or_default()
    }

    fn mono_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}
