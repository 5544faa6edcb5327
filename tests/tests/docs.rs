//! The docs stay true where a machine can tell.
//!
//! README.md, ARCHITECTURE.md and every `docs/*.md` are read as text, and
//! each check fails naming the file, the line and what is wrong:
//! - every repository path they name in backticks or as a link target
//!   exists (`core/src/...`, `io-mio/...`, `sim/...`, `docs/...`, `.ci/...`,
//!   `fuzz/...`, `tests/...`, `scripts/...`, `benches/...`, top-level
//!   `*.md`, and module paths such as
//!   `node/rpc.rs` under `core/src`, `io-mio/src` or `sim/src`);
//! - every flag of a `meshsync …` or `meshsync-sim …` command line (a shell
//!   block, `cargo run -p … -- …`, `target/…/meshsync-sim …`, or an inline
//!   span) is one the `--help` of that very subcommand lists, and so is
//!   every flag the README names in its prose, against the subcommand of
//!   the command line before it;
//! - README.md's data-flow diagram is the one in `core/src/lib.rs`'s
//!   crate doc, line for line;
//! - `docs/README.md` names every file of `docs/`.
//!
//! The flags are checked against the built binaries, found beside this
//! test's own executable (`target/<profile>/`). `cargo test --workspace`
//! builds both before running any test, because `io-mio` and `sim` have
//! integration tests of their own; run alone, this test needs
//! `cargo build --workspace --bins` first, and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a path named in the docs may start, relative to the repository root.
const PATH_PREFIXES: &[&str] = &[
    "core/", "io-mio/", "sim/", "docs/", ".ci/", "fuzz/", "tests/", "scripts/", "benches/",
];
/// Where a module path such as `node/rpc.rs` may live.
const SOURCE_ROOTS: &[&str] = &["core/src", "io-mio/src", "sim/src"];
/// The binaries whose flags the docs use, and the package that builds each.
const BINARIES: &[(&str, &str)] = &[
    ("meshsync", "meshsync-mio"),
    ("meshsync-sim", "meshsync-sim"),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_path_buf()
}

/// README.md, ARCHITECTURE.md and every `docs/*.md`, as (name, text).
fn doc_files(root: &Path) -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_owned(), "ARCHITECTURE.md".to_owned()];
    let mut in_docs: Vec<String> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    in_docs.sort();
    names.extend(in_docs);
    names
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(root.join(&name))
                .unwrap_or_else(|error| panic!("cannot read {name}: {error}"));
            (name, text)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Reading Markdown: fenced blocks, inline code spans, links.

/// A fenced block: its info string, the line number (1-based) of its first
/// content line, and its lines.
struct Fence {
    info: String,
    first_line: usize,
    lines: Vec<String>,
}

/// A piece of inline text: a code span or a link target, with its line.
struct Inline {
    line: usize,
    text: String,
}

struct Markdown {
    fences: Vec<Fence>,
    spans: Vec<Inline>,
    links: Vec<Inline>,
}

/// Splits `text` into fenced blocks and paragraphs, and finds the code spans
/// and link targets of the paragraphs. A span may run over a line break
/// within its paragraph, as Markdown allows; it is reported at the line
/// where it opens, with the line break read as a space.
fn read_markdown(text: &str) -> Markdown {
    let mut fences = Vec::new();
    let mut paragraphs: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut open_fence: Option<Fence> = None;
    let mut paragraph: Option<(usize, Vec<&str>)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(fence) = open_fence.as_mut() {
            if line.trim_start().starts_with("```") {
                fences.push(open_fence.take().expect("a fence is open"));
            } else {
                fence.lines.push(line.to_owned());
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            paragraphs.extend(paragraph.take());
            open_fence = Some(Fence {
                info: info.trim().to_owned(),
                first_line: number + 1,
                lines: Vec::new(),
            });
        } else if line.trim().is_empty() {
            paragraphs.extend(paragraph.take());
        } else {
            paragraph.get_or_insert((number, Vec::new())).1.push(line);
        }
    }
    paragraphs.extend(paragraph);

    let mut spans = Vec::new();
    let mut links = Vec::new();
    for (first_line, lines) in paragraphs {
        let joined = lines.join("\n");
        let line_at = |offset: usize| first_line + joined[..offset].matches('\n').count();
        let mut rest_at = 0;
        while let Some(open) = joined[rest_at..].find('`') {
            let open = rest_at + open;
            let Some(close) = joined[open + 1..].find('`') else {
                break;
            };
            let close = open + 1 + close;
            spans.push(Inline {
                line: line_at(open),
                text: joined[open + 1..close].replace('\n', " "),
            });
            rest_at = close + 1;
        }
        let mut rest_at = 0;
        while let Some(at) = joined[rest_at..].find("](") {
            let start = rest_at + at + 2;
            let Some(end) = joined[start..].find(')') else {
                break;
            };
            links.push(Inline {
                line: line_at(start),
                text: joined[start..start + end].to_owned(),
            });
            rest_at = start + end;
        }
    }
    Markdown {
        fences,
        spans,
        links,
    }
}

// ---------------------------------------------------------------------------
// (a) Paths.

/// The part of a named path that must exist: up to its first placeholder
/// (`TARGET`, `DIR`, `<i>`, `*`, `...`), without a `:line` or `#anchor`.
fn checkable_part(path: &str) -> String {
    let path = path.split(['#', ':']).next().unwrap_or("");
    let mut kept = String::new();
    for component in path.split_inclusive('/') {
        let name = component.trim_end_matches('/');
        let placeholder = name.contains(['<', '>', '*', '{', '}', '$'])
            || name.contains("...")
            || (name.chars().any(|c| c.is_ascii_uppercase())
                && !name.chars().any(|c| c.is_ascii_lowercase()));
        if placeholder {
            break;
        }
        kept.push_str(component);
    }
    kept
}

/// What a code span names, if it is a repository path: where it must exist
/// (any of the candidates).
fn span_path_candidates(span: &str) -> Option<Vec<PathBuf>> {
    let span = span.trim();
    if span.is_empty() || span.contains(char::is_whitespace) {
        return None;
    }
    if PATH_PREFIXES.iter().any(|prefix| span.starts_with(prefix)) {
        return Some(vec![PathBuf::from(checkable_part(span))]);
    }
    let top_level_doc = span.strip_suffix(".md").is_some_and(|stem| {
        !stem.is_empty() && stem.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    });
    if top_level_doc {
        return Some(vec![PathBuf::from(span)]);
    }
    // A module path: `node/rpc.rs`, `reqresp/`, `sync/fuzzing.rs`.
    let module_like = span.contains('/')
        && !span.starts_with('/')
        && (span.ends_with(".rs") || span.ends_with('/'))
        && span.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '/' || c == '.'
        });
    if module_like {
        return Some(
            SOURCE_ROOTS
                .iter()
                .map(|source_root| Path::new(source_root).join(span))
                .collect(),
        );
    }
    None
}

/// Problems with the paths `file` (named relative to `root`) names.
fn path_problems(root: &Path, file: &str, text: &str) -> Vec<String> {
    let markdown = read_markdown(text);
    let mut problems = Vec::new();
    for span in &markdown.spans {
        let Some(candidates) = span_path_candidates(&span.text) else {
            continue;
        };
        if !candidates
            .iter()
            .any(|candidate| root.join(candidate).exists())
        {
            problems.push(format!(
                "{file}:{}: `{}` does not exist (looked for {})",
                span.line,
                span.text,
                candidates
                    .iter()
                    .map(|candidate| candidate.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    for link in &markdown.links {
        let target = link.text.trim();
        if target.is_empty()
            || target.starts_with('#')
            || target.contains("://")
            || target.starts_with("mailto:")
        {
            continue;
        }
        let target = target.split('#').next().unwrap_or("");
        if !root.join(base).join(target).exists() {
            problems.push(format!(
                "{file}:{}: link target `{target}` does not exist (relative to {})",
                link.line,
                if base.as_os_str().is_empty() {
                    "the repository root".to_owned()
                } else {
                    base.display().to_string()
                }
            ));
        }
    }
    problems
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = repo_root();
    let problems: Vec<String> = doc_files(&root)
        .iter()
        .flat_map(|(file, text)| path_problems(&root, file, text))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn docs_readme_lists_every_file_of_docs() {
    let root = repo_root();
    let index = fs::read_to_string(root.join("docs/README.md")).expect("docs/README.md exists");
    let spans: BTreeSet<String> = read_markdown(&index)
        .spans
        .into_iter()
        .map(|span| span.text)
        .collect();
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let name = entry.expect("docs/ is readable").file_name();
        let named = format!("docs/{}", name.to_string_lossy());
        if !spans.contains(&named) {
            missing.push(format!("docs/README.md: does not name `{named}`"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

// ---------------------------------------------------------------------------
// (b) Flags.

/// What `--help` of one (sub)command lists.
#[derive(Clone, Debug, Default, PartialEq)]
struct Help {
    flags: BTreeSet<String>,
    subcommands: BTreeSet<String>,
}

/// Reads clap's help text: the options (`-h, --help`, `--nodes <NODES>`) at
/// the start of a line, and the subcommands under `Commands:`.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            in_commands = false;
            continue;
        }
        if trimmed == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands && line.starts_with(' ') {
            if let Some(name) = trimmed.split_whitespace().next() {
                help.subcommands.insert(name.to_owned());
            }
            continue;
        }
        in_commands = false;
        if trimmed.starts_with('-') {
            for token in trimmed.split_whitespace() {
                if token.starts_with('-') {
                    let flag = token.trim_end_matches(',');
                    // `--repair[=<BOOL>]`: a flag whose value is optional.
                    let flag = flag.split(['=', '[']).next().unwrap_or(flag);
                    help.flags.insert(flag.to_owned());
                } else if !(token.starts_with('<') || token.starts_with('[')) {
                    break;
                }
            }
        }
    }
    help
}

/// A command line of one of [`BINARIES`] found in the docs.
#[derive(Debug, PartialEq)]
struct CommandLine {
    line: usize,
    binary: String,
    /// The words after the binary, up to a pipe, a redirect or a comment.
    arguments: Vec<String>,
}

/// The command line in `words`, if it runs one of [`BINARIES`]: the binary
/// itself (`meshsync`, `target/release/meshsync-sim`) or
/// `cargo run ... -p PACKAGE ... -- ARGUMENTS`.
fn command_line(line: usize, words: &[&str]) -> Option<CommandLine> {
    let words: Vec<&str> = words
        .iter()
        .copied()
        .take_while(|word| !word.starts_with('#') && !["|", ";", "&&", ">", "2>"].contains(word))
        .collect();
    let binary_named = |word: &str| {
        BINARIES
            .iter()
            .find(|(binary, _)| word == *binary || word.ends_with(&format!("/{binary}")))
            .map(|(binary, _)| (*binary).to_owned())
    };
    let (binary, rest) = if words.first() == Some(&"cargo") && words.get(1) == Some(&"run") {
        let package_at = words
            .iter()
            .position(|word| *word == "-p" || *word == "--package")?;
        let package = words.get(package_at + 1)?;
        // `--example NAME` runs an example, not the package's binary.
        let separator = words.iter().position(|word| *word == "--")?;
        if words[..separator].contains(&"--example") {
            return None;
        }
        let binary = BINARIES
            .iter()
            .find(|(_, crate_name)| crate_name == package)
            .map(|(binary, _)| (*binary).to_owned())?;
        (binary, &words[separator + 1..])
    } else {
        let at = words.iter().position(|word| binary_named(word).is_some())?;
        // Only a word in command position: first, or after an environment assignment.
        if !words[..at].iter().all(|word| word.contains('=')) {
            return None;
        }
        (binary_named(words[at])?, &words[at + 1..])
    };
    Some(CommandLine {
        line,
        binary,
        arguments: rest.iter().map(|word| (*word).to_owned()).collect(),
    })
}

/// The flag a word is, if any: `--nodes`, `[--floodsub]`, `--x=1`, `-h`.
fn flag_of(word: &str) -> Option<String> {
    let word = word.trim_start_matches('[').trim_end_matches([']', ',']);
    let flag = word.split('=').next().unwrap_or(word);
    let second = flag.chars().nth(1)?;
    (flag.starts_with('-') && (second == '-' || second.is_ascii_alphabetic()) && flag != "--")
        .then(|| flag.to_owned())
}

/// A subcommand as the docs call it: the binary and its subcommand path.
type Invocation = (String, Vec<String>);

/// Every command line in a file's shell blocks (with `\` continuations
/// joined) and inline spans, in order of their lines; and each inline span
/// that is no command line but names flags (README prose such as
/// `--slot-ms MS`), with those flags.
fn commands_and_prose_flags(text: &str) -> (Vec<CommandLine>, Vec<(usize, Vec<String>)>) {
    let markdown = read_markdown(text);
    let mut commands = Vec::new();
    for fence in &markdown.fences {
        if !["sh", "bash", "shell", "console"].contains(&fence.info.as_str()) {
            continue;
        }
        let mut joined = String::new();
        let mut start = fence.first_line;
        for (index, line) in fence.lines.iter().enumerate() {
            if joined.is_empty() {
                start = fence.first_line + index;
            }
            match line.trim_end().strip_suffix('\\') {
                Some(continued) => {
                    joined.push_str(continued);
                    joined.push(' ');
                }
                None => {
                    joined.push_str(line);
                    let words: Vec<&str> = joined.split_whitespace().collect();
                    commands.extend(command_line(start, &words));
                    joined.clear();
                }
            }
        }
    }
    let mut prose = Vec::new();
    for span in &markdown.spans {
        let words: Vec<&str> = span.text.split_whitespace().collect();
        if let Some(command) = command_line(span.line, &words) {
            commands.push(command);
        } else if !words.contains(&"cargo") {
            let flags: Vec<String> = words
                .iter()
                .filter(|word| word.starts_with("--"))
                .filter_map(|word| flag_of(word))
                .collect();
            if !flags.is_empty() {
                prose.push((span.line, flags));
            }
        }
    }
    commands.sort_by_key(|command| command.line);
    (commands, prose)
}

/// Problems with the flags of `file`'s command lines (and, if
/// `check_prose`, of its prose), asking `help` what each subcommand lists.
fn flag_problems(
    file: &str,
    text: &str,
    check_prose: bool,
    help: &mut dyn FnMut(&Invocation) -> Result<Help, String>,
) -> Vec<String> {
    let (commands, prose) = commands_and_prose_flags(text);
    let mut problems = Vec::new();
    // The subcommand each command line runs, by line, for the prose after it.
    let mut contexts: Vec<(usize, Invocation)> = Vec::new();
    for command in &commands {
        let mut path = Vec::new();
        let mut current = match help(&(command.binary.clone(), path.clone())) {
            Ok(current) => current,
            Err(error) => {
                problems.push(format!("{file}:{}: {error}", command.line));
                continue;
            }
        };
        let mut arguments = command.arguments.iter().peekable();
        let mut known = true;
        // The subcommand path: leading words while the help lists subcommands.
        while let Some(word) = arguments.peek() {
            if current.subcommands.is_empty() || word.starts_with('-') {
                break;
            }
            if !current.subcommands.contains(word.as_str()) {
                problems.push(format!(
                    "{file}:{}: `{}` has no subcommand `{word}` (it has: {})",
                    command.line,
                    shown(&command.binary, &path),
                    current
                        .subcommands
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                known = false;
                break;
            }
            path.push((*word).clone());
            arguments.next();
            current = match help(&(command.binary.clone(), path.clone())) {
                Ok(current) => current,
                Err(error) => {
                    problems.push(format!("{file}:{}: {error}", command.line));
                    known = false;
                    break;
                }
            };
        }
        if !known {
            continue;
        }
        for flag in arguments.filter_map(|word| flag_of(word)) {
            if !current.flags.contains(&flag) {
                problems.push(format!(
                    "{file}:{}: `{}` does not accept `{flag}` (its --help lists: {})",
                    command.line,
                    shown(&command.binary, &path),
                    current.flags.iter().cloned().collect::<Vec<_>>().join(" ")
                ));
            }
        }
        // A bare `meshsync` in prose names the binary; it sets no context.
        if !command.arguments.is_empty() {
            contexts.push((command.line, (command.binary.clone(), path)));
        }
    }
    if !check_prose {
        return problems;
    }
    for (line, flags) in prose {
        let Some((_, invocation)) = contexts.iter().rev().find(|(at, _)| *at <= line) else {
            problems.push(format!(
                "{file}:{line}: flags {flags:?} come before any command line to check them against"
            ));
            continue;
        };
        let current = match help(invocation) {
            Ok(current) => current,
            Err(error) => {
                problems.push(format!("{file}:{line}: {error}"));
                continue;
            }
        };
        for flag in flags {
            if !current.flags.contains(&flag) {
                problems.push(format!(
                    "{file}:{line}: `{flag}` is not a flag of `{}`, the command line before it (its --help lists: {})",
                    shown(&invocation.0, &invocation.1),
                    current.flags.iter().cloned().collect::<Vec<_>>().join(" ")
                ));
            }
        }
    }
    problems
}

/// `meshsync-sim run`, or `meshsync-sim` alone.
fn shown(binary: &str, path: &[String]) -> String {
    std::iter::once(binary.to_owned())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The directory cargo put this test in, which holds the workspace's binaries.
fn binary_directory() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/docs-HASH -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("a test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Runs `BINARY SUBCOMMAND... --help` from the built binaries, once each.
fn built_help(
    cache: &mut BTreeMap<Invocation, Help>,
    invocation: &Invocation,
) -> Result<Help, String> {
    if let Some(help) = cache.get(invocation) {
        return Ok(help.clone());
    }
    let (binary, path) = invocation;
    let package = BINARIES
        .iter()
        .find(|(name, _)| name == binary)
        .map(|(_, package)| *package)
        .ok_or_else(|| format!("`{binary}` is not a binary of this workspace"))?;
    let exe = binary_directory().join(format!("{binary}{}", std::env::consts::EXE_SUFFIX));
    if !exe.exists() {
        return Err(format!(
            "{} is not built; `cargo test --workspace` builds it, or run `cargo build -p {package} --bin {binary}` first",
            exe.display()
        ));
    }
    let output = Command::new(&exe)
        .args(path)
        .arg("--help")
        .output()
        .map_err(|error| format!("cannot run {}: {error}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{binary} {} --help` failed: {}",
            path.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let help = parse_help(&String::from_utf8_lossy(&output.stdout));
    cache.insert(invocation.clone(), help.clone());
    Ok(help)
}

#[test]
fn every_flag_the_docs_use_is_accepted_by_its_subcommand() {
    let root = repo_root();
    let mut cache = BTreeMap::new();
    let mut help = |invocation: &Invocation| built_help(&mut cache, invocation);
    let mut problems = Vec::new();
    let mut commands_seen = 0;
    for (file, text) in doc_files(&root) {
        commands_seen += commands_and_prose_flags(&text).0.len();
        problems.extend(flag_problems(&file, &text, file == "README.md", &mut help));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The reader must find the README's commands, or this test checks nothing.
    assert!(
        commands_seen >= 20,
        "only {commands_seen} command lines found"
    );
}

// ---------------------------------------------------------------------------
// (c) The diagram.

/// The first ```text block of the crate doc, without the `//! ` prefix.
fn crate_doc_diagram(lib_rs: &str) -> Option<(usize, Vec<String>)> {
    let doc: Vec<(usize, String)> = lib_rs
        .lines()
        .enumerate()
        .map_while(|(index, line)| {
            let rest = line.strip_prefix("//!")?;
            Some((index + 1, rest.strip_prefix(' ').unwrap_or(rest).to_owned()))
        })
        .collect();
    let open = doc.iter().position(|(_, line)| line.trim() == "```text")?;
    let close = open
        + 1
        + doc[open + 1..]
            .iter()
            .position(|(_, line)| line.trim() == "```")?;
    Some((
        doc[open].0 + 1,
        doc[open + 1..close]
            .iter()
            .map(|(_, line)| line.clone())
            .collect(),
    ))
}

/// README's diagram: its first ```text block that shows `Node::handle(`.
fn readme_diagram(readme: &str) -> Option<(usize, Vec<String>)> {
    read_markdown(readme)
        .fences
        .into_iter()
        .find(|fence| {
            fence.info == "text"
                && fence
                    .lines
                    .iter()
                    .any(|line| line.contains("Node::handle("))
        })
        .map(|fence| (fence.first_line, fence.lines))
}

fn diagram_problems(readme: &str, lib_rs: &str) -> Vec<String> {
    let Some((lib_line, lib)) = crate_doc_diagram(lib_rs) else {
        return vec!["core/src/lib.rs: no ```text diagram in the crate doc".to_owned()];
    };
    let Some((readme_line, readme)) = readme_diagram(readme) else {
        return vec!["README.md: no ```text block showing `Node::handle(`".to_owned()];
    };
    let trimmed = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|line| line.trim_end().to_owned())
            .collect()
    };
    let (lib, readme) = (trimmed(&lib), trimmed(&readme));
    let mut problems = Vec::new();
    for index in 0..lib.len().max(readme.len()) {
        let (ours, theirs) = (readme.get(index), lib.get(index));
        if ours != theirs {
            problems.push(format!(
                "README.md:{}: the diagram differs from core/src/lib.rs:{}; copy it from there\n  README.md:       {}\n  core/src/lib.rs: {}",
                readme_line + index,
                lib_line + index,
                ours.map_or("(no line)", String::as_str),
                theirs.map_or("(no line)", String::as_str)
            ));
            break;
        }
    }
    problems
}

#[test]
fn readme_diagram_is_the_crate_docs() {
    let root = repo_root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md exists");
    let lib_rs = fs::read_to_string(root.join("core/src/lib.rs")).expect("core/src/lib.rs exists");
    let problems = diagram_problems(&readme, &lib_rs);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// (d) Constants: what docs/protocol.md and docs/files.md state is the code's.

/// The units a stated value may end in.
const DOC_UNITS: &[&str] = &["bytes", "entries", "KiB", "MiB", "ms", "s", "min", "h"];

/// A value as the docs write it: an optional sign (`−` or `-`), digits
/// grouped with spaces, and an optional unit (`bytes`, `entries`, `KiB`,
/// `MiB`, `ms`, `s`, `min`, `h`), in the unit's base: bytes, or
/// microseconds for a duration. `None` for anything else ("5 / 15 s").
fn parse_doc_value(text: &str) -> Option<i128> {
    let text = text.trim();
    let (sign, text) = match text.strip_prefix('−').or_else(|| text.strip_prefix('-')) {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let (unit, digits) = match words.last() {
        Some(last) if last.chars().all(|c| c.is_ascii_digit()) => (1, &words[..]),
        Some(&"bytes") | Some(&"entries") => (1, &words[..words.len() - 1]),
        Some(&"KiB") => (1 << 10, &words[..words.len() - 1]),
        Some(&"MiB") => (1 << 20, &words[..words.len() - 1]),
        Some(&"ms") => (1_000, &words[..words.len() - 1]),
        Some(&"s") => (1_000_000, &words[..words.len() - 1]),
        Some(&"min") => (60_000_000, &words[..words.len() - 1]),
        Some(&"h") => (3_600_000_000, &words[..words.len() - 1]),
        _ => return None,
    };
    if digits.is_empty() || !digits.iter().all(|w| w.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    let number: i128 = digits.concat().parse().ok()?;
    Some(sign * number * unit)
}

/// The value cell of the table row that names `name` first (`| `NAME` | value |`).
fn table_value(text: &str, name: &str) -> Option<String> {
    let row = format!("| `{name}` | ");
    let start = text.find(&row)? + row.len();
    let end = start + text[start..].find(" |")?;
    Some(text[start..end].to_owned())
}

/// Every value stated just before `(`NAME``, as in "4 096 bytes
/// (`KEY_FILE_BYTES_MAX`)" or "1..=256 (`FINALITY_DEPTH_SLOTS_MAX`)": the
/// words before the parenthesis, back to the first that is no part of a
/// number or unit. Line breaks count as spaces.
fn stated_values(text: &str, name: &str) -> Vec<Option<i128>> {
    let flat = text.replace('\n', " ");
    let marker = format!("(`{name}`");
    let mut values = Vec::new();
    let mut from = 0;
    while let Some(at) = flat[from..].find(&marker) {
        let at = from + at;
        let before: Vec<&str> = flat[..at].split_whitespace().collect();
        // Keep the trailing words that are digits or a unit; a range's
        // upper end ("1..=256") counts from its last "=".
        let mut kept: Vec<&str> = Vec::new();
        for (index, &original) in before.iter().rev().enumerate() {
            let word = original.rsplit("..=").next().unwrap_or(original);
            let word = word.trim_start_matches('+');
            let unit = index == 0 && DOC_UNITS.contains(&word);
            let number = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit());
            if !(unit || number) {
                break;
            }
            kept.insert(0, word);
            if original.contains("..=") {
                break; // The lower end of the range is not part of the value.
            }
        }
        values.push(parse_doc_value(&kept.join(" ")));
        from = at + marker.len();
    }
    values
}

fn duration_micros(duration: meshsync_core::Duration) -> i128 {
    i128::try_from(duration.as_micros()).expect("a limit fits")
}

/// Problems with `(name, code value)` pairs against `text`'s §6-style table.
fn table_problems(file: &str, text: &str, expected: &[(&str, i128)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, code) in expected {
        match table_value(text, name) {
            None => problems.push(format!("{file}: no table row names `{name}`")),
            Some(cell) => match parse_doc_value(&cell) {
                Some(value) if value == *code => {}
                parsed => problems.push(format!(
                    "{file}: `{name}` is {cell:?} ({parsed:?}) in the table, {code} in the code"
                )),
            },
        }
    }
    problems
}

/// Problems with `(name, code value)` pairs stated as "VALUE (`NAME`)".
fn stated_problems(file: &str, text: &str, expected: &[(&str, i128)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, code) in expected {
        let values = stated_values(text, name);
        if values.is_empty() {
            problems.push(format!(
                "{file}: never states `{name}` as \"VALUE (`{name}`)\""
            ));
        }
        for value in values {
            if value != Some(*code) {
                problems.push(format!(
                    "{file}: states `{name}` as {value:?}, the code has {code}"
                ));
            }
        }
    }
    problems
}

#[test]
fn the_protocol_limits_table_states_the_codes_constants() {
    use meshsync_core::limits as node;
    use meshsync_core::peer::{self, score};
    use meshsync_core::reqresp::limits as rr;
    let text = fs::read_to_string(repo_root().join("docs/protocol.md")).expect("protocol.md");
    let bytes = |value: usize| value as i128;
    let micros = duration_micros;
    let points = |score: score::Score| i128::from(score.as_micropoints() / 1_000_000);
    let expected: Vec<(&str, i128)> = vec![
        (
            "NOISE_MESSAGE_BYTES_MAX",
            bytes(node::NOISE_MESSAGE_BYTES_MAX),
        ),
        (
            "NOISE_PLAINTEXT_BYTES_MAX",
            bytes(node::NOISE_PLAINTEXT_BYTES_MAX),
        ),
        ("MESSAGE_BYTES_MAX", bytes(node::MESSAGE_BYTES_MAX)),
        (
            "HANDSHAKE_PAYLOAD_BYTES_MAX",
            bytes(node::HANDSHAKE_PAYLOAD_BYTES_MAX),
        ),
        (
            "HANDSHAKE_MESSAGE_BYTES_MAX",
            bytes(node::HANDSHAKE_MESSAGE_BYTES_MAX),
        ),
        ("HANDSHAKE_TIMEOUT", micros(node::HANDSHAKE_TIMEOUT)),
        ("DIAL_TIMEOUT", micros(node::DIAL_TIMEOUT)),
        ("PING_INTERVAL", micros(node::PING_INTERVAL)),
        ("PEER_SILENCE_TIMEOUT", micros(node::PEER_SILENCE_TIMEOUT)),
        (
            "STATUS_INTERVAL",
            micros(meshsync_core::node::STATUS_INTERVAL),
        ),
        ("PEERS_MAX", bytes(node::PEERS_MAX)),
        ("PEERS_TARGET", bytes(peer::gater::PEERS_TARGET)),
        ("PEERS_INBOUND_MAX", bytes(peer::gater::PEERS_INBOUND_MAX)),
        (
            "CONNECTIONS_PER_IP_MAX",
            bytes(peer::gater::CONNECTIONS_PER_IP_MAX),
        ),
        (
            "HANDSHAKES_IN_PROGRESS_MAX",
            bytes(node::HANDSHAKES_IN_PROGRESS_MAX),
        ),
        ("HANDSHAKES_PER_IP_MAX", bytes(node::HANDSHAKES_PER_IP_MAX)),
        (
            "HANDSHAKES_UNDER_PRESSURE_MIN",
            bytes(node::HANDSHAKES_UNDER_PRESSURE_MIN),
        ),
        (
            "HANDSHAKE_TIMEOUT_UNDER_PRESSURE",
            micros(node::HANDSHAKE_TIMEOUT_UNDER_PRESSURE),
        ),
        (
            "OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX",
            bytes(node::OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX),
        ),
        (
            "PENDING_SEND_BYTES_MAX",
            bytes(node::PENDING_SEND_BYTES_MAX),
        ),
        (
            "PROTOCOL_NAME_BYTES_MAX",
            bytes(rr::PROTOCOL_NAME_BYTES_MAX),
        ),
        (
            "APPLICATION_PROTOCOLS_MAX",
            bytes(rr::APPLICATION_PROTOCOLS_MAX),
        ),
        (
            "APPLICATION_REQUEST_BYTES_MAX",
            bytes(rr::APPLICATION_REQUEST_BYTES_MAX),
        ),
        (
            "APPLICATION_RESPONSE_BYTES_MAX",
            bytes(rr::APPLICATION_RESPONSE_BYTES_MAX),
        ),
        (
            "BLOCK_BYTES_MAX",
            bytes(meshsync_core::chain::block::BLOCK_BYTES_MAX),
        ),
        (
            "RESPONSE_PAYLOAD_BYTES_MAX",
            bytes(rr::RESPONSE_PAYLOAD_BYTES_MAX),
        ),
        (
            "ERROR_MESSAGE_BYTES_MAX",
            bytes(rr::ERROR_MESSAGE_BYTES_MAX),
        ),
        (
            "BLOCKS_PER_RANGE_REQUEST_MAX",
            i128::from(rr::BLOCKS_PER_RANGE_REQUEST_MAX),
        ),
        ("ROOTS_PER_REQUEST_MAX", bytes(rr::ROOTS_PER_REQUEST_MAX)),
        ("METADATA_TOPICS_MAX", bytes(rr::METADATA_TOPICS_MAX)),
        (
            "TOPIC_BYTES_MAX",
            bytes(meshsync_core::types::TOPIC_BYTES_MAX),
        ),
        (
            "REQUESTS_IN_FLIGHT_PER_PEER_MAX",
            bytes(rr::REQUESTS_IN_FLIGHT_PER_PEER_MAX),
        ),
        (
            "PENDING_REQUESTS_PER_PEER_MAX",
            bytes(rr::PENDING_REQUESTS_PER_PEER_MAX),
        ),
        (
            "INBOUND_REQUESTS_PER_PEER_MAX",
            bytes(rr::INBOUND_REQUESTS_PER_PEER_MAX),
        ),
        (
            "RESPONSE_FIRST_CHUNK_TIMEOUT",
            micros(rr::RESPONSE_FIRST_CHUNK_TIMEOUT),
        ),
        ("RESPONSE_TIMEOUT", micros(rr::RESPONSE_TIMEOUT)),
        ("INBOUND_ANSWER_TIMEOUT", micros(rr::INBOUND_ANSWER_TIMEOUT)),
        ("RATE_LIMITED_PEERS_MAX", bytes(rr::RATE_LIMITED_PEERS_MAX)),
        ("SCORE_HALF_LIFE", micros(score::SCORE_HALF_LIFE)),
        ("SCORE_GATE_THRESHOLD", points(score::SCORE_GATE_THRESHOLD)),
        (
            "SCORE_DISCONNECT_THRESHOLD",
            points(score::SCORE_DISCONNECT_THRESHOLD),
        ),
        ("SCORE_BAN_THRESHOLD", points(score::SCORE_BAN_THRESHOLD)),
        ("BAN_DURATION", micros(peer::BAN_DURATION)),
        ("IP_BAN_PEER_BANS_MIN", bytes(peer::IP_BAN_PEER_BANS_MIN)),
        ("SCORES_MAX", bytes(score::SCORES_MAX)),
    ];
    let mut problems = table_problems("docs/protocol.md", &text, &expected);
    // Stated in the prose, where a reader of one section meets them.
    problems.extend(stated_problems(
        "docs/protocol.md",
        &text,
        &[
            (
                "HANDSHAKE_MESSAGE_BYTES_MAX",
                bytes(node::HANDSHAKE_MESSAGE_BYTES_MAX),
            ),
            (
                "HANDSHAKE_PAYLOAD_BYTES_MAX",
                bytes(node::HANDSHAKE_PAYLOAD_BYTES_MAX),
            ),
            ("METADATA_TOPICS_MAX", bytes(rr::METADATA_TOPICS_MAX)),
            (
                "TOPIC_BYTES_MAX",
                bytes(meshsync_core::types::TOPIC_BYTES_MAX),
            ),
            ("SCORE_REWARD_CEILING", points(score::SCORE_REWARD_CEILING)),
        ],
    ));
    // Texts and sizes the spec gives byte for byte.
    let payload = meshsync_core::secure::HANDSHAKE_PAYLOAD_BYTES;
    for needle in [
        format!("### HandshakePayload ({payload} bytes"),
        format!(
            "`\"{}\"`",
            std::str::from_utf8(meshsync_core::chain::block::SIGNING_DOMAIN).expect("ASCII")
        )
        .replace("`\"", "\"")
        .replace("\"`", "\""),
        std::str::from_utf8(meshsync_core::chain::block::BLS_DST)
            .expect("ASCII")
            .to_owned(),
    ] {
        if !text.contains(&needle) {
            problems.push(format!("docs/protocol.md: does not say {needle:?}"));
        }
    }
    // One name for the handshake's payload: the code's `Hello` is only its
    // first fields, and the spec never uses that name.
    for (index, line) in text.lines().enumerate() {
        if line
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| word == "Hello")
        {
            problems.push(format!(
                "docs/protocol.md:{}: says \"Hello\"; the spec's name is HandshakePayload",
                index + 1
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_file_formats_page_states_the_codes_limits_and_headers() {
    use meshsync_core::chain::genesis;
    use meshsync_core::record;
    use meshsync_mio::keyfile;
    let text = fs::read_to_string(repo_root().join("docs/files.md")).expect("docs/files.md");
    let expected: Vec<(&str, i128)> = vec![
        (
            "GENESIS_TEXT_BYTES_MAX",
            genesis::GENESIS_TEXT_BYTES_MAX as i128,
        ),
        (
            "GENESIS_INTEGER_MAX",
            i128::from(genesis::GENESIS_INTEGER_MAX),
        ),
        ("PROPOSERS_MAX", genesis::PROPOSERS_MAX as i128),
        (
            "FINALITY_DEPTH_SLOTS_MAX",
            i128::from(genesis::FINALITY_DEPTH_SLOTS_MAX),
        ),
        (
            "FINALITY_DEPTH_SLOTS_DEFAULT",
            i128::from(genesis::FINALITY_DEPTH_SLOTS_DEFAULT),
        ),
        ("KEY_FILE_BYTES_MAX", keyfile::KEY_FILE_BYTES_MAX as i128),
        (
            "PROPOSER_KEY_FILE_BYTES_MAX",
            keyfile::PROPOSER_KEY_FILE_BYTES_MAX as i128,
        ),
        (
            "RECORD_FORMAT_VERSION",
            i128::from(record::RECORD_FORMAT_VERSION),
        ),
        (
            "RECORD_FRAME_BYTES_MAX",
            record::RECORD_FRAME_BYTES_MAX as i128,
        ),
        (
            "RECORD_HASH_EVERY_INPUTS",
            i128::from(record::RECORD_HASH_EVERY_INPUTS),
        ),
        (
            "RECORD_BYTES_MAX_DEFAULT",
            i128::from(meshsync_mio::driver::RECORD_BYTES_MAX_DEFAULT),
        ),
        (
            "SAVED_CHAINS_MAX",
            meshsync_sim::chains::saved::SAVED_CHAINS_MAX as i128,
        ),
        (
            "RECORD_BYTES",
            meshsync_sim::chains::saved::RECORD_BYTES as i128,
        ),
    ];
    let mut problems = stated_problems("docs/files.md", &text, &expected);
    for needle in [
        format!(
            "`{}` | `KEY_FILE_HEADER`",
            meshsync_core::identity::KEY_FILE_HEADER
        ),
        format!("`{}` | `BLS_KEY_FILE_HEADER`", genesis::BLS_KEY_FILE_HEADER),
        format!("mode {:04o} (`KEY_FILE_MODE`)", keyfile::KEY_FILE_MODE),
        format!(
            "mode {:04o} (`RECORD_FILE_MODE`)",
            meshsync_mio::driver::RECORD_FILE_MODE
        ),
        format!(
            "`{}` then CR LF",
            std::str::from_utf8(&record::RECORD_MAGIC[..6]).expect("ASCII")
        ),
        format!(
            "(`MAGIC`, the ASCII text \"{}\")",
            std::str::from_utf8(meshsync_sim::chains::saved::MAGIC).expect("ASCII")
        ),
    ] {
        if !text.contains(&needle) {
            problems.push(format!("docs/files.md: does not say {needle:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// The checks can fail.

#[test]
fn the_checks_catch_a_missing_path_a_wrong_flag_and_a_changed_diagram() {
    let root = repo_root();

    // A path that is gone, a module path that is gone, and a link that is gone;
    // placeholders and existing paths pass.
    let text = "See `core/src/node.rs` and `fuzz/corpus/TARGET/`\nand `node/nowhere.rs`,\n\n\
                [the docs](docs/missing.md) and `core/src/lib.rs`.\n";
    let problems = path_problems(&root, "X.md", text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("X.md:1: `core/src/node.rs` does not exist"));
    assert!(problems[1].starts_with("X.md:2: `node/nowhere.rs` does not exist"));
    assert!(problems[2].starts_with("X.md:4: link target `docs/missing.md`"));

    // A made-up help: `tool` has `run`, which takes `--seed` and `--json`.
    let mut fake = |invocation: &Invocation| -> Result<Help, String> {
        let text = match invocation.1.as_slice() {
            [] => "Usage: tool <COMMAND>\n\nCommands:\n  run   Run\n  help  Help\n\nOptions:\n  -h, --help  Print help\n",
            [run] if run == "run" => "Usage: tool run [OPTIONS] --seed <SEED>\n\nOptions:\n      --seed <SEED>\n          The seed\n      --json\n  -h, --help\n",
            _ => return Err("no such subcommand".into()),
        };
        Ok(parse_help(text))
    };
    let text = "```sh\ncargo run --release -p meshsync-sim -- run --seed 1 \\\n    --jsonn\n\
                target/release/meshsync-sim walk --seed 2\n```\n\nThen `--json` and `--color`.\n";
    let problems = flag_problems("Y.md", text, true, &mut fake);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    // A flag with an optional value is listed as itself; an example's
    // command line is not the package binary's.
    let help = parse_help("Options:\n      --repair[=<BOOL>]  Repair\n  -h, --help\n");
    assert!(help.flags.contains("--repair"), "{help:?}");
    assert_eq!(
        command_line(
            1,
            &[
                "cargo",
                "run",
                "-p",
                "meshsync-mio",
                "--example",
                "chat",
                "--",
                "--listen"
            ]
        ),
        None
    );
    assert!(command_line(1, &["cargo", "run", "-p", "meshsync-mio", "--", "node"]).is_some());
    assert!(problems[0].starts_with("Y.md:2: `meshsync-sim run` does not accept `--jsonn`"));
    assert!(problems[1].starts_with("Y.md:4: `meshsync-sim` has no subcommand `walk`"));
    assert!(problems[2].starts_with("Y.md:7: `--color` is not a flag of `meshsync-sim run`"));

    // One changed character in the diagram is found, at its line.
    let lib_rs = "//! Doc.\n//!\n//! ```text\n//!  a ──► Node::handle(now, input)\n//!  c ◄── d\n//! ```\n#![forbid(unsafe_code)]\n";
    let readme = "# R\n\n```text\n a ──► Node::handle(now, input)\n c ◄── d\n```\n";
    assert!(diagram_problems(readme, lib_rs).is_empty());
    let changed = readme.replace("c ◄── d", "c ◄── e");
    let problems = diagram_problems(&changed, lib_rs);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("README.md:5: the diagram differs from core/src/lib.rs:5"));

    // A limit the table or the prose states wrongly is found; units,
    // signs, digit groups and ranges are read.
    let text = "| `A_MAX` | 1 024 | a |\n| `B_TIMEOUT` | 90 s | b |\n| `C` | −20 | c |\n\
                at most 1..=1 120 bytes\n(`A_MAX`), and 4 MiB (`D_MAX`).\n";
    assert!(table_problems(
        "Z.md",
        text,
        &[("A_MAX", 1_024), ("B_TIMEOUT", 90_000_000), ("C", -20)]
    )
    .is_empty());
    let problems = table_problems("Z.md", text, &[("A_MAX", 1_025), ("E", 1)]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("`A_MAX` is \"1 024\""),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("no table row names `E`"),
        "{problems:#?}"
    );
    assert_eq!(stated_values(text, "A_MAX"), vec![Some(1_120)]);
    assert_eq!(stated_values(text, "D_MAX"), vec![Some(4 << 20)]);
    let problems = stated_problems("Z.md", text, &[("A_MAX", 1_024), ("F", 1)]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
}
