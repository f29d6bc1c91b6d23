//! The layering of docs/architecture.md, checked on the source: no two top-level modules of
//! the library import each other (the crate root, which assembles them, aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
            if matches!(module.as_str(), "lib" | "main" | "bin") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let names = graph.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for (at, _) in code.match_indices("crate::") {
                    let rest = &code[at + "crate::".len()..];
                    if let Some(group) = rest.strip_prefix('{') {
                        // `use crate::{a, b::c}`: the first word of each item.
                        let group = group.split('}').next().unwrap_or("");
                        for item in group.split(',') {
                            let word: String = item
                                .trim()
                                .chars()
                                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                                .collect();
                            names.insert(word);
                        }
                    } else {
                        let word: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        names.insert(word);
                    }
                }
            }
            names.remove(&module);
            names.remove("");
        }
    }
    graph
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = imports();
    assert!(graph.contains_key("session") && graph.contains_key("stream"));
    let mut mutual = Vec::new();
    for (module, names) in &graph {
        for other in names {
            if module < other && graph.get(other).is_some_and(|n| n.contains(module)) {
                mutual.push(format!("{module} <-> {other}"));
            }
        }
    }
    assert!(
        mutual.is_empty(),
        "modules importing each other: {mutual:?}"
    );
}
