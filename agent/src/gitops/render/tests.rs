//! Unit tests on temporary directories. The real kustomize is exercised by the e2e tests
//! (tests/tests/e2e/git.rs); here a stand-in script checks how the runner calls and bounds it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

fn names(objects: &[DynamicObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect()
}

async fn render_dir(
    root: &Path,
    path: &str,
    directory: DirectoryOptions,
) -> Result<Vec<String>, RenderError> {
    let options = RenderOptions {
        directory,
        ..Default::default()
    };
    render(root, path, &options).await.map(|o| names(&o))
}

/// A checkout with an app directory of several files.
fn app_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "app/b.yaml",
        &format!("{}---\n{}", config_map("b1"), config_map("b2")),
    );
    write(root, "app/a.yml", &config_map("a"));
    write(
        root,
        "app/c.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
    );
    write(root, "app/README.md", "# not a manifest\n");
    write(root, "app/.gitlab-ci.yml", "stages: [build]\n");
    write(root, "app/sub/d.yaml", &config_map("d"));
    write(root, "app/sub/deeper/e.yaml", &config_map("e"));
    write(root, "app/skip/f.yaml", &config_map("f"));
    dir
}

#[tokio::test]
async fn a_plain_directory_reads_its_manifests_in_path_order() {
    let dir = app_tree();
    let flat = render_dir(dir.path(), "app", DirectoryOptions::default())
        .await
        .unwrap();
    assert_eq!(flat, ["a", "b1", "b2", "c"]);
    let deep = render_dir(
        dir.path(),
        "./app/",
        DirectoryOptions {
            recurse: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(deep, ["a", "b1", "b2", "c", "f", "d", "e"]);
}

#[tokio::test]
async fn include_and_exclude_globs_match_paths_relative_to_the_source_path() {
    let dir = app_tree();
    let recurse = |include: Option<&str>, exclude: Option<&str>| DirectoryOptions {
        recurse: true,
        include: include.map(str::to_string),
        exclude: exclude.map(str::to_string),
    };
    let yaml_only = render_dir(dir.path(), "app", recurse(Some("*.yaml"), None))
        .await
        .unwrap();
    assert_eq!(yaml_only, ["b1", "b2", "f", "d", "e"]);
    let without_sub = render_dir(dir.path(), "app", recurse(None, Some("{sub/*,skip/*}")))
        .await
        .unwrap();
    assert_eq!(without_sub, ["a", "b1", "b2", "c"]);
    let both = render_dir(
        dir.path(),
        "app",
        recurse(Some("sub/*"), Some("sub/deeper/*")),
    )
    .await
    .unwrap();
    assert_eq!(both, ["d"]);
    let error = render_dir(dir.path(), "app", recurse(Some("{broken"), None))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "InvalidDirectoryPattern");
}

#[tokio::test]
async fn source_paths_that_leave_the_checkout_are_refused() {
    let dir = app_tree();
    for path in ["../app", "app/../../etc", "/etc", "app/.."] {
        let error = render_dir(dir.path(), path, DirectoryOptions::default())
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "InvalidSourcePath", "{path}: {error}");
        assert!(error.to_string().contains(path), "{error}");
    }
    let missing = render_dir(dir.path(), "nope", DirectoryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "SourcePathNotFound");
    // The root of the checkout is a valid source path.
    write(dir.path(), "top.yaml", &config_map("top"));
    assert_eq!(
        render_dir(dir.path(), ".", DirectoryOptions::default())
            .await
            .unwrap(),
        ["top"]
    );
    assert_eq!(
        render_dir(dir.path(), "", DirectoryOptions::default())
            .await
            .unwrap(),
        ["top"]
    );
}

#[tokio::test]
async fn symlinks_inside_are_followed_and_symlinks_out_are_refused_naming_the_file() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.yaml", &config_map("stolen"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "shared/common.yaml", &config_map("common"));
    write(root, "app/own.yaml", &config_map("own"));
    std::os::unix::fs::symlink("../shared/common.yaml", root.join("app/linked.yaml")).unwrap();
    assert_eq!(
        render_dir(root, "app", DirectoryOptions::default())
            .await
            .unwrap(),
        ["common", "own"]
    );

    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        root.join("app/escape.yaml"),
    )
    .unwrap();
    let error = render_dir(root, "app", DirectoryOptions::default())
        .await
        .unwrap_err();
    match &error {
        RenderError::Jail { file, .. } => assert_eq!(file, "app/escape.yaml"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!error.to_string().contains("stolen"));

    // The source path itself may not be a way out either.
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    let error = render_dir(root, "out", DirectoryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "FileRefused", "{error}");
}

#[tokio::test]
async fn files_over_the_size_limit_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app/small.yaml", &config_map("small"));
    let big = format!("{}data:\n  blob: {}\n", config_map("big"), "x".repeat(4096));
    write(dir.path(), "app/big.yaml", &big);
    let options = RenderOptions {
        limits: RenderLimits {
            max_file_bytes: 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    let error = render(dir.path(), "app", &options).await.unwrap_err();
    match &error {
        RenderError::Jail { file, reason } => {
            assert_eq!(file, "app/big.yaml");
            assert!(reason.contains("1024"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let few = RenderOptions {
        limits: RenderLimits {
            max_objects: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    write(
        dir.path(),
        "two/a.yaml",
        &format!("{}---\n{}", config_map("a"), config_map("b")),
    );
    assert_eq!(
        render(dir.path(), "two", &few).await.unwrap_err().reason(),
        "RenderTooLarge"
    );
}

#[tokio::test]
async fn malformed_yaml_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app/good.yaml", &config_map("good"));
    write(
        dir.path(),
        "app/sub/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {a: 1\n",
    );
    let options = RenderOptions {
        directory: DirectoryOptions {
            recurse: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let error = render(dir.path(), "app", &options).await.unwrap_err();
    match &error {
        RenderError::Yaml { file, line, .. } => {
            assert_eq!(file, "app/sub/broken.yaml");
            assert!(line.is_some_and(|l| (5..=6).contains(&l)), "{line:?}");
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("failed to parse app/sub/broken.yaml:"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

/// A stand-in kustomize: a shell script. It runs with PATH=/nonexistent, as the real one: tools
/// need absolute paths.
fn fake_kustomize(dir: &Path, body: &str) -> PathBuf {
    fake_tool(dir, "kustomize", body)
}

fn fake_tool(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn kustomize_options(binary: PathBuf, timeout: Duration, concurrency: usize) -> RenderOptions {
    RenderOptions {
        limits: RenderLimits {
            kustomize: Kustomize::new(binary, timeout, concurrency),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn kustomization_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base/kustomization.yaml",
        "resources:\n- cm.yaml\n",
    );
    write(dir.path(), "base/cm.yaml", &config_map("base"));
    write(
        dir.path(),
        "overlay/kustomization.yaml",
        "resources:\n- ../base\n",
    );
    dir
}

#[tokio::test]
async fn kustomize_runs_with_an_empty_environment_and_its_output_is_parsed() {
    let tools = tempfile::tempdir().unwrap();
    // Prints a ConfigMap whose data shows the arguments and the environment it was given.
    let binary = fake_kustomize(
        tools.path(),
        r#"printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: built\ndata:\n  args: "%s"\n  path: "%s"\n  proxy: "%s"\n  home: "%s"\n' "$*" "$PATH" "$HTTPS_PROXY" "$HOME""#,
    );
    let dir = kustomization_tree();
    let options = kustomize_options(binary, Duration::from_secs(30), 2);
    let objects = render(dir.path(), "overlay", &options).await.unwrap();
    assert_eq!(names(&objects), ["built"]);
    let data = &objects[0].data["data"];
    let args = data["args"].as_str().unwrap();
    assert!(
        args.starts_with("build ")
            && args.ends_with("overlay --load-restrictor LoadRestrictionsRootOnly"),
        "{args}"
    );
    assert_eq!(data["path"], "/nonexistent", "no git for remote bases");
    assert_eq!(data["proxy"], "http://127.0.0.1:9");
    assert_ne!(
        data["home"].as_str().unwrap(),
        std::env::var("HOME").unwrap_or_default()
    );
}

#[tokio::test]
async fn kustomize_is_bounded_by_a_timeout_and_a_concurrency_limit() {
    let tools = tempfile::tempdir().unwrap();
    let dir = kustomization_tree();
    let slow = fake_kustomize(tools.path(), "/bin/sleep 30");
    let options = kustomize_options(slow, Duration::from_millis(300), 1);
    let started = Instant::now();
    let error = render(dir.path(), "overlay", &options).await.unwrap_err();
    assert_eq!(error.reason(), "KustomizeTimeout", "{error}");
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));

    // One permit: two builds of 400 ms each take at least 800 ms together.
    let sleepy = tempfile::tempdir().unwrap();
    let binary = fake_kustomize(
        sleepy.path(),
        &format!(
            "/bin/sleep 0.4\nprintf '{}'",
            config_map("x").replace('\n', "\\n")
        ),
    );
    let options = kustomize_options(binary, Duration::from_secs(30), 1);
    let started = Instant::now();
    let (one, two) = tokio::join!(
        render(dir.path(), "overlay", &options),
        render(dir.path(), "overlay", &options)
    );
    one.unwrap();
    two.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn kustomize_failures_say_what_kustomize_said_and_a_missing_binary_is_named() {
    let tools = tempfile::tempdir().unwrap();
    let dir = kustomization_tree();
    let failing = fake_kustomize(
        tools.path(),
        "echo 'Error: accumulating resources: boom' >&2; exit 1",
    );
    let error = render(
        dir.path(),
        "overlay",
        &kustomize_options(failing, Duration::from_secs(30), 1),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "KustomizeFailed");
    assert!(
        error.to_string().contains("accumulating resources: boom"),
        "{error}"
    );

    let missing = tools.path().join("no-such-kustomize");
    let error = render(
        dir.path(),
        "overlay",
        &kustomize_options(missing.clone(), Duration::from_secs(30), 1),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "KustomizeUnavailable");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn remote_bases_and_references_out_of_the_checkout_are_refused_before_kustomize_runs() {
    let tools = tempfile::tempdir().unwrap();
    // Would succeed: the refusals below must come from mooring, not from kustomize.
    let binary = fake_kustomize(
        tools.path(),
        &format!("printf '{}'", config_map("x").replace('\n', "\\n")),
    );
    let options = kustomize_options(binary, Duration::from_secs(30), 1);
    let dir = kustomization_tree();
    write(
        dir.path(),
        "remote/kustomization.yaml",
        "resources:\n- ../base\n- https://github.com/example/repo//deploy?ref=v1\n",
    );
    let error = render(dir.path(), "remote", &options).await.unwrap_err();
    match &error {
        RenderError::RemoteBase { file, reference } => {
            assert_eq!(file, "remote/kustomization.yaml");
            assert!(reference.starts_with("https://github.com"));
        }
        other => panic!("expected a remote base refusal, got {other:?}"),
    }
    // Also when the remote base is one level down, in a base of the overlay.
    write(
        dir.path(),
        "nested/base/kustomization.yaml",
        "resources:\n- github.com/example/repo/base?ref=main\n",
    );
    write(
        dir.path(),
        "nested/overlay/kustomization.yaml",
        "resources:\n- ../base\n",
    );
    let error = render(dir.path(), "nested/overlay", &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RenderError::RemoteBase { file, .. } if file == "nested/base/kustomization.yaml"),
        "{error:?}"
    );
    // Allowed when the agent allows remote bases.
    let mut allowed = options.clone();
    allowed.limits.kustomize = allowed.limits.kustomize.clone().with_remote_bases(true);
    render(dir.path(), "remote", &allowed).await.unwrap();

    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "kustomization.yaml", "resources: []\n");
    write(
        dir.path(),
        "abs/kustomization.yaml",
        &format!("resources:\n- {}\n", outside.path().display()),
    );
    assert_eq!(
        render(dir.path(), "abs", &options)
            .await
            .unwrap_err()
            .reason(),
        "FileRefused"
    );
    std::os::unix::fs::symlink(outside.path(), dir.path().join("base/escape")).unwrap();
    let error = render(dir.path(), "overlay", &options).await.unwrap_err();
    assert!(
        matches!(&error, RenderError::Jail { file, .. } if file == "base/escape"),
        "a symlink out of the checkout, anywhere, stops a kustomize build: {error:?}"
    );
}

#[tokio::test]
async fn argo_cd_kustomize_options_go_into_a_generated_overlay() {
    let tools = tempfile::tempdir().unwrap();
    // Prints the kustomization it was asked to build, as the data of a ConfigMap.
    let binary = fake_kustomize(
        tools.path(),
        r#"dir="$2"; printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seen\ndata:\n  kustomization: |\n'; /bin/sed 's/^/    /' "$dir/kustomization.yaml"; echo"#,
    );
    let dir = kustomization_tree();
    let mut options = kustomize_options(binary, Duration::from_secs(30), 1);
    options.kustomize = KustomizeOptions {
        name_prefix: Some("staging-".into()),
        name_suffix: None,
        images: vec!["nginx=registry.test/nginx:1.27".into()],
        common_labels: BTreeMap::from([("team".into(), "platform".into())]),
    };
    let objects = render(dir.path(), "overlay", &options).await.unwrap();
    let generated: serde_json::Value =
        serde_json::from_str(objects[0].data["data"]["kustomization"].as_str().unwrap()).unwrap();
    assert_eq!(generated["namePrefix"], "staging-");
    assert_eq!(generated.get("nameSuffix"), None);
    assert_eq!(
        generated["images"],
        serde_json::json!([{"name": "nginx", "newName": "registry.test/nginx", "newTag": "1.27"}])
    );
    assert_eq!(
        generated["commonLabels"],
        serde_json::json!({"team": "platform"})
    );
    let reference = generated["resources"][0].as_str().unwrap();
    assert!(
        reference.starts_with("../"),
        "kustomize refuses absolute bases: {reference}"
    );

    options.kustomize.images = vec!["registry.test:5000/app".into()];
    assert_eq!(
        render(dir.path(), "overlay", &options)
            .await
            .unwrap_err()
            .reason(),
        "InvalidKustomizeImage"
    );
}

#[tokio::test]
async fn a_helm_chart_is_named_as_unsupported_rather_than_read_as_manifests() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "chart/Chart.yaml",
        "apiVersion: v2\nname: x\nversion: 0.1.0\n",
    );
    write(
        dir.path(),
        "chart/templates/cm.yaml",
        &config_map("{{ .Release.Name }}"),
    );
    let error = render_dir(dir.path(), "chart", DirectoryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "UnsupportedSource", "{error}");
    assert!(error.to_string().contains("Helm"), "{error}");
}

#[tokio::test]
async fn kubectl_is_run_as_kubectl_kustomize() {
    let tools = tempfile::tempdir().unwrap();
    let binary = fake_tool(
        tools.path(),
        "kubectl",
        r#"printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: built\ndata:\n  command: "%s"\n' "$1""#,
    );
    let dir = kustomization_tree();
    let objects = render(
        dir.path(),
        "overlay",
        &kustomize_options(binary, Duration::from_secs(30), 1),
    )
    .await
    .unwrap();
    assert_eq!(objects[0].data["data"]["command"], "kustomize");
}
