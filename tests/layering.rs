//! The architecture's boundaries, checked on the source (DESIGN.md "Layers and who may import
//! whom"): `domain` is pure and imports no other layer; the infrastructure adapters (`deploy`,
//! `verify`) use only the domain; the front ends (`chat`, `http`, `web`) reach the database only
//! through the engine; time is read only through the engine's clock.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)
}

/// The code of a file without its comments (a doc comment may name a layer).
fn code(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules of the crate a piece of code names: `crate::store::Tx` and
/// `use crate::{config, store::Store}` both name `store`.
fn crate_modules(code: &str) -> Vec<String> {
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let group = if let Some(inner) = rest.strip_prefix('{') {
            inner.split('}').next().unwrap_or_default()
        } else {
            rest
        };
        for item in group.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                named.push(name);
            }
            if !rest.starts_with('{') {
                break;
            }
        }
    }
    named
}

/// `(file, module)` for every use of a forbidden module under `dir`.
fn violations(dir: &str, forbidden: &[&str]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in sources(&src(dir)) {
        for module in crate_modules(&code(&file)) {
            if forbidden.contains(&module.as_str()) {
                found.push((file.display().to_string(), module));
            }
        }
    }
    found
}

#[test]
fn the_scanner_sees_plain_grouped_and_nested_paths() {
    assert_eq!(crate_modules("use crate::store::Tx;"), ["store"]);
    assert_eq!(
        crate_modules("use crate::{config::Config, store};"),
        ["config", "store"]
    );
    assert_eq!(
        crate_modules("fn f(x: crate::engine::Engine) {}"),
        ["engine"]
    );
    assert!(crate_modules("let crate_name = 1;").is_empty());
    assert_eq!(code_without_comments("a // crate::store\nb"), "a \nb");
}

fn code_without_comments(text: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("x.rs");
    fs::write(&file, text).expect("write");
    code(&file)
}

#[test]
fn domain_imports_no_other_layer() {
    let found = violations(
        "domain",
        &[
            "config", "engine", "store", "chat", "http", "deploy", "verify", "app", "metrics",
        ],
    );
    assert!(
        found.is_empty(),
        "domain reaches into other layers: {found:#?}"
    );
}

/// Infrastructure adapters (deploy backends, verification probes) use only domain types and
/// each other: the engine drives them through their ports, never the other way round.
#[test]
fn infrastructure_reaches_no_layer_above_it() {
    for adapter in ["deploy", "verify"] {
        let found = violations(
            adapter,
            &[
                "config", "engine", "store", "chat", "http", "app", "metrics",
            ],
        );
        assert!(
            found.is_empty(),
            "{adapter} reaches into other layers: {found:#?}"
        );
    }
}

#[test]
fn front_ends_reach_the_database_only_through_the_engine() {
    for front_end in ["chat", "http", "web"] {
        let found = violations(front_end, &["store"]);
        assert!(found.is_empty(), "{front_end} uses the store: {found:#?}");
    }
}

#[test]
fn time_is_read_only_through_the_clock() {
    let clock = src("engine").join("clock.rs");
    let mut found = Vec::new();
    for file in sources(&src("")) {
        let code = code(&file);
        for needle in [
            "Utc::now()",
            "Local::now()",
            "SystemTime::now()",
            "wall_now",
        ] {
            if code.contains(needle) && (file != clock || needle == "wall_now") {
                found.push((file.display().to_string(), needle));
            }
        }
    }
    assert!(found.is_empty(), "time read outside the clock: {found:#?}");
}
