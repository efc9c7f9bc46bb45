//! The architecture invariants of `src/lib.rs`, checked on the source: layers point one way,
//! and the tour names every module.
//!
//! A module's dependencies are the `crate::<module>` paths in its files (outside comments and
//! `#[cfg(test)]` modules: tests may use a generator or a helper from anywhere). Each module
//! belongs to a layer and may use only modules of lower layers, so there can be no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use only the modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    &["engine", "instance", "telemetry"],
    &["model"],
    &["synth", "crypto", "metrics"],
    &["store", "source", "guance"],
    &["outbox"],
    &["runner"],
    &["scheduler"],
    &["http"],
    &["config"],
    &["scan", "server"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comment lines and without its `#[cfg(test)] mod …` (which, by
/// this codebase's habit, is the last item of a file).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]" && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod ")) {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Top-level modules named after `crate::` (or `$crate::` in macros).
fn uses(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect()
        })
        .filter(|s: &String| !s.is_empty())
        .collect()
}

/// Each top-level module with the modules it uses.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let used = uses(&code(&std::fs::read_to_string(&f).unwrap()));
        let entry = deps.entry(module.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| *m != module));
    }
    deps
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn layers_point_one_way() {
    let deps = dependencies();
    let mut wrong = Vec::new();
    for (module, used) in &deps {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer: add it to LAYERS and to the tour in src/lib.rs"));
            continue;
        };
        for u in used {
            match layer_of(u) {
                Some(l) if l < own => {}
                Some(_) => wrong.push(format!("{module} uses {u}, which is not below it")),
                None => wrong.push(format!("{module} uses {u}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_a_dependency_and_skips_tests_and_comments() {
    let text = "use crate::model::Run;\n// crate::http in a comment\nfn f() { $crate::store::now() }\n\
                #[cfg(test)]\nmod tests {\n    use crate::synth::Synth;\n}\n";
    let got: Vec<String> = uses(&code(text)).into_iter().collect();
    assert_eq!(got, ["model", "store"]);
}

#[test]
fn the_tour_names_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: Vec<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';')).collect();
    assert!(declared.len() > 10, "{declared:?}");
    let tour: String = lib.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    for m in &declared {
        assert!(tour.contains(&format!("[`{m}`]")), "the tour in src/lib.rs does not name `{m}`");
        assert!(layer_of(m).is_some(), "`{m}` is in no layer of tests/it/architecture.rs");
    }
    for layer in LAYERS {
        for m in *layer {
            assert!(declared.contains(m), "LAYERS names `{m}`, which src/lib.rs does not declare");
        }
    }
}
