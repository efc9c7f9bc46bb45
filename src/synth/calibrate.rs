//! Reweighting the built-in model from real CloudTrail files, when they are at hand.
//!
//! Only counts are taken from the files: how often each API of the model appears among
//! non-errors, how often each error shape appears among errors, and the share of errors. The
//! records themselves are never copied into what is generated.

use std::io;
use std::path::Path;

use serde_json::Value;

use super::SynthModel;
use super::model::{APIS, ERRORS};
use crate::engine::record::parse_record;

/// The model fitted to a directory of records, and what was counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub model: SynthModel,
    /// Records read (those that parse as CloudTrail records).
    pub records: u64,
    /// Of which errors (errorCode or failed console sign-in).
    pub errors: u64,
}

impl Calibration {
    /// The share of errors in the files: a value for `SynthConfig::error_ratio`.
    pub fn error_ratio(&self) -> f64 {
        if self.records == 0 { 0.0 } else { self.errors as f64 / self.records as f64 }
    }
}

/// Reads every `*.json` (`{"Records":[…]}` or a JSON array of records) and `*.jsonl` file
/// under `dir`, recursively, and sets each table entry's weight to 1 + the number of times
/// it was seen: the files' mix wins where they have data, and shapes they lack stay possible.
pub fn calibrate_from_dir(dir: &Path) -> io::Result<Calibration> {
    let mut api_counts = vec![0u32; APIS.len()];
    let mut err_counts = vec![0u32; ERRORS.len()];
    let (mut records, mut errors) = (0u64, 0u64);
    let mut count = |raw: &[u8]| {
        let Ok(r) = parse_record(raw) else { return };
        records += 1;
        match r.error_kind() {
            Some(kind) => {
                errors += 1;
                if let Some(i) =
                    ERRORS.iter().position(|e| e.code == kind && e.name == r.event_name && e.source == r.event_source)
                {
                    err_counts[i] += 1;
                }
            }
            None => {
                if let Some(i) = APIS.iter().position(|a| a.name == r.event_name && a.source == r.event_source) {
                    api_counts[i] += 1;
                }
            }
        }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            match ext {
                "jsonl" => {
                    let text = std::fs::read(&path)?;
                    text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).for_each(&mut count);
                }
                "json" => {
                    let text = std::fs::read(&path)?;
                    let Ok(v) = serde_json::from_slice::<Value>(&text) else { continue };
                    let list = match v {
                        Value::Array(a) => a,
                        Value::Object(mut o) => match o.remove("Records") {
                            Some(Value::Array(a)) => a,
                            _ => continue,
                        },
                        _ => continue,
                    };
                    for r in list {
                        count(r.to_string().as_bytes());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Calibration {
        model: SynthModel {
            api_weights: api_counts.iter().map(|c| c + 1).collect(),
            error_weights: err_counts.iter().map(|c| c + 1).collect(),
        },
        records,
        errors,
    })
}
