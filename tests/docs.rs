//! The README is the reference for operators: every flag the binary accepts and every metric
//! it exports must be documented there.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn every_flag_is_documented() {
    let out = Command::new(env!("CARGO_BIN_EXE_podns")).arg("--help").output().expect("run podns --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.']))
        .filter(|w| !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.len() > 20, "parsed too few flags from --help: {flags:?}");
    let readme = readme();
    let missing: Vec<_> = flags.iter().filter(|f| !readme.contains(&format!("`{f}"))).collect();
    assert!(missing.is_empty(), "flags missing from README: {missing:?}");
}

#[test]
fn every_metric_is_documented() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let names: Vec<&str> = src
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"podns_"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() > 20, "parsed too few metric names: {names:?}");
    let readme = readme();
    let missing: Vec<_> = names.iter().filter(|n| !readme.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "metrics missing from README: {missing:?}");
}
