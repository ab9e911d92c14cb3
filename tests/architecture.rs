//! The crate's module graph: no cycle anywhere, and `log/` is a leaf.
//!
//! Reads every source file of the `strata` package (library and binary, test
//! code left out), resolves each `crate::`, `super::`, `self::` and
//! `strata::` path to the module it names, and draws an arrow between the
//! two sibling modules that contain the user and the used (a module using
//! its own parent or child is containment, not an arrow). Every set of
//! siblings must form a DAG, and nothing under `log/` may use anything but
//! `log/` and the helpers `failpoint` and `locks`.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Modules `log/` may use besides itself.
const LOG_MAY_USE: &[&str] = &["log", "failpoint", "locks"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file with its module path (the binary's `main.rs` and
/// `cli/` are the module `cli`).
fn source_files() -> Vec<(PathBuf, ModPath)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = src_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        // `#[cfg(test)] mod tests;` files are test code.
        .filter(|p| p.file_name().unwrap() != "tests.rs")
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: ModPath = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            if parts == ["main"] {
                parts = vec!["cli".into()];
            }
            (p, parts)
        })
        .collect()
}

/// The source without comments, string and char literals, and without the
/// items marked `#[cfg(test)]`.
fn code_of(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r' && (next == Some(b'"') || next == Some(b'#')) && !ident_before(b, i) {
            let mut hashes = 0;
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && b[j + 1..].iter().take(hashes).filter(|&&h| h == b'#').count() == hashes {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\''), or a lifetime ('a).
            if next == Some(b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1 + ch_len) == Some(&b'\'') {
                    i += 2 + ch_len;
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            out.push(' ');
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    strip_test_items(&out)
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Removes every item that follows `#[cfg(test)]`: up to its `;`, or its
/// whole `{ ... }` block.
fn strip_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let (semi, brace) = (item.find(';'), item.find('{'));
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = item.len();
                for (k, ch) in item[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else { return vec![tree] };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).flat_map(|p| expand_use(&format!("{prefix}{p}"))).collect()
}

/// Every path in `code` that starts at `crate`, `super`, `self` or `strata`,
/// or at one of `children` (a module's own submodules, in `use` lines).
fn paths_in(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` statements, braces expanded.
    for stmt in code.split(';') {
        let Some(at) = stmt.find("use ") else { continue };
        if at > 0 && ident_before(stmt.as_bytes(), at) {
            continue;
        }
        let tree = stmt[at + 4..].trim();
        for p in expand_use(tree) {
            let p = p.split(" as ").next().unwrap_or("").trim_start_matches("::").to_string();
            paths.push(p.split("::").map(str::to_string).collect::<Vec<_>>());
        }
    }
    // Paths written inline in code.
    let b = code.as_bytes();
    for start_word in ["crate::", "super::", "strata::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(start_word) {
            let at = from + k;
            from = at + start_word.len();
            if ident_before(b, at) {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            paths.push(code[at..end].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
        }
    }
    paths.retain(|p| {
        p.first().is_some_and(|f| matches!(f.as_str(), "crate" | "super" | "self" | "strata") || children.contains(f))
    });
    paths
}

/// The module a path names: the longest known module prefix of it.
fn resolve(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>, in_bin: bool) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" if in_bin => {
            base = Vec::new();
            rest = &path[1..];
            // The binary's root is the `cli` module's parent here.
            if rest.first().is_none_or(|s| s != "cli") {
                return Some(vec!["cli".into()]);
            }
        }
        "crate" | "strata" => {
            base = Vec::new();
            rest = &path[1..];
        }
        "self" => {
            base = from.clone();
            rest = &path[1..];
        }
        "super" => {
            base = from.clone();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => base = from.clone(),
    }
    let mut best = base.clone();
    for seg in rest {
        base.push(seg.clone());
        if modules.contains(&base) {
            best = base.clone();
        } else {
            break;
        }
    }
    Some(best)
}

struct Graph {
    /// parent module → (sibling → siblings it uses).
    levels: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>,
    /// (user file's module, used module) for every cross-module use.
    uses: BTreeSet<(ModPath, ModPath)>,
}

fn graph() -> Graph {
    let files = source_files();
    let modules: BTreeSet<ModPath> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut g = Graph { levels: BTreeMap::new(), uses: BTreeSet::new() };
    for (file, from) in &files {
        let in_bin = from.first().is_some_and(|f| f == "cli");
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == from.len() + 1 && m.starts_with(from))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in paths_in(&code, &children) {
            let from_bin_to_lib = in_bin && path.first().is_some_and(|f| f == "strata");
            let Some(to) = resolve(from, &path, &modules, in_bin && !from_bin_to_lib) else { continue };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // a module and its own ancestor or descendant
            }
            g.uses.insert((from.clone(), to.clone()));
            let parent = from[..common].to_vec();
            g.levels.entry(parent).or_default().entry(from[common].clone()).or_default().insert(to[common].clone());
        }
    }
    g
}

/// A cycle among `edges`, if any, as the list of its nodes.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
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
        if !state.contains_key(n) {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    let mut cycles = Vec::new();
    for (parent, edges) in &g.levels {
        println!("in {}:", show(parent));
        for (from, to) in edges {
            println!("  {from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
        }
        if let Some(c) = find_cycle(edges) {
            cycles.push(format!("in {}: {}", show(parent), c.join(" -> ")));
        }
    }
    assert!(g.levels.contains_key(&Vec::new()), "the top level was read");
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn log_is_a_leaf() {
    let g = graph();
    let bad: Vec<String> = g
        .uses
        .iter()
        .filter(|(from, _)| from.first().is_some_and(|f| f == "log"))
        .filter(|(_, to)| to.first().is_none_or(|t| !LOG_MAY_USE.contains(&t.as_str())))
        .map(|(from, to)| format!("{} uses {}", show(from), show(to)))
        .collect();
    assert!(bad.is_empty(), "log/ may use only {LOG_MAY_USE:?}:\n{}", bad.join("\n"));
    assert!(g.uses.iter().any(|(f, _)| f.first().is_some_and(|f| f == "log")), "log/ was read");
}

#[test]
fn the_checker_sees_cycles_and_uses() {
    // The parser itself: a use tree, inline paths, comments and strings.
    let code = code_of(
        "use crate::{a::X, b::{c::Y, Z}};\n// crate::hidden\nlet s = \"crate::nope\";\nfn f() { super::d::g(); }\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    let paths = paths_in(&code, &BTreeSet::new());
    let shown: BTreeSet<String> = paths.iter().map(|p| p.join("::")).collect();
    for want in ["crate::a::X", "crate::b::c::Y", "crate::b::Z", "super::d::g"] {
        assert!(shown.contains(want), "{want} in {shown:?}");
    }
    assert!(!shown.iter().any(|p| p.contains("hidden") || p.contains("nope") || p.contains("::t")), "{shown:?}");
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(find_cycle(&edges), Some(vec!["a".into(), "b".into(), "a".into()]));
}
