//! The driver's integration tests, one module per file, linked into one
//! test binary: each binary links the whole dependency graph, so one per
//! file costs a link and a copy of the same code generation each on every
//! clean build. `store_faults.rs` stays a binary of its own: it installs a
//! process-wide logger and reads back what was logged, which must not mix
//! with other tests' lines.
//!
//! `Cargo.toml` turns off cargo's one-binary-per-file discovery, so a file
//! added here runs only once it has its `mod` line below; the last test
//! fails naming any file that has none.

mod bench_json;
// chat.rs names the example it runs `chat` too.
#[allow(clippy::module_inception)]
mod chat;
mod discovery;
mod handshake_flood;
mod node_config;
mod operations;
mod static_peers;
mod watermark_restart;

/// Files of `io-mio/tests/` that are binaries of their own (see `Cargo.toml`).
const OWN_BINARIES: &[&str] = &["main.rs", "store_faults.rs", "history_store.rs"];

#[test]
fn every_test_file_is_a_module_or_a_binary() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let modules: Vec<String> = include_str!("main.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
        .map(|module| format!("{module}.rs"))
        .collect();
    assert!(modules.len() >= 3, "only {modules:?} found in main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&directory).expect("io-mio/tests is readable") {
        let name = entry
            .expect("io-mio/tests is readable")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let is_rust = name.ends_with(".rs");
        if is_rust && !OWN_BINARIES.contains(&name.as_str()) && !modules.contains(&name) {
            missing.push(format!("io-mio/tests/{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} would never run: give each a `mod` line in io-mio/tests/main.rs",
        missing.join(", ")
    );
}
