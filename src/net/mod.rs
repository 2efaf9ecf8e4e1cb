//! Stream plumbing shared by the DNS listener, the upstream TCP connections and the HTTP
//! listener: RFC 1035 §4.2.2 framing with a deadline on every read, and accept loops that back
//! off when the process runs out of file descriptors.

pub mod accept;
pub mod frame;

pub use accept::Acceptor;
pub use frame::{FrameEnd, MESSAGE_TIMEOUT, read_frame, write_frame};
