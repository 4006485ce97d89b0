//! Key naming for `dataFrom` entries, as ESO names them (`GetProviderSecretData`): the keys of
//! an `extract` or `find` result go through `rewrite` in list order or, without rewrites, through
//! `conversionStrategy`; the resulting keys must be valid Secret keys. Unlike ESO, two keys that
//! end up with one name are an error rather than one silently overwriting the other.
//!
//! Everything here is pure. Error messages name the field and the (non-secret) key names, never
//! a value.

use std::collections::BTreeMap;

use mooring_crds::external_secret::{ExternalSecretFind, ExternalSecretRewrite};
use mooring_provider::{FindQuery, ProviderError, SecretValue};
use zeroize::Zeroizing;

use super::Error;

/// The largest compiled `rewrite[].regexp.source` accepted (as for `find.name.regexp`).
const REWRITE_REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Kubernetes' limit on a Secret key's length.
const MAX_SECRET_KEY_LENGTH: usize = 253;

/// The keys of one `dataFrom[index]` result, renamed: `rewrite` when present, else
/// `conversionStrategy`; then checked to be valid Secret keys.
pub(super) fn name_keys<V>(
    index: usize,
    rewrites: Option<&[ExternalSecretRewrite]>,
    conversion: Option<&str>,
    conversion_field: &str,
    map: BTreeMap<String, V>,
) -> Result<BTreeMap<String, V>, Error> {
    let renamed = match rewrites.filter(|r| !r.is_empty()) {
        Some(rewrites) => rewrite_keys(index, rewrites, map)?,
        None => convert_keys(
            &format!("spec.dataFrom[{index}].{conversion_field}"),
            conversion,
            map,
        )?,
    };
    if let Some(bad) = renamed.keys().find(|k| !is_valid_secret_key(k)) {
        return Err(Error::InvalidSpec(format!(
            "spec.dataFrom[{index}]: the key {bad:?} is not a valid Secret key (letters, digits, '-', '.', '_'; at most {MAX_SECRET_KEY_LENGTH} characters)"
        )));
    }
    Ok(renamed)
}

/// Computes one key's new name.
type Rename<'a> = dyn Fn(&str) -> Result<String, Error> + 'a;

/// Applies every rewrite in order.
fn rewrite_keys<V>(
    index: usize,
    rewrites: &[ExternalSecretRewrite],
    mut map: BTreeMap<String, V>,
) -> Result<BTreeMap<String, V>, Error> {
    for (position, rewrite) in rewrites.iter().enumerate() {
        let field = format!("spec.dataFrom[{index}].rewrite[{position}]");
        let rename: Box<Rename<'_>> = match (&rewrite.regexp, &rewrite.transform) {
            (Some(regexp), None) => {
                let pattern = regex::RegexBuilder::new(&regexp.source)
                    .size_limit(REWRITE_REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| Error::InvalidSpec(format!("{field}.regexp.source: {e}")))?;
                let target = regexp.target.clone();
                Box::new(move |key: &str| {
                    Ok(pattern.replace_all(key, target.as_str()).into_owned())
                })
            }
            (None, Some(transform)) => {
                let templates = BTreeMap::from([(
                    format!("{field}.transform.template"),
                    transform.template.clone(),
                )]);
                let field = field.clone();
                Box::new(move |key: &str| {
                    let values = BTreeMap::from([(
                        "value".to_string(),
                        Zeroizing::new(key.as_bytes().to_vec()),
                    )]);
                    let rendered = mooring_template::render_all(&templates, &values)
                        .map_err(|e| Error::InvalidSpec(format!("{field}.transform: {e}")))?;
                    let bytes = rendered.into_values().next().unwrap_or_default();
                    String::from_utf8(bytes.to_vec()).map_err(|_| {
                            Error::InvalidSpec(format!(
                                "{field}.transform: the template did not render UTF-8 text for key {key:?}"
                            ))
                        })
                })
            }
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "{field} must set exactly one of regexp, transform"
                )));
            }
        };
        map = rename_all(&field, map, rename.as_ref())?;
    }
    Ok(map)
}

/// Renames every key with `rename`; two keys with one new name are an error naming both.
fn rename_all<V>(
    field: &str,
    map: BTreeMap<String, V>,
    rename: &Rename<'_>,
) -> Result<BTreeMap<String, V>, Error> {
    let mut out: BTreeMap<String, (String, V)> = BTreeMap::new();
    for (key, value) in map {
        let new = rename(&key)?;
        if let Some((first, _)) = out.get(&new) {
            return Err(Error::InvalidSpec(format!(
                "{field}: the keys {first:?} and {key:?} both become {new:?}"
            )));
        }
        out.insert(new, (key, value));
    }
    Ok(out.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// ESO's `ConvertKeys`: every character other than an ASCII letter, digit, `-`, `.` or `_`
/// becomes `_` (`Default`) or `_Uxxxx_` with its code point in hex (`Unicode`).
fn convert_keys<V>(
    field: &str,
    strategy: Option<&str>,
    map: BTreeMap<String, V>,
) -> Result<BTreeMap<String, V>, Error> {
    let unicode = match strategy {
        None | Some("") | Some("Default") => false,
        Some("Unicode") => true,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "{field} {other:?} is not one of Default, Unicode"
            )));
        }
    };
    let convert = |key: &str| -> Result<String, Error> {
        Ok(key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                    c.to_string()
                } else if unicode {
                    format!("_U{:04x}_", u32::from(c))
                } else {
                    "_".to_string()
                }
            })
            .collect())
    };
    rename_all(field, map, &convert)
}

/// Whether Kubernetes accepts `key` in a Secret's `data`.
fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_SECRET_KEY_LENGTH
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The provider query of `dataFrom[index].find`; a bad regexp or a find without a filter is an
/// error naming the field.
pub(super) fn find_query(index: usize, find: &ExternalSecretFind) -> Result<FindQuery, Error> {
    let path = find
        .path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let regexp = find
        .name
        .as_ref()
        .and_then(|n| n.regexp.as_deref())
        .filter(|r| !r.is_empty());
    FindQuery::new(path, regexp, find.tags.clone().unwrap_or_default()).map_err(|error| {
        let message = match error {
            ProviderError::InvalidConfig(message) => message,
            other => other.to_string(),
        };
        Error::InvalidSpec(format!("spec.dataFrom[{index}].{message}"))
    })
}

/// The key under which one find query is shared between ExternalSecrets of a store: a NUL
/// never occurs in a store key, so it cannot collide with a plain read.
pub(super) fn find_read_key(query: &FindQuery) -> String {
    let content = serde_json::json!([query.path, query.name_regexp(), query.tags]);
    format!("\0find\0{content}")
}

/// A find result as one value, so it travels through the shared-read cache: each entry is its
/// name and its bytes, both length-prefixed.
pub(super) fn encode_found(found: BTreeMap<String, SecretValue>) -> SecretValue {
    let mut bytes = Zeroizing::new(Vec::new());
    for (name, value) in &found {
        for part in [name.as_bytes(), value.expose()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    SecretValue::new(std::mem::take(&mut *bytes))
}

/// The inverse of [`encode_found`]; `None` only for bytes it did not produce.
pub(super) fn decode_found(encoded: &SecretValue) -> Option<BTreeMap<String, SecretValue>> {
    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (length, tail) = rest.split_first_chunk::<8>()?;
        let length = usize::try_from(u64::from_be_bytes(*length)).ok()?;
        let part = tail.get(..length)?;
        *rest = tail.get(length..)?;
        Some(part)
    }
    let mut rest = encoded.expose();
    let mut found = BTreeMap::new();
    while !rest.is_empty() {
        let name = String::from_utf8(take(&mut rest)?.to_vec()).ok()?;
        let value = SecretValue::new(take(&mut rest)?.to_vec());
        found.insert(name, value);
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> BTreeMap<String, u8> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), i as u8))
            .collect()
    }

    fn rewrites(json: serde_json::Value) -> Vec<ExternalSecretRewrite> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn default_conversion_replaces_slashes_and_unicode_spells_code_points() {
        let named = name_keys(
            0,
            None,
            None,
            "find.conversionStrategy",
            map(&["db/user", "a.b-c_d"]),
        )
        .unwrap();
        assert_eq!(named.keys().collect::<Vec<_>>(), ["a.b-c_d", "db_user"]);
        let unicode = name_keys(
            0,
            None,
            Some("Unicode"),
            "find.conversionStrategy",
            map(&["db/user", "é"]),
        )
        .unwrap();
        assert_eq!(
            unicode.keys().collect::<Vec<_>>(),
            ["_U00e9_", "db_U002f_user"]
        );
        let bad = name_keys(
            0,
            None,
            Some("Upper"),
            "find.conversionStrategy",
            map(&["a"]),
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("spec.dataFrom[0].find.conversionStrategy")
        );
    }

    #[test]
    fn conversion_collisions_name_both_keys() {
        let error = name_keys(
            2,
            None,
            None,
            "extract.conversionStrategy",
            map(&["a/b", "a_b"]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("spec.dataFrom[2].extract.conversionStrategy"),
            "{error}"
        );
        assert!(
            error.contains("\"a/b\"") && error.contains("\"a_b\""),
            "{error}"
        );
    }

    #[test]
    fn rewrites_apply_in_order_and_skip_conversion() {
        let ops = rewrites(serde_json::json!([
            {"regexp": {"source": "^app/(.*)$", "target": "$1"}},
            {"regexp": {"source": "/", "target": "-"}},
            {"transform": {"template": "{{ .value | upper }}"}},
        ]));
        let named = name_keys(
            1,
            Some(&ops),
            None,
            "find.conversionStrategy",
            map(&["app/db/user", "app/token", "other"]),
        )
        .unwrap();
        assert_eq!(
            named.keys().collect::<Vec<_>>(),
            ["DB-USER", "OTHER", "TOKEN"]
        );
        assert_eq!(named["DB-USER"], 0, "values follow their keys");
    }

    #[test]
    fn rewrite_errors_name_the_field() {
        let bad_regexp = rewrites(serde_json::json!([
            {"regexp": {"source": "x", "target": "y"}},
            {"regexp": {"source": "(unclosed", "target": "y"}},
        ]));
        let error = name_keys(0, Some(&bad_regexp), None, "", map(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.dataFrom[0].rewrite[1].regexp.source"),
            "{error}"
        );
        let collide = rewrites(serde_json::json!([{"regexp": {"source": ".*", "target": "same"}}]));
        let error = name_keys(0, Some(&collide), None, "", map(&["a", "b"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.dataFrom[0].rewrite[0]") && error.contains("\"same\""),
            "{error}"
        );
        let invalid = rewrites(serde_json::json!([{"regexp": {"source": "a", "target": "a b"}}]));
        let error = name_keys(3, Some(&invalid), None, "", map(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.dataFrom[3]") && error.contains("\"a b\""),
            "{error}"
        );
        let neither = rewrites(serde_json::json!([{}]));
        assert!(name_keys(0, Some(&neither), None, "", map(&["a"])).is_err());
        let bad_template =
            rewrites(serde_json::json!([{"transform": {"template": "{{ .value | nope }}"}}]));
        let error = name_keys(0, Some(&bad_template), None, "", map(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.dataFrom[0].rewrite[0].transform"),
            "{error}"
        );
    }

    #[test]
    fn find_queries_name_their_field_and_share_by_content() {
        let find: ExternalSecretFind =
            serde_json::from_value(serde_json::json!({"name": {"regexp": "(bad"}})).unwrap();
        let error = find_query(4, &find).unwrap_err().to_string();
        assert!(
            error.contains("spec.dataFrom[4].find.name.regexp"),
            "{error}"
        );
        let a: ExternalSecretFind = serde_json::from_value(
            serde_json::json!({"path": "/app/", "name": {"regexp": "^app/"}, "tags": {"env": "prod"}}),
        )
        .unwrap();
        let query = find_query(0, &a).unwrap();
        assert_eq!(query.path.as_deref(), Some("app"));
        let mut b = a.clone();
        b.tags = Some(BTreeMap::from([("env".into(), "dev".into())]));
        assert_ne!(
            find_read_key(&query),
            find_read_key(&find_query(0, &b).unwrap())
        );
        assert_eq!(
            find_read_key(&query),
            find_read_key(&find_query(1, &a).unwrap())
        );
    }

    #[test]
    fn found_maps_survive_the_shared_read_encoding() {
        let found = BTreeMap::from([
            ("app/a".to_string(), SecretValue::new(b"{\"x\":1}".to_vec())),
            ("app/empty".to_string(), SecretValue::new(Vec::new())),
            ("b".to_string(), SecretValue::new(vec![0, 255, 10])),
        ]);
        let decoded = decode_found(&encode_found(found.clone())).unwrap();
        assert_eq!(decoded, found);
        assert_eq!(
            decode_found(&encode_found(BTreeMap::new())).unwrap().len(),
            0
        );
        assert!(decode_found(&SecretValue::new(vec![0, 0, 0])).is_none());
    }
}
