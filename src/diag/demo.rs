//! `podns demo`: podns's headline behaviours on one screen, without root, a cluster or network.
//!
//! It starts a stand-in cluster DNS on loopback (a small authoritative responder: the
//! `cluster.local` zone of a pod in namespace `default`, a public name with A and AAAA, and a
//! public name whose AAAA the resolver fails with SERVFAIL, as systemd-resolved does), starts the
//! real podns (this binary) in front of it with a pod's search list, and walks a few names the way
//! glibc's and musl's `getaddrinfo` do ([`crate::policy::stubs`]), once straight to the stand-in
//! and once through podns: the queries each walk cost and what the application gets.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::walk::{self, LiveWalk};
use crate::policy::stubs::{Conf, Outcome, Stub};
use crate::policy::{Admission, admit};
use crate::wire::{ParsedQuery, Soa, error_reply, negative_reply, rcode, rtype};

/// Flags of `podns demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo's podns answers (a free port on loopback by default).
    #[arg(long, value_parser = crate::cli::parse_upstream)]
    pub listen: Option<SocketAddr>,

    /// Keep podns and the stand-in cluster DNS running after the walks, for dig, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// The pod's search list and ndots, as kubelet writes them for namespace `default`.
const SEARCH: [&str; 3] = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"];

/// The names walked, with what they show.
const NAMES: [(&str, &str); 3] = [
    ("pypi.org", "an external name: the search walk collapsed into one step"),
    ("kubernetes.default", "a cluster name: the same answer, the same walk"),
    ("api.example.com", "the resolver fails AAAA with SERVFAIL: answered from the A outcome"),
];

/// What the stand-in answers for a (lower-case dotted name, type).
#[derive(Clone)]
enum Data {
    Addrs(Vec<IpAddr>),
    ServFail,
}

/// The stand-in cluster DNS's data.
struct Zone {
    /// Names that exist (with or without data of a type).
    names: BTreeSet<String>,
    data: HashMap<(String, u16), Data>,
}

impl Zone {
    fn cluster() -> Zone {
        let mut z = Zone { names: BTreeSet::new(), data: HashMap::new() };
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        z.add("kubernetes.default.svc.cluster.local.", rtype::A, Data::Addrs(vec![v4(198, 18, 0, 1)]));
        z.add("pypi.org.", rtype::A, Data::Addrs(vec![v4(198, 18, 1, 1)]));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
        z.add("pypi.org.", rtype::AAAA, Data::Addrs(vec![v6]));
        z.add("api.example.com.", rtype::A, Data::Addrs(vec![v4(198, 18, 2, 2)]));
        z.add("api.example.com.", rtype::AAAA, Data::ServFail);
        // The namespaces and the zone apex exist (CoreDNS answers NODATA there).
        for n in
            ["default.svc.cluster.local.", "kube-system.svc.cluster.local.", "svc.cluster.local.", "cluster.local."]
        {
            z.names.insert(n.into());
        }
        z
    }

    fn add(&mut self, name: &str, qtype: u16, d: Data) {
        self.names.insert(name.into());
        self.data.insert((name.into(), qtype), d);
    }

    /// The reply to the query `msg`, `None` for what is not a query.
    fn answer(&self, msg: &[u8]) -> Option<Vec<u8>> {
        let Admission::Query(q) = admit(msg) else { return None };
        let name = crate::wire::to_dotted(q.name(msg)).to_ascii_lowercase();
        let mut out = BytesMut::with_capacity(512);
        let soa = if name.ends_with("cluster.local.") { Soa::Cluster(b"\x07cluster\x05local\x00") } else { Soa::Root };
        match self.data.get(&(name.clone(), q.qtype())) {
            Some(Data::ServFail) => {
                error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), &mut out)
            }
            Some(Data::Addrs(addrs)) => positive(msg, &q, addrs, &mut out),
            None if self.names.contains(&name) => negative_reply(msg, &q, rcode::NOERROR, 30, soa, &mut out),
            None => negative_reply(msg, &q, rcode::NXDOMAIN, 30, soa, &mut out),
        }
        Some(out.to_vec())
    }
}

/// An answer with `addrs` (30 s TTL) to `q` in `msg`.
fn positive(msg: &[u8], q: &ParsedQuery, addrs: &[IpAddr], out: &mut BytesMut) {
    // The header of a NOERROR reply with no records, then the answers appended.
    error_reply(msg, &q.header, Some(&q.question), rcode::NOERROR, None, out);
    out[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
    for a in addrs {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        let (t, data): (u16, Vec<u8>) = match a {
            IpAddr::V4(v) => (rtype::A, v.octets().to_vec()),
            IpAddr::V6(v) => (rtype::AAAA, v.octets().to_vec()),
        };
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&30u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
}

/// Serves `zone` on `sock` until the process ends; counts the queries it answers.
fn serve(sock: UdpSocket, zone: Zone, count: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let mut buf = [0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        if let Some(reply) = zone.answer(&buf[..n]) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = sock.send_to(&reply, peer);
        }
    }
}

/// A free loopback port (UDP and TCP both free at the time of asking).
fn free_port() -> std::io::Result<u16> {
    for _ in 0..32 {
        let t = TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port on 127.0.0.1"))
}

/// The child podns, stopped when dropped.
struct Podns(Child);

impl Drop for Podns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Found(addrs) => addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" "),
        Outcome::NotFound => "not found".into(),
        Outcome::Failed => "FAILED (EAI_AGAIN)".into(),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> ExitCode {
    let upstream_sock = match UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot bind the stand-in cluster DNS on 127.0.0.1: {e}")),
    };
    let upstream = upstream_sock.local_addr().expect("bound");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = answered.clone();
    std::thread::spawn(move || serve(upstream_sock, Zone::cluster(), counter));

    let listen = match args.listen {
        Some(a) => a,
        None => match free_port() {
            Ok(p) => SocketAddr::from(([127, 0, 0, 1], p)),
            Err(e) => return fail(&e.to_string()),
        },
    };
    let metrics = match free_port() {
        Ok(p) => SocketAddr::from(([127, 0, 0, 1], p)),
        Err(e) => return fail(&e.to_string()),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&format!("cannot find this program to start podns: {e}")),
    };
    let child = Command::new(exe)
        .args(["--listen", &listen.to_string(), "--upstream", &upstream.to_string()])
        .args(["--metrics-listen", &metrics.to_string(), "--search", &SEARCH.join(","), "--ndots", "5"])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let _podns = match child {
        Ok(c) => Podns(c),
        Err(e) => return fail(&format!("cannot start podns: {e}")),
    };
    let ready = Instant::now() + Duration::from_secs(5);
    while !walk::answers(listen, "cluster.local", Duration::from_millis(200)) {
        if Instant::now() > ready {
            return fail(&format!("podns did not answer on {listen} within 5 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    println!("stand-in cluster DNS on {upstream} (a pod in namespace `default`), podns on {listen}");
    println!("search {}, ndots 5; each name walked as getaddrinfo(AF_UNSPEC) does, A and AAAA", SEARCH.join(" "));
    let conf = Conf { search: SEARCH.iter().map(|s| s.to_string()).collect(), ndots: 5, attempts: 2 };
    let timeout = Duration::from_millis(1500);
    let mut total = [0u64; 2];
    for (name, what) in NAMES {
        println!("\n{name}: {what}");
        println!("  stub   path        upstream  the application gets");
        for stub in [Stub::Glibc, Stub::Musl] {
            let before = answered.load(std::sync::atomic::Ordering::Relaxed);
            let direct: LiveWalk = walk::live_walk(stub, name, &conf, upstream, timeout);
            let mid = answered.load(std::sync::atomic::Ordering::Relaxed);
            let via: LiveWalk = walk::live_walk(stub, name, &conf, listen, timeout);
            // What reached the stand-in while walking through podns: podns's own queries,
            // cache hits excluded and its probes included.
            let after = answered.load(std::sync::atomic::Ordering::Relaxed);
            total[0] += mid - before;
            total[1] += after - mid;
            println!("  {:<6} direct     {:>9}  {}", stub.name(), mid - before, outcome(&direct.outcome));
            let cost = match after - mid {
                0 => "0 cached".to_string(),
                n => n.to_string(),
            };
            println!(
                "         via podns  {:>9}  {}   (the application sent {})",
                cost,
                outcome(&via.outcome),
                via.exchanges.len()
            );
        }
    }
    println!(
        "\nqueries at the cluster DNS: {} direct, {} through podns (its TLD probes included; repeats come from its cache)",
        total[0], total[1]
    );
    println!(
        "see why: podns explain pypi.org --resolv-conf <a pod's resolv.conf>, or GET /debug/explain?name=pypi.org"
    );
    if args.keep {
        println!("\npodns keeps running on {listen} (metrics on {metrics}); try:");
        println!("  dig @{} -p {} pypi.org.default.svc.cluster.local", listen.ip(), listen.port());
        println!("  curl -s '{metrics}/debug/explain?name=pypi.org&format=text'");
        println!("Ctrl-C stops it.");
        loop {
            std::thread::park();
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, Name, internal_query};

    fn ask(z: &Zone, name: &str, qtype: u16) -> (u16, usize) {
        let (msg, _) = internal_query(7, Name::from_dotted(name).unwrap().wire(), qtype, 0);
        let r = z.answer(&msg).unwrap();
        let h = Header::parse(&r).unwrap();
        (h.rcode(), h.ancount as usize)
    }

    #[test]
    fn the_stand_in_answers_like_cluster_dns() {
        let z = Zone::cluster();
        assert_eq!(ask(&z, "kubernetes.default.svc.cluster.local", rtype::A), (rcode::NOERROR, 1));
        assert_eq!(ask(&z, "kubernetes.default.svc.cluster.local", rtype::AAAA), (rcode::NOERROR, 0));
        assert_eq!(ask(&z, "pypi.org.default.svc.cluster.local", rtype::A), (rcode::NXDOMAIN, 0));
        assert_eq!(ask(&z, "PyPI.org", rtype::AAAA), (rcode::NOERROR, 1));
        assert_eq!(ask(&z, "api.example.com", rtype::AAAA).0, rcode::SERVFAIL);
        assert_eq!(ask(&z, "default.svc.cluster.local", rtype::A), (rcode::NOERROR, 0));
    }
}
