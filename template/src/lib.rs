//! Go-template rendering for Secret templates (`SealedSecret.spec.template.data`, and
//! ExternalSecret `target.template.data`).
//!
//! Users write these in Go `text/template` syntax with Sprig functions, as upstream
//! sealed-secrets and ESO accept them (`{{ .password }}`, `{{ index . "foo" }}`,
//! `{{ .user | b64enc }}`). The function set is side-effect free by construction: no environment,
//! no files, no network, no DNS, no clock, no randomness; output per key is bounded; and errors
//! never echo the values being rendered, because a template error message ends up in a status
//! that many people can read.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use gtmpl::{Context, FuncError, Template, Value};
use zeroize::Zeroizing;

/// The most bytes one rendered key may produce.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The widest indentation `indent`/`nindent` accept, so a template cannot multiply its output.
const MAX_INDENT: usize = 1024;

/// Why a template key could not be rendered. Never contains a rendered or input value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The template text does not parse.
    #[error("failed to parse template for key {key:?}: {message}")]
    Parse {
        /// The output key.
        key: String,
        /// The parser's message (about the template text, which is not secret).
        message: String,
    },
    /// Executing the template failed (a missing function, a failing function, a type error).
    #[error(
        "failed to render template for key {key:?}: execution failed (details withheld: they may contain secret values)"
    )]
    Execute {
        /// The output key.
        key: String,
    },
    /// The output exceeds [`MAX_OUTPUT_BYTES`].
    #[error("failed to render template for key {key:?}: output exceeds {limit} bytes")]
    TooLarge {
        /// The output key.
        key: String,
        /// The limit.
        limit: usize,
    },
}

/// Renders every template in `templates` with `values` (as strings) as `.`.
///
/// Values that are not UTF-8 are passed with invalid sequences replaced, as Go's `string(b)`
/// would print them.
pub fn render_all(
    templates: &BTreeMap<String, String>,
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, TemplateError> {
    let data: HashMap<String, Value> = values
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    let context = Context::from(Value::Map(data));
    templates
        .iter()
        .map(|(key, text)| render_one(key, text, &context).map(|out| (key.clone(), out)))
        .collect()
}

/// Refuses what the engine (gtmpl) handles badly before it sees it: an action left open at the
/// end of the text makes its lexer loop forever, and `define`/`template`/`block` allow unbounded
/// recursion. Secret templates need neither.
fn ensure_supported(key: &str, text: &str) -> Result<(), TemplateError> {
    let refuse = |message: &str| {
        Err(TemplateError::Parse {
            key: key.to_string(),
            message: message.to_string(),
        })
    };
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return refuse("unclosed action: every {{ needs a matching }}");
        };
        let action = after[..close].trim_start_matches('-').trim_start();
        let keyword = action.split_whitespace().next().unwrap_or_default();
        if matches!(keyword, "define" | "template" | "block") {
            return refuse(&format!(
                "the {keyword:?} action is not supported in Secret templates"
            ));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

fn render_one(
    key: &str,
    text: &str,
    context: &Context,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    ensure_supported(key, text)?;
    let mut template = Template::default();
    template.add_funcs(FUNCTIONS);
    template.parse(text).map_err(|error| TemplateError::Parse {
        key: key.to_string(),
        message: error.to_string(),
    })?;
    let rendered =
        Zeroizing::new(
            template
                .render(context)
                .map_err(|_| TemplateError::Execute {
                    key: key.to_string(),
                })?,
        );
    if rendered.len() > MAX_OUTPUT_BYTES {
        return Err(TemplateError::TooLarge {
            key: key.to_string(),
            limit: MAX_OUTPUT_BYTES,
        });
    }
    Ok(Zeroizing::new(rendered.as_bytes().to_vec()))
}

type Function = fn(&[Value]) -> Result<Value, FuncError>;

/// The Sprig subset users of sealed-secrets and ESO templates rely on. Deliberately absent:
/// `env`, `expandenv`, `getHostByName`, file and random functions (upstream removed the first
/// three, #1703).
const FUNCTIONS: &[(&str, Function)] = &[
    ("upper", upper),
    ("lower", lower),
    ("trim", trim),
    ("trimPrefix", trim_prefix),
    ("trimSuffix", trim_suffix),
    ("replace", replace),
    ("quote", quote),
    ("squote", squote),
    ("contains", contains),
    ("hasPrefix", has_prefix),
    ("hasSuffix", has_suffix),
    ("indent", indent),
    ("nindent", nindent),
    ("nospace", nospace),
    ("toString", to_string),
    ("join", join),
    ("split", split),
    ("b64enc", b64enc),
    ("b64dec", b64dec),
    ("toJson", to_json),
    ("fromJson", from_json),
    ("sha256sum", sha256sum),
    ("default", default),
    ("empty", empty),
    ("coalesce", coalesce),
];

fn failed(function: &str) -> FuncError {
    // The message names the function only: arguments may be secret.
    FuncError::Generic(format!("{function}: invalid arguments"))
}

/// The text form of a value, as Go's `fmt.Sprint` would give for the common cases.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn string_arg<'a>(function: &str, args: &'a [Value], index: usize) -> Result<&'a Value, FuncError> {
    args.get(index).ok_or_else(|| failed(function))
}

fn exactly(function: &str, args: &[Value], count: usize) -> Result<(), FuncError> {
    if args.len() == count {
        Ok(())
    } else {
        Err(FuncError::ExactlyXArgs(function.to_string(), count))
    }
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    exactly("upper", args, 1)?;
    Ok(Value::String(text(&args[0]).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    exactly("lower", args, 1)?;
    Ok(Value::String(text(&args[0]).to_lowercase()))
}

fn trim(args: &[Value]) -> Result<Value, FuncError> {
    exactly("trim", args, 1)?;
    Ok(Value::String(text(&args[0]).trim().to_string()))
}

fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    exactly("trimPrefix", args, 2)?;
    let (prefix, s) = (text(&args[0]), text(&args[1]));
    Ok(Value::String(
        s.strip_prefix(&prefix).unwrap_or(&s).to_string(),
    ))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    exactly("trimSuffix", args, 2)?;
    let (suffix, s) = (text(&args[0]), text(&args[1]));
    Ok(Value::String(
        s.strip_suffix(&suffix).unwrap_or(&s).to_string(),
    ))
}

fn replace(args: &[Value]) -> Result<Value, FuncError> {
    exactly("replace", args, 3)?;
    Ok(Value::String(
        text(&args[2]).replace(&text(&args[0]), &text(&args[1])),
    ))
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| serde_json::Value::String(text(a)).to_string())
        .collect();
    Ok(Value::String(quoted.join(" ")))
}

fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", text(a))).collect();
    Ok(Value::String(quoted.join(" ")))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    exactly("contains", args, 2)?;
    Ok(Value::Bool(text(&args[1]).contains(&text(&args[0]))))
}

fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    exactly("hasPrefix", args, 2)?;
    Ok(Value::Bool(text(&args[1]).starts_with(&text(&args[0]))))
}

fn has_suffix(args: &[Value]) -> Result<Value, FuncError> {
    exactly("hasSuffix", args, 2)?;
    Ok(Value::Bool(text(&args[1]).ends_with(&text(&args[0]))))
}

fn width(function: &str, value: &Value) -> Result<usize, FuncError> {
    let width = match value {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    width
        .filter(|w| *w <= MAX_INDENT)
        .ok_or_else(|| failed(function))
}

fn indent_text(spaces: usize, s: &str) -> String {
    let pad = " ".repeat(spaces);
    s.split('\n')
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    exactly("indent", args, 2)?;
    Ok(Value::String(indent_text(
        width("indent", &args[0])?,
        &text(&args[1]),
    )))
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    exactly("nindent", args, 2)?;
    Ok(Value::String(format!(
        "\n{}",
        indent_text(width("nindent", &args[0])?, &text(&args[1]))
    )))
}

fn nospace(args: &[Value]) -> Result<Value, FuncError> {
    exactly("nospace", args, 1)?;
    Ok(Value::String(
        text(&args[0])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    ))
}

fn to_string(args: &[Value]) -> Result<Value, FuncError> {
    exactly("toString", args, 1)?;
    Ok(Value::String(text(&args[0])))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    exactly("join", args, 2)?;
    let separator = text(&args[0]);
    match string_arg("join", args, 1)? {
        Value::Array(items) => Ok(Value::String(
            items.iter().map(text).collect::<Vec<_>>().join(&separator),
        )),
        other => Ok(Value::String(text(other))),
    }
}

/// Sprig's `split` returns a map `_0`, `_1`, …
fn split(args: &[Value]) -> Result<Value, FuncError> {
    exactly("split", args, 2)?;
    let (separator, s) = (text(&args[0]), text(&args[1]));
    if separator.is_empty() {
        return Err(failed("split"));
    }
    let parts: HashMap<String, Value> = s
        .split(separator.as_str())
        .enumerate()
        .map(|(i, part)| (format!("_{i}"), Value::String(part.to_string())))
        .collect();
    Ok(Value::Map(parts))
}

fn b64enc(args: &[Value]) -> Result<Value, FuncError> {
    exactly("b64enc", args, 1)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(text(&args[0])),
    ))
}

fn b64dec(args: &[Value]) -> Result<Value, FuncError> {
    exactly("b64dec", args, 1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text(&args[0]).trim())
        .map_err(|_| failed("b64dec"))?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

fn json_of(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => n
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_f64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(json_of).collect()),
        Value::Map(map) | Value::Object(map) => {
            let sorted: BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, json_of(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Function(_) => serde_json::Value::Null,
    }
}

fn value_of(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Nil),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::Array(items.into_iter().map(value_of).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(map.into_iter().map(|(k, v)| (k, value_of(v))).collect())
        }
    }
}

fn to_json(args: &[Value]) -> Result<Value, FuncError> {
    exactly("toJson", args, 1)?;
    Ok(Value::String(json_of(&args[0]).to_string()))
}

fn from_json(args: &[Value]) -> Result<Value, FuncError> {
    exactly("fromJson", args, 1)?;
    serde_json::from_str(&text(&args[0]))
        .map(value_of)
        .map_err(|_| failed("fromJson"))
}

fn sha256sum(args: &[Value]) -> Result<Value, FuncError> {
    exactly("sha256sum", args, 1)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text(&args[0]).as_bytes());
    Ok(Value::String(
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Map(map) | Value::Object(map) => map.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Function(_) => false,
    }
}

/// `default D V`: V unless it is empty, else D (V comes last so it can be piped).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, value] => Ok(if is_empty(value) {
            fallback.clone()
        } else {
            value.clone()
        }),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    exactly("empty", args, 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::Nil))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, values: &[(&str, &str)]) -> Result<String, TemplateError> {
        let templates = BTreeMap::from([("out".to_string(), template.to_string())]);
        let values = values
            .iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
            .collect();
        render_all(&templates, &values).map(|out| String::from_utf8(out["out"].to_vec()).unwrap())
    }

    /// Upstream sealed-secrets' own template vectors.
    #[test]
    fn upstream_vectors() {
        assert_eq!(
            render(r#"secret {{ index . "foo" }} !"#, &[("foo", "bar")]).unwrap(),
            "secret bar !"
        );
        assert_eq!(
            render("{{ toJson .password }}", &[("password", "a\"b")]).unwrap(),
            r#""a\"b""#
        );
    }

    #[test]
    fn sprig_functions_eso_users_write() {
        let v = &[
            ("user", "app"),
            ("password", " p@ss "),
            ("json", r#"{"host":"db","port":5432}"#),
        ];
        assert_eq!(render("{{ .user | upper }}", v).unwrap(), "APP");
        assert_eq!(
            render("{{ .password | trim | b64enc }}", v).unwrap(),
            "cEBzcw=="
        );
        assert_eq!(render("{{ .user | b64enc | b64dec }}", v).unwrap(), "app");
        assert_eq!(
            render(r#"{{ .missing | default "fallback" }}"#, v).unwrap(),
            "fallback"
        );
        assert_eq!(
            render(r#"{{ .user | default "fallback" }}"#, v).unwrap(),
            "app"
        );
        assert_eq!(render("{{ (.json | fromJson).host }}", v).unwrap(), "db");
        assert_eq!(render("{{ .user | quote }}", v).unwrap(), r#""app""#);
        assert_eq!(
            render(r#"{{ .user | replace "a" "A" }}"#, v).unwrap(),
            "App"
        );
        assert_eq!(render("{{ .user | nindent 2 }}", v).unwrap(), "\n  app");
        assert_eq!(
            render(
                r#"postgres://{{ .user }}:{{ .password | trim }}@db/{{ printf "%s" "app" }}"#,
                v
            )
            .unwrap(),
            "postgres://app:p@ss@db/app"
        );
        assert_eq!(
            render("{{ .user | sha256sum }}", v).unwrap(),
            "a172cedcae47474b615c54d510a5d84a8dea3032e958587430b413538be3f333"
        );
    }

    #[test]
    fn no_environment_or_network_functions() {
        for forbidden in [
            "{{ env \"HOME\" }}",
            "{{ expandenv \"$HOME\" }}",
            "{{ getHostByName \"localhost\" }}",
        ] {
            assert!(matches!(
                render(forbidden, &[]),
                Err(TemplateError::Parse { .. } | TemplateError::Execute { .. })
            ));
        }
    }

    #[test]
    fn errors_never_echo_values() {
        let error = render(
            "{{ .password | b64dec }}",
            &[("password", "not-base64-s3cr3t")],
        )
        .unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(matches!(error, TemplateError::Execute { .. }));
        let parse = render("{{ .password ", &[("password", "s3cr3t")]).unwrap_err();
        assert!(!parse.to_string().contains("s3cr3t"));
    }

    #[test]
    fn inputs_the_engine_mishandles_are_refused_up_front() {
        for text in [
            "{{ .password ",
            "{{ printf \"%s\" ",
            "ok {{ .a }} then {{ .b",
        ] {
            let error = render(text, &[("password", "s3cr3t")]).unwrap_err();
            assert!(
                error.to_string().contains("unclosed action"),
                "{text:?}: {error}"
            );
        }
        let recursive = r#"{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}"#;
        assert!(
            render(recursive, &[])
                .unwrap_err()
                .to_string()
                .contains("\"define\"")
        );
        assert!(render("{{- block \"b\" . }}{{ end }}", &[]).is_err());
    }

    #[test]
    fn output_and_indentation_are_bounded() {
        assert!(matches!(
            render("{{ .x | indent 100000 }}", &[("x", "a")]),
            Err(TemplateError::Execute { .. })
        ));
        let big = "x".repeat(MAX_OUTPUT_BYTES);
        let too_large = render("{{ .a }}{{ .a }}", &[("a", &big)]).unwrap_err();
        assert!(matches!(too_large, TemplateError::TooLarge { .. }));
    }
}
