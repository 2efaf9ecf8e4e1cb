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

/// The top-level module a source file belongs to (`src/pipeline/cache.rs` → `pipeline`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src("")).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = rust_files(&src(""));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    for file in &files {
        let m = module_of(file);
        if m == "lib" || m == "main" {
            continue; // the roots: they assemble everything
        }
        let code = code(file);
        for word in code.split("crate::").skip(1) {
            let target: String =
                word.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if target != m && modules.contains(&target) {
                edges.entry(m.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle between top-level modules: {}\n{edges:?}", cycle.join(" -> "));
        }
    }
    assert!(edges.get("pipeline").is_some_and(|e| e.contains("upstream")), "the graph was read: {edges:?}");
    assert!(!edges.get("policy").is_some_and(|e| e.contains("pipeline")), "{edges:?}");
}
