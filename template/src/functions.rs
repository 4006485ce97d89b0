//! The functions templates may call: Go's builtins and the Sprig subset users of sealed-secrets
//! and ESO templates rely on. Deliberately absent: `env`, `expandenv`, `getHostByName`, file and
//! random functions (upstream removed the first three, #1703), and `call`.
//!
//! Every function that builds a string builds it in a [`Buf`] bounded by
//! [`MAX_VALUE_BYTES`], so it refuses before allocating past the limit, and pays steps for the
//! bytes it reads and writes.

use std::collections::BTreeMap;
use std::rc::Rc;

use base64::Engine;
use zeroize::Zeroizing;

use crate::json;
use crate::printf;
use crate::value::{Budget, Buf, ENTRY_OVERHEAD, Fail, Map, Value, write_value};

/// The largest string (or collection) a function may produce: the output limit.
pub(crate) const MAX_VALUE_BYTES: usize = crate::MAX_OUTPUT_BYTES;
/// The widest indentation `indent`/`nindent` accept, so a template cannot multiply its output.
const MAX_INDENT: usize = 1024;

/// A function evaluated on its evaluated arguments.
pub(crate) type Eager = fn(&mut Budget, &[Value]) -> Result<Value, Fail>;

/// How a function is called.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Function {
    /// `and`: evaluates arguments until one is false.
    And,
    /// `or`: evaluates arguments until one is true.
    Or,
    /// Everything else.
    Eager(Eager),
}

const TABLE: &[(&str, Eager)] = &[
    // Go's builtins.
    ("not", not),
    ("eq", eq),
    ("ne", ne),
    ("lt", lt),
    ("le", le),
    ("gt", gt),
    ("ge", ge),
    ("len", len),
    ("index", index),
    ("print", print),
    ("printf", printf_function),
    ("println", println),
    ("urlquery", urlquery),
    // Sprig.
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

/// The function called `name`, if templates may call it.
pub(crate) fn lookup(name: &str) -> Option<Function> {
    match name {
        "and" => Some(Function::And),
        "or" => Some(Function::Or),
        _ => TABLE
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| Function::Eager(*f)),
    }
}

/// A fresh buffer for a function's result.
pub(crate) fn buffer() -> Buf {
    Buf::new(MAX_VALUE_BYTES)
}

/// The finished string, paid for.
pub(crate) fn finish(budget: &mut Budget, buf: Buf) -> Result<Value, Fail> {
    budget.bytes(buf.len())?;
    Ok(Value::text(buf.finish()))
}

fn copy(budget: &mut Budget, s: &str) -> Result<Value, Fail> {
    let mut buf = buffer();
    buf.push_str(s)?;
    finish(budget, buf)
}

fn exactly(args: &[Value], count: usize) -> Result<(), Fail> {
    if args.len() == count {
        Ok(())
    } else {
        Err(Fail::Exec)
    }
}

/// A function's argument as text: borrowed from a string value, or formatted (and wiped after).
enum Text<'a> {
    Borrowed(&'a str),
    Owned(Zeroizing<String>),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

/// The text form of a value for the Sprig functions: strings as they are, nil as empty, anything
/// else as Go's `%v` prints it. Pays for scanning it.
fn text<'a>(budget: &mut Budget, value: &'a Value) -> Result<Text<'a>, Fail> {
    let text = match value {
        Value::Str(s) => Text::Borrowed(s.as_str()),
        Value::NoValue | Value::Nil => Text::Borrowed(""),
        other => {
            let mut buf = buffer();
            write_value(&mut buf, other)?;
            Text::Owned(buf.finish())
        }
    };
    budget.bytes(text.len())?;
    Ok(text)
}

// Go's builtins.

fn not(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    Ok(Value::Bool(!args[0].is_true()))
}

/// Go's `eq` on basic values: numbers by value, strings, bools; nil equals only nil;
/// collections and mixed kinds cannot be compared.
fn equal(budget: &mut Budget, a: &Value, b: &Value) -> Result<bool, Fail> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::Str(x), Value::Str(y)) => {
            budget.bytes(x.len().min(y.len()))?;
            x.as_str() == y.as_str()
        }
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::NoValue | Value::Nil, Value::NoValue | Value::Nil) => true,
        (Value::NoValue | Value::Nil, _) | (_, Value::NoValue | Value::Nil) => false,
        _ => return Err(Fail::Exec),
    })
}

fn less(budget: &mut Budget, a: &Value, b: &Value) -> Result<bool, Fail> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Int(x), Value::Float(y)) => (*x as f64) < *y,
        (Value::Float(x), Value::Int(y)) => *x < (*y as f64),
        (Value::Str(x), Value::Str(y)) => {
            budget.bytes(x.len().min(y.len()))?;
            x.as_str() < y.as_str()
        }
        _ => return Err(Fail::Exec),
    })
}

fn eq(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let [first, rest @ ..] = args else {
        return Err(Fail::Exec);
    };
    if rest.is_empty() {
        return Err(Fail::Exec);
    }
    for other in rest {
        if equal(budget, first, other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn ne(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    Ok(Value::Bool(!equal(budget, &args[0], &args[1])?))
}

fn lt(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    Ok(Value::Bool(less(budget, &args[0], &args[1])?))
}

fn le(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (a, b) = (&args[0], &args[1]);
    Ok(Value::Bool(less(budget, a, b)? || equal(budget, a, b)?))
}

fn gt(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (a, b) = (&args[0], &args[1]);
    Ok(Value::Bool(!less(budget, a, b)? && !equal(budget, a, b)?))
}

fn ge(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    Ok(Value::Bool(!less(budget, &args[0], &args[1])?))
}

fn len(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let n = match &args[0] {
        Value::Str(s) => s.len(),
        Value::List(l) => l.items.len(),
        Value::Map(m) => m.entries.len(),
        _ => return Err(Fail::Exec),
    };
    Ok(Value::Int(i64::try_from(n).map_err(|_| Fail::Exec)?))
}

/// `index x k1 k2 …`: map keys (a missing one is no value), list and string positions.
fn index(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let [item, keys @ ..] = args else {
        return Err(Fail::Exec);
    };
    let mut item = item.clone();
    for key in keys {
        item = match (&item, key) {
            (Value::Map(m), Value::Str(k)) => {
                m.entries.get(k.as_str()).cloned().unwrap_or(Value::NoValue)
            }
            (Value::List(l), Value::Int(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| l.items.get(i))
                .cloned()
                .ok_or(Fail::Exec)?,
            (Value::Str(s), Value::Int(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| s.as_bytes().get(i))
                .map(|b| Value::Int(i64::from(*b)))
                .ok_or(Fail::Exec)?,
            _ => return Err(Fail::Exec),
        };
    }
    Ok(item)
}

fn print(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let mut buf = buffer();
    printf::sprint(&mut buf, args)?;
    finish(budget, buf)
}

fn println(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let mut buf = buffer();
    printf::sprintln(&mut buf, args)?;
    finish(budget, buf)
}

fn printf_function(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let [Value::Str(format), rest @ ..] = args else {
        return Err(Fail::Exec);
    };
    budget.bytes(format.len())?;
    let mut buf = buffer();
    printf::sprintf(&mut buf, format, rest)?;
    finish(budget, buf)
}

/// Go's `urlquery`: `url.QueryEscape` of the arguments as `print` joins them.
fn urlquery(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let mut joined = buffer();
    printf::sprint(&mut joined, args)?;
    budget.bytes(joined.len())?;
    let mut buf = buffer();
    for byte in joined.as_str().bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                buf.push(char::from(byte))?;
            }
            b' ' => buf.push('+')?,
            other => buf.write_fmt_bounded(format_args!("%{other:02X}"))?,
        }
    }
    finish(budget, buf)
}

// Sprig.

/// A string function computed in one pass by the standard library when its result is known to
/// fit (at most `growth` times the input), else character by character in a bounded buffer.
fn per_char(
    budget: &mut Budget,
    args: &[Value],
    growth: usize,
    whole: fn(&str) -> String,
    each: fn(char, &mut Buf) -> Result<(), Fail>,
) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    let growth = if s.is_ascii() { 1 } else { growth };
    if s.len().saturating_mul(growth) <= MAX_VALUE_BYTES {
        let out = Zeroizing::new(whole(&s));
        budget.bytes(out.len())?;
        return Ok(Value::text(out));
    }
    // Character by character is slower: paid at a step per eight bytes.
    budget.charge(u64::try_from(s.len() / 8).unwrap_or(u64::MAX))?;
    let mut buf = buffer();
    for c in s.chars() {
        each(c, &mut buf)?;
    }
    finish(budget, buf)
}

/// The most bytes one character's upper or lower case takes per byte of it (U+0390 is two
/// bytes and uppercases to six).
const CASE_GROWTH: usize = 3;

fn upper(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    per_char(budget, args, CASE_GROWTH, str::to_uppercase, |c, buf| {
        c.to_uppercase().try_for_each(|u| buf.push(u))
    })
}

fn lower(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    per_char(budget, args, CASE_GROWTH, str::to_lowercase, |c, buf| {
        c.to_lowercase().try_for_each(|l| buf.push(l))
    })
}

fn nospace(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    per_char(
        budget,
        args,
        1,
        |s| s.chars().filter(|c| !c.is_whitespace()).collect(),
        |c, buf| {
            if c.is_whitespace() {
                Ok(())
            } else {
                buf.push(c)
            }
        },
    )
}

fn trim(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    copy(budget, s.trim())
}

fn trim_prefix(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (prefix, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    copy(budget, s.strip_prefix(prefix.as_ref()).unwrap_or(&s))
}

fn trim_suffix(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (suffix, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    copy(budget, s.strip_suffix(suffix.as_ref()).unwrap_or(&s))
}

/// `replace OLD NEW S`: every OLD in S becomes NEW (an empty OLD matches between characters).
/// The result is built piece by piece in a bounded buffer, so a growing chain of replacements
/// stops at the limit instead of allocating first.
fn replace(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 3)?;
    let old = text(budget, &args[0])?;
    let new = text(budget, &args[1])?;
    let s = text(budget, &args[2])?;
    let mut buf = buffer();
    let mut last = 0;
    for (at, matched) in s.match_indices(old.as_ref()) {
        // Each match is work of its own, whatever its size.
        budget.step()?;
        buf.push_str(&s[last..at])?;
        buf.push_str(&new)?;
        last = at + matched.len();
    }
    buf.push_str(&s[last..])?;
    finish(budget, buf)
}

fn quote(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let mut buf = buffer();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            buf.push(' ')?;
        }
        json::write_string(&mut buf, &text(budget, arg)?)?;
    }
    finish(budget, buf)
}

fn squote(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    let mut buf = buffer();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            buf.push(' ')?;
        }
        buf.push('\'')?;
        buf.push_str(&text(budget, arg)?)?;
        buf.push('\'')?;
    }
    finish(budget, buf)
}

fn contains(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (needle, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    Ok(Value::Bool(s.contains(needle.as_ref())))
}

fn has_prefix(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (prefix, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    Ok(Value::Bool(s.starts_with(prefix.as_ref())))
}

fn has_suffix(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (suffix, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    Ok(Value::Bool(s.ends_with(suffix.as_ref())))
}

fn width(value: &Value) -> Result<usize, Fail> {
    let width = match value {
        Value::Int(n) => usize::try_from(*n).ok(),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    };
    width.filter(|w| *w <= MAX_INDENT).ok_or(Fail::Exec)
}

fn indent_into(buf: &mut Buf, spaces: usize, s: &str) -> Result<(), Fail> {
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            buf.push('\n')?;
        }
        buf.repeat(' ', spaces)?;
        buf.push_str(line)?;
    }
    Ok(())
}

fn indent(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let spaces = width(&args[0])?;
    let s = text(budget, &args[1])?;
    let mut buf = buffer();
    indent_into(&mut buf, spaces, &s)?;
    finish(budget, buf)
}

fn nindent(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let spaces = width(&args[0])?;
    let s = text(budget, &args[1])?;
    let mut buf = buffer();
    buf.push('\n')?;
    indent_into(&mut buf, spaces, &s)?;
    finish(budget, buf)
}

fn to_string(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    if let Value::Str(_) = &args[0] {
        return Ok(args[0].clone());
    }
    let s = text(budget, &args[0])?;
    copy(budget, &s)
}

fn join(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let separator = text(budget, &args[0])?;
    let mut buf = buffer();
    match &args[1] {
        Value::List(list) => {
            for (i, item) in list.items.iter().enumerate() {
                if i > 0 {
                    buf.push_str(&separator)?;
                }
                buf.push_str(&text(budget, item)?)?;
            }
        }
        other => buf.push_str(&text(budget, other)?)?,
    }
    finish(budget, buf)
}

/// Sprig's `split` returns a map `_0`, `_1`, …; bounded like a string of the same size.
fn split(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 2)?;
    let (separator, s) = (text(budget, &args[0])?, text(budget, &args[1])?);
    if separator.is_empty() {
        return Err(Fail::Exec);
    }
    let mut entries = BTreeMap::new();
    let mut size = 0usize;
    for (i, part) in s.split(separator.as_ref()).enumerate() {
        let key = format!("_{i}");
        size = size.saturating_add(key.len() + part.len() + ENTRY_OVERHEAD);
        if size > MAX_VALUE_BYTES {
            return Err(Fail::TooLarge);
        }
        budget.step()?;
        entries.insert(key, Value::text(Zeroizing::new(part.to_string())));
    }
    Ok(Value::Map(Rc::new(Map { entries, size })))
}

fn b64enc(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    let encoded_len = s.len().div_ceil(3).saturating_mul(4);
    if encoded_len > MAX_VALUE_BYTES {
        return Err(Fail::TooLarge);
    }
    let mut out = Zeroizing::new(String::with_capacity(encoded_len));
    base64::engine::general_purpose::STANDARD.encode_string(s.as_bytes(), &mut out);
    budget.bytes(out.len())?;
    Ok(Value::text(out))
}

fn b64dec(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    let input = s.trim();
    if input.len() / 4 * 3 > MAX_VALUE_BYTES + 3 {
        return Err(Fail::TooLarge);
    }
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(input)
            .map_err(|_| Fail::Exec)?,
    );
    // Invalid UTF-8 becomes U+FFFD, as Go's string(b) prints it; the bounded buffer keeps the
    // threefold growth that can cause in check.
    let mut buf = buffer();
    for chunk in bytes.utf8_chunks() {
        buf.push_str(chunk.valid())?;
        if !chunk.invalid().is_empty() {
            buf.push(char::REPLACEMENT_CHARACTER)?;
        }
    }
    finish(budget, buf)
}

fn to_json(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let mut buf = buffer();
    json::write_value(&mut buf, &args[0])?;
    finish(budget, buf)
}

fn from_json(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    json::parse(&s, MAX_VALUE_BYTES)
}

fn sha256sum(budget: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    let s = text(budget, &args[0])?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut buf = buffer();
    for byte in digest.as_ref() {
        buf.write_fmt_bounded(format_args!("{byte:02x}"))?;
    }
    finish(budget, buf)
}

fn is_empty(value: &Value) -> bool {
    !value.is_true()
}

/// `default D V`: V unless it is empty, else D (V comes last so it can be piped).
fn default(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, value] => Ok(if is_empty(value) {
            fallback.clone()
        } else {
            value.clone()
        }),
        _ => Err(Fail::Exec),
    }
}

fn empty(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    exactly(args, 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(_: &mut Budget, args: &[Value]) -> Result<Value, Fail> {
    Ok(args
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::Nil))
}
