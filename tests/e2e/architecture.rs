//! The layering the README describes, kept by a test: the wire format and the policies are
//! pure (no runtime, no command line, no metrics exporter, no I/O module), and each pipeline
//! layer knows only the next one through the `Service` trait, never another layer.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The code of a file without its comments (doc comments may name anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source file");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)
}

#[test]
fn wire_and_policy_are_pure() {
    let forbidden = [
        "tokio",
        "clap",
        "metrics::",
        "crate::metrics",
        "crate::server",
        "crate::upstream",
        "crate::pipeline",
        "crate::net",
        "crate::cache",
        "crate::k8s",
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::fs",
    ];
    let mut found = Vec::new();
    for dir in ["wire", "policy"] {
        for file in rust_files(&src(dir)) {
            let code = code(&file);
            // The stub models in policy/stubs.rs are test fixtures of the property test; they
            // too are pure.
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{} uses {word}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "impure code in wire/ or policy/:\n{}", found.join("\n"));
}

#[test]
fn pipeline_layers_do_not_import_each_other() {
    let layers = ["admission", "shape", "cache", "collapse", "aaaa", "root", "lookup"];
    let mut found = Vec::new();
    for layer in layers {
        let file = src("pipeline").join(format!("{layer}.rs"));
        let code = code(&file);
        for other in layers.iter().filter(|o| **o != layer) {
            for pattern in [format!("super::{other}::"), format!("pipeline::{other}::"), format!("use super::{other}")]
            {
                if code.contains(&pattern) {
                    found.push(format!("{layer}.rs imports {other}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "layers must meet only through Service:\n{}", found.join("\n"));
}

#[test]
fn the_order_is_written_in_one_place() {
    let m = code(&src("pipeline").join("mod.rs"));
    let chain = m.lines().find(|l| l.contains("pub type Chain")).expect("the Chain type in pipeline/mod.rs");
    let order: Vec<usize> =
        ["CacheLayer<Collapse", "Collapse<Aaaa", "Aaaa<Root", "Root<CacheLayer", "CacheLayer<Lookup"]
            .iter()
            .map(|p| chain.find(p).unwrap_or_else(|| panic!("{p} missing from {chain}")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "unexpected order: {chain}");
    for file in rust_files(&src("")) {
        if file.ends_with("pipeline/mod.rs") || file.ends_with("pipeline/tests.rs") {
            continue;
        }
        let code = code(&file);
        assert!(
            !code.contains("Collapse::new(") || file.ends_with("pipeline/collapse.rs"),
            "{} builds a layer",
            file.display()
        );
    }
}
