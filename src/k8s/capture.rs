//! `podns capture-init`: transparent capture. Redirects the pod's DNS traffic (UDP and TCP to
//! port 53, whatever the destination) to podns on a local port, with kernel NAT rules, so that
//! a pod keeps its kubelet-written resolv.conf and still resolves through podns.
//!
//! The rules live in the nat table of the pod's network namespace, in one chain of their own:
//!
//! ```text
//! *nat
//! :PODNS_OUTPUT - [0:0]
//! -A PODNS_OUTPUT -m owner --uid-owner 15053 -j RETURN
//! -A PODNS_OUTPUT -p udp -j REDIRECT --to-ports 15053
//! -A PODNS_OUTPUT -p tcp -j REDIRECT --to-ports 15053
//! -A OUTPUT -p udp --dport 53 -j PODNS_OUTPUT
//! -A OUTPUT -p tcp --dport 53 -j PODNS_OUTPUT
//! COMMIT
//! *raw
//! :PODNS_ZONE_OUT - [0:0]
//! :PODNS_ZONE_IN - [0:0]
//! -A PODNS_ZONE_OUT -m owner --uid-owner 15053 -j CT --zone 1
//! -A PODNS_ZONE_IN -j CT --zone 1
//! -A OUTPUT -p udp --dport 53 -j PODNS_ZONE_OUT
//! -A OUTPUT -p tcp --dport 53 -j PODNS_ZONE_OUT
//! -A PREROUTING -p udp --sport 53 -j PODNS_ZONE_IN
//! -A PREROUTING -p tcp --sport 53 -j PODNS_ZONE_IN
//! COMMIT
//! ```
//!
//! - Packets that podns's own UID sends (its upstream queries to cluster DNS) return to OUTPUT
//!   untouched, so podns never receives its own queries.
//! - Every other process's DNS packet to any address, port 53, goes to podns: REDIRECT of a
//!   locally generated packet rewrites its destination to 127.0.0.1 (IPv4) or ::1 (IPv6) and the
//!   given port, so podns listens on `127.0.0.1:PORT` (and `[::1]:PORT` with IPv6 rules).
//! - podns's own listener port is not 53, so nothing sent to podns matches the jump.
//! - podns's own flows to cluster DNS, and their replies (source port 53), are tracked in
//!   conntrack zone 1, apart from the application's. NAT applies to the first packet of a flow
//!   only: without the zone, an application's query that leaves from a source port podns used
//!   for one of its upstream queries in the last minute or two matches podns's (unNATed)
//!   conntrack entry and goes to cluster DNS directly, bypassing podns (seen in the pod lab).
//!   Istio separates its DNS proxy's flows the same way (`CT --zone` in the raw table).
//!
//! Applying pipes the ruleset into `iptables-restore --noflush` (and `ip6tables-restore`):
//! the other tables and chains are left alone, declaring `PODNS_OUTPUT` empties it, and the two
//! jumps from OUTPUT are only added when `iptables-save -t nat` does not show them yet. So
//! running capture-init again (a restarted init container) leaves exactly the same rules.
//! Afterwards the rules are read back and checked.
//!
//! Exit status: 0 when the rules are in place (or printed with `--dry-run`), 1 when they could
//! not be installed (no iptables tools, no CAP_NET_ADMIN, ...), 2 for bad flags.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The chain podns owns in the nat table.
pub const CHAIN: &str = "PODNS_OUTPUT";
/// The chains podns owns in the raw table: its own queries, and the replies to them, in
/// conntrack zone [`ZONE`].
pub const ZONE_OUT: &str = "PODNS_ZONE_OUT";
pub const ZONE_IN: &str = "PODNS_ZONE_IN";
/// The conntrack zone of podns's own flows.
pub const ZONE: u16 = 1;
/// Default local port podns listens on in capture mode.
pub const DEFAULT_PORT: u16 = 15053;
/// Default UID whose traffic is not redirected: podns's own in capture mode, the UID `podns
/// inject` runs the sidecar as there. Not the image's 65532: applications built on distroless
/// "nonroot" images run as 65532 too, and their DNS would bypass podns.
pub const DEFAULT_UID: u32 = 15053;

/// Whether to install the IPv6 rules too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// When --resolv-conf names an IPv6 nameserver.
    Auto,
    /// Always (podns must then also listen on [::1]:PORT).
    On,
    /// Never.
    Off,
}

/// Arguments of `podns capture-init`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureInitArgs {
    /// Local port podns listens on (podns --listen 127.0.0.1:PORT, and [::1]:PORT with IPv6
    /// rules); DNS traffic to port 53 is redirected there.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// UID podns runs as: its own (upstream) DNS traffic is not redirected. No application
    /// container may run as this UID, or its DNS bypasses podns.
    #[arg(long, default_value_t = DEFAULT_UID)]
    pub uid: u32,

    /// IPv6 rules (ip6tables): auto installs them when --resolv-conf names an IPv6 nameserver.
    #[arg(long, value_enum, default_value = "auto")]
    pub ipv6: Ipv6Mode,

    /// The pod's resolv.conf, read to decide --ipv6 auto.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// Print the rules (iptables-restore format) and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// iptables-restore to run; iptables-save is the same path with `save` for `restore`.
    #[arg(long, default_value = "iptables-restore", value_name = "PATH")]
    pub iptables_restore: PathBuf,

    /// ip6tables-restore to run; ip6tables-save is the same path with `save` for `restore`.
    #[arg(long, default_value = "ip6tables-restore", value_name = "PATH")]
    pub ip6tables_restore: PathBuf,
}

/// An address family and its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1",
            Family::V6 => "[::1]",
        }
    }
}

const PROTOS: [&str; 2] = ["udp", "tcp"];

/// The rules of [`CHAIN`], in order: the exemption first.
pub fn chain_rules(port: u16, uid: u32) -> Vec<String> {
    let mut rules = vec![format!("-A {CHAIN} -m owner --uid-owner {uid} -j RETURN")];
    for proto in PROTOS {
        rules.push(format!("-A {CHAIN} -p {proto} -j REDIRECT --to-ports {port}"));
    }
    rules
}

/// The jump from OUTPUT for one protocol.
pub fn jump_rule(proto: &str) -> String {
    format!("-A OUTPUT -p {proto} --dport 53 -j {CHAIN}")
}

/// A jump podns adds to a built-in chain: table, hook chain, port flag, target chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub hook: &'static str,
    pub port_flag: &'static str,
    pub target: &'static str,
}

/// Every jump podns adds, per protocol: to the redirects (nat), and into its conntrack zone
/// (raw: its queries on the way out, their replies on the way in).
pub const JUMPS: [Jump; 3] = [
    Jump { table: "nat", hook: "OUTPUT", port_flag: "--dport", target: CHAIN },
    Jump { table: "raw", hook: "OUTPUT", port_flag: "--dport", target: ZONE_OUT },
    Jump { table: "raw", hook: "PREROUTING", port_flag: "--sport", target: ZONE_IN },
];

impl Jump {
    /// The rule for one protocol.
    pub fn rule(&self, proto: &str) -> String {
        format!("-A {} -p {proto} {} 53 -j {}", self.hook, self.port_flag, self.target)
    }

    /// How often this jump is in `save` (the output of `iptables-save`, which spells a rule
    /// `-A OUTPUT -p udp -m udp --dport 53 -j PODNS_OUTPUT`) for each protocol.
    pub fn count_in(&self, save: &str) -> Vec<(&'static str, usize)> {
        PROTOS
            .iter()
            .map(|&proto| {
                let count = table_rules(save, self.table)
                    .filter(|words| {
                        words.first() == Some(&"-A")
                            && words.get(1) == Some(&self.hook)
                            && words.windows(2).any(|w| w == ["-j", self.target])
                            && words.windows(2).any(|w| w == ["-p", proto])
                            && words.windows(2).any(|w| w == [self.port_flag, "53"])
                    })
                    .count();
                (proto, count)
            })
            .collect()
    }
}

/// Protocols whose jump from OUTPUT to [`CHAIN`] is in `save`, with how often it is there.
pub fn jumps_in(save: &str) -> Vec<(&'static str, usize)> {
    JUMPS[0].count_in(save)
}

/// The rule lines of `table` in an `iptables-save` text, as words (packet counters of
/// `iptables-save -c` dropped).
fn table_rules<'a>(save: &'a str, table: &'a str) -> impl Iterator<Item = Vec<&'a str>> {
    let mut inside = false;
    save.lines().filter_map(move |line| {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            inside = t == table;
            return None;
        }
        if !inside {
            return None;
        }
        let line = if line.starts_with('[') { line.split_once(']').map_or("", |(_, rest)| rest.trim()) } else { line };
        line.starts_with("-A ").then(|| line.split_whitespace().collect())
    })
}

/// The rules of `chain` of `table` in an `iptables-save` text, normalised to words.
fn chain_in<'a>(save: &'a str, table: &'a str, chain: &'a str) -> Vec<Vec<&'a str>> {
    table_rules(save, table).filter(|words| words.get(1) == Some(&chain)).collect()
}

/// The rules of the raw chains: podns's own flows (by UID) and the replies to them in
/// conntrack zone [`ZONE`].
pub fn zone_rules(uid: u32) -> [String; 2] {
    [
        format!("-A {ZONE_OUT} -m owner --uid-owner {uid} -j CT --zone {ZONE}"),
        format!("-A {ZONE_IN} -j CT --zone {ZONE}"),
    ]
}

/// The `iptables-restore --noflush` input: podns's chains declared (created, or emptied when
/// they exist) and filled, and the jumps into them that `existing` (the current `iptables-save`
/// of the nat and raw tables, when known) does not already have.
pub fn ruleset(port: u16, uid: u32, existing: Option<&str>) -> String {
    let missing = |jump: &Jump, out: &mut String| {
        let present = existing.map(|e| jump.count_in(e)).unwrap_or_default();
        for proto in PROTOS {
            if !present.iter().any(|&(p, n)| p == proto && n > 0) {
                out.push_str(&jump.rule(proto));
                out.push('\n');
            }
        }
    };
    let mut out = String::from("*nat\n");
    out.push_str(&format!(":{CHAIN} - [0:0]\n"));
    for rule in chain_rules(port, uid) {
        out.push_str(&rule);
        out.push('\n');
    }
    missing(&JUMPS[0], &mut out);
    out.push_str("COMMIT\n*raw\n");
    out.push_str(&format!(":{ZONE_OUT} - [0:0]\n:{ZONE_IN} - [0:0]\n"));
    for rule in zone_rules(uid) {
        out.push_str(&rule);
        out.push('\n');
    }
    missing(&JUMPS[1], &mut out);
    missing(&JUMPS[2], &mut out);
    out.push_str("COMMIT\n");
    out
}

/// Checks that `save` (read back after applying, nat and raw tables) holds exactly the intended
/// rules: each chain's rules in order and one jump per protocol and hook.
pub fn verify(save: &str, port: u16, uid: u32) -> Result<(), String> {
    let uid_s = uid.to_string();
    let port_s = port.to_string();
    let zone_s = ZONE.to_string();
    let chain = chain_in(save, "nat", CHAIN);
    let has = |words: &[&str], pair: [&str; 2]| words.windows(2).any(|w| w == pair);
    let ok = chain.len() == 3
        && has(&chain[0], ["--uid-owner", &uid_s])
        && has(&chain[0], ["-j", "RETURN"])
        && chain[1..].iter().zip(PROTOS).all(|(words, proto)| {
            has(words, ["-p", proto]) && has(words, ["-j", "REDIRECT"]) && has(words, ["--to-ports", &port_s])
        });
    if !ok {
        let got: Vec<String> = chain.iter().map(|w| w.join(" ")).collect();
        return Err(format!("chain {CHAIN} holds {got:?}, not the exemption of UID {uid} and redirects to {port}"));
    }
    let out = chain_in(save, "raw", ZONE_OUT);
    let inn = chain_in(save, "raw", ZONE_IN);
    let zone_ok = out.len() == 1
        && has(&out[0], ["--uid-owner", &uid_s])
        && has(&out[0], ["--zone", &zone_s])
        && inn.len() == 1
        && has(&inn[0], ["--zone", &zone_s]);
    if !zone_ok {
        return Err(format!(
            "raw chains {ZONE_OUT}/{ZONE_IN} do not put UID {uid}'s DNS flows in conntrack zone {ZONE}"
        ));
    }
    for jump in JUMPS {
        for (proto, count) in jump.count_in(save) {
            if count != 1 {
                return Err(format!(
                    "{} {} has {count} jumps to {} for {proto} port 53, want 1",
                    jump.table, jump.hook, jump.target
                ));
            }
        }
    }
    Ok(())
}

/// The nameserver addresses of a resolv.conf text.
fn nameservers(text: &str) -> Vec<IpAddr> {
    crate::cli::resolv_conf_nameservers(text).into_iter().map(|a| a.ip()).collect()
}

/// The families to install rules for, with remarks for standard error. `resolv_conf` is the
/// text of the pod's resolv.conf (`Err` with the reason when it could not be read).
pub fn families(
    mode: Ipv6Mode,
    resolv_conf: Result<&str, String>,
    path: &Path,
) -> Result<(Vec<Family>, Vec<String>), String> {
    let mut notes = Vec::new();
    let v6: Vec<IpAddr> = match &resolv_conf {
        Ok(text) => nameservers(text).into_iter().filter(IpAddr::is_ipv6).collect(),
        Err(_) => Vec::new(),
    };
    let list = |v: &[IpAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let ipv6 = match mode {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => {
            if !v6.is_empty() {
                notes.push(format!(
                    "warning: {} names IPv6 nameserver {}, whose DNS traffic is NOT captured (--ipv6 off); \
                     use --ipv6 on and podns --listen [::1]:PORT (podns inject --capture-ipv6)",
                    path.display(),
                    list(&v6)
                ));
            }
            false
        }
        Ipv6Mode::Auto => {
            resolv_conf
                .as_ref()
                .map_err(|e| format!("--ipv6 auto reads {}: {e}; pass --ipv6 on or off", path.display()))?;
            if v6.is_empty() {
                notes.push(format!(
                    "IPv6: no rules ({} names no IPv6 nameserver; --ipv6 on captures IPv6 DNS anyway)",
                    path.display()
                ));
            }
            !v6.is_empty()
        }
    };
    Ok((if ipv6 { vec![Family::V4, Family::V6] } else { vec![Family::V4] }, notes))
}

/// `iptables-save` for an `iptables-restore` path: `restore` replaced by `save` in the file
/// name (`/usr/sbin/iptables-nft-restore` -> `/usr/sbin/iptables-nft-save`).
pub fn save_command(restore: &Path) -> Result<PathBuf, String> {
    let name = restore.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let at = name.rfind("restore").ok_or_else(|| {
        format!("{}: the file name has no `restore` to derive the save command from", restore.display())
    })?;
    let saved = format!("{}save{}", &name[..at], &name[at + "restore".len()..]);
    Ok(restore.with_file_name(saved))
}

/// What to tell someone whose capture-init failed to change the rules.
const PRIVILEGE_HINT: &str = "capture-init must run in the pod's network namespace as root (UID 0) with \
     CAP_NET_ADMIN (and CAP_NET_RAW for the legacy iptables backend): in Kubernetes, an init container with \
     securityContext runAsUser: 0, runAsNonRoot: false, capabilities add [NET_ADMIN, NET_RAW]";

/// Runs a tool, feeding `stdin`; its standard output on success.
fn run_tool(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "cannot run {}: not found. capture-init needs the iptables tools (nft backend); the \
                     capture-init image has them (docker build --target capture-init), or pass --iptables-restore PATH",
                    program.display()
                )
            } else {
                format!("cannot run {}: {e}", program.display())
            }
        })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A tool that exits early closes the pipe; its status and stderr tell why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`{shown}` failed ({}): {}. {PRIVILEGE_HINT}", out.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the rules for one family; returns the ruleset applied and a summary line.
fn apply(family: Family, restore: &Path, port: u16, uid: u32) -> Result<(String, String), String> {
    let save = save_command(restore)?;
    let tables = |save: &Path| -> Result<String, String> {
        Ok(run_tool(save, &["-t", "nat"], None)? + &run_tool(save, &["-t", "raw"], None)?)
    };
    let before = tables(&save)?;
    let rules = ruleset(port, uid, Some(&before));
    run_tool(restore, &["--noflush"], Some(&rules))?;
    let after = tables(&save)?;
    verify(&after, port, uid).map_err(|e| format!("{}: after {} --noflush: {e}", family.name(), restore.display()))?;
    let kept = JUMPS.iter().all(|j| j.count_in(&before).iter().all(|&(_, n)| n > 0));
    let summary = format!(
        "{}: DNS (udp, tcp port 53) now goes to {}:{port}, except UID {uid}'s, tracked in conntrack zone {ZONE} (nat {CHAIN}, raw {ZONE_OUT}/{ZONE_IN}{})",
        family.name(),
        family.loopback(),
        if kept { "; the jumps were already there" } else { "" }
    );
    Ok((rules, summary))
}

/// Runs `podns capture-init`.
pub fn run(args: CaptureInitArgs) -> ExitCode {
    if args.uid == 0 {
        eprintln!(
            "podns capture-init: error: --uid 0: exempting root would let every root process's DNS bypass \
             podns; run podns as a UID of its own and pass that"
        );
        return ExitCode::from(2);
    }
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podns capture-init: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(args: &CaptureInitArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.resolv_conf).map_err(|e| e.to_string());
    let (families, notes) = families(args.ipv6, text.as_deref().map_err(Clone::clone), &args.resolv_conf)?;
    for note in notes {
        eprintln!("podns capture-init: {note}");
    }
    let mut stdout = std::io::stdout().lock();
    for family in families {
        let restore = match family {
            Family::V4 => &args.iptables_restore,
            Family::V6 => &args.ip6tables_restore,
        };
        if args.dry_run {
            let _ = writeln!(stdout, "# {}: {} --noflush", family.name(), restore.display());
            let _ = stdout.write_all(ruleset(args.port, args.uid, None).as_bytes());
            continue;
        }
        let (rules, summary) = apply(family, restore, args.port, args.uid)?;
        let _ = writeln!(stdout, "# {}: {} --noflush", family.name(), restore.display());
        let _ = stdout.write_all(rules.as_bytes());
        eprintln!("podns capture-init: {summary}");
    }
    let _ = stdout.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_on_a_fresh_namespace() {
        assert_eq!(
            ruleset(15053, 65532, None),
            "*nat\n\
             :PODNS_OUTPUT - [0:0]\n\
             -A PODNS_OUTPUT -m owner --uid-owner 65532 -j RETURN\n\
             -A PODNS_OUTPUT -p udp -j REDIRECT --to-ports 15053\n\
             -A PODNS_OUTPUT -p tcp -j REDIRECT --to-ports 15053\n\
             -A OUTPUT -p udp --dport 53 -j PODNS_OUTPUT\n\
             -A OUTPUT -p tcp --dport 53 -j PODNS_OUTPUT\n\
             COMMIT\n\
             *raw\n\
             :PODNS_ZONE_OUT - [0:0]\n\
             :PODNS_ZONE_IN - [0:0]\n\
             -A PODNS_ZONE_OUT -m owner --uid-owner 65532 -j CT --zone 1\n\
             -A PODNS_ZONE_IN -j CT --zone 1\n\
             -A OUTPUT -p udp --dport 53 -j PODNS_ZONE_OUT\n\
             -A OUTPUT -p tcp --dport 53 -j PODNS_ZONE_OUT\n\
             -A PREROUTING -p udp --sport 53 -j PODNS_ZONE_IN\n\
             -A PREROUTING -p tcp --sport 53 -j PODNS_ZONE_IN\n\
             COMMIT\n"
        );
    }

    /// What `iptables-save -t nat` (nft backend) printed after a first run in a namespace.
    const INSTALLED: &str = "# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 20:38:56 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PODNS_OUTPUT - [0:0]
-A OUTPUT -p udp -m udp --dport 53 -j PODNS_OUTPUT
-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_OUTPUT
-A PODNS_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A PODNS_OUTPUT -p udp -j REDIRECT --to-ports 15053
-A PODNS_OUTPUT -p tcp -j REDIRECT --to-ports 15053
COMMIT
# Completed on Mon Nov 23 20:38:56 2026
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 30 13:24:55 2026
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PODNS_ZONE_OUT - [0:0]
:PODNS_ZONE_IN - [0:0]
-A PREROUTING -p udp -m udp --sport 53 -j PODNS_ZONE_IN
-A PREROUTING -p tcp -m tcp --sport 53 -j PODNS_ZONE_IN
-A OUTPUT -p udp -m udp --dport 53 -j PODNS_ZONE_OUT
-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_ZONE_OUT
-A PODNS_ZONE_OUT -m owner --uid-owner 1337 -j CT --zone 1
-A PODNS_ZONE_IN -j CT --zone 1
COMMIT
";

    #[test]
    fn existing_jumps_are_not_added_again() {
        assert_eq!(jumps_in(INSTALLED), vec![("udp", 1), ("tcp", 1)]);
        let again = ruleset(15053, 1337, Some(INSTALLED));
        assert!(!again.contains("-A OUTPUT") && !again.contains("-A PREROUTING"), "{again}");
        // The chain is still declared (emptied) and refilled.
        assert!(again.contains(":PODNS_OUTPUT - [0:0]\n-A PODNS_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"));
        // Only the missing one when one is there.
        let udp_only: String =
            INSTALLED.lines().filter(|l| !l.contains("-p tcp -m tcp")).map(|l| format!("{l}\n")).collect();
        let partial = ruleset(15053, 1337, Some(&udp_only));
        assert!(partial.contains("-A OUTPUT -p tcp --dport 53 -j PODNS_OUTPUT\n"));
        assert!(!partial.contains("-A OUTPUT -p udp --dport 53 -j PODNS_OUTPUT"));
    }

    #[test]
    fn jumps_elsewhere_do_not_count() {
        let other = "*filter\n-A OUTPUT -p udp -m udp --dport 53 -j PODNS_OUTPUT\nCOMMIT\n*nat\n\
                     -A OUTPUT -p udp -m udp --dport 5353 -j PODNS_OUTPUT\n-A OUTPUT -p tcp -j ISTIO_OUTPUT\nCOMMIT\n";
        assert_eq!(jumps_in(other), vec![("udp", 0), ("tcp", 0)]);
        assert_eq!(ruleset(15053, 1, Some(other)).matches("-j PODNS_OUTPUT\n").count(), 2);
    }

    #[test]
    fn exemption_comes_before_the_redirects() {
        let rules = chain_rules(1, 2);
        assert!(rules[0].ends_with("--uid-owner 2 -j RETURN"));
        assert!(rules[1..].iter().all(|r| r.ends_with("-j REDIRECT --to-ports 1")));
    }

    #[test]
    fn verify_reads_back_counters_and_duplicates() {
        assert_eq!(verify(INSTALLED, 15053, 1337), Ok(()));
        let counted: String = INSTALLED
            .lines()
            .map(|l| if l.starts_with("-A") { format!("[3:180] {l}\n") } else { format!("{l}\n") })
            .collect();
        assert_eq!(verify(&counted, 15053, 1337), Ok(()));
        assert!(verify(INSTALLED, 15053, 65532).unwrap_err().contains("UID 65532"));
        assert!(verify(INSTALLED, 5353, 1337).is_err());
        let doubled = INSTALLED.replace(
            "-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_OUTPUT\n",
            "-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_OUTPUT\n-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_OUTPUT\n",
        );
        assert!(verify(&doubled, 15053, 1337).unwrap_err().contains("2 jumps"));
        assert!(verify("", 15053, 1337).is_err());
        let no_zone = INSTALLED.replace("-A PODNS_ZONE_IN -j CT --zone 1\n", "");
        assert!(verify(&no_zone, 15053, 1337).unwrap_err().contains("conntrack zone"));
        let no_reply_jump = INSTALLED.replace("-A PREROUTING -p udp -m udp --sport 53 -j PODNS_ZONE_IN\n", "");
        assert!(verify(&no_reply_jump, 15053, 1337).unwrap_err().contains("raw PREROUTING has 0 jumps"));
    }

    #[test]
    fn ipv6_follows_the_nameservers_in_auto() {
        let p = Path::new("/etc/resolv.conf");
        let v4 = "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        let v6 = "nameserver fd00:10:96::a\n";
        assert_eq!(families(Ipv6Mode::Auto, Ok(v4), p).unwrap().0, vec![Family::V4]);
        assert_eq!(families(Ipv6Mode::Auto, Ok(v6), p).unwrap().0, vec![Family::V4, Family::V6]);
        assert_eq!(families(Ipv6Mode::On, Ok(v4), p).unwrap().0, vec![Family::V4, Family::V6]);
        assert_eq!(families(Ipv6Mode::On, Err("gone".into()), p).unwrap().0, vec![Family::V4, Family::V6]);
        let (fams, notes) = families(Ipv6Mode::Off, Ok(v6), p).unwrap();
        assert_eq!(fams, vec![Family::V4]);
        assert!(notes[0].contains("NOT captured"), "{notes:?}");
        assert!(families(Ipv6Mode::Auto, Err("No such file".into()), p).unwrap_err().contains("--ipv6 on or off"));
    }

    #[test]
    fn save_command_is_derived() {
        assert_eq!(save_command(Path::new("iptables-restore")).unwrap(), Path::new("iptables-save"));
        assert_eq!(
            save_command(Path::new("/usr/sbin/ip6tables-nft-restore")).unwrap(),
            Path::new("/usr/sbin/ip6tables-nft-save")
        );
        assert!(save_command(Path::new("/bin/false")).is_err());
    }
}
