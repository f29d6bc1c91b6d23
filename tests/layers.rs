//! The layering of docs/architecture.md, checked on the source: which top-level module names
//! which through `crate::` paths (groups, nested groups and type names included), that no
//! circle of any length runs through them or through instant messaging's files, which modules
//! still reach back to the crate root, and that the architecture page's "imports" column says
//! exactly what the code imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's items (`Shared`, `Config`, …) as a node of the graph.
const ROOT: &str = "crate";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules, as lib.rs declares them.
fn modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.strip_suffix(';')?.trim().to_owned())
        })
        .collect()
}

/// Every `.rs` file under `dir`, with its path relative to src/.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path.strip_prefix(src()).unwrap().to_path_buf(), text));
            }
        }
    }
    found
}

/// The code of a file without its comments (line comments; doc comments are line comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `prefix` (`crate::`, `super::`) in `code`, as its segments, with
/// `{a, b::{c, D}}` groups expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        // `foo_crate::` is not `crate::`.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut chars = code[at + prefix.len()..].chars().peekable();
        tree(&mut chars, Vec::new(), &mut paths);
    }
    paths
}

/// Reads one path (or group of paths) below `stem`.
fn tree(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    stem: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            tree(chars, stem.clone(), out);
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                Some(',') => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    if chars.peek() == Some(&'}') {
                        chars.next();
                        return;
                    }
                }
                _ => return,
            }
        }
    }
    let mut word = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if word.is_empty() {
        if !stem.is_empty() {
            out.push(stem);
        }
        return;
    }
    let mut path = stem;
    path.push(word);
    let mut rest = chars.clone();
    if rest.next() == Some(':') && rest.next() == Some(':') {
        chars.next();
        chars.next();
        tree(chars, path, out);
    } else {
        // ` as name` and the rest of the line are not part of the path.
        out.push(path);
    }
}

/// Top-level module → what it names: other modules, and `ROOT` for the crate root's items.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (relative, text) in files(&src()) {
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        if !modules.contains(&module) {
            // lib.rs itself, main.rs and the binaries: they assemble the layers.
            continue;
        }
        let names = graph.entry(module.clone()).or_default();
        for path in paths_after(&code(&text), "crate::") {
            let head = &path[0];
            if modules.contains(head) {
                names.insert(head.clone());
            } else {
                names.insert(ROOT.to_owned());
            }
        }
        names.remove(&module);
    }
    graph
}

/// The circles of a graph, each once, as the nodes along it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // Each circle is reported from its smallest node.
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    circle.push(start.clone());
                    found.push(circle);
                } else if next > start && !path.contains(next) && graph.contains_key(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[test]
fn no_circle_runs_through_the_modules() {
    let mut graph = graph();
    assert!(graph.contains_key("session") && graph.contains_key("stream"));
    assert!(
        graph["admin"].contains("policy"),
        "the reader sees `use crate::{{…}}` groups"
    );
    for names in graph.values_mut() {
        names.remove(ROOT);
    }
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "modules importing each other, directly or through others: {circles:?}"
    );
}

#[test]
fn the_reader_finds_circles_of_any_length_and_nested_groups() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), ["a".into(), "d".into()].into());
    graph.insert("d".into(), BTreeSet::new());
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c", "a"]]);
    let paths = paths_after(
        "use crate::im::{Context, roster::{Update, local}};\nlet x = crate::Shared::new(); my_crate::x;",
        "crate::",
    );
    let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "im::Context",
            "im::roster::Update",
            "im::roster::local",
            "Shared::new"
        ]
    );
}

/// The modules that still take the crate root's `Shared` (or another of its items) instead
/// of a narrow state of their own. Architecture step 2 empties this list; a module may leave
/// it, never join it.
const STILL_REACHING_THE_ROOT: [&str; 6] =
    ["admin", "listener", "routing", "session", "stream", "web"];

#[test]
fn lower_layers_reach_the_crate_root_only_where_still_listed() {
    let graph = graph();
    let reaching: BTreeSet<&str> = graph
        .iter()
        .filter(|(_, names)| names.contains(ROOT))
        .map(|(module, _)| module.as_str())
        .collect();
    let listed: BTreeSet<&str> = STILL_REACHING_THE_ROOT.into_iter().collect();
    let joined: Vec<_> = reaching.difference(&listed).collect();
    assert!(
        joined.is_empty(),
        "these modules now name the crate root (`crate::Shared`, …): give them a narrow state \
         of their own instead: {joined:?}"
    );
    let left: Vec<_> = listed.difference(&reaching).collect();
    assert!(
        left.is_empty(),
        "these modules no longer name the crate root: take them off STILL_REACHING_THE_ROOT: \
         {left:?}"
    );
}

#[test]
fn instant_messaging_files_form_no_circle() {
    let im = src().join("im");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let part = |relative: &Path| {
        let inside = relative.strip_prefix("im").unwrap();
        let first = inside.components().next().unwrap().as_os_str();
        first.to_string_lossy().trim_end_matches(".rs").to_owned()
    };
    let sources = files(&im);
    let parts: BTreeSet<String> = sources
        .iter()
        .map(|(relative, _)| part(relative))
        .filter(|p| p != "mod")
        .collect();
    assert!(parts.contains("presence") && parts.contains("subscription"));
    for (relative, text) in &sources {
        let from = part(relative);
        if from == "mod" {
            // The module's root assembles its parts.
            continue;
        }
        let code = code(text);
        let mut names: BTreeSet<String> = paths_after(&code, "crate::")
            .into_iter()
            .filter(|p| p.len() > 1 && p[0] == "im")
            .map(|p| p[1].clone())
            .collect();
        if relative.parent() == Some(Path::new("im")) {
            names.extend(
                paths_after(&code, "super::")
                    .into_iter()
                    .map(|p| p[0].clone()),
            );
        }
        names.retain(|n| parts.contains(n) && *n != from);
        graph.entry(from).or_default().extend(names);
    }
    assert!(graph["subscription"].contains("roster"));
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "im/ files importing each other, directly or through others: {circles:?}"
    );
}

#[test]
fn the_architecture_page_lists_what_each_module_imports() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .expect("docs/architecture.md");
    let graph = graph();
    let modules = modules();
    let mut described = BTreeSet::new();
    let mut wrong = Vec::new();
    for line in page.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| `module` | what it does | imports |`
        if cells.len() != 5 || !cells[1].starts_with('`') {
            continue;
        }
        let module = cells[1].trim_matches('`');
        if !modules.contains(module) {
            continue;
        }
        described.insert(module.to_owned());
        let said: BTreeSet<String> = cells[3]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| modules.contains(*name))
            .map(str::to_owned)
            .collect();
        let mut imported = graph.get(module).cloned().unwrap_or_default();
        imported.remove(ROOT);
        if module == "fuzzing" {
            // It exercises whatever its targets need; the page says so in words.
            continue;
        }
        if said != imported {
            wrong.push(format!(
                "{module}: the page says {said:?}, the code imports {imported:?}"
            ));
        }
    }
    let missing: Vec<_> = modules.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "modules the page does not describe: {missing:?}"
    );
    assert!(
        wrong.is_empty(),
        "the imports column is wrong:\n{}",
        wrong.join("\n")
    );
}
