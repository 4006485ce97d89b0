//! Jsonnet directory sources end to end (the agent, the real API server and git over HTTP), and
//! mooring's evaluator against go-jsonnet's own testdata (the implementation Argo CD uses).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use mooring_crds::application::{
    Application, DirectorySource, HealthState, JsonnetSource, JsonnetVar, SyncState,
};
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace};
use serde_json::Value;

/// An Application of `path` whose `directory.jsonnet` is `jsonnet`.
fn jsonnet_app(name: &str, ns: &str, url: &str, path: &str, jsonnet: JsonnetSource) -> Application {
    let mut app = ApplicationManifest::new(name, ns, url, path)
        .application()
        .unwrap();
    app.spec.source.directory = Some(DirectorySource {
        jsonnet: Some(jsonnet),
        ..Default::default()
    });
    app
}

fn var(name: &str, value: &str, code: bool) -> JsonnetVar {
    JsonnetVar {
        name: name.into(),
        value: value.into(),
        code,
    }
}

const MAIN: &str = r#"
local k = import 'k.libsonnet';
function(replicas, tier='none')
  local names = ['%s-%s-%d' % [std.extVar('app'), tier, i] for i in std.range(1, replicas)];
  [k.configMap(n, {env: std.extVar('env'), shards: std.toString(std.extVar('shards'))}) for n in names]
"#;

const LIB: &str = "{ configMap(name, data):: {apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: name}, data: data} }\n";

#[tokio::test]
async fn a_jsonnet_directory_syncs_and_a_broken_or_empty_one_is_not_synced() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "jsonnet").await.unwrap();
    let repo = GitRepo::create(&env, ns.name()).unwrap();
    repo.write("apps/web/main.jsonnet", MAIN).unwrap();
    // Never evaluated on its own: only through the import.
    repo.write("vendor/k.libsonnet", LIB).unwrap();
    repo.write("apps/empty/main.jsonnet", "[]\n").unwrap();
    let (url, first) = repo
        .serve_over_http(&env, "web: jsonnet", &[&ns])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    let agent = RunningAgent::start_with(args).await.unwrap();

    let settings = JsonnetSource {
        ext_vars: vec![
            var("app", "$ARGOCD_APP_NAME", false),
            var("env", "${ARGOCD_APP_NAMESPACE}", false),
            var("shards", "2 * 2", true),
        ],
        tlas: vec![var("replicas", "2", true), var("tier", "blue", false)],
        libs: vec!["vendor".into()],
    };
    ns.apply_application(&jsonnet_app("web", ns.name(), &url, "apps/web", settings))
        .await
        .unwrap();
    let app = ns.wait_for_synced_at("web", &first).await.unwrap();
    assert_eq!(app.status.unwrap().resources.len(), 2);
    for name in ["web-blue-1", "web-blue-2"] {
        let map = ns.api::<ConfigMap>().get(name).await.unwrap();
        let data = map.data.unwrap();
        assert_eq!(data["env"], ns.name(), "{name}");
        assert_eq!(data["shards"], "4", "{name}");
    }

    // A syntax error: a condition names the file and the line; nothing is pruned.
    repo.write(
        "apps/web/main.jsonnet",
        "local k = import 'k.libsonnet';\nfunction(replicas, tier='none')\n  [k.configMap('x', {a: 1,, b: 2})]\n",
    )
    .unwrap();
    repo.commit("web: broken").unwrap();
    let (app, message) = ns
        .wait_for_app_condition("web", "Synced", "JsonnetFailed")
        .await
        .unwrap();
    assert!(message.contains("apps/web/main.jsonnet:3:"), "{message}");
    let status = app.status.unwrap();
    assert_eq!(
        status.sync.unwrap().revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(status.resources.len(), 2, "the inventory is kept");
    for name in ["web-blue-1", "web-blue-2"] {
        assert!(
            ns.api::<ConfigMap>().get_opt(name).await.unwrap().is_some(),
            "{name} was pruned after a render error"
        );
    }

    // Only a .jsonnet file that renders an empty array, no allowEmpty: not Synced, the path named.
    ns.apply_application(&jsonnet_app(
        "empty",
        ns.name(),
        &url,
        "apps/empty",
        JsonnetSource::default(),
    ))
    .await
    .unwrap();
    let (app, message) = ns
        .wait_for_app_condition("empty", "Synced", "EmptyRender")
        .await
        .unwrap();
    assert!(
        message.contains("source path apps/empty rendered no objects"),
        "{message}"
    );
    let status = app.status.unwrap();
    assert_eq!(status.sync.unwrap().status, SyncState::OutOfSync);
    assert_eq!(status.health.unwrap().status, HealthState::Missing);
    assert!(
        status.history.is_empty(),
        "an empty render is no deployment"
    );

    agent.stop().await.unwrap();
}

/// Cases whose result differs from go-jsonnet's golden output (JSON-compared; an error golden
/// matches any error), with why. The test fails if another case differs or one of these matches.
const KNOWN_DIFFERENCES: &[&str] = &[
    // rsjsonnet-lang's std does not type-check std.xor/std.xnor arguments (go-jsonnet errors).
    "builtinXnor2",
    "builtinXor2",
    // Numbers inside strings: rsjsonnet-lang prints the shortest form (1.42), go-jsonnet 17
    // significant digits (1.4199999999999999); as JSON numbers they are equal.
    "builtin_escapeStringJson",
    "builtin_manifestTomlEx",
    // A division one ulp apart (1e-30 vs 9.9999999999999991e-31).
    "div3",
    // The largest double: go-jsonnet prints all 309 integer digits, which serde_json reads as
    // another value than 1.7975425555844098e+308.
    "pow6",
    // go-jsonnet's test runner registers native functions (jsonToString, nativeError); Argo CD
    // registers none, and neither does mooring.
    "native1",
    "native2",
    "native3",
    "native6",
    // std.foldl/std.foldr over a string (go-jsonnet 0.22 accepts strings; rsjsonnet-lang
    // arrays only).
    "foldl_single_element",
    "foldl_string",
    "foldr_single_element",
    "foldr_string",
    // go-jsonnet's runner names the file `testdata/<name>`; mooring names it relative to the
    // checkout (Argo CD: the file's absolute path in the repo server's temporary clone).
    "std.thisFile",
    "std.thisFile2",
    // A parameter of one std function is named differently (`str_`), so a named call fails.
    "stdlib_smoke_test",
    // std.strReplace with an empty `from`: go-jsonnet errors, rsjsonnet-lang inserts.
    "strReplace3",
    // `tailstrict` is accepted but not strict in rsjsonnet-lang: an unused erroring default
    // argument is not evaluated.
    "tailstrict3",
    // Evaluation order: go-jsonnet exceeds its stack evaluating this makeArray, rsjsonnet-lang
    // does not.
    "std.makeArray_recursive_evalutation_order_matters",
];

/// The external variables go-jsonnet's own test runner gives its `extvar_*` cases.
fn go_jsonnet_ext_vars() -> Vec<mooring_agent::gitops::render::JsonnetVar> {
    let var = |name: &str, value: &str, code: bool| mooring_agent::gitops::render::JsonnetVar {
        name: name.into(),
        value: value.into(),
        code,
    };
    vec![
        var("stringVar", "2 + 2", false),
        var("codeVar", "3 + 3", true),
        var("errorVar", "error 'xxx'", true),
        var("staticErrorVar", ")", true),
        var("UndeclaredX", "x", true),
        var(
            "selfRecursiveVar",
            r#"[42, std.extVar("selfRecursiveVar")[0] + 1]"#,
            true,
        ),
        var(
            "mutuallyRecursiveVar1",
            r#"[42, std.extVar("mutuallyRecursiveVar2")[0] + 1]"#,
            true,
        ),
        var(
            "mutuallyRecursiveVar2",
            r#"[42, std.extVar("mutuallyRecursiveVar1")[0] + 1]"#,
            true,
        ),
    ]
}

/// What a golden file expects.
enum Expected {
    Value(Value),
    Error,
    /// Raw string output (`*_string_output`), compared as text.
    Text(String),
}

fn expected(golden: &Path, text: &str) -> Option<Expected> {
    let name = golden.file_name()?.to_string_lossy().into_owned();
    if name.ends_with("_string_output.golden") {
        return Some(Expected::Text(text.to_string()));
    }
    let trimmed = text.trim_start();
    let error_starts = ["RUNTIME ERROR", "STATIC ERROR", "testdata/", "<extvar:"];
    if error_starts.iter().any(|start| trimmed.starts_with(start)) {
        return Some(Expected::Error);
    }
    serde_json::from_str(text).ok().map(Expected::Value)
}

/// JSON equality with numbers compared as numbers (`2` and `2.0` are equal).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Whether mooring's evaluator agrees with the golden of `file`; `None` when the golden is
/// missing or is a directory (multi-file output, which Argo CD does not use).
fn agrees(dir: &Path, file: &Path) -> Option<bool> {
    let golden = file.with_extension("golden");
    if !golden.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(&golden).ok()?;
    let expected = expected(&golden, &text);
    let relative = PathBuf::from(file.file_name()?);
    let mut evaluation = mooring_agent::gitops::render::jsonnet::Evaluation::new(dir, &relative);
    if relative.to_string_lossy().starts_with("extvar_") {
        evaluation.ext_vars = go_jsonnet_ext_vars();
    }
    // The evaluation thread of the agent has a large stack for the parser; so does this one.
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(move || {
            mooring_agent::gitops::render::jsonnet::evaluate(&evaluation).map_err(|e| e.to_string())
        })
        .ok()?
        .join()
        .ok()?;
    Some(match (expected, result) {
        (Some(Expected::Error), Err(_)) => true,
        (Some(Expected::Value(want)), Ok(got)) => json_equal(&want, &got),
        (Some(Expected::Text(want)), Ok(Value::String(got))) => {
            want.trim_end_matches('\n') == got.trim_end_matches('\n')
        }
        _ => false,
    })
}

#[test]
fn go_jsonnet_testdata_evaluates_as_go_jsonnet_does() {
    let env = RealEnv::load().unwrap();
    let dir = PathBuf::from(env.var("GO_JSONNET_TESTDATA").unwrap());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonnet"))
        .collect();
    files.sort();
    let (mut passed, mut skipped) = (0usize, 0usize);
    let mut unexpected = Vec::new();
    let mut now_matching = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let listed = KNOWN_DIFFERENCES.contains(&name.as_str());
        match agrees(&dir, file) {
            None => skipped += 1,
            Some(true) => {
                passed += 1;
                if listed {
                    now_matching.push(name);
                }
            }
            Some(false) if listed => {}
            Some(false) => unexpected.push(name),
        }
    }
    let compared = files.len() - skipped;
    eprintln!(
        "go-jsonnet testdata: {passed} of {compared} cases agree ({} known differences, {skipped} without a single-file golden)",
        KNOWN_DIFFERENCES.len()
    );
    assert!(
        unexpected.is_empty() && now_matching.is_empty(),
        "differ but not listed: {unexpected:?}\nlisted but now agree: {now_matching:?}"
    );
    assert!(passed > 500, "only {passed} cases agree");
}
