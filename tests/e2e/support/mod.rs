//! Shared support for the end-to-end tests: a handle on the real `podns` binary started on
//! ephemeral loopback ports, an in-process scripted upstream DNS server, DNS clients (UDP and
//! TCP), raw message builders for malformed input, and small HTTP and Prometheus helpers.
//!
//! Every wait here is bounded: a missing answer, log line or exit fails the test with the
//! captured podns log instead of hanging.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

/// How long a client waits for a reply before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long podns may take to log its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// An address an upstream answers for names that have no rule ("auto" answers).
pub const AUTO_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const AUTO_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The address carried by spoofed (wrong ID / wrong question) replies.
pub const EVIL_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

pub const LOCALHOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// Ports

/// A port that is free for both UDP and TCP on `ip` at the time of the call.
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind an ephemeral UDP port");
        let port = udp.local_addr().expect("local addr").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// A TCP port that is free on `ip` at the time of the call.
pub fn free_tcp_port(ip: IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind an ephemeral TCP port");
    l.local_addr().expect("local addr").port()
}

/// A loopback address where nothing listens, over UDP nor TCP: a "refusing" upstream (ICMP
/// port unreachable for UDP, RST for TCP).
pub fn refusing_addr() -> SocketAddr {
    SocketAddr::new(LOCALHOST_V4, free_port(LOCALHOST_V4))
}

// ---------------------------------------------------------------------------------------------
// The podns process

/// Lines a child process wrote to stderr (ANSI escapes removed), filled by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
}

impl Lines {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }

    fn find(&self, needles: &[&str]) -> Option<String> {
        self.lines.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned()
    }

    fn joined(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Removes ANSI colour sequences (ESC [ ... letter) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Reads lines of `r` into `lines` until EOF (the process exited and closed the pipe).
fn spawn_line_reader<R: std::io::Read + Send + 'static>(r: R, lines: Arc<Lines>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    lines.push(strip_ansi(line.trim_end_matches(['\n', '\r'])));
                }
            }
        }
    })
}

/// The environment of a podns child: no PODNS_* or RUST_LOG inherited, no colours.
fn clean_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podns"));
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("PODNS_") || k == "RUST_LOG")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Options for starting podns.
#[derive(Default, Clone)]
pub struct PodnsBuilder {
    upstreams: Vec<SocketAddr>,
    args: Vec<String>,
    extra_v4: usize,
    ipv6: bool,
}

impl PodnsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `--upstream addr`.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstreams.push(addr);
        self
    }

    /// Adds `flag value`.
    /// Adds a flag that takes no value.
    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.to_string());
        self
    }

    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// Adds one more IPv4 loopback listener.
    pub fn extra_listener(mut self) -> Self {
        self.extra_v4 += 1;
        self
    }

    /// Adds an IPv6 loopback listener ([::1]:port).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Starts podns and waits until it has logged every listener (UDP and TCP). Retries with
    /// fresh ports when a port was taken meanwhile.
    pub async fn start(self) -> Podns {
        let mut failure = String::new();
        for attempt in 0..5 {
            let mut listen = vec![SocketAddr::new(LOCALHOST_V4, free_port(LOCALHOST_V4))];
            for _ in 0..self.extra_v4 {
                listen.push(SocketAddr::new(LOCALHOST_V4, free_port(LOCALHOST_V4)));
            }
            if self.ipv6 {
                listen.push(SocketAddr::new(LOCALHOST_V6, free_port(LOCALHOST_V6)));
            }
            let metrics = SocketAddr::new(LOCALHOST_V4, free_tcp_port(LOCALHOST_V4));
            let mut cmd = clean_command();
            for l in &listen {
                cmd.arg("--listen").arg(l.to_string());
            }
            for u in &self.upstreams {
                cmd.arg("--upstream").arg(u.to_string());
            }
            cmd.arg("--metrics-listen").arg(metrics.to_string());
            if !self.args.iter().any(|a| a == "--log-level") {
                cmd.args(["--log-level", "info"]);
            }
            cmd.args(&self.args);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn podns");
            let stderr = Arc::new(Lines::default());
            let stdout = Arc::new(Lines::default());
            let readers = vec![
                spawn_line_reader(child.stderr.take().expect("stderr"), stderr.clone()),
                spawn_line_reader(child.stdout.take().expect("stdout"), stdout.clone()),
            ];
            let podns = Podns {
                child: Mutex::new(child),
                listen,
                metrics,
                stderr,
                stdout,
                readers: Mutex::new(readers),
                args: cmd_line(&cmd),
            };
            match podns.wait_listening().await {
                Ok(()) => return podns,
                Err(logs) => {
                    let collided = logs.to_ascii_lowercase().contains("in use");
                    failure = logs;
                    drop(podns);
                    if collided && attempt < 4 {
                        continue;
                    }
                    break;
                }
            }
        }
        panic!("podns did not start listening:\n{failure}");
    }
}

fn cmd_line(cmd: &Command) -> String {
    let mut s = String::from("podns");
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A running podns; killed when dropped.
pub struct Podns {
    child: Mutex<Child>,
    /// Every --listen address, in order; the first is IPv4.
    pub listen: Vec<SocketAddr>,
    /// The --metrics-listen address.
    pub metrics: SocketAddr,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
    readers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    args: String,
}

impl Podns {
    /// The first (IPv4) listen address.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    pub fn pid(&self) -> i32 {
        self.child.lock().unwrap().id() as i32
    }

    /// Everything podns wrote so far (stderr, then stdout), for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "command: {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.args,
            self.stderr.joined(),
            self.stdout.joined()
        )
    }

    /// Waits for the stderr/stdout readers to reach EOF; call only once podns has exited.
    fn join_readers(&self) {
        for r in self.readers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = r.join();
        }
    }

    /// The exit status if podns has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().expect("try_wait")
    }

    async fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let all = self.listen.iter().all(|a| {
                let addr = format!("addr={a}");
                ["proto=udp", "proto=tcp"].iter().all(|p| self.stderr.find(&["listening", p, &addr]).is_some())
            });
            if all {
                return Ok(());
            }
            if let Some(status) = self.try_exit() {
                self.join_readers();
                return Err(format!("podns exited ({status}) before listening\n{}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!("podns did not log its listeners within {START_TIMEOUT:?}\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a stderr line containing every needle; returns it. Fails the test on timeout.
    pub async fn wait_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stderr.find(needles) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "podns did not log a line with {needles:?} within {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a stdout line containing every needle (the query log); returns it.
    pub async fn wait_stdout(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout.find(needles) {
                return l;
            }
            assert!(Instant::now() < deadline, "podns wrote no stdout line with {needles:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines.lock().unwrap().clone()
    }

    /// The stderr line containing every needle, if one was logged.
    pub fn find_log(&self, needles: &[&str]) -> Option<String> {
        self.stderr.find(needles)
    }

    /// Sends a signal to podns.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        // SAFETY: kill(2) with the pid of our own child.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for podns to exit; fails the test on timeout.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(Instant::now() < deadline, "podns did not exit within {timeout:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// GET `path` on the metrics listener: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path).await
    }

    /// The /metrics text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics\n{body}");
        body
    }

    /// Polls /ready until it answers 200; fails the test after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, _) = self.http_get("/ready").await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "/ready still {status} after {timeout:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The current value of a metric (sum over the series whose labels include `labels`), 0 if
    /// no series matches.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics_text().await, name, labels).unwrap_or(0.0)
    }

    /// Polls a metric until `pred` holds for its value (sum over matching series); fails the
    /// test after `timeout`. Returns the value.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics_text().await;
            let v = metric_sum(&text, name, labels);
            if let Some(v) = v
                && pred(v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "metric {name}{labels:?} = {v:?} did not reach the expected value within {timeout:?}\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Podns {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        drop(child);
        if std::thread::panicking() {
            self.join_readers();
            eprintln!("{}", self.logs());
        }
    }
}

/// Runs podns with `args` (nothing else added) and waits for it to exit, which it must within
/// `timeout`. Returns the status and stderr.
pub fn run_podns_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut cmd = clean_command();
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn podns");
    let stderr = Arc::new(Lines::default());
    let stdout = Arc::new(Lines::default());
    let readers = [
        spawn_line_reader(child.stderr.take().expect("stderr"), stderr.clone()),
        spawn_line_reader(child.stdout.take().expect("stdout"), stdout.clone()),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "podns {args:?} did not exit within {timeout:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                stderr.joined(),
                stdout.joined()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close when the process exits: the readers end with the last line.
    for r in readers {
        let _ = r.join();
    }
    (status, stderr.joined())
}

/// A file in the temp dir, removed on drop.
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "podns-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile { path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream

/// A record an upstream answers with; its owner is the question name.
#[derive(Clone, Debug)]
pub enum Rec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Txt(Vec<String>),
}

/// TXT records whose strings hold `total` octets of deterministic text in all; see
/// [`txt_payload`] for what a client should get back.
pub fn big_txt(total: usize) -> Vec<Rec> {
    let text = txt_payload(total);
    let bytes = text.as_bytes();
    // 8 strings of up to 250 octets per record.
    bytes
        .chunks(2000)
        .map(|rec| Rec::Txt(rec.chunks(250).map(|s| String::from_utf8(s.to_vec()).expect("ascii")).collect()))
        .collect()
}

/// The text carried by [`big_txt`].
pub fn txt_payload(total: usize) -> String {
    (0..total).map(|i| (b'a' + (i * 7 % 26) as u8) as char).collect()
}

/// Concatenated TXT strings of every TXT answer of a reply, in order.
pub fn txt_of(reply: &Message) -> String {
    let mut s = String::new();
    for r in &reply.answers {
        if let RData::TXT(t) = &r.data {
            for part in t.txt_data.iter() {
                s.push_str(&String::from_utf8_lossy(part));
            }
        }
    }
    s
}

/// What an upstream does with a query.
#[derive(Clone, Debug)]
pub enum Action {
    /// A for A, AAAA for AAAA ([`AUTO_V4`], [`AUTO_V6`]), an empty NOERROR otherwise.
    Auto,
    /// NOERROR with these records.
    Answer(Vec<Rec>),
    /// An empty reply with this rcode.
    Rcode(ResponseCode),
    /// Never answer.
    Drop,
    /// Over UDP: TC=1 with no records. Over TCP: the full answer.
    Truncate(Vec<Rec>),
    /// First a reply with another ID (carrying [`EVIL_V4`]), then the right one.
    WrongIdFirst(Vec<Rec>),
    /// First a reply with the right ID but another question (carrying [`EVIL_V4`]), then the
    /// right one.
    WrongQuestionFirst(Vec<Rec>),
    /// First garbage (right ID, QR set, junk after), then the right reply.
    GarbageFirst(Vec<Rec>),
    /// Over TCP: reset the connection (RST). Over UDP: never answer.
    ResetTcp,
    /// Waits, then does the inner action.
    Delay(Duration, Box<Action>),
    /// A reply built from a [`Reply`]: any rcode, records with their own owners and TTLs, an
    /// authority section (SOA for negative answers).
    Reply(Reply),
    /// Only a reply with the right ID but another question (carrying [`EVIL_V4`]); never the
    /// right one.
    WrongQuestionOnly,
    /// One action for queries over UDP, another for queries over TCP.
    ByTransport { udp: Box<Action>, tcp: Box<Action> },
    /// An upstream that does not speak EDNS: FORMERR to a query with an OPT record (RFC 6891
    /// §7), the inner action to one without.
    NoEdns(Box<Action>),
    /// Waits until the gate is opened (by the test), then does the inner action.
    Gated(Gate, Box<Action>),
    /// Exactly these bytes, computed from the query's wire form (its ID included): replies no
    /// well-behaved encoder would write (bad compression pointers, trailing bytes, TTLs with the
    /// top bit set, exact sizes).
    Raw(RawReply),
    /// Over TCP: a length prefix announcing 100 octets, then 10 of them, then nothing, with
    /// the connection left open (a reply stalled half-way). Over UDP: never answer.
    StallTcp,
    /// Over TCP: never answer this query nor any later one on the same connection, which stays
    /// open (a server that accepts and goes silent). Over UDP: never answer.
    HangTcp,
}

/// The function behind [`RawReply`].
pub type RawFn = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;

/// A function from a query's wire form to the reply's ([`Action::Raw`]).
#[derive(Clone)]
pub struct RawReply(pub Arc<RawFn>);

impl std::fmt::Debug for RawReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawReply(..)")
    }
}

impl Action {
    /// [`Action::Raw`] from a closure.
    pub fn raw(f: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> Action {
        Action::Raw(RawReply(Arc::new(f)))
    }
}

impl Action {
    pub fn delayed(d: Duration, then: Action) -> Action {
        Action::Delay(d, Box::new(then))
    }

    /// `udp` for queries over UDP, `tcp` for queries over TCP.
    pub fn by_transport(udp: Action, tcp: Action) -> Action {
        Action::ByTransport { udp: Box::new(udp), tcp: Box::new(tcp) }
    }

    /// `then`, once `gate` is open.
    pub fn gated(gate: &Gate, then: Action) -> Action {
        Action::Gated(gate.clone(), Box::new(then))
    }
}

/// A gate the test opens to release replies an upstream holds back ([`Action::Gated`]): an
/// event to wait on instead of a delay.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate(open: {})", *self.0.borrow())
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// Releases every reply waiting on this gate, and every later one.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A resource record of a scripted [`Reply`]: owner (the question name, as received, unless
/// set), TTL and data.
#[derive(Clone, Debug)]
pub struct Rr {
    pub owner: Option<String>,
    pub ttl: u32,
    pub data: RData,
}

impl Rr {
    /// A record owned by the question name, TTL 60.
    pub fn new(data: RData) -> Rr {
        Rr { owner: None, ttl: 60, data }
    }

    pub fn a(ip: Ipv4Addr) -> Rr {
        Rr::new(RData::A(A(ip)))
    }

    pub fn aaaa(ip: Ipv6Addr) -> Rr {
        Rr::new(RData::AAAA(AAAA(ip)))
    }

    pub fn cname(target: &str) -> Rr {
        Rr::new(RData::CNAME(CNAME(Name::from_ascii(fqdn(target)).expect("CNAME target"))))
    }

    /// TXT records carrying `total` octets of [`txt_payload`] text, 250-octet strings.
    pub fn big_txt(total: usize) -> Vec<Rr> {
        big_txt(total)
            .into_iter()
            .map(|r| match r {
                Rec::Txt(strings) => Rr::new(RData::TXT(TXT::new(strings))),
                other => unreachable!("big_txt gives TXT records only: {other:?}"),
            })
            .collect()
    }

    /// The SOA of `zone` with this TTL and MINIMUM, owned by the zone.
    pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Rr {
        let z = fqdn(zone);
        let under = |l: &str| Name::from_ascii(if z == "." { format!("{l}.") } else { format!("{l}.{z}") }).unwrap();
        let soa = SOA::new(under("ns"), under("hostmaster"), 1, 7200, 1800, 86400, minimum);
        Rr { owner: Some(z.clone()), ttl, data: RData::SOA(soa) }
    }

    pub fn ttl(mut self, ttl: u32) -> Rr {
        self.ttl = ttl;
        self
    }

    pub fn owner(mut self, owner: &str) -> Rr {
        self.owner = Some(fqdn(owner));
        self
    }
}

/// `name` with a final dot.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

/// A scripted reply: rcode, answer and authority sections.
#[derive(Clone, Debug)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
}

impl Reply {
    /// NOERROR with these answers.
    pub fn answer(answers: Vec<Rr>) -> Reply {
        Reply { rcode: ResponseCode::NoError, answers, authority: vec![] }
    }

    /// NOERROR, no answers, `soa` in the authority section (NODATA, RFC 2308).
    pub fn nodata(soa: Rr) -> Reply {
        Reply { rcode: ResponseCode::NoError, answers: vec![], authority: vec![soa] }
    }

    /// NXDOMAIN with `soa` in the authority section.
    pub fn nxdomain(soa: Rr) -> Reply {
        Reply { rcode: ResponseCode::NXDomain, answers: vec![], authority: vec![soa] }
    }

    pub fn action(self) -> Action {
        Action::Reply(self)
    }
}

/// The (TTL, MINIMUM) of every SOA record in the authority section of `reply`.
pub fn authority_soas(reply: &Message) -> Vec<(u32, u32)> {
    reply
        .authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.ttl, soa.minimum)),
            _ => None,
        })
        .collect()
}

/// Transport of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query an upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    pub transport: Transport,
    pub id: u16,
    /// The question name as received (letter case kept), without the final dot.
    pub name: String,
    pub qtype: RecordType,
    pub src: SocketAddr,
    /// The EDNS payload size, if the query had an OPT record.
    pub edns_payload: Option<u16>,
    pub raw: Vec<u8>,
    pub at: Instant,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

struct Rules {
    exact: HashMap<(String, RecordType), Action>,
    by_name: HashMap<String, Action>,
    /// (suffix, action): the longest suffix a name ends with (label-aligned) wins.
    by_suffix: Vec<(String, Action)>,
    default: Action,
}

struct UpstreamState {
    rules: Mutex<Rules>,
    log: Mutex<Vec<Received>>,
    lowercase: AtomicBool,
    seed: AtomicU64,
}

impl UpstreamState {
    fn action_for(&self, name: &str, qtype: RecordType) -> Action {
        let rules = self.rules.lock().unwrap();
        let k = key(name);
        if let Some(a) = rules.exact.get(&(k.clone(), qtype)) {
            return a.clone();
        }
        if let Some(a) = rules.by_name.get(&k) {
            return a.clone();
        }
        let under = |s: &str| k == s || k.ends_with(&format!(".{s}"));
        if let Some((_, a)) = rules.by_suffix.iter().filter(|(s, _)| under(s)).max_by_key(|(s, _)| s.len()) {
            return a.clone();
        }
        rules.default.clone()
    }
}

/// An in-process DNS server on 127.0.0.1 (UDP and TCP on the same port) that answers as
/// scripted and records every query. It runs on its own runtime, stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    udp: Arc<UdpSocket>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Starts an upstream whose default action is [`Action::Auto`].
    pub fn start() -> Upstream {
        Self::with_default(Action::Auto)
    }

    /// Starts an upstream with `default` for every query without a rule.
    pub fn with_default(default: Action) -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-upstream")
            .enable_all()
            .build()
            .expect("upstream runtime");
        let (udp, tcp) = loop {
            let udp = std::net::UdpSocket::bind((LOCALHOST_V4, 0)).expect("bind upstream UDP");
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = std::net::TcpListener::bind((LOCALHOST_V4, port)) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let state = Arc::new(UpstreamState {
            rules: Mutex::new(Rules { exact: HashMap::new(), by_name: HashMap::new(), by_suffix: Vec::new(), default }),
            log: Mutex::new(Vec::new()),
            lowercase: AtomicBool::new(false),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(addr.port())),
        });
        let udp = {
            let _guard = rt.enter();
            let udp = Arc::new(UdpSocket::from_std(udp).expect("tokio UDP"));
            let tcp = TcpListener::from_std(tcp).expect("tokio TCP");
            rt.spawn(serve_udp(udp.clone(), state.clone()));
            rt.spawn(serve_tcp(tcp, state.clone()));
            udp
        };
        Upstream { addr, state, udp, rt: Some(rt) }
    }

    /// Scripts the answer to (`name`, `qtype`).
    pub fn on(&self, name: &str, qtype: RecordType, action: Action) {
        self.state.rules.lock().unwrap().exact.insert((key(name), qtype), action);
    }

    /// Scripts the answer to every type of `name`.
    pub fn on_name(&self, name: &str, action: Action) {
        self.state.rules.lock().unwrap().by_name.insert(key(name), action);
    }

    /// Scripts the answer to every name at or below `suffix` that has no exact or per-name rule;
    /// the longest matching suffix wins.
    pub fn on_suffix(&self, suffix: &str, action: Action) {
        let s = key(suffix);
        let mut rules = self.state.rules.lock().unwrap();
        rules.by_suffix.retain(|(k, _)| *k != s);
        rules.by_suffix.push((s, action));
    }

    /// Replaces the action for queries without a rule.
    pub fn set_default(&self, action: Action) {
        self.state.rules.lock().unwrap().default = action;
    }

    /// Answers with the question name in lower case (and records owned by it).
    pub fn lowercase_replies(&self, on: bool) {
        self.state.lowercase.store(on, Ordering::Relaxed);
    }

    /// Every query received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// The queries received for `name` (any letter case).
    pub fn received_for(&self, name: &str) -> Vec<Received> {
        let k = key(name);
        self.received().into_iter().filter(|r| key(&r.name) == k).collect()
    }

    /// Number of queries received over `transport`.
    pub fn count(&self, transport: Transport) -> usize {
        self.received().iter().filter(|r| r.transport == transport).count()
    }

    /// Sends `bytes` from the upstream's own UDP address to `to`: what a forger with raw sockets
    /// can do, without raw sockets.
    pub async fn send_udp_from_upstream(&self, to: SocketAddr, bytes: &[u8]) {
        let (sock, bytes) = (self.udp.clone(), bytes.to_vec());
        let handle = self.rt.as_ref().expect("runtime").spawn(async move { sock.send_to(&bytes, to).await });
        handle.await.expect("send task").expect("send from the upstream socket");
    }

    /// Waits until at least `n` queries for `name` arrived; fails the test after `timeout`.
    pub async fn wait_received(&self, name: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received_for(name);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "upstream {} got {} queries for {name} within {timeout:?}, expected {n}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Where a reply goes.
#[derive(Clone)]
enum Replier {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(Arc<TcpConnState>),
}

struct TcpConnState {
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    reset: Notify,
}

impl Replier {
    fn transport(&self) -> Transport {
        match self {
            Replier::Udp(..) => Transport::Udp,
            Replier::Tcp(..) => Transport::Tcp,
        }
    }

    async fn send(&self, bytes: &[u8]) {
        match self {
            Replier::Udp(sock, to) => {
                let _ = sock.send_to(bytes, to).await;
            }
            Replier::Tcp(conn) => {
                let mut w = conn.writer.lock().await;
                if let Some(w) = w.as_mut() {
                    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(bytes);
                    let _ = w.write_all(&frame).await;
                }
            }
        }
    }

    async fn reset(&self) {
        if let Replier::Tcp(conn) = self {
            if let Some(w) = conn.writer.lock().await.take() {
                let _ = w.as_ref().set_zero_linger();
                drop(w);
            }
            conn.reset.notify_one();
        }
    }
}

/// Parses a query; records it; returns it with its action.
fn accept_query(state: &UpstreamState, raw: &[u8], src: SocketAddr, transport: Transport) -> Option<(Message, Action)> {
    let msg = Message::from_vec(raw).ok()?;
    if msg.queries.len() != 1 || msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let q = &msg.queries[0];
    let name = q.name.to_ascii();
    let name = name.trim_end_matches('.').to_string();
    let action = state.action_for(&name, q.query_type);
    state.log.lock().unwrap().push(Received {
        transport,
        id: msg.metadata.id,
        name,
        qtype: q.query_type,
        src,
        edns_payload: msg.edns.as_ref().map(|e| e.max_payload()),
        raw: raw.to_vec(),
        at: Instant::now(),
    });
    Some((msg, action))
}

async fn serve_udp(sock: Arc<UdpSocket>, state: Arc<UpstreamState>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some((msg, action)) = accept_query(&state, &buf[..n], src, Transport::Udp) {
            tokio::spawn(perform(state.clone(), msg, action, Replier::Udp(sock.clone(), src)));
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<UpstreamState>) {
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, src, state.clone()));
    }
}

async fn serve_tcp_conn(stream: TcpStream, src: SocketAddr, state: Arc<UpstreamState>) {
    let _ = stream.set_nodelay(true);
    let (mut r, w) = stream.into_split();
    let conn = Arc::new(TcpConnState { writer: tokio::sync::Mutex::new(Some(w)), reset: Notify::new() });
    loop {
        let frame = async {
            let len = r.read_u16().await.ok()? as usize;
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        tokio::select! {
            _ = conn.reset.notified() => break,
            f = frame => match f {
                Some(buf) => {
                    if let Some((msg, action)) = accept_query(&state, &buf, src, Transport::Tcp) {
                        tokio::spawn(perform(state.clone(), msg, action, Replier::Tcp(conn.clone())));
                    }
                }
                None => break,
            },
        }
    }
    // Dropping the read half (and the write half, if still here) closes the connection.
    conn.writer.lock().await.take();
}

fn to_record(owner: &Name, rec: &Rec) -> Record {
    let data = match rec {
        Rec::A(ip) => RData::A(A(*ip)),
        Rec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rec::Cname(target) => RData::CNAME(CNAME(Name::from_ascii(target).expect("CNAME target"))),
        Rec::Txt(strings) => RData::TXT(TXT::new(strings.clone())),
    };
    Record::from_rdata(owner.clone(), 60, data)
}

/// Builds a reply to `query`. Over UDP, a reply larger than the query allows (512, or its EDNS
/// size) goes out with TC=1 and no records, as a real server does.
fn build_reply(
    state: &UpstreamState,
    query: &Message,
    rcode: ResponseCode,
    recs: &[Rec],
    truncated: bool,
    transport: Transport,
) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.metadata.truncation = truncated;
    let mut question: Query = query.queries[0].clone();
    if state.lowercase.load(Ordering::Relaxed) {
        question.name = question.name.to_lowercase();
    }
    if !truncated {
        for r in recs {
            m.add_answer(to_record(&question.name, r));
        }
    }
    m.add_query(question);
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    let bytes = m.to_vec().expect("encode reply");
    if transport == Transport::Udp {
        let limit = query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload().max(512)));
        if bytes.len() > limit {
            m.answers.clear();
            m.metadata.truncation = true;
            return m.to_vec().expect("encode truncated reply");
        }
    }
    bytes
}

/// Builds the reply to `query` that `r` scripts; over UDP, one larger than the query allows
/// goes out with TC=1 and no records, as in [`build_reply`].
fn build_scripted(state: &UpstreamState, query: &Message, r: &Reply, transport: Transport) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.metadata.response_code = r.rcode;
    let mut question: Query = query.queries[0].clone();
    if state.lowercase.load(Ordering::Relaxed) {
        question.name = question.name.to_lowercase();
    }
    let record = |rr: &Rr| {
        let owner = match &rr.owner {
            Some(o) => Name::from_ascii(o).expect("owner name"),
            None => question.name.clone(),
        };
        Record::from_rdata(owner, rr.ttl, rr.data.clone())
    };
    for rr in &r.answers {
        m.add_answer(record(rr));
    }
    for rr in &r.authority {
        m.add_authority(record(rr));
    }
    m.add_query(question.clone());
    if let Some(qe) = &query.edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(qe.flags().dnssec_ok);
        m.set_edns(e);
    }
    let bytes = m.to_vec().expect("encode scripted reply");
    if transport == Transport::Udp {
        let limit = query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload().max(512)));
        if bytes.len() > limit {
            m.answers.clear();
            m.authorities.clear();
            m.metadata.truncation = true;
            return m.to_vec().expect("encode truncated reply");
        }
    }
    bytes
}

fn auto_records(qtype: RecordType) -> Vec<Rec> {
    match qtype {
        RecordType::A => vec![Rec::A(AUTO_V4)],
        RecordType::AAAA => vec![Rec::Aaaa(AUTO_V6)],
        _ => vec![],
    }
}

fn evil_reply(query: &Message, id: u16, name: Name) -> Vec<u8> {
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(Query::query(name.clone(), query.queries[0].query_type));
    m.add_answer(Record::from_rdata(name, 60, RData::A(A(EVIL_V4))));
    m.to_vec().expect("encode spoofed reply")
}

async fn perform(state: Arc<UpstreamState>, query: Message, mut action: Action, to: Replier) {
    let transport = to.transport();
    loop {
        match action {
            Action::Delay(d, then) => {
                tokio::time::sleep(d).await;
                action = *then;
            }
            Action::Gated(gate, then) => {
                gate.wait().await;
                action = *then;
            }
            Action::ByTransport { udp, tcp } => action = if transport == Transport::Udp { *udp } else { *tcp },
            Action::NoEdns(then) => {
                action = if query.edns.is_some() { Action::Rcode(ResponseCode::FormErr) } else { *then }
            }
            other => {
                action = other;
                break;
            }
        }
    }
    let qtype = query.queries[0].query_type;
    let good = |recs: &[Rec]| build_reply(&state, &query, ResponseCode::NoError, recs, false, transport);
    match action {
        Action::Delay(..) | Action::Gated(..) | Action::ByTransport { .. } | Action::NoEdns(_) => {
            unreachable!("unwrapped above")
        }
        Action::Reply(r) => to.send(&build_scripted(&state, &query, &r, transport)).await,
        Action::WrongQuestionOnly => {
            let other = Name::from_ascii("evil.invalid.").expect("name");
            to.send(&evil_reply(&query, query.metadata.id, other)).await;
        }
        Action::Auto => to.send(&good(&auto_records(qtype))).await,
        Action::Answer(recs) => to.send(&good(&recs)).await,
        Action::Rcode(rc) => to.send(&build_reply(&state, &query, rc, &[], false, transport)).await,
        Action::Drop => {}
        Action::Truncate(recs) => {
            if transport == Transport::Udp {
                to.send(&build_reply(&state, &query, ResponseCode::NoError, &recs, true, transport)).await
            } else {
                to.send(&good(&recs)).await
            }
        }
        Action::WrongIdFirst(recs) => {
            let id = query.metadata.id.wrapping_add(0x1111);
            to.send(&evil_reply(&query, id, query.queries[0].name.clone())).await;
            to.send(&good(&recs)).await;
        }
        Action::WrongQuestionFirst(recs) => {
            let other = Name::from_ascii("evil.invalid.").expect("name");
            to.send(&evil_reply(&query, query.metadata.id, other)).await;
            to.send(&good(&recs)).await;
        }
        Action::GarbageFirst(recs) => {
            let mut junk = query.metadata.id.to_be_bytes().to_vec();
            junk.extend_from_slice(&[0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
            // A question whose label runs past the end of the packet.
            junk.push(63);
            let mut rng = Rng::new(state.seed.fetch_add(1, Ordering::Relaxed));
            for _ in 0..20 {
                junk.push(rng.next() as u8);
            }
            to.send(&junk).await;
            to.send(&good(&recs)).await;
        }
        Action::ResetTcp => to.reset().await,
        Action::Raw(f) => to.send(&(f.0)(&encode(&query))).await,
        Action::HangTcp => {
            if let Replier::Tcp(conn) = &to {
                // Holding the writer keeps every later reply on this connection from going out.
                let _w = conn.writer.lock().await;
                std::future::pending::<()>().await;
            }
        }
        Action::StallTcp => {
            if let Replier::Tcp(conn) = &to {
                let mut w = conn.writer.lock().await;
                if let Some(w) = w.as_mut() {
                    let mut partial = 100u16.to_be_bytes().to_vec();
                    partial.extend_from_slice(&query.metadata.id.to_be_bytes());
                    partial.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0]);
                    let _ = w.write_all(&partial).await;
                }
                // Hold the writer (and the connection) until the test ends.
                std::future::pending::<()>().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A recursive query for `name` (letter case kept) and `qtype` with a random ID.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    m.add_query(Query::query(Name::from_ascii(&fqdn).expect("query name"), qtype));
    m
}

/// `m` with an EDNS OPT record advertising `payload`.
pub fn with_edns(mut m: Message, payload: u16) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(payload);
    m.set_edns(e);
    m
}

/// `m` with the DNSSEC OK bit set (and an OPT record advertising 1232 if it had none).
pub fn with_do(m: Message) -> Message {
    let mut m = if m.edns.is_some() { m } else { with_edns(m, 1232) };
    m.edns.as_mut().expect("OPT").set_dnssec_ok(true);
    m
}

/// `m` with the CD (checking disabled) bit set.
pub fn with_cd(mut m: Message) -> Message {
    m.metadata.checking_disabled = true;
    m
}

pub fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encode message")
}

pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("undecodable reply ({e}): {bytes:02x?}"))
}

/// Sends raw bytes over UDP from a fresh socket and waits up to `wait` for one datagram.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().unwrap();
    let sock = UdpSocket::bind(bind).await.expect("bind client socket");
    sock.connect(server).await.expect("connect client socket");
    sock.send(bytes).await.expect("send query");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(e)) => panic!("UDP receive from {server} failed: {e}"),
        Err(_) => None,
    }
}

/// Sends `m` over UDP; returns the raw reply. Fails the test without one in [`REPLY_TIMEOUT`].
pub async fn udp_exchange_raw(server: SocketAddr, m: &Message) -> Vec<u8> {
    udp_raw(server, &encode(m), REPLY_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no UDP reply from {server} within {REPLY_TIMEOUT:?} to {m}"))
}

/// Sends `m` over UDP; returns the parsed reply, checked to carry the query's ID.
pub async fn udp_query(server: SocketAddr, m: &Message) -> Message {
    let reply = decode(&udp_exchange_raw(server, m).await);
    assert_eq!(reply.metadata.id, m.metadata.id, "reply ID");
    assert_eq!(reply.metadata.message_type, MessageType::Response, "QR set");
    reply
}

/// One TCP connection to a DNS server, RFC 1035 framing.
pub struct TcpClient {
    pub stream: TcpStream,
}

impl TcpClient {
    pub async fn connect(server: SocketAddr) -> TcpClient {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(server))
            .await
            .unwrap_or_else(|_| panic!("TCP connect to {server} timed out"))
            .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}"));
        stream.set_nodelay(true).unwrap();
        TcpClient { stream }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(bytes);
        self.stream.write_all(&frame).await
    }

    pub async fn send(&mut self, m: &Message) {
        self.send_raw(&encode(m)).await.expect("send TCP query");
    }

    /// The next framed message; Ok(None) when the server closed the connection cleanly (or
    /// reset it), Err on timeout.
    pub async fn recv_raw_within(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, ()> {
        let read = async {
            let mut len = [0u8; 2];
            if self.stream.read_exact(&mut len).await.is_err() {
                return None;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        tokio::time::timeout(wait, read).await.map_err(|_| ())
    }

    /// The next reply; fails the test if none comes within [`REPLY_TIMEOUT`].
    pub async fn recv_raw(&mut self) -> Vec<u8> {
        match self.recv_raw_within(REPLY_TIMEOUT).await {
            Ok(Some(b)) => b,
            Ok(None) => panic!("server closed the TCP connection instead of replying"),
            Err(()) => panic!("no TCP reply within {REPLY_TIMEOUT:?}"),
        }
    }

    pub async fn recv(&mut self) -> Message {
        decode(&self.recv_raw().await)
    }

    /// Sends `m` and returns its reply (checked to carry its ID).
    pub async fn query(&mut self, m: &Message) -> Message {
        self.send(m).await;
        let reply = self.recv().await;
        assert_eq!(reply.metadata.id, m.metadata.id, "reply ID");
        reply
    }

    /// True if the server closes (or resets) the connection within `wait`. Any message
    /// received meanwhile fails the test.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("unexpected {n} bytes from the server"),
            Err(_) => false,
        }
    }
}

/// Sends `m` over a fresh TCP connection and returns the reply.
pub async fn tcp_query(server: SocketAddr, m: &Message) -> Message {
    TcpClient::connect(server).await.query(m).await
}

/// The IPv4 addresses of the A records of `reply`.
pub fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw messages

/// The wire form of a dotted name (no compression).
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A question section entry: name, type, class IN.
pub fn wire_question(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = wire_name(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// An OPT pseudo-record.
pub fn wire_opt(payload: u16, version: u8) -> Vec<u8> {
    let mut o = vec![0u8]; // root owner
    o.extend_from_slice(&41u16.to_be_bytes());
    o.extend_from_slice(&payload.to_be_bytes());
    o.extend_from_slice(&[0, version, 0, 0]); // extended rcode, version, flags
    o.extend_from_slice(&0u16.to_be_bytes());
    o
}

/// A header followed by `body`.
pub fn wire_message(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m.extend_from_slice(body);
    m
}

/// Header fields of a raw reply.
#[derive(Debug, Clone, Copy)]
pub struct RawHeader {
    pub id: u16,
    pub qr: bool,
    pub opcode: u8,
    pub tc: bool,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

pub fn raw_header(b: &[u8]) -> RawHeader {
    assert!(b.len() >= 12, "reply shorter than a header: {b:02x?}");
    let u = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    RawHeader {
        id: u(0),
        qr: b[2] & 0x80 != 0,
        opcode: (b[2] >> 3) & 0x0f,
        tc: b[2] & 0x02 != 0,
        rcode: b[3] & 0x0f,
        qdcount: u(4),
        ancount: u(6),
        nscount: u(8),
        arcount: u(10),
    }
}

/// The raw question section (name, type, class) of a message with one uncompressed question.
pub fn raw_question(b: &[u8]) -> Vec<u8> {
    let mut i = 12;
    while b[i] != 0 {
        i += 1 + usize::from(b[i]);
    }
    b[12..i + 5].to_vec()
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn from_time() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id()))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP and Prometheus

/// GET `path` from `addr` with HTTP/1.1 and `Connection: close`: (status, body). Retries the
/// connection for a moment (the listener may come up just after the DNS listeners).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr} for GET {path}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send HTTP request");
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n > 0 {
                buf.extend_from_slice(&chunk[..n]);
            }
            if let Some(done) = http_complete(&buf) {
                return Some(done);
            }
            if n == 0 {
                return http_complete_at_eof(&buf);
            }
        }
    };
    match tokio::time::timeout(REPLY_TIMEOUT, read).await {
        Ok(Some(r)) => r,
        Ok(None) => panic!("malformed HTTP response to GET {path}"),
        Err(_) => panic!("no complete HTTP response to GET {path} within {REPLY_TIMEOUT:?}"),
    }
}

/// Name-value pairs (HTTP headers, Prometheus labels).
pub type Pairs = Vec<(String, String)>;

fn split_head(buf: &[u8]) -> Option<(u16, Pairs, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, &buf[end + 4..]))
}

fn http_complete(buf: &[u8]) -> Option<(u16, String)> {
    let (status, headers, body) = split_head(buf)?;
    let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().ok()?;
        return (body.len() >= len).then(|| (status, String::from_utf8_lossy(&body[..len]).into_owned()));
    }
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body).map(|b| (status, b));
    }
    None
}

fn http_complete_at_eof(buf: &[u8]) -> Option<(u16, String)> {
    if let Some(r) = http_complete(buf) {
        return Some(r);
    }
    let (status, _, body) = split_head(buf)?;
    Some((status, String::from_utf8_lossy(body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Parses one sample line of the Prometheus text format: (name, labels, value).
pub fn parse_sample(line: &str) -> Option<(String, Pairs, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.find('{') {
        Some(i) => (&series[..i], series[i + 1..].trim_end_matches('}')),
        None => (series.trim(), ""),
    };
    let mut parsed = Vec::new();
    let mut rest = labels;
    while let Some(eq) = rest.find('=') {
        let k = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let after = after.strip_prefix('"')?;
        let close = after.find('"')?;
        parsed.push((k, after[..close].to_string()));
        rest = &after[close + 1..];
    }
    Some((name.to_string(), parsed, value))
}

/// The sum of every sample of `name` whose labels include all of `labels`; None if no sample
/// matches.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for (n, ls, v) in text.lines().filter_map(parse_sample) {
        if n == name && labels.iter().all(|(k, want)| ls.iter().any(|(lk, lv)| lk == k && lv == want)) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}
