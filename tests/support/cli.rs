//! Running the `sd` binary as users do, and what its failures must look like.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sd_testkit::AUTO_MEANS_F32;

pub fn sd(args: &[&str]) -> Output {
    sd_with(args, &[])
}

/// `sd` with extra environment variables.
pub fn sd_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
        .envs(env.iter().copied())
        .output()
        .expect("the sd binary runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A failed run: exit code 1, one `sd: error` line on stderr that mentions every `needles`, no
/// panic.
pub fn assert_fails_naming(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected failure, stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("sd: error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "`{needle}` missing from: {}",
            lines[0]
        );
    }
}

/// `sd generate` with the goldens' settings (10 steps, guidance 7.5, seed 0, plain prompt),
/// before the arguments a test adds.
pub fn golden_run<'a>(prompt: &'a str, negative: &'a str, scheduler: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--prompt",
        prompt,
        "--negative-prompt",
        negative,
        "--steps",
        "10",
        "--cfg",
        "7.5",
        "--seed",
        "0",
        "--scheduler",
        scheduler,
        "--plain-prompt",
    ]
}
