//! The layering rule of the style guide: the two backends share configurations, records and
//! word layouts through `src/kernel` (and `src/affine.rs`) and never import each other, so a
//! kernel's CPU twin can be read, built and changed without the GPU launcher, and back.

use std::path::Path;

/// Every line of the `.rs` files under `dir` that names module `other` of the crate.
fn references(dir: &Path, other: &str) -> Vec<String> {
    let needles = [
        format!("crate::{other}"),
        format!("wgquant::{other}"),
        format!("super::super::{other}"),
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source file");
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn gpu_and_cpu_never_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = references(&src.join("gpu"), "cpu");
    found.extend(references(&src.join("cpu"), "gpu"));
    assert!(
        found.is_empty(),
        "the backends import each other (share through src/kernel instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_rule_can_fail() {
    // The scan sees references where there are some: the tests import `wgquant::gpu`.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    assert!(!references(&tests, "gpu").is_empty());
}
