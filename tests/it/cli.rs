//! The binary as a person first meets it: where settings come from, what its errors say,
//! what it writes to a terminal or a file, and the files it leaves.

use std::process::{Command, Output};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"));
    for var in ["DATABASE_URL", "DATA_DIR", "LOG_FORMAT", "RUST_LOG", "NO_COLOR"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn logs_in_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (out, stderr) = run(binary().args(["migrate", "--data-dir"]).arg(dir.path()).env("LOG_FORMAT", "pretty"));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a file: {stderr:?}");
}
