//! Reading Kubernetes objects as upstream's lenient YAML-or-JSON decoder does: concatenated JSON
//! when the input starts with `{`, else multi-document YAML; empty documents are skipped and
//! `kind` is not checked.
//!
//! Parser messages can quote input, and the input holds secret values: every message that
//! leaves this module is either ours or has its quoted strings redacted.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mooring_crds::SealedSecret;
use serde_json::{Map, Value};

/// Splits `input` into its documents (objects, lists, whatever they are).
pub fn parse_documents(input: &[u8]) -> anyhow::Result<Vec<Value>> {
    let text =
        std::str::from_utf8(input).context("failed to read the input: it is not UTF-8 encoded")?;
    if text.trim_start().starts_with('{') {
        let mut documents = Vec::new();
        for (index, document) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            // serde_json's syntax errors carry a position, not input text.
            let document = document
                .with_context(|| format!("failed to parse JSON document #{}", index + 1))?;
            documents.push(document);
        }
        Ok(documents)
    } else {
        // No source snippets in errors: they would print secret values. YAML 1.2 booleans
        // (only true/false): `y`, `yes`, `on` are strings, as Kubernetes reads them into string
        // fields.
        let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
        let documents: Vec<Value> =
            serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options)
                .map_err(|error| anyhow::anyhow!("{}", redact_quoted(&error.to_string())))
                .context("failed to parse the YAML input")?;
        Ok(documents
            .into_iter()
            .filter(|document| !document.is_null())
            .collect())
    }
}

/// The items of a `v1 List` document, or the document itself.
pub fn list_items(document: Value) -> Vec<Value> {
    match document {
        Value::Object(mut object)
            if object.get("kind").and_then(Value::as_str) == Some("List")
                || (object.get("kind").is_none()
                    && object.get("items").is_some_and(Value::is_array)) =>
        {
            match object.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

/// Reads document `number` (1-based, for messages) as a v1 Secret, whatever its `kind`.
///
/// `data` values are decoded with Go's base64 rules (line breaks ignored) and `stringData` must
/// be strings; errors name the key, never the value.
pub fn secret_from_document(document: Value, number: usize) -> anyhow::Result<Secret> {
    let Value::Object(mut object) = document else {
        bail!("failed to read Secret #{number} from the input: the document is not an object");
    };
    // Like upstream, the kind is not checked; k8s-openapi would refuse a foreign one.
    object.remove("apiVersion");
    object.remove("kind");
    let data = object.remove("data");
    let string_data = object.remove("stringData");
    let mut secret: Secret = serde_json::from_value(Value::Object(object)).map_err(|error| {
        anyhow::anyhow!(
            "failed to read Secret #{number} from the input: {}",
            redact_quoted(&error.to_string())
        )
    })?;
    let name = secret.metadata.name.clone().unwrap_or_default();

    if let Some(data) = string_map(data, "data", number, &name)? {
        let mut decoded = BTreeMap::new();
        for (key, value) in data {
            let bytes = mooring_sealing::decode_base64(&value).map_err(|_| {
                anyhow::anyhow!(
                    "failed to read Secret {name:?} (#{number}): data[{key:?}] is not valid base64"
                )
            })?;
            decoded.insert(key, ByteString(bytes));
        }
        secret.data = Some(decoded);
    }
    secret.string_data = string_map(string_data, "stringData", number, &name)?;
    Ok(secret)
}

/// A map of strings (`data`, `stringData`), or `None` when absent or null.
fn string_map(
    value: Option<Value>,
    field: &str,
    number: usize,
    name: &str,
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let object: Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(_) => bail!("failed to read Secret {name:?} (#{number}): {field} is not a map"),
    };
    let mut map = BTreeMap::new();
    for (key, value) in object {
        // Unquoted scalars such as `true` or `5432` are read as their text, as upstream's
        // YAML-to-JSON conversion does for string fields.
        let value = match value {
            Value::String(value) => value,
            Value::Bool(value) => value.to_string(),
            Value::Number(value) => value.to_string(),
            _ => bail!(
                "failed to read Secret {name:?} (#{number}): {field}[{key:?}] is not a string (quote it)"
            ),
        };
        map.insert(key, value);
    }
    Ok(Some(map))
}

/// Reads document `number` (1-based) as a SealedSecret, whatever its `kind`.
pub fn sealed_secret_from_document(document: Value, number: usize) -> anyhow::Result<SealedSecret> {
    let Value::Object(mut object) = document else {
        bail!(
            "failed to read SealedSecret #{number} from the input: the document is not an object"
        );
    };
    // `/v1/rotate` answers without apiVersion/kind; metadata may be absent in hand-made files.
    object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    object
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    serde_json::from_value(Value::Object(object)).map_err(|error| {
        anyhow::anyhow!(
            "failed to read SealedSecret #{number} from the input: {}",
            redact_quoted(&error.to_string())
        )
    })
}

/// Replaces every double-quoted string in a parser message with `"…"`: serde quotes the
/// offending input value (`invalid type: string "…", expected a map`).
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        let mut escaped = false;
        for inner in chars.by_ref() {
            match (escaped, inner) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_scalars_in_string_data_are_read_as_text_like_kubectl() {
        let yaml = "kind: Secret\nmetadata: {name: a}\nstringData:\n  short: y\n  flag: on\n  enabled: true\n  port: 5432\n";
        let document = parse_documents(yaml.as_bytes()).unwrap().remove(0);
        let secret = secret_from_document(document, 1).unwrap();
        let values = secret.string_data.unwrap();
        assert_eq!(values["short"], "y", "YAML 1.1's y is not a boolean here");
        assert_eq!(values["flag"], "on");
        assert_eq!(values["enabled"], "true");
        assert_eq!(values["port"], "5432");
    }

    #[test]
    fn yaml_documents_are_split_and_empty_ones_skipped() {
        let yaml =
            "---\nkind: Secret\nmetadata: {name: a}\n---\n---\nkind: Secret\nmetadata: {name: b}\n";
        let documents = parse_documents(yaml.as_bytes()).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["metadata"]["name"], "b");
    }

    #[test]
    fn concatenated_json_is_read() {
        let json = "{\"metadata\": {\"name\": \"a\"}}\n{\"metadata\": {\"name\": \"b\"}}";
        let documents = parse_documents(json.as_bytes()).unwrap();
        assert_eq!(documents.len(), 2);
        assert!(parse_documents(b"{\"a\": ").is_err());
        assert!(
            parse_documents(&[0xff, 0xfe])
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn secrets_decode_data_leniently_and_name_bad_keys_only() {
        let document = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"a": "aGVs\nbG8="},
            "stringData": {"b": "plain"}
        });
        let secret = secret_from_document(document, 1).unwrap();
        assert_eq!(secret.data.unwrap()["a"].0, b"hello");
        assert_eq!(secret.string_data.unwrap()["b"], "plain");

        let bad = serde_json::json!({"metadata": {"name": "db"}, "data": {"pw": "hunter2!"}});
        let message = secret_from_document(bad, 2).unwrap_err().to_string();
        assert!(
            message.contains("data[\"pw\"]") && !message.contains("hunter2"),
            "{message}"
        );

        let bad = serde_json::json!({"metadata": {"name": "db"}, "stringData": {"port": {"n": 1}}});
        let message = secret_from_document(bad, 3).unwrap_err().to_string();
        assert!(message.contains("stringData[\"port\"]"), "{message}");

        let bad = serde_json::json!({"metadata": {"name": "db", "annotations": "hunter2"}});
        let message = secret_from_document(bad, 4).unwrap_err().to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn lists_yield_their_items() {
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [{"a": 1}, {"b": 2}]});
        assert_eq!(list_items(list).len(), 2);
        let single = serde_json::json!({"kind": "Secret"});
        assert_eq!(list_items(single).len(), 1);
    }

    #[test]
    fn sealed_secrets_without_type_meta_are_read() {
        let rotated = serde_json::json!({"metadata": {"name": "db"}, "spec": {"encryptedData": {"k": "AQ=="}}});
        let sealed = sealed_secret_from_document(rotated, 1).unwrap();
        assert_eq!(sealed.spec.encrypted_data["k"], "AQ==");
    }

    #[test]
    fn quoted_strings_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "a \"b\" c", expected a map"#),
            "invalid type: string \"…\", expected a map"
        );
    }
}
