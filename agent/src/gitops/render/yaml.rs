//! Manifests as text → Kubernetes objects, with the file and line of anything malformed.
//!
//! YAML 1.2 booleans, deliberately: only `true`/`false` (any case form) are booleans; `yes`,
//! `no`, `on`, `off`, `y`, `n` are strings. That is how kustomize (and so `kubectl apply -k`
//! and Flux, which renders plain directories through kustomize too) reads manifests, and it is
//! what the rest of mooring does (kubeseal reads stringData the same way), so a file means the
//! same whether it sits in a plain directory or in a kustomization. `kubectl apply -f` (go-yaml
//! v2) and Argo CD's plain directories instead read `yes` as `true`. Octal integers in the YAML
//! 1.1 spelling (`defaultMode: 0644`) stay octal, as in both kustomize and kubectl.
//!
//! Documents are split the way kubectl's reader splits them: at lines that are `---` (plus
//! optional whitespace or a comment). Each document is then parsed on its own, which gives every
//! object its own starting line for error messages. No snippets of the input go into errors:
//! a manifest may be a Secret.

use std::cell::Cell;
use std::rc::Rc;

use kube::api::DynamicObject;
use serde_json::Value;

use super::RenderError;

/// One document's text and the line (1-based) of the file it starts on.
struct Document<'a> {
    text: &'a str,
    first_line: u64,
}

/// Splits at `---` separator lines, as kubectl's YAML reader does.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = 0usize;
    let mut first_line = 1u64;
    let mut offset = 0usize;
    for (line_number, line) in (1u64..).zip(text.split_inclusive('\n')) {
        let is_separator = line.strip_prefix("---").is_some_and(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        });
        if is_separator {
            documents.push(Document {
                text: &text[start..offset],
                first_line,
            });
            start = offset + line.len();
            first_line = line_number + 1;
        }
        offset += line.len();
    }
    documents.push(Document {
        text: &text[start..],
        first_line,
    });
    documents
}

/// How many bytes aliases may add to one render's values in total (beyond the text they were
/// written in). Anchors are rare in manifests and small; without a budget a few hundred bytes
/// of YAML that repeat a large anchored scalar expand to gigabytes.
pub(super) const ALIAS_EXPANSION_BYTES: usize = 1024 * 1024;

/// The options for one document of `text_bytes`: its values may hold at most its own text plus
/// what is left of the render's alias allowance; `expanded` receives the bytes they did hold.
fn options(
    text_bytes: usize,
    allowance: usize,
    expanded: Rc<Cell<usize>>,
) -> serde_saphyr::Options {
    let mut options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        legacy_octal_numbers: true,
    };
    let mut budget = options.budget.take().unwrap_or_default();
    budget.max_total_scalar_bytes = text_bytes.saturating_add(allowance);
    options.budget = Some(budget);
    options.with_budget_report(move |report| expanded.set(report.total_scalar_bytes))
}

/// Parses every document of `text` (YAML or JSON) into objects; `file` names it in errors.
/// `kind: List` documents (and other `*List` kinds with `items`) are flattened, as kubectl does.
/// `alias_allowance` is what is left of the render's [`ALIAS_EXPANSION_BYTES`]; what aliases
/// add here is taken from it.
pub(super) fn parse_objects(
    file: &str,
    text: &str,
    alias_allowance: &mut usize,
) -> Result<Vec<DynamicObject>, RenderError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut objects = Vec::new();
    for document in split_documents(text) {
        if document.text.trim().is_empty() {
            continue;
        }
        let expanded = Rc::new(Cell::new(0));
        let options = options(document.text.len(), *alias_allowance, Rc::clone(&expanded));
        let parsed = serde_saphyr::from_str_with_options(document.text, options);
        *alias_allowance =
            alias_allowance.saturating_sub(expanded.get().saturating_sub(document.text.len()));
        let value: Value = parsed.map_err(|error| {
            let location = error.location();
            RenderError::Yaml {
                file: file.to_string(),
                line: location
                    .as_ref()
                    .map(|l| document.first_line + l.line().saturating_sub(1)),
                column: location.as_ref().map(|l| l.column()),
                message: yaml_message(&error.to_string()),
            }
        })?;
        match value {
            // Comments only, or an explicit null document.
            Value::Null => continue,
            Value::Object(map) => {
                let items = match map.get("items") {
                    Some(Value::Array(_)) if is_list_kind(&map) => match map.get("items") {
                        Some(Value::Array(items)) => items.clone(),
                        _ => Vec::new(),
                    },
                    _ => vec![Value::Object(map)],
                };
                for item in items {
                    objects.push(to_object(file, document.first_line, item)?);
                }
            }
            other => {
                return Err(RenderError::NotAnObject {
                    file: file.to_string(),
                    line: document.first_line,
                    reason: format!("the document is a {}, not a mapping", type_name(&other)),
                });
            }
        }
    }
    Ok(objects)
}

/// The parser's message, first line; a breached scalar budget (only aliases can breach it:
/// the budget is the document's own size plus what is left of [`ALIAS_EXPANSION_BYTES`]) says so
/// in those words.
fn yaml_message(message: &str) -> String {
    if message.contains("budget breached: ScalarBytes") {
        return format!(
            "anchors and aliases expand to more than the render's budget of {ALIAS_EXPANSION_BYTES} bytes"
        );
    }
    first_line_of(message)
}

fn is_list_kind(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "mapping",
    }
}

/// serde-saphyr's messages can run over several lines; the first says what is wrong.
fn first_line_of(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// Checks what server-side apply needs (apiVersion, kind, metadata.name) and converts.
pub(super) fn to_object(file: &str, line: u64, value: Value) -> Result<DynamicObject, RenderError> {
    let refuse = |reason: String| RenderError::NotAnObject {
        file: file.to_string(),
        line,
        reason,
    };
    let Value::Object(map) = &value else {
        return Err(refuse(format!(
            "a list item is a {}, not a mapping",
            type_name(&value)
        )));
    };
    for field in ["apiVersion", "kind"] {
        match map.get(field) {
            Some(Value::String(text)) if !text.is_empty() => {}
            Some(_) => return Err(refuse(format!("{field} is not a non-empty string"))),
            None => return Err(refuse(format!("{field} is missing"))),
        }
    }
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let metadata = map.get("metadata");
    let text = |field: &str| {
        metadata
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
    };
    // A hook may be named afresh at each run (`generateName`), as Argo CD allows; any other
    // object needs a name to be tracked and pruned.
    let is_hook = ["argocd.argoproj.io/hook", "helm.sh/hook"]
        .iter()
        .any(|key| {
            metadata
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(*key))
                .is_some()
        });
    if text("name").is_none() && !(is_hook && text("generateName").is_some()) {
        return Err(refuse(format!("the {kind} has no metadata.name")));
    }
    serde_json::from_value(value)
        .map_err(|error| refuse(format!("the {kind} is malformed: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hook_may_have_generate_name_instead_of_a_name() {
        let hook = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n";
        let objects = parse("hook.yaml", hook).unwrap();
        assert_eq!(
            objects[0].metadata.generate_name.as_deref(),
            Some("migrate-")
        );
        let plain = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n";
        let error = parse("plain.yaml", plain).unwrap_err().to_string();
        assert!(error.contains("has no metadata.name"), "{error}");
    }

    /// Parses with a fresh render's alias allowance.
    fn parse(file: &str, text: &str) -> Result<Vec<DynamicObject>, RenderError> {
        parse_objects(file, text, &mut ALIAS_EXPANSION_BYTES.clone())
    }

    fn data(object: &DynamicObject, key: &str) -> Value {
        object.data["data"][key].clone()
    }

    /// A ConfigMap whose `data` repeats one anchored scalar of `scalar_bytes` through `aliases`
    /// aliases: a small file that expands to `scalar_bytes × aliases` bytes.
    fn alias_bomb(scalar_bytes: usize, aliases: usize) -> String {
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  a: &a \"{}\"\n",
            "x".repeat(scalar_bytes)
        );
        for i in 0..aliases {
            text.push_str(&format!("  k{i}: *a\n"));
        }
        text
    }

    #[test]
    fn alias_expansion_is_bounded_in_bytes() {
        let started = std::time::Instant::now();
        // 256 KiB × 4096 aliases: 1 GiB once expanded, from a file of 300 KiB.
        let error = parse_objects(
            "bomb.yaml",
            &alias_bomb(256 * 1024, 4096),
            &mut ALIAS_EXPANSION_BYTES.clone(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("bomb.yaml"), "{error}");
        assert!(
            error
                .to_string()
                .contains("aliases expand to more than the render's budget of 1048576 bytes"),
            "{error}"
        );
        eprintln!("{error} in {:?}", started.elapsed());
        // Ordinary use of anchors still works.
        let mut allowance = ALIAS_EXPANSION_BYTES;
        let objects = parse_objects("ok.yaml", &alias_bomb(64, 8), &mut allowance).unwrap();
        assert_eq!(data(&objects[0], "k7"), Value::String("x".repeat(64)));
        assert!(
            allowance < ALIAS_EXPANSION_BYTES,
            "the aliases used some of the allowance"
        );
        // The allowance is the render's, across files: many small bombs add up.
        let mut allowance = ALIAS_EXPANSION_BYTES;
        let small = alias_bomb(20 * 1024, 10);
        let parsed: Vec<_> = (0..10)
            .map(|i| parse_objects(&format!("f{i}.yaml"), &small, &mut allowance).is_ok())
            .collect();
        assert_eq!(
            parsed,
            [
                true, true, true, true, true, false, false, false, false, false
            ]
        );
    }

    #[test]
    fn multi_document_yaml_with_empty_and_comment_documents() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n--- # separator with comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n...\n";
        let objects = parse("two.yaml", text).unwrap();
        let names: Vec<_> = objects
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(objects[0].types.as_ref().unwrap().kind, "ConfigMap");
    }

    #[test]
    fn yaml_1_2_booleans_and_yaml_1_1_octals_like_kustomize() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  a: yes\n  b: on\n  c: 0755\n  d: 1e3\n  e: ~\n  f: true\n  g: 'true'\n  h: n\n";
        let object = &parse("cm.yaml", text).unwrap()[0];
        // These are what `kustomize build` (v5.8.2) prints for the same input.
        assert_eq!(data(object, "a"), Value::String("yes".into()));
        assert_eq!(data(object, "b"), Value::String("on".into()));
        assert_eq!(data(object, "c"), serde_json::json!(493));
        assert_eq!(data(object, "d").as_f64(), Some(1000.0));
        assert_eq!(data(object, "e"), Value::Null);
        assert_eq!(data(object, "f"), Value::Bool(true));
        assert_eq!(data(object, "g"), Value::String("true".into()));
        assert_eq!(data(object, "h"), Value::String("n".into()));
    }

    #[test]
    fn json_files_parse_too() {
        let text = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}"#;
        let object = &parse("svc.json", text).unwrap()[0];
        assert_eq!(object.data["spec"]["ports"][0]["port"], 80);
    }

    #[test]
    fn malformed_yaml_names_the_file_and_the_line_in_the_file() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  key: [unclosed\n  other: x\n";
        let error = parse("apps/bad.yaml", text).unwrap_err();
        match &error {
            RenderError::Yaml { file, line, .. } => {
                assert_eq!(file, "apps/bad.yaml");
                let line = line.unwrap();
                assert!((11..=13).contains(&line), "line {line}");
            }
            other => panic!("expected a YAML error, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("apps/bad.yaml:1"), "{message}");
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n";
        match parse("dup.yaml", text).unwrap_err() {
            RenderError::Yaml { line, .. } => assert_eq!(line, Some(5)),
            other => panic!("expected a YAML error, got {other:?}"),
        }
    }

    #[test]
    fn errors_quote_no_values() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: \"hunter2\n";
        let error = parse("secret.yaml", text).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn objects_without_kind_or_name_are_refused_with_the_document_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nmetadata:\n  name: b\n";
        match parse("x.yaml", text).unwrap_err() {
            RenderError::NotAnObject { file, line, reason } => {
                assert_eq!((file.as_str(), line), ("x.yaml", 6));
                assert!(reason.contains("kind"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let nameless = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
        assert!(matches!(
            parse("y.yaml", nameless),
            Err(RenderError::NotAnObject { .. })
        ));
        assert!(matches!(
            parse("z.yaml", "just a string\n"),
            Err(RenderError::NotAnObject { .. })
        ));
    }

    #[test]
    fn lists_are_flattened() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: b\n";
        assert_eq!(parse("list.yaml", text).unwrap().len(), 2);
    }
}
