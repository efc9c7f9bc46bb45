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
    &["share"],
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

/// Longest function body, in lines, that needs no word of explanation.
const LONG_FUNCTION_LINES: usize = 80;

/// The text with comments, string and character literals blanked out (lines kept), so braces
/// in them do not count.
fn blank_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                out.extend_from_slice(b"  ");
                i += 2;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                let start = i + 2 + hashes;
                let end =
                    b[start..].windows(close.len()).position(|w| w == close.as_slice()).map_or(b.len(), |p| start + p);
                for &c in &b[i..(end + close.len()).min(b.len())] {
                    blank(&mut out, c);
                }
                i = end + close.len();
            }
            b'"' => {
                out.push(b' ');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                    if i < b.len() {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                }
                out.push(b' ');
                i += 1;
            }
            // A character literal ('{', '\'', '\u{7b}'), not a lifetime ('a).
            b'\'' => {
                let lit = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..].iter().position(|c| *c == b'\'').map(|p| i + 2 + p)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match lit {
                    Some(end) if end - i < 12 => {
                        out.extend(std::iter::repeat_n(b' ', end - i + 1));
                        i = end + 1;
                    }
                    _ => {
                        out.push(b'\'');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Functions longer than the limit outside test modules, as `file:line name (lines)`, unless
/// the comments just above them say why ("long because …").
fn long_functions(path: &Path, text: &str) -> Vec<String> {
    let code = blank_literals(text);
    let lines: Vec<&str> = code.lines().collect();
    let raw: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if t == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("mod ")) {
            break;
        }
        let name = t
            .split_once("fn ")
            .filter(|(before, _)| {
                before
                    .split_whitespace()
                    .all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe"].contains(&w))
            })
            .map(|(_, rest)| rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or(""));
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            i += 1;
            continue;
        };
        let (mut depth, mut opened, mut j) = (0i32, false, i);
        'body: while j < lines.len() {
            for c in lines[j].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break 'body,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                break;
            }
            j += 1;
        }
        let length = j + 1 - i;
        if opened && length > LONG_FUNCTION_LINES {
            let above = raw[i.saturating_sub(8)..i].join("\n").to_lowercase();
            if !above.contains("long because") {
                found.push(format!("{}:{} {name} ({length} lines)", path.display(), i + 1));
            }
        }
        i = if opened { j + 1 } else { i + 1 };
    }
    found
}

#[test]
fn functions_are_short_or_say_why() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_none_or(|n| n != "tests.rs"))
        .flat_map(|f| long_functions(f.strip_prefix(&root).unwrap(), &std::fs::read_to_string(f).unwrap()))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {LONG_FUNCTION_LINES} lines; split them, or say in a comment above why one is long \
         (\"long because …\"):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_check_counts_code_not_literals() {
    let body: String = (0..90).map(|_| "    x += 1;\n").collect();
    let long = format!("fn big() {{\n{body}}}\n");
    assert_eq!(long_functions(Path::new("a.rs"), &long), ["a.rs:1 big (92 lines)"]);
    let explained = format!("/// Long because it is one state machine.\n{long}");
    assert!(long_functions(Path::new("a.rs"), &explained).is_empty());
    let tricky = "fn f() {\n    let a = \"{{ }\";\n    let b = '{';\n    let c = r#\"}\"#;\n    // }\n}\nfn g() {}\n";
    assert!(long_functions(Path::new("a.rs"), tricky).is_empty());
    assert!(!blank_literals(tricky).lines().nth(1).unwrap().contains(['{', '}']));
}
