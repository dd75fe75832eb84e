//! The rule that keeps each crate's folder readable as a pipeline: no two of its files (modules)
//! import each other, directly or round a longer loop. Checked by a test over every workspace
//! crate's `src/`, reading `crate::` and `super::` paths outside comments and test modules.
//! Written by hand: cargo-modules and similar tools are not in the registries' lock, and a
//! path scan is enough for code that names its imports (no glob imports outside tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate (`["run", "phase"]`; the root is empty).
type ModPath = Vec<String>;

/// Every module file under `src` (a crate's source folder), by module path.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src).ok()?.with_extension("");
            let mut parts: ModPath = rel.iter().map(|c| c.to_string_lossy().into()).collect();
            // `bin/` holds other crates (binaries) than the library's tree.
            if parts.first().is_some_and(|p| p == "bin") {
                return None;
            }
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            Some((parts, f))
        })
        .collect()
}

/// `text` without comments and without its `#[cfg(test)] mod tests { .. }` (tests may import
/// anything), so that only real imports are read.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths `text` names after `crate::` or `super::` (`super::super::` resolved), relative to
/// module `at`, braces expanded one level.
fn named_paths(text: &str, at: &[String]) -> Vec<ModPath> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts_word = i == 0 || !ident(bytes[i - 1]);
        let (mut base, skip) = if starts_word && rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if starts_word && rest.starts_with("super::") {
            // The parent module: a file's folder, or for a `mod.rs` the folder above.
            (at[..at.len().saturating_sub(1)].to_vec(), 7)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        loop {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word == "super" {
                base.pop();
            } else if !word.is_empty() {
                base.push(word);
            }
            if bytes.get(i) == Some(&':') && bytes.get(i + 1) == Some(&':') {
                i += 2;
                if bytes.get(i) == Some(&'{') {
                    let end = bytes[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .map_or(bytes.len(), |p| i + p);
                    let inner: String = bytes[i + 1..end].iter().collect();
                    for item in inner.split(',') {
                        let first = item.trim().split("::").next().unwrap_or("").trim();
                        let first = first.split_whitespace().next().unwrap_or("");
                        if !first.is_empty() && first != "self" {
                            let mut p = base.clone();
                            p.push(first.to_string());
                            out.push(p);
                        }
                    }
                    i = end;
                    break;
                }
                continue;
            }
            break;
        }
        out.push(base);
    }
    out
}

/// The module each file imports from, other than itself: the longest prefix of each named path
/// that is a module of the crate.
fn import_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mods = modules(src);
    mods.iter()
        .map(|(m, file)| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let deps = named_paths(&code_of(&text), m)
                .into_iter()
                .filter_map(|p| {
                    (0..=p.len())
                        .rev()
                        .map(|k| p[..k].to_vec())
                        .find(|prefix| mods.contains_key(prefix))
                })
                .filter(|d| d != m)
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

/// The groups of two or more modules that import each other round a loop (Tarjan's strongly
/// connected components).
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        graph: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let p = |s: &str| -> ModPath { s.split('/').map(String::from).collect() };
        let mut g: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(p(a)).or_default().insert(p(b));
            g.entry(p(b)).or_default();
        }
        g
    }

    #[test]
    fn finds_loops_and_only_loops() {
        assert!(cycles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(
            cycles(&graph(&[("a", "b"), ("b", "a"), ("c", "a")])).len(),
            1
        );
        let three = cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a")]));
        assert_eq!(three[0].len(), 3);
    }

    #[test]
    fn reads_crate_and_super_paths_but_not_comments_or_tests() {
        let text = "use crate::run::{plan, phase::Launcher};\n\
                    // use crate::durable::lock;\n\
                    fn f() { super::atomic::write(); }\n\
                    #[cfg(test)]\nmod tests { use crate::eval; }\n";
        let at = vec!["run".to_string(), "export".to_string()];
        let named = named_paths(&code_of(text), &at);
        let s = |v: &[&str]| -> ModPath { v.iter().map(|x| x.to_string()).collect() };
        assert!(named.contains(&s(&["run", "plan"])), "{named:?}");
        assert!(named.contains(&s(&["run", "phase"])), "{named:?}");
        assert!(named.contains(&s(&["run", "atomic", "write"])), "{named:?}");
        assert!(
            !named
                .iter()
                .any(|p| p.first().is_some_and(|w| w == "durable" || w == "eval"))
        );
    }

    /// The rule itself, over every crate of the workspace.
    #[test]
    fn no_two_files_of_a_crate_import_each_other() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let members = [
            "backends",
            "kernels",
            "model",
            "import",
            "train",
            "tune",
            "infer",
            "dashboard",
            "fuzz",
            "xtask",
        ];
        let mut found = Vec::new();
        for m in members {
            let src = root.join(m).join("src");
            assert!(src.is_dir(), "{} is not a folder", src.display());
            for group in cycles(&import_graph(&src)) {
                let names: Vec<String> = group.iter().map(|p| p.join("::")).collect();
                found.push(format!("{m}: {}", names.join(" <-> ")));
            }
        }
        assert!(
            found.is_empty(),
            "modules that import each other (lift the shared piece into a module of its own):\n  {}",
            found.join("\n  ")
        );
    }
}
