//! The shape of `src/`, checked on every `cargo test` (docs/ARCHITECTURE.md explains it):
//! - no import circle between the crate's modules (a folder or a top-level file), nor
//!   between the files of one folder (its `mod.rs` aside: it is the folder's face);
//! - the leaves import nothing but other leaves;
//! - no file is over 600 lines (functions over 80 are clippy's `too_many_lines`).
//!
//! Imports are read from the source text: `crate::a::b`, `super::b` and `self::b` paths,
//! in `use` items (braces expanded) and inline. `#[cfg(test)]` modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must not import anything of the hub.
const LEAVES: &[&str] = &[
    "config",
    "error",
    "event",
    "idempotency",
    "ntfy",
    "random",
    "shutdown",
    "sse",
    "time",
    "topic",
    "ws",
];
const MAX_FILE_LINES: usize = 600;

/// A source file: its module path (`src/store/replay.rs` → `["store", "replay"]`) and its
/// production code.
struct Source {
    file: PathBuf,
    module: Vec<String>,
    text: String,
    lines: usize,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.file_name().unwrap() == "tests.rs" {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut module: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        let full = std::fs::read_to_string(&path).unwrap();
        let text = match full.find("#[cfg(test)]\nmod tests") {
            Some(at) => full[..at].to_string(),
            None => full.clone(),
        };
        out.push(Source {
            file: path,
            module,
            lines: full.lines().count(),
            text,
        });
    }
}

/// Every module path the file refers to, resolved against its own module.
fn references(src: &Source) -> Vec<Vec<String>> {
    // A folder's mod.rs has the folder's path, so `super` is one step up for every file.
    let here: Vec<String> = src.module.clone();
    let parent: Vec<String> = here[..here.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for path in paths(&src.text) {
        let mut parts: Vec<&str> = path.split("::").collect();
        let base = match parts.first().copied() {
            Some("crate") => Vec::new(),
            Some("super") => parent.clone(),
            Some("self") => here.clone(),
            _ => continue,
        };
        parts.remove(0);
        let mut full = base;
        full.extend(parts.iter().map(|p| (*p).to_string()));
        out.push(full);
    }
    out
}

/// `crate::…`, `super::…` and `self::…` paths, with `use` braces expanded.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    // `use` items start a line (after `pub`, `pub(crate)`…) and end at `;`.
    let mut item: Option<String> = None;
    for line in code.lines() {
        let t = line.trim();
        if item.is_none() {
            let body = t
                .strip_prefix("use ")
                .or_else(|| t.strip_prefix("pub use "))
                .or_else(|| {
                    t.split_once(") use ")
                        .filter(|(p, _)| p.starts_with("pub("))
                        .map(|(_, r)| r)
                });
            item = body.map(|b| b.to_string());
        } else if let Some(i) = &mut item {
            i.push_str(t);
        }
        if let Some(i) = item.take_if(|i| i.contains(';')) {
            expand("", i.trim_end_matches(';'), &mut out);
        }
    }
    for start in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(start) {
            let tail: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(tail.trim_end_matches(':').to_string());
        }
    }
    out
}

/// Expands `a::{b, c::{d}}` into `a::b`, `a::c::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            for item in tree.split(',') {
                let item = item.split(" as ").next().unwrap_or("").trim();
                if !item.is_empty() {
                    out.push(format!("{prefix}{item}"));
                }
            }
        }
        Some(open) => {
            let head = &tree[..open];
            let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
            let inner = &tree[open + 1..close];
            // Split the inner list on top-level commas.
            let (mut depth, mut from) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&format!("{prefix}{head}"), &inner[from..i], out);
                        from = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&format!("{prefix}{head}"), &inner[from..], out);
        }
    }
}

/// The longest known module path that `path` starts with.
fn resolve<'a>(path: &[String], known: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| known.get(&path[..n].to_vec()))
}

/// A circle in `edges`, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied() {
                Some(1) => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n)
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// The crate's module graph: top-level modules, and each folder's files.
struct Graph {
    top: BTreeMap<String, BTreeSet<String>>,
    folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn graph() -> Graph {
    let sources = sources();
    let known: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut g = Graph {
        top: BTreeMap::new(),
        folders: BTreeMap::new(),
    };
    for src in &sources {
        let Some(top) = src.module.first() else {
            continue; // lib.rs, main.rs
        };
        g.top.entry(top.clone()).or_default();
        for r in references(src) {
            let Some(target) = resolve(&r, &known) else {
                continue;
            };
            let Some(target_top) = target.first() else {
                continue;
            };
            if target_top != top {
                g.top
                    .entry(top.clone())
                    .or_default()
                    .insert(target_top.clone());
            } else if src.module.len() == 2 && target.len() == 2 && target != &src.module {
                // Two files of one folder, neither its mod.rs.
                g.folders
                    .entry(top.clone())
                    .or_default()
                    .entry(src.module[1].clone())
                    .or_default()
                    .insert(target[1].clone());
            }
        }
    }
    g
}

#[test]
fn modules_import_each_other_in_no_circle() {
    let g = graph();
    assert!(
        g.top.len() > 10,
        "the sources were found: {:?}",
        g.top.keys()
    );
    if let Some(c) = circle(&g.top) {
        panic!("import circle between modules: {}", c.join(" -> "));
    }
    for (folder, edges) in &g.folders {
        if let Some(c) = circle(edges) {
            panic!("import circle in src/{folder}/: {}", c.join(" -> "));
        }
    }
    // The map, for whoever runs `cargo test --test it layout -- --nocapture`.
    for (m, to) in &g.top {
        println!(
            "{m} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn leaves_import_only_leaves() {
    let g = graph();
    for leaf in LEAVES {
        let to = g
            .top
            .get(*leaf)
            .unwrap_or_else(|| panic!("no module {leaf}"));
        let outside: Vec<_> = to
            .iter()
            .filter(|m| !LEAVES.contains(&m.as_str()))
            .collect();
        assert!(outside.is_empty(), "{leaf} imports {outside:?}");
    }
}

#[test]
fn no_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.lines > MAX_FILE_LINES)
        .map(|s| format!("{} ({})", s.file.display(), s.lines))
        .collect();
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines: {long:?}");
}

/// The checker itself finds a circle where there is one.
#[test]
fn the_circle_check_sees_circles() {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle(&e), None);
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circle(&e).unwrap(), ["a", "b", "c", "a"]);
    let mut out = Vec::new();
    expand("", "super::{a, b::{c, d as e}}", &mut out);
    assert_eq!(out, ["super::a", "super::b::c", "super::b::d"]);
}
