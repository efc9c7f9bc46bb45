//! A file of CloudTrail records, cut into its records without parsing them.
//!
//! CloudTrail delivers to S3 one line of `{"Records":[…]}` per file; exports and tools write
//! JSON arrays, one record per line, or records pretty-printed over many lines. All of them are
//! a sequence of JSON values, so one splitter reads them all: each top-level value is a
//! record, except a `{"Records": [...]}` object or an array, whose elements are records.
//!
//! The split only follows strings and brackets (a pass at memchr-like speed over string
//! bodies); it neither validates JSON nor decodes UTF-8. That is what lets one broken record
//! cost only itself: a bad byte or a wrong type is found when that record alone is parsed,
//! and its neighbours are read as usual. Each record's bytes are parsed once, by the engine.
//!
//! Damage that breaks the structure is contained by lines, because JSON strings cannot span
//! lines: a string is taken to end at the end of its line, and a value that is still open at
//! the end of the input is read again line by line from where it began, each line on its own,
//! so a truncated line of a JSON-lines file costs that line only.

use super::fast::plain_run_end;

/// What splitting a file found besides its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Pieces handed over: records, and the broken pieces the engine will count as malformed.
    pub records: u64,
    /// Why part of the file could not be read, when some of it could not (the rest was).
    pub problem: Option<String>,
}

/// Hands the raw bytes of every record of `bytes` to `each`, in order, and says what else it
/// found. A file that does not start like JSON (`{` or `[` after an optional BOM and
/// whitespace) yields nothing and a problem.
pub fn split_records(bytes: &[u8], mut each: impl FnMut(&[u8])) -> Split {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Split::default();
    let start = skip_ws(b, 0);
    if start == b.len() {
        return out;
    }
    if !matches!(b[start], b'{' | b'[') {
        out.problem = Some("not JSON".into());
        return out;
    }
    let mut emit = |piece: &[u8]| {
        out.records += 1;
        each(piece);
    };
    let mut problem = None;
    if let Some(open_at) = values(b, start, b.len(), &mut emit, &mut problem) {
        // A record still open at the end of the input: read it and what follows line by line.
        let mut line_start = open_at;
        while line_start < b.len() {
            let line_end = memchr::memchr(b'\n', &b[line_start..]).map_or(b.len(), |k| line_start + k);
            if let Some(open) = values(b, line_start, line_end, &mut emit, &mut problem) {
                // Still open at the end of the line: the rest of the line is one broken piece.
                emit(b[open..line_end].trim_ascii());
            }
            line_start = line_end + 1;
        }
    }
    out.problem = problem;
    out
}

/// Reads the top-level values of `b[i..end]`. Returns the start of a value that was still
/// open at `end` (nothing of it was emitted), or None when every value was read.
fn values(
    b: &[u8],
    mut i: usize,
    end: usize,
    emit: &mut impl FnMut(&[u8]),
    problem: &mut Option<String>,
) -> Option<usize> {
    loop {
        i = skip_ws(b, i).min(end);
        if i == end {
            return None;
        }
        match b[i] {
            b'{' => {
                if let Some(list) = records_key(b, i, end) {
                    match elements(b, list, end, emit, problem) {
                        // The rest of the delivery object: normally just its `}`.
                        Some(after) => match value_end(b, after, 1, end) {
                            Some(e) => i = e,
                            None => {
                                note(problem, "the file ends before the end of its {\"Records\": [...]} (truncated?)");
                                return None;
                            }
                        },
                        None => return None,
                    }
                } else {
                    match value_end(b, i + 1, 1, end) {
                        Some(e) => {
                            emit(&b[i..e]);
                            i = e;
                        }
                        None => return Some(i),
                    }
                }
            }
            b'[' => match elements(b, i + 1, end, emit, problem) {
                Some(after) => i = after,
                None => return None,
            },
            _ => {
                // Not a value we can read: the rest of its line is one broken piece.
                let line_end = memchr::memchr(b'\n', &b[i..end]).map_or(end, |k| i + k);
                emit(b[i..line_end].trim_ascii());
                i = line_end;
            }
        }
    }
}

/// If the object at `b[open]` starts with the key `"Records"` and its value is a list, the
/// index just past that list's `[`.
fn records_key(b: &[u8], open: usize, end: usize) -> Option<usize> {
    let k = skip_ws(b, open + 1);
    let rest = b.get(k..end)?;
    let after_key = rest.strip_prefix(b"\"Records\"")?;
    let colon = skip_ws(b, end - after_key.len());
    if b.get(colon) != Some(&b':') || colon >= end {
        return None;
    }
    let list = skip_ws(b, colon + 1);
    (list < end && b[list] == b'[').then_some(list + 1)
}

/// Emits each element of the list whose body starts at `i`. Returns the index past its `]`,
/// or None when the input ends first or the list is broken (noted in `problem`).
fn elements(
    b: &[u8],
    mut i: usize,
    end: usize,
    emit: &mut impl FnMut(&[u8]),
    problem: &mut Option<String>,
) -> Option<usize> {
    loop {
        i = skip_ws(b, i).min(end);
        if i == end {
            note(problem, "the file ends inside its list of records (truncated?)");
            return None;
        }
        match b[i] {
            b']' => return Some(i + 1),
            // A missing comma between two records costs nothing.
            b',' => {
                i += 1;
                continue;
            }
            b'{' | b'[' => match value_end(b, i + 1, 1, end) {
                Some(e) => {
                    emit(&b[i..e]);
                    i = e;
                }
                None => {
                    emit(b[i..end].trim_ascii());
                    note(problem, "the file ends inside a record (truncated?)");
                    return None;
                }
            },
            _ => {
                // A scalar, or garbage: up to the next comma or closing bracket.
                let e = scalar_end(b, i, end);
                if e == i {
                    note(problem, &format!("unexpected byte at offset {i}"));
                    return None;
                }
                emit(b[i..e].trim_ascii());
                i = e;
            }
        }
    }
}

/// The end of a scalar element at `i`: the next `,`, `]` or `}` outside a string.
fn scalar_end(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end {
        match b[i] {
            b'"' => i = string_end(b, i + 1, end),
            b',' | b']' | b'}' => return i,
            _ => i += 1,
        }
    }
    end
}

/// Index just past the bracket that closes the value being scanned, from `i` with `depth`
/// brackets open; None when `end` comes first.
fn value_end(b: &[u8], mut i: usize, mut depth: usize, end: usize) -> Option<usize> {
    while i < end {
        match b[i] {
            b'"' => {
                i = string_end(b, i + 1, end);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index just past the quote that ends the string whose body starts at `i`; a string is taken
/// to end at a line break (JSON strings cannot hold one), or at `end`.
fn string_end(b: &[u8], mut i: usize, end: usize) -> usize {
    let b = &b[..end];
    loop {
        i = plain_run_end(b, i);
        match b.get(i) {
            None => return end,
            Some(b'"') => return i + 1,
            Some(b'\\') => i += 2,
            Some(b'\n') => return i,
            Some(_) => i += 1,
        }
        if i >= end {
            return end;
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Keeps the first problem: later ones are usually its consequences.
fn note(problem: &mut Option<String>, what: &str) {
    problem.get_or_insert_with(|| what.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &str) -> (Vec<String>, Option<String>) {
        let mut pieces = Vec::new();
        let s = split_records(input.as_bytes(), |p| pieces.push(String::from_utf8_lossy(p).into_owned()));
        assert_eq!(s.records, pieces.len() as u64);
        (pieces, s.problem)
    }

    const A: &str = r#"{"eventName":"A","errorMessage":"has } and ] and \" inside","x":[1,{"y":null}]}"#;
    const B: &str = r#"{"eventName":"B"}"#;

    #[test]
    fn shapes() {
        let pretty_a = "{\n  \"eventName\": \"A\",\n  \"x\": [\n    1,\n    {\n      \"y\": null\n    }\n  ]\n}";
        let cases: Vec<(String, Vec<&str>)> = vec![
            (format!(r#"{{"Records":[{A},{B}]}}"#), vec![A, B]),
            (format!("{{\"Records\" : [ {A} ,\n {B} ] , \"other\": {{\"k\": [1]}} }}\n"), vec![A, B]),
            (format!("[{A}, {B}]"), vec![A, B]),
            (format!("[\n  {A},\n  {B}\n]\n"), vec![A, B]),
            (format!("{A}\n{B}\n\n{A}\n"), vec![A, B, A]),
            (format!("\u{feff}{A}\r\n{B}\r\n"), vec![A, B]),
            // Pretty-printed: one document over many lines, or several.
            (pretty_a.to_string(), vec![pretty_a]),
            (format!("{pretty_a}\n{pretty_a}\n"), vec![pretty_a, pretty_a]),
            (format!("{{\n  \"Records\": [\n    {pretty_a},\n    {B}\n  ]\n}}\n"), vec![pretty_a, B]),
            // Files concatenated with cat.
            (format!(r#"{{"Records":[{A}]}}{{"Records":[{B}]}}"#), vec![A, B]),
            (format!("[{A}][{B}]"), vec![A, B]),
            (String::new(), vec![]),
            ("  \n ".to_string(), vec![]),
            (r#"{"Records":[]}"#.to_string(), vec![]),
            // Records is not a list: the object is a record (a malformed one).
            (r#"{"Records": 5}"#.to_string(), vec![r#"{"Records": 5}"#]),
            (
                format!(r#"{{"eventName":"C","Records":[{A}]}}"#),
                vec![
                    r#"{"eventName":"C","Records":[{"eventName":"A","errorMessage":"has } and ] and \" inside","x":[1,{"y":null}]}]}"#,
                ],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(split(&input), (want.iter().map(|s| s.to_string()).collect(), None), "{input}");
        }
    }

    #[test]
    fn damage_stays_with_its_record() {
        let truncated = r#"{"eventName":"T","errorMessage":"cut"#;
        let unclosed = r#"{"eventName":"U","x":{"y":1}"#;
        let cases: Vec<(String, Vec<&str>, Option<&str>)> = vec![
            // JSON lines: a broken line is one piece, the lines after it are read.
            (format!("{A}\n{truncated}\n{B}\n"), vec![A, truncated, B], None),
            (format!("{A}\n{unclosed}\n{B}\n{B}"), vec![A, unclosed, B, B], None),
            (format!("{A}\nnot json\n{B}"), vec![A, "not json", B], None),
            (format!("{A}\n{A}}}\n{B}"), vec![A, A, "}", B], None),
            // A delivery file cut short: the records before the cut are read.
            (
                format!(r#"{{"Records":[{A},{truncated}"#),
                vec![A, truncated],
                Some("the file ends inside a record (truncated?)"),
            ),
            (format!(r#"{{"Records":[{A},"#), vec![A], Some("the file ends inside its list of records (truncated?)")),
            (
                format!(r#"{{"Records":[{A}]"#),
                vec![A],
                Some("the file ends before the end of its {\"Records\": [...]} (truncated?)"),
            ),
            ("[1, 2".to_string(), vec!["1", "2"], Some("the file ends inside its list of records (truncated?)")),
            // A missing comma between records costs nothing; garbage in the list ends it.
            (format!(r#"{{"Records":[{A} {B}]}}"#), vec![A, B], None),
            (format!(r#"{{"Records":[{A},}}{B}]}}"#), vec![A], Some("unexpected byte at offset 92")),
            ("not json".to_string(), vec![], Some("not JSON")),
            ("\"Records\"".to_string(), vec![], Some("not JSON")),
            // A string cannot span lines: the damage of a raw line break stays in its record.
            (
                "{\n \"a\": \"x\ny\",\n \"b\": 1\n}\n".to_string() + B,
                vec!["{\n \"a\": \"x\ny\",\n \"b\": 1\n}", B],
                None,
            ),
        ];
        for (input, want, problem) in cases {
            let want = (want.iter().map(|s| s.to_string()).collect(), problem.map(str::to_string));
            assert_eq!(split(&input), want, "{input}");
        }
    }

    #[test]
    fn bytes_are_not_decoded() {
        let mut file = format!(r#"{{"Records":[{A},{{"errorMessage":"caf"#).into_bytes();
        file.extend_from_slice(b"\xff\xfe\"},");
        file.extend_from_slice(B.as_bytes());
        file.extend_from_slice(b"]}");
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let s = split_records(&file, |p| pieces.push(p.to_vec()));
        assert_eq!(s, Split { records: 3, problem: None });
        assert_eq!(pieces[1], b"{\"errorMessage\":\"caf\xff\xfe\"}");
        assert_eq!(pieces[2], B.as_bytes());
    }

    /// The split of real delivery files equals serde_json's reading of them, and every piece
    /// of a damaged input is a distinct part of it (nothing read twice, no panic).
    #[test]
    fn real_files_and_mutations() {
        let dir = crate::engine::test_records_dir();
        let mut names: Vec<_> =
            std::fs::read_dir(dir.join("invictus-ir/CloudTrail")).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        let mut file = Vec::new();
        for path in &names {
            file = std::fs::read(path).unwrap();
            #[derive(serde::Deserialize)]
            struct Delivery<'a> {
                #[serde(borrow, rename = "Records")]
                records: Vec<&'a serde_json::value::RawValue>,
            }
            let want: Delivery = serde_json::from_slice(&file).unwrap();
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            assert_eq!(split_records(&file, |p| pieces.push(p.to_vec())).problem, None);
            assert_eq!(pieces.len(), want.records.len(), "{}", path.display());
            assert!(pieces.iter().zip(&want.records).all(|(p, r)| p == r.get().as_bytes()));
        }

        let mut rng = crate::synth::SplitMix64::new(9);
        const ALPHABET: &[u8] = b"{}[]\":,\\ \n\r\t\xff";
        for _ in 0..2000 {
            let mut m = file[..file.len().min(20_000)].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len() as u64) as usize;
                let c = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
                match rng.below(3) {
                    0 => m[at] = c,
                    1 => m.insert(at, c),
                    _ => m.truncate(at.max(1)),
                }
            }
            let mut last_end = 0;
            split_records(&m, |p| {
                let start = p.as_ptr() as usize - m.as_ptr() as usize;
                assert!(start >= last_end, "pieces overlap");
                last_end = start + p.len();
                assert!(last_end <= m.len());
            });
        }
    }
}
