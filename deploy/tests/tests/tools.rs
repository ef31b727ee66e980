//! Running the checking tools.

use std::process::{Command, Output};

/// Runs a tool; panics naming it if it cannot start (the test command installs them).
pub fn run(command: &mut Command) -> Output {
    let program = format!("{command:?}");
    command.output().unwrap_or_else(|e| panic!("{program}: {e} (the README test command installs it)"))
}

/// Fails with the tool's output unless it succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
