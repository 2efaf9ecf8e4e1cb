//! Batched UDP I/O: `recvmmsg` and `sendmmsg` on a tokio [`UdpSocket`], driven by its readiness
//! (`try_io`), with every buffer, iovec, `mmsghdr` and address allocated once and reused (as
//! quinn-udp does). One system call moves up to [`SLOTS`] datagrams; an idle socket costs
//! nothing, as readiness comes from the runtime's epoll.
//!
//! The `mmsghdr`s hold raw pointers into the batch's own buffers; they are rewritten before
//! every call, so a batch may move between calls (and between threads).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams moved by one call at most.
pub const SLOTS: usize = 32;
/// Bytes per receive slot: a larger datagram is flagged [`Packet::truncated`].
pub const SLOT: usize = 4096;
/// Bytes of replies a send batch holds before it must be flushed.
const ARENA: usize = SLOTS * 1024;

fn zeroed_hdrs() -> [libc::mmsghdr; SLOTS] {
    // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
    unsafe { mem::zeroed() }
}

fn zeroed_addrs() -> Box<[libc::sockaddr_storage; SLOTS]> {
    // SAFETY: sockaddr_storage is plain old data.
    Box::new(unsafe { mem::zeroed() })
}

/// Writes `addr` into `storage`, returning its length.
fn write_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            *sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            *sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `storage`.
fn read_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A received datagram.
pub struct Packet<'a> {
    pub data: &'a mut [u8],
    /// The sender (`None` if the kernel gave no address podns can read).
    pub from: Option<SocketAddr>,
    /// The datagram was longer than [`SLOT`]: `data` holds only its start.
    pub truncated: bool,
}

/// Up to [`SLOTS`] datagrams received by one `recvmmsg`.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage; SLOTS]>,
    hdrs: [libc::mmsghdr; SLOTS],
    iovs: [libc::iovec; SLOTS],
    len: usize,
}

// SAFETY: the raw pointers in `hdrs` and `iovs` point into the batch's own heap buffers and are
// rewritten before each use (through `&mut self`); nothing else holds them, and a shared
// reference only reads plain fields.
unsafe impl Send for RecvBatch {}
unsafe impl Sync for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    /// Allocates the batch once. The buffers are zeroed lazily by the kernel (calloc), so pages
    /// no datagram reached do not count in the RSS.
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0u8; SLOTS * SLOT].into_boxed_slice(),
            addrs: zeroed_addrs(),
            hdrs: zeroed_hdrs(),
            iovs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SLOTS],
            len: 0,
        }
    }

    /// Datagrams held by the last successful [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads whatever is queued on `sock` (up to [`SLOTS`] datagrams) without waiting: `Ok(0)`
    /// never happens; `WouldBlock` when nothing is queued (the socket's readiness is cleared,
    /// so the next `readable().await` waits for new data).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.len = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..SLOTS {
            // SAFETY: i * SLOT + SLOT <= bufs.len().
            self.iovs[i] = libc::iovec { iov_base: unsafe { base.add(i * SLOT) }.cast(), iov_len: SLOT };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        let fd = sock.as_raw_fd();
        let hdrs = self.hdrs.as_mut_ptr();
        let n = sock.try_io(Interest::READABLE, || {
            // SAFETY: every header points at live buffers of the advertised sizes.
            let r = unsafe { libc::recvmmsg(fd, hdrs, SLOTS as libc::c_uint, 0, std::ptr::null_mut()) };
            if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
        })?;
        self.len = n;
        Ok(n)
    }

    /// The error pending on `sock`, if the runtime saw one (an ICMP port unreachable on a
    /// connected socket raises EPOLLERR alone, not readability). Reads it, clearing it; no
    /// system call when no error was signalled. (`try_io` takes one interest at a time: with
    /// READABLE | ERROR it never runs the call.)
    pub fn take_error(sock: &UdpSocket) -> Option<io::Error> {
        sock.try_io(Interest::ERROR, || match sock.take_error() {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Ok(e),
        })
        .ok()
    }

    /// The `i`th datagram of the last batch.
    pub fn get(&mut self, i: usize) -> Packet<'_> {
        assert!(i < self.len);
        let h = &self.hdrs[i];
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let n = (h.msg_len as usize).min(SLOT);
        let from = read_addr(&self.addrs[i], h.msg_hdr.msg_namelen);
        Packet { data: &mut self.bufs[i * SLOT..i * SLOT + n], from, truncated }
    }
}

/// Datagrams queued for one `sendmmsg`, copied into a reused arena.
pub struct SendBatch {
    arena: Vec<u8>,
    /// (start, len) in the arena, per queued datagram.
    spans: [(usize, usize); SLOTS],
    addrs: Box<[libc::sockaddr_storage; SLOTS]>,
    addr_lens: [libc::socklen_t; SLOTS],
    hdrs: [libc::mmsghdr; SLOTS],
    iovs: [libc::iovec; SLOTS],
    len: usize,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}
unsafe impl Sync for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

/// What [`SendBatch::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The batch is full: flush it, then push again.
    Full,
    /// The datagram is larger than the whole arena: send it on its own.
    TooLarge,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            arena: Vec::with_capacity(ARENA),
            spans: [(0, 0); SLOTS],
            addrs: zeroed_addrs(),
            addr_lens: [0; SLOTS],
            hdrs: zeroed_hdrs(),
            iovs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SLOTS],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `data` for `to` (`None`: the connected peer). Never allocates.
    pub fn push(&mut self, data: &[u8], to: Option<SocketAddr>) -> Push {
        if data.len() > ARENA {
            return Push::TooLarge;
        }
        if self.len == SLOTS || self.arena.len() + data.len() > ARENA {
            return Push::Full;
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.spans[self.len] = (start, data.len());
        self.addr_lens[self.len] = match to {
            Some(a) => write_addr(a, &mut self.addrs[self.len]),
            None => 0,
        };
        self.len += 1;
        Push::Queued
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        self.len = 0;
        self.arena.clear();
    }

    fn prepare(&mut self) {
        let base = self.arena.as_mut_ptr();
        for i in 0..self.len {
            let (start, len) = self.spans[i];
            // SAFETY: start + len <= arena.len().
            self.iovs[i] = libc::iovec { iov_base: unsafe { base.add(start) }.cast(), iov_len: len };
            let h = &mut self.hdrs[i].msg_hdr;
            if self.addr_lens[i] == 0 {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            } else {
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = self.addr_lens[i];
            }
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// One `sendmmsg` of the datagrams from `from` on, without waiting: how many the kernel
    /// took (at least one), or the error the first of them met.
    fn send_from(&mut self, sock: &UdpSocket, from: usize) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        // SAFETY: from < len <= SLOTS.
        let hdrs = unsafe { self.hdrs.as_mut_ptr().add(from) };
        let n = (self.len - from) as libc::c_uint;
        sock.try_io(Interest::WRITABLE, || {
            // SAFETY: the headers were prepared over the arena, which is not touched meanwhile.
            let r = unsafe { libc::sendmmsg(fd, hdrs, n, 0) };
            if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
        })
    }

    /// Sends everything queued without waiting. Returns how many datagrams went out, in order,
    /// and the error that stopped the rest (`None` when all went). The batch is cleared.
    pub fn try_flush(&mut self, sock: &UdpSocket) -> (usize, Option<io::Error>) {
        self.prepare();
        let mut done = 0;
        let mut err = None;
        while done < self.len {
            match self.send_from(sock, done) {
                Ok(k) => done += k,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        self.clear();
        (done, err)
    }

    /// Sends everything queued, waiting for the socket to take more when its buffer is full.
    /// A datagram the kernel refuses (an unreachable client address) is skipped and counted.
    /// Returns how many were not sent. The batch is cleared.
    pub async fn flush(&mut self, sock: &UdpSocket) -> usize {
        self.prepare();
        let mut done = 0;
        let mut failed = 0;
        while done < self.len {
            match self.send_from(sock, done) {
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        failed += self.len - done;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "UDP send failed");
                    done += 1;
                    failed += 1;
                }
            }
        }
        self.clear();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_round_trips_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b_addr = b.local_addr().unwrap();
        let mut out = SendBatch::new();
        for i in 0..40u8 {
            if out.push(&vec![i; 10 + usize::from(i)], Some(b_addr)) == Push::Full {
                assert_eq!(out.flush(&a).await, 0);
                assert_eq!(out.push(&vec![i; 10 + usize::from(i)], Some(b_addr)), Push::Queued);
            }
        }
        assert_eq!(out.len(), 40 - SLOTS);
        assert_eq!(out.flush(&a).await, 0);
        assert!(out.is_empty());
        let mut got = Vec::new();
        let mut batch = RecvBatch::new();
        while got.len() < 40 {
            b.readable().await.unwrap();
            match batch.recv(&b) {
                Ok(n) => {
                    assert!(n <= SLOTS);
                    for i in 0..n {
                        let p = batch.get(i);
                        assert_eq!(p.from, Some(a.local_addr().unwrap()));
                        assert!(!p.truncated);
                        got.push(p.data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 10 + i], "datagram {i} out of order or damaged");
        }
        // Nothing left: the next call says WouldBlock rather than blocking.
        assert_eq!(batch.recv(&b).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn an_oversized_datagram_is_flagged_truncated() {
        let a = UdpSocket::bind("[::1]:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await.unwrap();
        a.send_to(&vec![7u8; SLOT + 100], b.local_addr().unwrap()).await.unwrap();
        a.send_to(b"ok", b.local_addr().unwrap()).await.unwrap();
        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            b.readable().await.unwrap();
            if let Ok(n) = batch.recv(&b) {
                for i in 0..n {
                    let p = batch.get(i);
                    assert_eq!(p.from, Some(a.local_addr().unwrap()), "IPv6 source read back");
                    seen.push((p.data.len(), p.truncated));
                }
            }
        }
        assert_eq!(seen, vec![(SLOT, true), (2, false)]);
    }

    #[tokio::test]
    async fn connected_sends_need_no_address() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        a.set_nonblocking(true).unwrap();
        let a = UdpSocket::from_std(a).unwrap();
        let mut out = SendBatch::new();
        assert_eq!(out.push(b"one", None), Push::Queued);
        assert_eq!(out.push(b"two", None), Push::Queued);
        a.writable().await.unwrap();
        let (sent, err) = out.try_flush(&a);
        assert_eq!((sent, err.is_none()), (2, true));
        let mut buf = [0u8; 16];
        let n = b.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        assert_eq!(out.push(&vec![0; ARENA + 1], None), Push::TooLarge);
    }
}
