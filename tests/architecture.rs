//! The floor plan, checked: the core's modules import one another in one direction only (no cycle, so each
//! can be read and tested from the leaves up), and the core names no host ABI. Cargo already keeps the
//! glue crates' dependencies (proxy-wasm, wit-bindgen, SQLite, clap) out of the core's manifest; this test
//! keeps the inside of `src/` in order. Test code (`#[cfg(test)]` tails, `*tests.rs`, `testing.rs`) is
//! exempt: it may reach anywhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../src"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The non-test code of each core file, by top-level module (`src/order/lifecycle.rs` → `order`).
fn core_code() -> Vec<(String, String)> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if rel == "lib.rs" || name.ends_with("tests.rs") || name == "testing.rs" {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push((module, code));
    }
    out
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in core_code() {
        let deps = g.entry(module.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            let target: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !target.is_empty() && target != module {
                deps.insert(target);
            }
        }
    }
    g
}

#[test]
fn core_modules_import_in_one_direction() {
    let g = import_graph();
    assert!(g.len() >= 10, "read too few modules: {g:?}");
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_order_rule_lives_in_the_order_domain() {
    let g = import_graph();
    // The leaves stay leaves: the error type and the parsers it wraps import nothing that imports them.
    for leaf in [
        "tracecontext",
        "template",
        "jsonscan",
        "text",
        "metrics",
        "host",
    ] {
        assert!(
            g.get(leaf).is_none_or(BTreeSet::is_empty),
            "{leaf} should be a leaf: imports {:?}",
            g[leaf]
        );
    }
    assert_eq!(
        g["error"],
        BTreeSet::from(["jsonscan".to_string(), "template".to_string()])
    );
    // Only the order domain spells the status rule's attribute names.
    for (module, code) in core_code() {
        if module == "order" {
            continue;
        }
        for name in [
            "\"order.status\"",
            "\"order.status.attempted\"",
            "\"order.status_changed\"",
        ] {
            assert!(
                !code.contains(name),
                "{module} spells {name}: use order::attrs"
            );
        }
    }
}

#[test]
fn the_core_names_no_host_abi() {
    for (module, code) in core_code() {
        for abi in ["proxy_wasm", "wit_bindgen", "rusqlite", "clap::"] {
            assert!(!code.contains(abi), "{module} names {abi}");
        }
    }
}
