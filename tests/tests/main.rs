//! The cross-crate tests, one module per story file, linked into one test
//! binary: each binary links the whole dependency graph (the core, both
//! drivers, BLS, Noise), so ten binaries cost ten such links and ten copies
//! of the same code generation on every clean build. `tests/tests/docs.rs`
//! stays a binary of its own, small (it uses none of the workspace's crates),
//! which `.ci/check-docs` runs alone.
//!
//! `Cargo.toml` turns off cargo's one-binary-per-file discovery, so a file
//! added here runs only once it has its `mod` line below; the last test
//! fails naming any file that has none.

mod devnet;
mod fuzz_corpus;
mod loopback;
mod record_replay;
mod sim;
mod sim_budget;
mod sim_chain;
mod sim_churn;
mod sim_discovery;
mod sim_gossip;
mod sim_liars;
mod sim_reqresp;
mod sim_restart;

/// Files of `tests/tests/` that are binaries of their own (see `Cargo.toml`).
const OWN_BINARIES: &[&str] = &["main.rs", "docs.rs"];

#[test]
fn every_test_file_is_a_module_or_a_binary() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let modules: Vec<String> = include_str!("main.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
        .map(|module| format!("{module}.rs"))
        .collect();
    assert!(modules.len() >= 9, "only {modules:?} found in main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&directory).expect("tests/tests is readable") {
        let name = entry
            .expect("tests/tests is readable")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let is_rust = name.ends_with(".rs");
        if is_rust && !OWN_BINARIES.contains(&name.as_str()) && !modules.contains(&name) {
            missing.push(format!("tests/tests/{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} would never run: give each a `mod` line in tests/tests/main.rs",
        missing.join(", ")
    );
}
