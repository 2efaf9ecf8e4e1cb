//! Length-prefixed DNS messages over TCP (RFC 1035 §4.2.2), for both sides of podns.
//!
//! Every read has a deadline (RFC 7766 §6.2.3 and §10: a server must not let a connection hold
//! resources without bound). Waiting for the first octet of the next message is bounded by the
//! idle timeout, and only while nothing is in flight on the connection; once that octet has
//! arrived, the rest of the length prefix and the whole body must arrive within
//! [`MESSAGE_TIMEOUT`]. A peer that sends one octet of a prefix and then nothing (slowloris), or
//! an upstream that stalls in the middle of a reply, is cut off there instead of holding the
//! connection, its slot and the queries pipelined behind it forever.
//!
//! Writes have the same deadline: a client that pipelines queries and never reads its answers
//! fills its receive window, and a write that cannot finish in time closes the connection and
//! releases what its queries held.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// Time allowed for the rest of a message once its first octet has arrived, and for writing
/// one message. dnsdist's defaults for the same bounds (`setTCPRecvTimeout`,
/// `setTCPSendTimeout`) are 2 s; a DNS message is at most 64 KiB, which any working peer on a
/// pod network moves in milliseconds.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no message was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEnd {
    /// The peer closed the connection (or it failed) between messages.
    Closed,
    /// Nothing arrived for the idle time while the connection had nothing in flight.
    Idle,
    /// A message was started but not finished within [`MESSAGE_TIMEOUT`], or the connection
    /// broke in the middle of one.
    Stalled,
}

/// Reads one length-prefixed message. Between messages, waits in steps of `idle`, giving up
/// when a step passes without data and `may_idle()` says nothing is in flight; from the first
/// octet on, the message must be complete within `message_timeout`.
///
/// Not cancel-safe once a message has started: callers that race it against a stop signal
/// drop the connection when the signal wins.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    idle: Duration,
    message_timeout: Duration,
    may_idle: impl Fn() -> bool,
) -> Result<BytesMut, FrameEnd> {
    let mut prefix = [0u8; 2];
    let got = loop {
        match timeout(idle, r.read(&mut prefix)).await {
            Err(_) if may_idle() => return Err(FrameEnd::Idle),
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return Err(FrameEnd::Closed),
            Ok(Ok(n)) => break n,
        }
    };
    let deadline = Instant::now() + message_timeout;
    let rest = async {
        r.read_exact(&mut prefix[got..]).await?;
        // A 16-bit length: every value is a valid size, up to the 65535-octet maximum.
        let mut msg = BytesMut::zeroed(usize::from(u16::from_be_bytes(prefix)));
        r.read_exact(&mut msg).await?;
        Ok::<_, std::io::Error>(msg)
    };
    match timeout_at(deadline, rest).await {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(_)) | Err(_) => Err(FrameEnd::Stalled),
    }
}

/// Writes `msg` with its length prefix, as one buffer so it leaves in as few segments as the
/// kernel allows, within `deadline`. A message over 65535 octets cannot be framed and is an
/// `InvalidData` error rather than a prefix that wraps around (callers shape replies to fit).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8], deadline: Duration) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(msg.len()) else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    match timeout(deadline, w.write_all(&frame)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn reads_messages_split_anywhere() {
        let (mut a, mut b) = duplex(1 << 17);
        let big = vec![7u8; 65535];
        write_frame(&mut a, &big, LONG).await.unwrap();
        a.write_all(&[0, 3, 1]).await.unwrap();
        a.write_all(&[2, 3]).await.unwrap();
        assert_eq!(read_frame(&mut b, LONG, LONG, || true).await.unwrap()[..], big[..]);
        assert_eq!(read_frame(&mut b, LONG, LONG, || true).await.unwrap()[..], [1, 2, 3]);
        drop(a);
        assert_eq!(read_frame(&mut b, LONG, LONG, || true).await, Err(FrameEnd::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_messages_are_not_framed() {
        let (mut a, _b) = duplex(1 << 18);
        let err = write_frame(&mut a, &vec![0u8; 65536], LONG).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_message_has_a_deadline() {
        // One octet of a prefix, then nothing: cut off after the message timeout even though
        // the idle timeout is long and something is in flight.
        let (mut a, mut b) = duplex(64);
        a.write_all(&[0]).await.unwrap();
        let r = read_frame(&mut b, LONG, Duration::from_secs(2), || false).await;
        assert_eq!(r, Err(FrameEnd::Stalled));
        // A prefix and 10 of 100 octets.
        let (mut a, mut b) = duplex(256);
        a.write_all(&[0, 100]).await.unwrap();
        a.write_all(&[0; 10]).await.unwrap();
        let r = read_frame(&mut b, LONG, Duration::from_secs(2), || false).await;
        assert_eq!(r, Err(FrameEnd::Stalled));
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_when_nothing_is_in_flight() {
        let (_a, mut b) = duplex(64);
        let r = read_frame(&mut b, Duration::from_secs(10), LONG, || true).await;
        assert_eq!(r, Err(FrameEnd::Idle));
        let busy = std::cell::Cell::new(3);
        let may_idle = || {
            busy.set(busy.get() - 1);
            busy.get() == 0
        };
        let r = read_frame(&mut b, Duration::from_secs(10), LONG, may_idle).await;
        assert_eq!((r, busy.get()), (Err(FrameEnd::Idle), 0), "kept waiting while busy");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_to_a_peer_that_never_reads_time_out() {
        let (mut a, _b) = duplex(1024);
        let msg = vec![1u8; 4000];
        let err = write_frame(&mut a, &msg, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
