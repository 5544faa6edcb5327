//! `meshsync node --config FILE` as an operator meets it: the binary is run
//! with `--print-config` (which starts no node) or with a file it must
//! refuse, and its exit status, stdout and stderr are read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meshsync_mio::testing::TempDir;

/// Runs the built `meshsync` with `arguments` in `dir`; it exits on its own
/// (no node starts in these tests: every run prints or refuses).
fn meshsync(dir: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshsync"))
        .current_dir(dir)
        .args(arguments)
        .output()
        .expect("the built binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the temp dir is writable");
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A refusal: exit status 1, nothing on stdout, exactly one line on stderr.
fn refusal(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

const BASE: &str = "listen = \"127.0.0.1:9001\"\nkey = \"node.key\"\nbody-bytes = 2048\n";

#[test]
fn a_flag_overrides_the_file() {
    let dir = TempDir::new("cli-config-override");
    write(dir.path(), "node.toml", BASE);
    let output = meshsync(
        dir.path(),
        &[
            "node",
            "--config",
            "node.toml",
            "--body-bytes",
            "64",
            "--print-config",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(printed.contains("\nbody-bytes = 64\n"), "{printed}");
    // The key no flag touched is the file's, its path the file's directory's.
    assert!(
        printed.contains("\nlisten = \"127.0.0.1:9001\"\n"),
        "{printed}"
    );
    let key = dir.path().join("node.key");
    assert!(
        printed.contains(&format!("\nkey = \"{}\"\n", key.display())),
        "{printed}"
    );
}

#[test]
fn an_unknown_key_is_refused_naming_the_key_and_the_file() {
    let dir = TempDir::new("cli-config-unknown");
    write(
        dir.path(),
        "node.toml",
        &format!("{BASE}max-connections = 9\n"),
    );
    let stderr = refusal(&meshsync(dir.path(), &["node", "--config", "node.toml"]));
    assert!(
        stderr.starts_with("error: config node.toml: unknown key `max-connections`"),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_is_refused_naming_the_key_and_the_file() {
    let dir = TempDir::new("cli-config-bad-value");
    write(
        dir.path(),
        "node.toml",
        "listen = \"127.0.0.1:9001\"\nkey = \"node.key\"\nclock-jump = \"sometimes\"\n",
    );
    // Even with --print-config: a file the node would refuse is not printed.
    let stderr = refusal(&meshsync(
        dir.path(),
        &["node", "--config", "node.toml", "--print-config"],
    ));
    assert!(
        stderr.starts_with("error: config node.toml: key `clock-jump`: \"sometimes\""),
        "{stderr}"
    );
}

#[test]
fn printed_configuration_given_back_is_the_same() {
    let dir = TempDir::new("cli-config-round-trip");
    write(
        dir.path(),
        "node.toml",
        &format!("{BASE}peer = [\"127.0.0.1:9002\"]\nproposer-key = [\"p0.key\"]\nrepair = true\n"),
    );
    let first = meshsync(
        dir.path(),
        &[
            "node",
            "--config",
            "node.toml",
            "--workers",
            "3",
            "--print-config",
        ],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    // Fed back from another directory, with no flags: the same output.
    let other = TempDir::new("cli-config-round-trip-other");
    write(other.path(), "printed.toml", &text(&first.stdout));
    let second = meshsync(
        other.path(),
        &["node", "--config", "printed.toml", "--print-config"],
    );
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), text(&first.stdout));
    assert!(text(&first.stdout).contains("\nworkers = 3\n"));
}
