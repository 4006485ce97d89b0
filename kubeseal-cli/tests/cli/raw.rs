//! `--raw`: one value, opened with the matching private key under the scope's label.

use base64::Engine;

use crate::support::{Keys, failure, run, success};

#[test]
fn raw_values_open_under_each_scope_label() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let cases: [(&[&str], &[u8]); 3] = [
        (
            &["--scope", "strict", "--name", "db", "--namespace", "prod"],
            b"prod/db",
        ),
        (
            &["--scope", "namespace-wide", "--namespace", "prod"],
            b"prod",
        ),
        (&["--scope", "cluster-wide"], b""),
    ];
    for (flags, label) in cases {
        let mut args = vec!["--raw", "--cert", keys.cert_arg()];
        args.extend_from_slice(flags);
        let output = run(&args, b"p4ssw0rd");
        let stdout = success(&output);
        assert!(
            !stdout.ends_with('\n'),
            "no trailing newline, like upstream"
        );
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&stdout)
            .unwrap();
        let opened = mooring_sealing::open(&keys.private, label, &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"p4ssw0rd");
    }
}

#[test]
fn raw_refuses_to_guess_names() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let cert = keys.cert_arg();
    let no_namespace = run(&["--raw", "--cert", cert, "--name", "db"], b"v");
    assert!(failure(&no_namespace).contains("requires --namespace"));
    let no_name = run(&["--raw", "--cert", cert, "--namespace", "prod"], b"v");
    assert!(failure(&no_name).contains("requires --name"));
}

#[test]
fn from_file_reads_the_value_and_needs_raw() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let value = dir.path().join("value");
    std::fs::write(&value, b"from a file").unwrap();
    let spec = format!("password={}", value.display());
    let args = [
        "--raw",
        "--cert",
        keys.cert_arg(),
        "--scope",
        "cluster-wide",
        "--from-file",
        &spec,
    ];
    let stdout = success(&run(&args, b""));
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&stdout)
        .unwrap();
    assert_eq!(
        mooring_sealing::open(&keys.private, b"", &sealed)
            .unwrap()
            .as_slice(),
        b"from a file"
    );

    let without_raw = run(&["--cert", keys.cert_arg(), "--from-file", &spec], b"");
    assert!(failure(&without_raw).contains("--from-file requires --raw"));
    let two = format!("{spec},{spec}");
    let two_files = run(
        &[
            "--raw",
            "--cert",
            keys.cert_arg(),
            "--scope",
            "cluster-wide",
            "--from-file",
            &two,
        ],
        b"",
    );
    assert!(failure(&two_files).contains("only one --from-file"));
}
