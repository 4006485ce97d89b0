//! Go-template rendering for Secret templates (`SealedSecret.spec.template.data`, and
//! ExternalSecret `target.template.data`).
//!
//! Users write these in Go `text/template` syntax with Sprig functions, as upstream
//! sealed-secrets and ESO accept them (`{{ .password }}`, `{{ index . "foo" }}`,
//! `{{ .user | b64enc }}`). The engine is this crate's own, small and bounded, so that a
//! template cannot be used as a bomb:
//!
//! - every string a function builds, and the output, is built in a buffer that refuses to grow
//!   past [`MAX_OUTPUT_BYTES`] before allocating (a chain of `replace` that grows tenfold per
//!   stage stops at the limit, not after it);
//! - each key has a budget of [`MAX_STEPS`] evaluation steps (every node, range iteration and
//!   function call, and the bytes functions read and write), so nested `range` ends;
//! - the parser bounds the text ([`MAX_TEMPLATE_BYTES`]), the tree ([`MAX_NODES`]), the
//!   variables in scope ([`MAX_VARIABLES`]) and the nesting of control structures and
//!   parentheses ([`MAX_NESTING`]);
//! - the lexer reads characters, never byte offsets into them, on the calling thread; an action
//!   left open is an error; `define`/`template`/`block` (unbounded recursion) are refused.
//!
//! The function set is side-effect free by construction: no environment, no files, no network,
//! no DNS, no clock, no randomness. Errors never echo the values being rendered, because a
//! template error message ends up in a status that many people can read (parse errors may
//! quote the template text, which is not secret).

#[cfg(test)]
mod engine_tests;
mod exec;
mod functions;
mod json;
mod lexer;
mod parse;
mod printf;
mod value;

use std::collections::BTreeMap;

use zeroize::Zeroizing;

pub use parse::{MAX_NESTING, MAX_NODES, MAX_TEMPLATE_BYTES, MAX_VARIABLES};
pub use value::MAX_STEPS;

use value::{Fail, Map, Value};

/// The most bytes one rendered key may produce (and the most any intermediate string may hold).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

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
    /// The output, or a string computed on the way, exceeds [`MAX_OUTPUT_BYTES`].
    #[error("failed to render template for key {key:?}: output exceeds {limit} bytes")]
    TooLarge {
        /// The output key.
        key: String,
        /// The limit.
        limit: usize,
    },
    /// Rendering took more than [`MAX_STEPS`] evaluation steps.
    #[error("failed to render template for key {key:?}: evaluation exceeds {limit} steps")]
    TooManySteps {
        /// The output key.
        key: String,
        /// The limit.
        limit: u64,
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
    let root = root_value(values);
    templates
        .iter()
        .map(|(key, text)| render_one(key, text, &root).map(|out| (key.clone(), out)))
        .collect()
}

fn root_value(values: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Value {
    let entries = values
        .iter()
        .map(|(k, v)| {
            let text = match std::str::from_utf8(v) {
                Ok(s) => Zeroizing::new(s.to_string()),
                Err(_) => Zeroizing::new(String::from_utf8_lossy(v).into_owned()),
            };
            (k.clone(), Value::text(text))
        })
        .collect();
    Value::Map(std::rc::Rc::new(Map::new(entries)))
}

fn render_one(key: &str, text: &str, root: &Value) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    let tree = parse::parse(text).map_err(|error| TemplateError::Parse {
        key: key.to_string(),
        message: error.to_string(),
    })?;
    let rendered = exec::execute(&tree, root).map_err(|fail| execution_error(key, fail))?;
    Ok(Zeroizing::new(rendered.as_bytes().to_vec()))
}

fn execution_error(key: &str, fail: Fail) -> TemplateError {
    let key = key.to_string();
    match fail {
        Fail::Exec => TemplateError::Execute { key },
        Fail::TooLarge => TemplateError::TooLarge {
            key,
            limit: MAX_OUTPUT_BYTES,
        },
        Fail::Steps => TemplateError::TooManySteps {
            key,
            limit: MAX_STEPS,
        },
    }
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
