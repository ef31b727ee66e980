//! Where things are.

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A binary of the workspace built for this test run (`cargo test --workspace` builds
/// every package's binaries), next to this test's own executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the whole workspace's tests (bash .ci/test.sh), or `cargo build -p {name}` first",
        path.display()
    );
    path
}
