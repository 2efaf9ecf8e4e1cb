//! Stream plumbing shared by the DNS listener, the upstream TCP connections and the HTTP
//! listener: RFC 1035 §4.2.2 framing with a deadline on every read, and accept loops that back
//! off when the process runs out of file descriptors; and batched UDP I/O (`recvmmsg`/`sendmmsg`)
//! for the UDP fast path.

pub mod accept;
pub mod batch;
pub mod frame;

pub use accept::Acceptor;
pub use frame::{FrameEnd, MESSAGE_TIMEOUT, read_frame, write_frame};

/// Milliseconds since a process-wide origin: a monotonic timestamp that fits an atomic, for
/// "when was this connection last active" bookkeeping.
pub fn now_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(tokio::time::Instant::now).elapsed().as_millis() as u64
}
