//! Time per render of a typical ExternalSecret template set (a dozen keys: pipelines, `b64enc`,
//! `toJson`/`fromJson`, `range` over a map of 50 entries), with this crate's engine and with
//! gtmpl (the engine it replaced, driven as the crate drove it: parse and render per key, with
//! the same functions), in the same process. Prints both and the ratio ours/gtmpl.
//!
//! Run: `cargo bench -p mooring-template --bench render` (`ROUNDS=n` renders per run, default
//! 2000; `SHOW=1` prints the keys whose output differs). The `env` key differs: gtmpl ranges
//! over a map in hash order, Go (and this crate) in key order.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use gtmpl::{Context, FuncError, Template, Value};
use zeroize::Zeroizing;

fn templates() -> BTreeMap<String, String> {
    [
        (
            "url",
            "postgres://{{ .user }}:{{ .password | trim }}@{{ .host }}:5432/app?sslmode=require",
        ),
        ("password.b64", "{{ .password | trim | b64enc }}"),
        ("config.host", "{{ (.config | fromJson).host }}"),
        ("all.json", "{{ toJson . }}"),
        (
            "env",
            "{{ range $k, $v := . }}{{ $k | upper }}={{ $v | quote }}\n{{ end }}",
        ),
        ("user", "{{ .user | upper }}"),
        ("region", "{{ .region | default \"eu-west-1\" }}"),
        ("dsn", "{{ printf \"%s@%s:%d\" .user .host 5432 }}"),
        (
            "mode",
            "{{ if eq .user \"app\" }}primary{{ else }}replica{{ end }}",
        ),
        ("entry", "{{ index . \"entry07\" }}"),
        ("host.dashed", "{{ .host | replace \".\" \"-\" }}"),
        ("config.b64", "{{ .config | fromJson | toJson | b64enc }}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn values() -> BTreeMap<String, Zeroizing<Vec<u8>>> {
    let mut values: BTreeMap<String, Zeroizing<Vec<u8>>> = (0..50)
        .map(|i| {
            (
                format!("entry{i:02}"),
                Zeroizing::new(format!("value-{i}-{}", "s".repeat(24)).into_bytes()),
            )
        })
        .collect();
    for (k, v) in [
        ("user", "app"),
        ("password", "  correct horse battery staple  "),
        ("host", "db.prod.internal"),
        (
            "config",
            r#"{"host":"db.prod.internal","port":5432,"pool":{"min":2,"max":20},"tags":["a","b"]}"#,
        ),
    ] {
        values.insert(k.to_string(), Zeroizing::new(v.as_bytes().to_vec()));
    }
    values
}

// The baseline: gtmpl with the functions the crate gave it (the ones this set uses).

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn one<'a>(args: &'a [Value], name: &str) -> Result<&'a Value, FuncError> {
    match args {
        [value] => Ok(value),
        _ => Err(FuncError::ExactlyXArgs(name.to_string(), 1)),
    }
}

fn g_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(one(args, "upper")?).to_uppercase()))
}

fn g_trim(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(one(args, "trim")?).trim().to_string()))
}

fn g_b64enc(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(text(one(args, "b64enc")?)),
    ))
}

fn g_quote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| serde_json::Value::String(text(a)).to_string())
        .collect();
    Ok(Value::String(quoted.join(" ")))
}

fn g_replace(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [old, new, s] => Ok(Value::String(text(s).replace(&text(old), &text(new)))),
        _ => Err(FuncError::ExactlyXArgs("replace".into(), 3)),
    }
}

fn g_default(args: &[Value]) -> Result<Value, FuncError> {
    let empty = |v: &Value| match v {
        Value::NoValue | Value::Nil => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    };
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, value] => Ok(if empty(value) { fallback } else { value }.clone()),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

fn json_of(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
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

fn g_to_json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(json_of(one(args, "toJson")?).to_string()))
}

fn g_from_json(args: &[Value]) -> Result<Value, FuncError> {
    serde_json::from_str(&text(one(args, "fromJson")?))
        .map(value_of)
        .map_err(|_| FuncError::Generic("fromJson: invalid arguments".into()))
}

type Function = fn(&[Value]) -> Result<Value, FuncError>;

const FUNCTIONS: &[(&str, Function)] = &[
    ("upper", g_upper),
    ("trim", g_trim),
    ("b64enc", g_b64enc),
    ("quote", g_quote),
    ("replace", g_replace),
    ("default", g_default),
    ("toJson", g_to_json),
    ("fromJson", g_from_json),
];

fn render_gtmpl(
    templates: &BTreeMap<String, String>,
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<BTreeMap<String, String>, String> {
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
        .map(|(key, text)| {
            let mut template = Template::default();
            template.add_funcs(FUNCTIONS);
            template.parse(text).map_err(|e| e.to_string())?;
            let out = template.render(&context).map_err(|e| e.to_string())?;
            Ok((key.clone(), out))
        })
        .collect()
}

/// Mean time per call of `f` over `rounds` calls, after a warm-up.
fn time(rounds: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..rounds.div_ceil(10) {
        f();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    start.elapsed() / rounds
}

fn main() -> Result<(), Box<dyn Error>> {
    let templates = templates();
    let values = values();
    let ours = mooring_template::render_all(&templates, &values)?;
    let theirs = render_gtmpl(&templates, &values)?;
    let differing: Vec<&String> = templates
        .keys()
        .filter(|k| ours.get(*k).map(|v| v.as_slice()) != theirs.get(*k).map(|v| v.as_bytes()))
        .collect();
    let same = templates.len() - differing.len();
    if std::env::var_os("SHOW").is_some() {
        for key in &differing {
            let ours = ours
                .get(*key)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            println!("{key}: ours {ours:?}\n{key}: gtmpl {:?}", theirs.get(*key));
        }
    }
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    let mut results = Vec::new();
    for _ in 0..3 {
        let ours = time(rounds, || {
            black_box(mooring_template::render_all(black_box(&templates), black_box(&values)).ok());
        });
        let theirs = time(rounds, || {
            black_box(render_gtmpl(black_box(&templates), black_box(&values)).ok());
        });
        results.push((ours, theirs));
    }
    println!(
        "template set: {} keys, {} values (range over {} entries); identical output for {same} of {} keys (differing: {differing:?})",
        templates.len(),
        values.len(),
        values.len(),
        templates.len()
    );
    for (i, (ours, theirs)) in results.iter().enumerate() {
        println!(
            "run {}: ours {:>9.1} µs/render  gtmpl {:>9.1} µs/render  ours/gtmpl {:.3}",
            i + 1,
            ours.as_secs_f64() * 1e6,
            theirs.as_secs_f64() * 1e6,
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    Ok(())
}
