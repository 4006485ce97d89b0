//! `kubeseal --help` is part of the interface: compared byte for byte with a committed snapshot.
//! `UPDATE_SNAPSHOTS=1 cargo test -p mooring-kubeseal` rewrites it.

use std::path::Path;

use crate::support::{run, success};

#[test]
fn help_matches_the_snapshot() {
    let help = success(&run(&["--help"], b""));
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|value| value == "1") {
        std::fs::write(&snapshot, &help).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|error| {
        panic!(
            "read {}: {error}; run with UPDATE_SNAPSHOTS=1",
            snapshot.display()
        )
    });
    assert!(
        help == expected,
        "--help changed; review and rerun with UPDATE_SNAPSHOTS=1.\n--- expected\n{expected}\n--- actual\n{help}"
    );
}

#[test]
fn version_prints_like_upstream() {
    let version = success(&run(&["--version"], b""));
    assert_eq!(
        version,
        format!("kubeseal version: {}\n", env!("CARGO_PKG_VERSION"))
    );
}
