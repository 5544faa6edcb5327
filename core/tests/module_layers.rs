//! The core's top-level modules form layers, and no import runs back up.
//!
//! Reads `core/src/` as text: every `crate::MODULE` a module's code names
//! (comments and unit tests left out) is an arrow from that module to
//! `MODULE`. The test fails on an arrow to a higher layer, on a cycle, and
//! on a module missing from [`LAYERS`] (a new module must be placed).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import its own layer's modules
/// (if that makes no cycle) and any lower layer's, never a higher one's.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "time",
            "types",
            "identity",
            "metrics",
            "machine",
            "netgroup",
            "fuzz_script",
            "serial",
        ],
    ),
    ("bounds", &["limits"]),
    ("codecs and crypto", &["codec", "secure", "chain"]),
    ("jobs", &["work", "peerstore"]),
    (
        "sub-machines",
        &["peer", "reqresp", "gossip", "sync", "discovery"],
    ),
    ("boundary", &["io"]),
    ("node", &["node"]),
    ("recording", &["record"]),
    ("harnesses", &["testing", "fuzzing"]),
];

#[test]
fn core_modules_import_only_downwards_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let arrows = arrows(&src);
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, (_, modules))| modules.iter().map(move |module| (*module, layer)))
        .collect();

    let mut problems = Vec::new();
    let modules: BTreeSet<&String> = arrows
        .keys()
        .chain(arrows.values().flat_map(|targets| targets.keys()))
        .collect();
    for module in &modules {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!("module `{module}` is in no layer of LAYERS"));
        }
    }
    for (from, targets) in &arrows {
        for (to, files) in targets {
            let (Some(&from_layer), Some(&to_layer)) =
                (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
            else {
                continue;
            };
            if to_layer > from_layer {
                problems.push(format!(
                    "`{from}` ({}) imports `{to}` ({}), a higher layer, in {files:?}",
                    LAYERS[from_layer].0, LAYERS[to_layer].0
                ));
            }
        }
    }
    for cycle in cycles(&arrows) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_an_arrow_and_a_cycle() {
    // The reader finds `crate::x` in code, not in comments or unit tests.
    let code = "use crate::io::Input; // crate::node\nfn f() { crate::peer::g(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::testing::MemoryNet;\n}\n";
    let found = modules_named(code);
    assert_eq!(found, BTreeSet::from(["io".to_owned(), "peer".to_owned()]));
    // And a cycle of two is reported.
    let mut arrows: Arrows = BTreeMap::new();
    arrows
        .entry("a".into())
        .or_default()
        .insert("b".into(), vec![]);
    arrows
        .entry("b".into())
        .or_default()
        .insert("a".into(), vec![]);
    assert_eq!(cycles(&arrows), vec![vec!["a", "b", "a"]]);
}

/// The node's parts (the files of `node/`) reach one another's types only
/// downwards: no two import each other, however indirectly, so each can be
/// read (and changed) knowing only what it imports. `mod.rs`, the node
/// itself, composes them and is left out.
#[test]
fn the_node_parts_never_import_each_other_in_a_circle() {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/node");
    let mut arrows: Arrows = BTreeMap::new();
    let mut parts = BTreeSet::new();
    for entry in fs::read_dir(&node).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(part) = name.strip_suffix(".rs") else {
            continue; // the unit tests' folder
        };
        if part == "mod" || part == "tests" || part.ends_with("_tests") {
            continue;
        }
        parts.insert(part.to_owned());
        let code = fs::read_to_string(&path).unwrap();
        for target in names_after(&code, "super::") {
            arrows
                .entry(part.to_owned())
                .or_default()
                .entry(target)
                .or_default()
                .push(name.clone());
        }
    }
    assert!(
        parts.contains("connections") && parts.contains("rpc") && parts.contains("sync"),
        "the node's parts were not found in {node:?}: {parts:?}"
    );
    let cycles = cycles(&arrows);
    assert!(
        cycles.is_empty(),
        "node parts import in a circle: {cycles:?}"
    );
}

/// From module, to module, and the files that make the arrow.
type Arrows = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn arrows(src: &Path) -> Arrows {
    let mut arrows: Arrows = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let relative_text = relative.to_string_lossy().into_owned();
        let first = relative.components().next().unwrap();
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let name = file.file_name().unwrap().to_string_lossy();
        // The crate root only declares; unit-test files and folders test,
        // they do not build layers.
        let in_tests_folder = relative
            .components()
            .any(|part| part.as_os_str() == "tests");
        if module == "lib" || name == "tests.rs" || name.ends_with("_tests.rs") || in_tests_folder {
            continue;
        }
        let code = fs::read_to_string(&file).unwrap();
        for target in modules_named(&code) {
            if target != module {
                arrows
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .push(relative_text.clone());
            }
        }
    }
    arrows
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level modules `code` names as `crate::NAME`, outside comments and
/// outside a `#[cfg(test)] mod tests` block (which runs to the file's end by
/// the house style).
fn modules_named(code: &str) -> BTreeSet<String> {
    names_after(code, "crate::")
}

/// The lower-case names `code` names as `PREFIX`NAME, outside comments and
/// unit tests (see [`modules_named`]).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let lines: Vec<&str> = code.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            let item = lines[index + 1..]
                .iter()
                .map(|next| next.trim_start())
                .find(|next| !next.starts_with("#["))
                .unwrap_or("");
            if item.starts_with("mod tests") {
                break;
            }
        }
        let code_part = match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        };
        let mut rest = code_part;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
            rest = after;
        }
    }
    names
}

/// Every cycle found by a depth-first walk, each as the path that closes it.
fn cycles(arrows: &Arrows) -> Vec<Vec<String>> {
    fn walk(
        module: &str,
        arrows: &Arrows,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            found.push(cycle);
            return;
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_owned());
        if let Some(targets) = arrows.get(module) {
            for target in targets.keys() {
                walk(target, arrows, path, done, found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for module in arrows.keys() {
        walk(module, arrows, &mut Vec::new(), &mut done, &mut found);
    }
    found
}
