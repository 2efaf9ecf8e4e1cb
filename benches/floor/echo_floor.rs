//! The floor of `benches/peers.sh`: a UDP "DNS server" that does the least any server must do.
//!
//! It reads datagrams in batches of up to 32 with `recvmmsg`, sets the QR bit of each (so dnsperf
//! counts it as a reply to its own query: same ID, same question, rcode NOERROR, no answer) and
//! sends the batch back with `sendmmsg`. No parsing, no cache, no upstream: the CPU per query it
//! needs is the cost of the two batched system calls and loopback delivery, which no real server
//! can undercut with the same I/O model. One thread, blocking socket.
//!
//! Built as an example (kept out of benches/*.rs so Cargo does not also take it for a bench
//! target), so that `cargo test` never runs it:
//!   cargo build --release --example echo_floor
//!   target/release/examples/echo_floor 127.0.0.1:25360
//!
//! It runs until killed (SIGTERM/SIGINT end it at once, the default action).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const BUF: usize = 1232;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:25360".to_string());
    let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| {
        eprintln!("echo_floor: bind {addr}: {e}");
        std::process::exit(1);
    });
    let fd = sock.as_raw_fd();
    eprintln!("echo_floor: listening on {}", sock.local_addr().unwrap());

    let mut bufs = vec![[0u8; BUF]; BATCH];
    // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid values.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];

    loop {
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = BUF;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = std::ptr::null_mut();
            msgs[i].msg_hdr.msg_controllen = 0;
            msgs[i].msg_hdr.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // Blocks for the first datagram, then takes whatever else is queued (MSG_WAITFORONE).
        // SAFETY: msgs points at BATCH initialised headers whose buffers outlive the call.
        let n =
            unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("echo_floor: recvmmsg: {e}");
            std::process::exit(1);
        }
        let n = n as usize;
        let mut out = 0;
        for i in 0..n {
            let len = msgs[i].msg_len as usize;
            if len < 12 {
                continue; // not a DNS header: no reply
            }
            bufs[i][2] |= 0x80; // QR
            iovs[i].iov_len = len;
            if out != i {
                msgs.swap(out, i);
            }
            out += 1;
        }
        let mut sent = 0;
        while sent < out {
            // SAFETY: as above; msg_name/msg_namelen hold each sender's address from recvmmsg.
            let r = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (out - sent) as u32, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // A full send buffer or an unreachable client: drop the rest of this batch.
                break;
            }
            sent += r as usize;
        }
    }
}
