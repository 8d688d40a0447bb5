//! The relay's modules import each other without circles: every file's `crate::…`, `super::…`
//! and `self::…` paths are read, each resolved to the module (file) it names, and the graph
//! searched for a cycle. Test code (`#[cfg(test)]` onwards, `*_tests.rs`) does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `msg/router.rs` → `[msg, router]`, `msg/mod.rs` → `[msg]`, `lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some(last) if last.ends_with("_tests") => return None,
        Some("lib") | Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// The code without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Expands a path that starts at `text` (after `crate::` and the like), including groups such as
/// `{a, b::{c, d}}`, into full paths.
fn expand(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let head: String = text.chars().take_while(|c| is_path_char(*c)).collect();
    let mut path = prefix.to_vec();
    path.extend(
        head.split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    let rest = text[head.len()..].trim_start();
    if (head.is_empty() || head.ends_with("::")) && rest.starts_with('{') {
        // A group: split its items at top-level commas.
        let mut depth = 0;
        let mut item_start = 1;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    let item = rest[item_start..i].trim();
                    if !item.is_empty() && item != "self" {
                        expand(item, &path, out);
                    } else if item == "self" {
                        out.push(path.clone());
                    }
                    item_start = i + 1;
                    if c == '}' {
                        return;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        return;
    }
    out.push(path);
}

/// Every module path the code refers to, made absolute.
fn references(code: &str, module: &Module) -> Vec<Vec<String>> {
    // In `a/b.rs` (module a::b) `super` is `a`; in `a/mod.rs` (module a) `super` is the root.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", parent),
        ("self::", module.clone()),
    ] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            let preceded_by_path = code[..start].chars().next_back().is_some_and(is_path_char);
            from = start + anchor.len();
            if preceded_by_path {
                continue;
            }
            expand(&code[from..], &base, &mut out);
        }
    }
    out
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn import_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let parsed: Vec<(Module, String)> = files
        .iter()
        .filter_map(|f| {
            let module = module_of(src, f)?;
            let text = std::fs::read_to_string(f).ok()?;
            Some((module, code_of(&text)))
        })
        .collect();
    let modules: BTreeSet<Module> = parsed.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &parsed {
        let edges = graph.entry(module.clone()).or_default();
        // The crate root only declares and re-exports.
        if module.is_empty() {
            continue;
        }
        for path in references(code, module) {
            if let Some(target) = resolve(&path, &modules) {
                // A module may use its own children (declared in it) and itself.
                if target != *module && !target.starts_with(module) {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

#[test]
fn the_relay_modules_import_each_other_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(graph.len() > 20, "found only {} modules", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!("import circle: {}", names.join(" → "));
    }
}

#[test]
fn the_check_finds_a_circle_and_reads_groups_and_super() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b;").unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod x;\npub mod y;").unwrap();
    std::fs::write(
        src.join("a/x.rs"),
        "use super::y::Y; // crate::b is only a comment",
    )
    .unwrap();
    std::fs::write(
        src.join("a/y.rs"),
        "use crate::{b::{B, C}, util};\n#[cfg(test)]\nmod tests { use crate::a::x; }",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B; pub struct C;").unwrap();
    let graph = import_graph(src);
    let x = vec!["a".to_string(), "x".to_string()];
    let y = vec!["a".to_string(), "y".to_string()];
    assert!(graph[&x].contains(&y));
    assert!(graph[&y].contains(&vec!["b".to_string()]));
    assert_eq!(find_cycle(&graph), None, "test code does not count");
    std::fs::write(src.join("b.rs"), "use crate::a::x::X;").unwrap();
    let cycle = find_cycle(&import_graph(src)).expect("a circle");
    let names: Vec<String> = cycle.iter().map(name).collect();
    assert!(names.contains(&"b".to_string()), "{names:?}");
}

#[test]
fn roles_do_not_reach_into_the_node_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    let table = vec!["node".to_string(), "state".to_string()];
    let reaching: Vec<String> = graph
        .iter()
        .filter(|(m, edges)| m.first().is_none_or(|top| top != "node") && edges.contains(&table))
        .map(|(m, _)| name(m))
        .collect();
    assert!(
        reaching.is_empty(),
        "roles that take the node's table of roles instead of the core and handles: {reaching:?}"
    );
}
