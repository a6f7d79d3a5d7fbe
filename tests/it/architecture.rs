//! The layering of `src/`: no top-level module imports one that imports it back.
//!
//! A cycle makes two modules one in all but name: neither can change, be tested or be read
//! without the other. This reads the sources as text: every `crate::<module>` outside test
//! code is an edge, and the graph of top-level modules must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges known to close a cycle, with what removes them. The list only shrinks: a new cycle
/// fails the test, and so does an entry that no longer closes one.
const KNOWN: &[(&str, &str, &str)] = &[];

/// `src/`'s top-level modules, each with the files that make it up.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "main.rs" || name == "lib.rs" {
            continue;
        }
        if let Some(module) = name.strip_suffix(".rs") {
            out.insert(module.to_string(), vec![path]);
        } else if path.is_dir() {
            let mut files = Vec::new();
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).expect("module folder").flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs")
                    {
                        files.push(p);
                    }
                }
            }
            out.insert(name, files);
        }
    }
    out
}

/// The top-level modules `text` names through `crate::`, outside its test module.
fn referenced(text: &str, known: &BTreeSet<&str>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
            None => vec![rest],
        };
        for name in names {
            let ident: String =
                name.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if known.contains(ident.as_str()) {
                found.insert(ident);
            }
        }
    }
    found
}

/// The import graph of `src/`'s top-level modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    modules
        .iter()
        .map(|(module, files)| {
            let mut deps = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(file).expect("a source file");
                deps.extend(referenced(&text, &names).into_iter().filter(|d| d != module));
            }
            (module.clone(), deps)
        })
        .collect()
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let mut graph = graph();
    assert!(graph.len() > 10 && graph.contains_key("model"), "the modules of src/ were not found: {graph:?}");
    assert!(graph["model"].is_empty(), "model must import nothing of ours, but imports {:?}", graph["model"]);
    for (from, to, why) in KNOWN {
        assert!(
            cycles(&graph).iter().any(|c| c.contains(*from) && c.contains(*to)),
            "{from} -> {to} ({why}) no longer closes a cycle: remove it from KNOWN"
        );
        graph.get_mut(*from).map(|deps| deps.remove(*to));
    }
    let found = cycles(&graph);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| graph[a].iter().filter(|b| c.contains(*b)).map(move |b| format!("{a} -> {b}")))
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(found.is_empty(), "modules import each other in a cycle: {}", shown.join("; "));
}

#[test]
fn a_cycle_between_two_modules_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"]), ("e", vec![])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
    let found = cycles(&graph);
    assert_eq!(found, vec![["a", "b", "c"].into_iter().map(str::to_string).collect::<BTreeSet<_>>()]);
    let names = ["anchor", "model", "config"].into_iter().collect();
    let text =
        "use crate::{anchor::X, model};\nfn f() { crate::config::y(); }\n#[cfg(test)]\nmod tests { use crate::http; }";
    assert_eq!(referenced(text, &names), ["anchor", "config", "model"].into_iter().map(str::to_string).collect());
}

/// The file that declares the modules of folder `dir` of `src`.
fn declaring_file(src: &Path, dir: &Path) -> PathBuf {
    if dir == src {
        src.join("lib.rs")
    } else if dir.join("mod.rs").exists() {
        dir.join("mod.rs")
    } else {
        dir.with_extension("rs")
    }
}

/// Whether `file` declares `mod <name>;`, with any visibility.
fn declares(file: &Path, name: &str) -> bool {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let wanted = format!("mod {name};");
    text.lines().map(str::trim).any(|l| {
        let l = l.strip_prefix("pub(crate) ").or_else(|| l.strip_prefix("pub ")).unwrap_or(l);
        l == wanted
    })
}

/// A file under `src/` that no module declares is never compiled, yet it is read as part of
/// its folder by the cycle check above and by anyone looking for the code: it must not exist.
#[test]
fn every_source_file_is_a_module_of_the_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stray = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a folder of src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if path.extension().is_none_or(|e| e != "rs") || (dir == src && (stem == "lib" || stem == "main")) {
                continue;
            }
            let (folder, name) = if stem == "mod" {
                let name = dir.file_name().and_then(|n| n.to_str()).expect("a folder name").to_string();
                (dir.parent().expect("a parent folder").to_path_buf(), name)
            } else {
                (dir.clone(), stem.to_string())
            };
            if !declares(&declaring_file(&src, &folder), &name) {
                stray.push(path.strip_prefix(&src).expect("under src").display().to_string());
            }
        }
    }
    stray.sort();
    assert!(stray.is_empty(), "files under src/ that no module declares (never compiled): {stray:?}");
}
