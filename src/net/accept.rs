//! Accept loops that survive running out of file descriptors.
//!
//! `accept` fails with EMFILE/ENFILE (or ENOBUFS/ENOMEM) while the process or the system is out
//! of descriptors, and the pending connection stays in the backlog: retrying at once spins at
//! 100 % CPU and logs one line per attempt. Instead, the first failure of a run is logged, the
//! loop sleeps with a doubling delay (10 ms up to 1 s) and retries; the first success ends the
//! run. The sleep happens only while accepting fails, so an idle process still makes no system
//! calls. Per-connection errors (ECONNABORTED and the like) concern one peer and are retried
//! at once.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A listener with a back-off state.
pub struct Acceptor {
    listener: TcpListener,
    what: &'static str,
}

/// True for errors that mean "out of resources" rather than "this connection failed".
fn exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM))
}

/// The Linux errno values used here (the crate has no libc dependency for four constants).
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

impl Acceptor {
    /// Accepts on `listener`; `what` names it in logs ("dns", "http").
    pub fn new(listener: TcpListener, what: &'static str) -> Acceptor {
        Acceptor { listener, what }
    }

    /// The next connection, backing off while the process is out of descriptors.
    pub async fn accept(&self) -> (TcpStream, SocketAddr) {
        let mut backoff = None::<Duration>;
        loop {
            match self.listener.accept().await {
                Ok(c) => {
                    if backoff.is_some() {
                        tracing::info!(listener = self.what, "accepting connections again");
                    }
                    return c;
                }
                Err(e) if exhausted(&e) => {
                    let wait = match backoff {
                        None => {
                            tracing::warn!(listener = self.what, error = %e, "cannot accept TCP connections; backing off");
                            FIRST_BACKOFF
                        }
                        Some(d) => (d * 2).min(MAX_BACKOFF),
                    };
                    backoff = Some(wait);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => tracing::debug!(listener = self.what, error = %e, "TCP accept failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_resource_errors() {
        assert!(exhausted(&io::Error::from_raw_os_error(24)));
        assert!(exhausted(&io::Error::from_raw_os_error(23)));
        assert!(!exhausted(&io::Error::from_raw_os_error(103)), "ECONNABORTED is one peer's problem");
        assert!(!exhausted(&io::Error::from(io::ErrorKind::Other)));
    }
}
