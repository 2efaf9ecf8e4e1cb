//! `podns demo`: the quick start's first command shows the collapse and the AAAA fix, from the
//! real proxy in front of a stand-in cluster DNS on loopback.

use std::process::Command;

/// The row of `path` (`direct` or `via podns`) of `stub` under the section for `name`.
fn row<'a>(out: &'a str, name: &str, stub: &str, path: &str) -> &'a str {
    let section =
        out.split("\n\n").find(|s| s.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("{name}: {out}"));
    let mut lines = section.lines().skip_while(|l| !l.trim_start().starts_with(stub));
    let first = lines.next().unwrap_or_else(|| panic!("{stub} in {section}"));
    if path == "direct" { first } else { lines.next().expect("the via-podns row") }
}

/// The upstream query count of a row.
fn cost(row: &str) -> u64 {
    let after = row.split(if row.contains("direct") { "direct" } else { "via podns" }).nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_demo_shows_the_collapse_and_the_aaaa_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_podns")).arg("demo").output().expect("podns demo runs");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // pypi.org: glibc's walk costs 8 upstream queries alone, fewer through podns, same addresses.
    let direct = row(&text, "pypi.org", "glibc", "direct");
    let via = row(&text, "pypi.org", "glibc", "via podns");
    assert_eq!(cost(direct), 8, "{direct}");
    assert!(cost(via) < 8, "{via}");
    for r in [direct, via] {
        assert!(r.contains("198.18.1.1 2001:db8:1::1"), "{r}");
    }
    // A cluster name: the same answer both ways, never more queries.
    let direct = row(&text, "kubernetes.default", "glibc", "direct");
    let via = row(&text, "kubernetes.default", "glibc", "via podns");
    assert!(direct.contains("198.18.0.1") && via.contains("198.18.0.1"), "{direct}\n{via}");
    assert!(cost(via) <= cost(direct), "{direct}\n{via}");
    // AAAA SERVFAIL: musl fails alone and gets the address through podns.
    assert!(row(&text, "api.example.com", "musl", "direct").contains("FAILED"), "{text}");
    assert!(row(&text, "api.example.com", "musl", "via podns").contains("198.18.2.2"), "{text}");
}
