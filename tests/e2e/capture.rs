//! `podns capture-init`, run as the real binary against stand-in iptables tools (shell scripts
//! that keep the nat table in a file, spelling rules the way `iptables-save` does), so the
//! apply path runs without root. The pod lab (tests/lab) runs it against the kernel.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_podns");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!("podns-capture-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Dir(dir)
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("writes script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `<prefix>-restore` and `<prefix>-save` in `dir`, keeping each table in a file
/// `<prefix>.<table>`. Declaring a chain (`:PODNS_... - [0:0]`) empties it, as `--noflush` does.
fn fake_tools(dir: &Path, prefix: &str) -> PathBuf {
    let state = dir.join(prefix);
    let log = dir.join(format!("{prefix}.restore.log"));
    let restore = dir.join(format!("{prefix}-restore"));
    script(
        &restore,
        &format!(
            r#"[ "$1" = --noflush ] || {{ echo "want --noflush, got $*" >&2; exit 2; }}
input="$(cat)"
printf '%s\n' "$input" >> '{log}'
table=
printf '%s\n' "$input" | while IFS= read -r line; do
  case "$line" in
    '*'*) table="${{line#?}}"; touch '{state}'."$table";;
    :PODNS_*) chain="${{line#:}}"; chain="${{chain%% *}}"; grep -v "^-A $chain " '{state}'."$table" > '{state}.tmp'; mv '{state}.tmp' '{state}'."$table";;
    '-A '*) printf '%s\n' "$line" | sed 's/-p \(udp\|tcp\) --\([ds]port\)/-p \1 -m \1 --\2/' >> '{state}'."$table";;
  esac
done
"#,
            state = state.display(),
            log = log.display()
        ),
    );
    script(
        &dir.join(format!("{prefix}-save")),
        &format!(
            "[ \"$1\" = -t ] || exit 2\nprintf '*%s\\n:OUTPUT ACCEPT [0:0]\\n' \"$2\"\ncat '{}'.\"$2\" 2>/dev/null\nprintf 'COMMIT\\n'\n",
            state.display()
        ),
    );
    restore
}

fn capture_init(args: &[&str]) -> Output {
    Command::new(BIN).arg("capture-init").args(args).output().expect("podns runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn resolv(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("resolv.conf");
    std::fs::write(&path, body).expect("writes resolv.conf");
    path
}

const RULES_1337: &str = "*nat
:PODNS_OUTPUT - [0:0]
-A PODNS_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A PODNS_OUTPUT -p udp -j REDIRECT --to-ports 15053
-A PODNS_OUTPUT -p tcp -j REDIRECT --to-ports 15053
-A OUTPUT -p udp --dport 53 -j PODNS_OUTPUT
-A OUTPUT -p tcp --dport 53 -j PODNS_OUTPUT
COMMIT
*raw
:PODNS_ZONE_OUT - [0:0]
:PODNS_ZONE_IN - [0:0]
-A PODNS_ZONE_OUT -m owner --uid-owner 1337 -j CT --zone 1
-A PODNS_ZONE_IN -j CT --zone 1
-A OUTPUT -p udp --dport 53 -j PODNS_ZONE_OUT
-A OUTPUT -p tcp --dport 53 -j PODNS_ZONE_OUT
-A PREROUTING -p udp --sport 53 -j PODNS_ZONE_IN
-A PREROUTING -p tcp --sport 53 -j PODNS_ZONE_IN
COMMIT
";

#[test]
fn dry_run_prints_the_rules_and_runs_nothing() {
    let dir = temp_dir("dry");
    let conf = resolv(&dir.0, "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
    let conf = conf.to_str().expect("path");
    let missing = dir.0.join("no-such-iptables-restore");
    let out = capture_init(&[
        "--dry-run",
        "--uid",
        "1337",
        "--resolv-conf",
        conf,
        "--iptables-restore",
        missing.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("# IPv4: {} --noflush\n{RULES_1337}", missing.display()));
    assert!(text(&out.stderr).contains("IPv6: no rules"), "{}", text(&out.stderr));

    // An IPv6 nameserver brings the ip6tables rules in --ipv6 auto.
    let conf6 = resolv(&dir.0, "nameserver fd00:10:96::a\n");
    let out = capture_init(&["--dry-run", "--resolv-conf", conf6.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("# IPv4: iptables-restore --noflush\n*nat\n"), "{stdout}");
    assert!(stdout.contains("# IPv6: ip6tables-restore --noflush\n*nat\n"), "{stdout}");
    assert_eq!(
        stdout.matches("--uid-owner 15053 -j RETURN").count(),
        2,
        "the default UID is podns's own in capture mode: {stdout}"
    );
}

#[test]
fn applying_twice_leaves_one_set_of_rules() {
    let dir = temp_dir("twice");
    let v4 = fake_tools(&dir.0, "ip4");
    let v6 = fake_tools(&dir.0, "ip6");
    let args = [
        "--uid",
        "1337",
        "--ipv6",
        "on",
        "--iptables-restore",
        v4.to_str().expect("path"),
        "--ip6tables-restore",
        v6.to_str().expect("path"),
    ];
    let first = capture_init(&args);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // The rules of each table, in no particular order (the stand-in does not group by chain).
    let state = |p: &str| {
        let mut lines: Vec<String> = Vec::new();
        for table in ["nat", "raw"] {
            let text = std::fs::read_to_string(dir.0.join(format!("{p}.{table}"))).expect("state");
            lines.extend(text.lines().map(|l| format!("{table} {l}")));
        }
        lines.sort();
        lines
    };
    let once = (state("ip4"), state("ip6"));
    assert_eq!(once.0.iter().filter(|l| l.ends_with("-j PODNS_OUTPUT")).count(), 2, "{:?}", once.0);
    assert_eq!(once.0.iter().filter(|l| l.ends_with("-j PODNS_ZONE_OUT")).count(), 2, "{:?}", once.0);
    assert_eq!(once.0.iter().filter(|l| l.ends_with("-j PODNS_ZONE_IN")).count(), 2, "{:?}", once.0);
    assert_eq!(once.0.len(), 5 + 6, "{:?}", once.0);
    assert_eq!(once.1.len(), 5 + 6, "{:?}", once.1);
    assert!(text(&first.stderr).contains("IPv6: DNS (udp, tcp port 53) now goes to [::1]:15053"));

    let second = capture_init(&args);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!((state("ip4"), state("ip6")), once, "a second run changed the rules");
    assert!(text(&second.stderr).contains("already there"), "{}", text(&second.stderr));
    // The second ruleset refilled the chain and added no jump.
    let log = std::fs::read_to_string(dir.0.join("ip4.restore.log")).expect("log");
    let runs: Vec<&str> = log.split("*nat\n").filter(|r| !r.is_empty()).collect();
    assert_eq!(runs.len(), 2, "{log}");
    assert_eq!(runs[0].matches("-A OUTPUT").count(), 4, "{log}");
    assert_eq!(runs[0].matches("-A PREROUTING").count(), 2, "{log}");
    assert_eq!(runs[1].matches("-A OUTPUT").count() + runs[1].matches("-A PREROUTING").count(), 0, "{log}");
    assert_eq!(runs[1].matches("-A PODNS_OUTPUT").count(), 3, "{log}");
    assert_eq!(runs[1].matches("-A PODNS_ZONE_").count(), 2, "{log}");
}

#[test]
fn failures_say_what_is_missing() {
    let dir = temp_dir("fail");
    let conf = resolv(&dir.0, "nameserver 10.96.0.10\n");
    let conf = conf.to_str().expect("path");

    // No iptables tools.
    let missing = dir.0.join("iptables-restore");
    let out = capture_init(&["--resolv-conf", conf, "--iptables-restore", missing.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--target capture-init"), "{}", text(&out.stderr));

    // No privilege: what iptables-nft says without CAP_NET_ADMIN.
    script(
        &dir.0.join("denied-save"),
        "echo 'iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)' >&2\nexit 4\n",
    );
    script(&dir.0.join("denied-restore"), "exit 4\n");
    let denied = dir.0.join("denied-restore");
    let out = capture_init(&["--resolv-conf", conf, "--iptables-restore", denied.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Permission denied (you must be root)") && err.contains("CAP_NET_ADMIN"), "{err}");

    // Exempting root is refused as a usage error.
    let out = capture_init(&["--uid", "0", "--dry-run", "--resolv-conf", conf]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    // --ipv6 auto needs the resolv.conf.
    let gone = dir.0.join("gone.conf");
    let out = capture_init(&["--dry-run", "--resolv-conf", gone.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--ipv6 on or off"), "{}", text(&out.stderr));
}
