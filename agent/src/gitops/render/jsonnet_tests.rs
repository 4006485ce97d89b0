//! Jsonnet in directory sources: detection, output flattening, variables and libraries, the
//! import jail and the bounds. Conformance with go-jsonnet is checked against its own testdata
//! in tests/tests/e2e/jsonnet.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::jsonnet::{Evaluation, nesting_depth};
use super::*;

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn names(objects: &[DynamicObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect()
}

fn cm(name: &str) -> String {
    format!("{{apiVersion: 'v1', kind: 'ConfigMap', metadata: {{name: '{name}'}}}}")
}

async fn render_with(
    root: &Path,
    path: &str,
    options: RenderOptions,
) -> Result<Vec<String>, RenderError> {
    render(root, path, &options).await.map(|o| names(&o))
}

async fn render_plain(root: &Path, path: &str) -> Result<Vec<String>, RenderError> {
    render_with(root, path, RenderOptions::default()).await
}

fn evaluate_text(text: &str) -> Result<serde_json::Value, RenderError> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.jsonnet", text);
    jsonnet::evaluate(&Evaluation::new(dir.path(), Path::new("main.jsonnet")))
}

#[tokio::test]
async fn a_directory_of_only_jsonnet_files_renders_their_objects_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "app/b.jsonnet",
        &format!("[{}, {}]", cm("b1"), cm("b2")),
    );
    write(
        root,
        "app/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    write(
        root,
        "app/c.jsonnet",
        "local lib = import 'lib.libsonnet'; lib.make('c')",
    );
    // Only imported: a .libsonnet file is never evaluated on its own.
    write(
        root,
        "app/lib.libsonnet",
        "{ make(name):: {apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: name}} }",
    );
    write(root, "app/sub/d.jsonnet", &cm("d"));
    assert_eq!(
        render_plain(root, "app").await.unwrap(),
        ["a", "b1", "b2", "c"]
    );
    let recursive = RenderOptions {
        directory: DirectoryOptions {
            recurse: true,
            exclude: Some("b.jsonnet".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        render_with(root, "app", recursive).await.unwrap(),
        ["a", "c", "d"]
    );
}

#[tokio::test]
async fn the_tool_is_detected_as_argo_cd_detects_it_and_an_explicit_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "both/kustomization.yaml", "resources: []\n");
    write(root, "both/main.jsonnet", &cm("j"));
    write(
        root,
        "chart/Chart.yaml",
        "apiVersion: v2\nname: x\nversion: 0.1.0\n",
    );
    write(root, "chart/main.jsonnet", &cm("j"));

    let explicit = |types: Vec<SourceType>| RenderOptions {
        explicit: types,
        ..Default::default()
    };
    // `directory` set: a directory even next to a kustomization (which then is a file that is
    // not an object).
    let error = render_with(root, "both", explicit(vec![SourceType::Directory]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("kustomization.yaml"), "{error}");
    // Chart.yaml: Helm, named as unsupported, not read as a directory.
    let error = render_plain(root, "chart").await.unwrap_err();
    assert_eq!(error.reason(), "UnsupportedSource");
    assert!(error.to_string().contains("Helm"), "{error}");
    // But `directory` set on it renders the Jsonnet file.
    let only_jsonnet = RenderOptions {
        directory: DirectoryOptions {
            include: Some("*.jsonnet".into()),
            ..Default::default()
        },
        ..explicit(vec![SourceType::Directory])
    };
    assert_eq!(
        render_with(root, "chart", only_jsonnet).await.unwrap(),
        ["j"]
    );
    let error = render_with(root, "chart", explicit(vec![SourceType::Helm]))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "UnsupportedSource");
    let error = render_with(
        root,
        "chart",
        explicit(vec![SourceType::Plugin(Some("tanka".into()))]),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "UnsupportedSource");
    assert!(error.to_string().contains("plugin tanka"), "{error}");
    let error = render_with(
        root,
        "chart",
        explicit(vec![SourceType::Kustomize, SourceType::Directory]),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "MultipleSourceTypes");
    assert!(error.to_string().contains("Kustomize,Directory"), "{error}");
}

#[tokio::test]
async fn output_is_an_object_an_array_or_a_list_and_anything_else_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "one/a.jsonnet", &cm("a"));
    write(
        root,
        "list/a.jsonnet",
        &format!(
            "{{apiVersion: 'v1', kind: 'List', items: [{}, {}]}}",
            cm("x"),
            cm("y")
        ),
    );
    write(
        root,
        "array/a.jsonnet",
        &format!(
            "[{}, {{apiVersion: 'v1', kind: 'ConfigMapList', items: [{}]}}]",
            cm("p"),
            cm("q")
        ),
    );
    write(root, "empty/a.jsonnet", "[]");
    assert_eq!(render_plain(root, "one").await.unwrap(), ["a"]);
    assert_eq!(render_plain(root, "list").await.unwrap(), ["x", "y"]);
    assert_eq!(render_plain(root, "array").await.unwrap(), ["p", "q"]);
    assert!(render_plain(root, "empty").await.unwrap().is_empty());

    for (name, text, expected) in [
        (
            "nested",
            format!("[[{}]]", cm("n")),
            "item 0 of the output is an array",
        ),
        ("string", "'hello'".to_string(), "the output is a string"),
        (
            "nameless",
            "{apiVersion: 'v1', kind: 'ConfigMap'}".to_string(),
            "no metadata.name",
        ),
        (
            "function",
            "function(x) x".to_string(),
            "missing argument: x",
        ),
    ] {
        write(root, &format!("{name}/a.jsonnet"), &text);
        let error = render_plain(root, name).await.unwrap_err();
        assert_eq!(error.reason(), "JsonnetFailed", "{name}: {error}");
        let message = error.to_string();
        assert!(message.contains(&format!("{name}/a.jsonnet")), "{message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[tokio::test]
async fn ext_vars_tlas_and_libs_as_argo_cd_with_the_build_environment_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "apps/web/main.jsonnet",
        r#"
local k = import 'k.libsonnet';
function(replicas, team='none') [
  k.configMap(std.extVar('app') + '-' + team, {
    replicas: std.toString(replicas * 2),
    env: std.extVar('env'),
    flag: std.toString(std.extVar('flag')),
    revision: std.extVar('revision'),
  }),
]
"#,
    );
    write(
        root,
        "vendor/k.libsonnet",
        "{ configMap(name, data):: {apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: name}, data: data} }",
    );
    let var = |name: &str, value: &str, code: bool| JsonnetVar {
        name: name.into(),
        value: value.into(),
        code,
    };
    let identity = BuildIdentity {
        app_name: "web".into(),
        app_namespace: "prod".into(),
        project: "default".into(),
    };
    let options = RenderOptions {
        jsonnet: JsonnetOptions {
            ext_vars: vec![
                var("app", "$ARGOCD_APP_NAME", false),
                var("env", "${ARGOCD_APP_NAMESPACE}-$$x", false),
                var("flag", "1 < 2", true),
                var("revision", "$ARGOCD_APP_REVISION_SHORT", false),
            ],
            tlas: vec![var("replicas", "3", true), var("team", "blue", false)],
            libs: vec!["vendor".into()],
        },
        env: BuildEnv::new(
            &identity,
            "0123456789abcdef0123456789abcdef01234567",
            "https://git.example/repo.git",
            "apps/web",
            "main",
        ),
        ..Default::default()
    };
    let objects = render(root, "apps/web", &options).await.unwrap();
    assert_eq!(names(&objects), ["web-blue"]);
    assert_eq!(
        objects[0].data["data"],
        serde_json::json!({"replicas": "6", "env": "prod-$x", "flag": "true", "revision": "0123456"})
    );
    // An unset external variable and a missing library are named.
    let mut missing = options.clone();
    missing.jsonnet.ext_vars.remove(0);
    let error = render(root, "apps/web", &missing).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("undefined external variable: app"),
        "{error}"
    );
    let mut no_lib = options.clone();
    no_lib.jsonnet.libs = vec!["nowhere".into()];
    let error = render(root, "apps/web", &no_lib).await.unwrap_err();
    assert!(error.to_string().contains("nowhere"), "{error}");
    let mut outside = options;
    outside.jsonnet.libs = vec!["../..".into()];
    let error = render(root, "apps/web", &outside).await.unwrap_err();
    assert_eq!(error.reason(), "FileRefused", "{error}");
}

#[test]
fn the_build_environment_is_substituted_as_go_os_expand() {
    let env = BuildEnv::new(
        &BuildIdentity {
            app_name: "web".into(),
            app_namespace: "prod".into(),
            project: "p".into(),
        },
        "abcdef0123456789",
        "u",
        "apps/web",
        "main",
    );
    for (text, expected) in [
        ("$ARGOCD_APP_NAME", "web"),
        ("${ARGOCD_APP_NAME}-x", "web-x"),
        ("a$ARGOCD_APP_NAMESPACE.b", "aprod.b"),
        ("$$ARGOCD_APP_NAME", "$ARGOCD_APP_NAME"),
        ("$UNKNOWN|", "|"),
        ("${}x", "x"),
        ("${unclosed", "unclosed"),
        ("cost: 5$", "cost: 5$"),
        ("$ not", "$ not"),
        ("$1x", "x"),
        ("${ARGOCD_APP_REVISION_SHORT_8}", "abcdef01"),
        ("ünï$ARGOCD_APP_SOURCE_PATH", "ünïapps/web"),
    ] {
        assert_eq!(env.substitute(text), expected, "{text}");
    }
}

#[tokio::test]
async fn imports_may_not_leave_the_checkout_by_path_or_symlink() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.libsonnet", "{ token: 'hunter2' }");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "shared/ok.libsonnet", "{ name: 'shared' }");
    std::os::unix::fs::symlink(
        outside.path().join("secret.libsonnet"),
        root.join("shared/link.libsonnet"),
    )
    .unwrap();
    let depth = outside.path().components().count() + root.components().count();
    let climb = "../".repeat(depth);
    let secret = outside.path().join("secret.libsonnet");
    for (name, text) in [
        ("relative", format!("import '{climb}{}'", secret.display().to_string().trim_start_matches('/'))),
        ("absolute", format!("import '{}'", secret.display())),
        ("symlink", "import '../shared/link.libsonnet'".to_string()),
        ("importstr", "{apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: importstr '../shared/link.libsonnet'}}".to_string()),
    ] {
        write(root, &format!("{name}/main.jsonnet"), &text);
        let error = render_plain(root, name).await.unwrap_err();
        assert_eq!(error.reason(), "FileRefused", "{name}: {error}");
        let message = error.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains(&format!("{name}/main.jsonnet")) || message.contains("link.libsonnet"), "{name}: {message}");
    }
    // `..` that stays inside is fine.
    write(
        root,
        "inside/main.jsonnet",
        "local s = import '../shared/ok.libsonnet'; {apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: s.name}}",
    );
    assert_eq!(render_plain(root, "inside").await.unwrap(), ["shared"]);
    // The evaluated file itself may not be a symlink out.
    std::os::unix::fs::symlink(&secret, root.join("inside/z.jsonnet")).unwrap();
    let error = render_plain(root, "inside").await.unwrap_err();
    assert_eq!(error.reason(), "FileRefused", "{error}");
}

#[tokio::test]
async fn errors_name_the_file_line_and_column_even_in_an_imported_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "syntax/main.jsonnet",
        "{\n  a: 1,\n  b: [1, 2,, 3],\n}\n",
    );
    let error = render_plain(root, "syntax").await.unwrap_err();
    assert_eq!(error.reason(), "JsonnetFailed");
    assert!(
        error
            .to_string()
            .starts_with("failed to evaluate Jsonnet syntax/main.jsonnet:3:"),
        "{error}"
    );
    write(
        root,
        "runtime/main.jsonnet",
        "local l = import 'lib.libsonnet';\nl.f(1)\n",
    );
    write(
        root,
        "runtime/lib.libsonnet",
        "{\n  f(x)::\n    error 'bad input ' + x,\n}\n",
    );
    let error = render_plain(root, "runtime").await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("failed to evaluate Jsonnet runtime/lib.libsonnet:3:5"),
        "{message}"
    );
    assert!(message.contains("bad input 1"), "{message}");
    write(
        root,
        "missing/main.jsonnet",
        "\n  import 'nope.libsonnet'\n",
    );
    let message = render_plain(root, "missing").await.unwrap_err().to_string();
    assert!(message.contains("missing/main.jsonnet:2:3"), "{message}");
    assert!(message.contains("nope.libsonnet"), "{message}");
}

#[test]
fn deep_recursion_and_deep_nesting_are_refused_not_a_crash() {
    let error = evaluate_text("local f(n) = f(n + 1) + 1; f(0)").unwrap_err();
    assert!(error.to_string().contains("stack overflow"), "{error}");
    // Nesting just within the limit parses on the evaluation thread's stack…
    let deep = format!(
        "{}1{}",
        "[".repeat(jsonnet::MAX_NESTING - 1),
        "]".repeat(jsonnet::MAX_NESTING - 1)
    );
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "main.jsonnet", &deep);
            let mut evaluation = Evaluation::new(dir.path(), Path::new("main.jsonnet"));
            evaluation.max_stack = 5000;
            jsonnet::evaluate(&evaluation).map(|_| ())
        })
        .unwrap();
    // (the evaluator's own stack limit may still refuse manifesting it; it must not crash)
    let _ = handle.join().unwrap();
    let locals = format!("{}1", "local a = 1; ".repeat(jsonnet::MAX_NESTING - 2));
    assert!(nesting_depth(locals.as_bytes()) <= jsonnet::MAX_NESTING);
    // …and beyond it is refused before parsing.
    let bomb = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let error = evaluate_text(&bomb).unwrap_err();
    assert!(
        error.to_string().contains("more than the limit of 1000"),
        "{error}"
    );
    let unary = format!("{}1", "-".repeat(5000));
    assert!(
        evaluate_text(&unary)
            .unwrap_err()
            .to_string()
            .contains("nests")
    );
    // Strings, comments and binary operators do not count.
    assert_eq!(
        nesting_depth(b"// [[[[\n'[[[[' + \"((((\" + 1 - 2 - 3 /* {{{ */"),
        0
    );
    assert_eq!(nesting_depth(b"{a: [1, (2)]}"), 3);
}

#[test]
fn output_and_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "big.jsonnet",
        "[std.repeat('x', 1000) for i in std.range(1, 1000)]",
    );
    let mut evaluation = Evaluation::new(dir.path(), Path::new("big.jsonnet"));
    evaluation.max_total_bytes = 100_000;
    let error = jsonnet::evaluate(&evaluation).unwrap_err();
    assert_eq!(error.reason(), "RenderTooLarge", "{error}");
    write(dir.path(), "reads.jsonnet", "importstr 'data.txt'");
    write(dir.path(), "data.txt", &"y".repeat(2000));
    let mut evaluation = Evaluation::new(dir.path(), Path::new("reads.jsonnet"));
    evaluation.max_file_bytes = 1000;
    let error = jsonnet::evaluate(&evaluation).unwrap_err();
    assert_eq!(error.reason(), "FileRefused", "{error}");
    assert!(error.to_string().contains("data.txt"), "{error}");
}

#[tokio::test]
async fn a_slow_program_times_out_and_keeps_its_permit_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A few seconds of work in a debug build, far beyond the timeout.
    write(
        root,
        "slow/main.jsonnet",
        &format!(
            "local n = std.foldl(function(a, b) a + b, std.range(1, 3000000), 0); {}",
            "{apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: 'n'}, data: {n: std.toString(n)}}"
        ),
    );
    write(root, "fast/main.jsonnet", &cm("fast"));
    let options = RenderOptions {
        limits: RenderLimits {
            jsonnet: Jsonnet::new(Duration::from_millis(300), 500, 1),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = Instant::now();
    let error = render(root, "slow", &options).await.unwrap_err();
    assert_eq!(error.reason(), "JsonnetTimeout", "{error}");
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The runaway still holds the only permit: the next render waits and times out too.
    let error = render(root, "fast", &options).await.unwrap_err();
    assert_eq!(error.reason(), "JsonnetTimeout", "{error}");
}
