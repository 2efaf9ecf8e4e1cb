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

/// The README's annotation table is generated from the one definition the code validates with
/// (`podns::k8s::annotations::ANNOTATIONS`). `PODNS_BLESS=1` rewrites it.
#[test]
fn annotation_table_matches_the_code() {
    const BEGIN: &str =
        "<!-- annotations:begin (generated from src/k8s/annotations.rs; tests/e2e/docs.rs checks it) -->\n";
    const END: &str = "<!-- annotations:end -->";
    let text = readme();
    let start = text.find(BEGIN).expect("README has the annotations:begin marker") + BEGIN.len();
    let end = text[start..].find(END).expect("README has the annotations:end marker") + start;
    let want = podns::k8s::annotations::markdown_table();
    if std::env::var_os("PODNS_BLESS").is_some() {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"), updated).unwrap();
        return;
    }
    assert_eq!(&text[start..end], want, "README annotation table is stale (PODNS_BLESS=1 cargo test --test docs)");
    for a in podns::k8s::annotations::ANNOTATIONS {
        assert!(text[start..end].contains(&format!("`{}`", a.name)));
    }
}

/// The subcommands' flags are documented too.
#[test]
fn every_subcommand_flag_is_documented() {
    let readme = readme();
    for sub in ["inject", "uninject", "webhook", "capture-init"] {
        let out = Command::new(env!("CARGO_BIN_EXE_podns")).args([sub, "--help"]).output().expect("run podns");
        assert!(out.status.success(), "podns {sub} --help");
        let help = String::from_utf8(out.stdout).unwrap();
        let missing: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.', ')', ':']))
            .filter(|w| !matches!(*w, "--help" | "--version" | "--upstream=") && !w.contains('='))
            .filter(|f| !readme.contains(&format!("`{f}")) && !readme.contains(&format!(", `{f}")))
            .collect();
        assert!(missing.is_empty(), "podns {sub}: flags missing from README: {missing:?}");
    }
}
