//! The values a template computes with, the bounded text buffer every string is built in, and
//! Go's `fmt` rendering of values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

use zeroize::Zeroizing;

/// Why execution stopped. Carries no value: the caller turns it into a [`crate::TemplateError`]
/// that names only the key and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// A type error, a failing function, a bad argument.
    Exec,
    /// A string (intermediate or the output) would exceed its limit.
    TooLarge,
    /// The step budget is spent.
    Steps,
}

/// The most evaluation steps one key may take.
pub const MAX_STEPS: u64 = 1_000_000;
/// Bytes a function reads or writes per step it is charged.
pub(crate) const BYTES_PER_STEP: usize = 64;

/// The step budget of one key: one step per node evaluated, per range iteration, per function
/// call, and per [`BYTES_PER_STEP`] bytes a function scans or produces.
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    /// A budget of `steps`.
    pub(crate) fn new(steps: u64) -> Self {
        Budget { left: steps }
    }

    /// Takes `steps`, or fails once the budget is spent.
    pub(crate) fn charge(&mut self, steps: u64) -> Result<(), Fail> {
        if steps > self.left {
            self.left = 0;
            return Err(Fail::Steps);
        }
        self.left -= steps;
        Ok(())
    }

    /// Takes one step.
    pub(crate) fn step(&mut self) -> Result<(), Fail> {
        self.charge(1)
    }

    /// Takes the steps for scanning or producing `bytes` bytes.
    pub(crate) fn bytes(&mut self, bytes: usize) -> Result<(), Fail> {
        self.charge(u64::try_from(bytes / BYTES_PER_STEP).unwrap_or(u64::MAX))
    }
}

/// What one collection entry is counted as, on top of its contents, when a function bounds the
/// collection it builds (the memory an entry takes beyond its bytes).
pub(crate) const ENTRY_OVERHEAD: usize = 16;

/// A list (from `fromJson`), with its size computed once.
#[derive(Debug)]
pub(crate) struct List {
    pub(crate) items: Vec<Value>,
    pub(crate) size: usize,
}

/// A map with string keys, iterated in key order (as Go's templates and `fmt` do), with its size
/// computed once.
#[derive(Debug)]
pub(crate) struct Map {
    pub(crate) entries: BTreeMap<String, Value>,
    pub(crate) size: usize,
}

/// A string value. Reference counted so that `.`, variables and arguments share it; wiped when
/// the last reference goes, because it may be a secret.
pub(crate) type Text = Rc<Zeroizing<String>>;

/// A value, as Go's `interface{}` holds what Secret data, literals and functions produce.
#[derive(Debug, Clone)]
#[allow(clippy::enum_variant_names)] // `NoValue` is Go's name for it.
pub(crate) enum Value {
    /// Go's invalid `reflect.Value`: what a missing map key yields. Printed as `<no value>`.
    NoValue,
    /// A nil interface (`nil`, JSON `null`).
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    List(Rc<List>),
    Map(Rc<Map>),
}

impl Value {
    /// A string value.
    pub(crate) fn text(s: Zeroizing<String>) -> Self {
        Value::Str(Rc::new(s))
    }

    /// A string value from a string that is not secret (a literal, a key name).
    pub(crate) fn plain(s: &str) -> Self {
        Value::text(Zeroizing::new(s.to_string()))
    }

    /// The size this value is counted as when bounding collections.
    pub(crate) fn size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::List(l) => l.size,
            Value::Map(m) => m.size,
            _ => 8,
        }
    }

    /// Go's truthiness: false, 0, nil, and empty strings and collections are false.
    pub(crate) fn is_true(&self) -> bool {
        match self {
            Value::NoValue | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.items.is_empty(),
            Value::Map(m) => !m.entries.is_empty(),
        }
    }

    /// The Go type name, as `%T` and `printf`'s error forms show it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::NoValue | Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
        }
    }
}

impl Map {
    /// A map from entries, sized.
    pub(crate) fn new(entries: BTreeMap<String, Value>) -> Self {
        let size = entries
            .iter()
            .map(|(k, v)| k.len() + v.size() + ENTRY_OVERHEAD)
            .fold(0usize, usize::saturating_add);
        Map { entries, size }
    }
}

/// A string under construction that never grows past its limit: it refuses a write that would,
/// before allocating. When it grows, the old allocation is wiped.
pub(crate) struct Buf {
    s: Zeroizing<String>,
    limit: usize,
}

impl Buf {
    /// An empty buffer that holds at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Buf {
            s: Zeroizing::new(String::new()),
            limit,
        }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.s.len()
    }

    /// Appends `text`, or refuses if the buffer would exceed its limit.
    pub(crate) fn push_str(&mut self, text: &str) -> Result<(), Fail> {
        let needed = self.s.len().saturating_add(text.len());
        if needed > self.limit {
            return Err(Fail::TooLarge);
        }
        if needed > self.s.capacity() {
            let capacity = needed
                .max(self.s.capacity().saturating_mul(2))
                .max(32)
                .min(self.limit);
            let mut grown = Zeroizing::new(String::with_capacity(capacity));
            grown.push_str(&self.s);
            // The old allocation is wiped when `grown` replaces it.
            self.s = grown;
        }
        self.s.push_str(text);
        Ok(())
    }

    /// Appends one character.
    pub(crate) fn push(&mut self, c: char) -> Result<(), Fail> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// Appends `count` copies of `c`.
    pub(crate) fn repeat(&mut self, c: char, count: usize) -> Result<(), Fail> {
        if count
            .saturating_mul(c.len_utf8())
            .saturating_add(self.s.len())
            > self.limit
        {
            return Err(Fail::TooLarge);
        }
        for _ in 0..count {
            self.push(c)?;
        }
        Ok(())
    }

    /// Formats into the buffer (for numbers and other short, non-secret-sized pieces).
    pub(crate) fn write_fmt_bounded(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), Fail> {
        match self.write_fmt(args) {
            Ok(()) => Ok(()),
            Err(_) => Err(Fail::TooLarge),
        }
    }

    /// The text written.
    pub(crate) fn as_str(&self) -> &str {
        &self.s
    }

    /// The finished string.
    pub(crate) fn finish(self) -> Zeroizing<String> {
        self.s
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s).map_err(|_| std::fmt::Error)
    }
}

/// Writes `value` as Go's `fmt.Sprint` prints it (`%v`): strings as they are, nil as `<nil>`,
/// lists as `[a b]`, maps as `map[k:v]` in key order.
pub(crate) fn write_value(buf: &mut Buf, value: &Value) -> Result<(), Fail> {
    match value {
        Value::NoValue | Value::Nil => buf.push_str("<nil>"),
        Value::Bool(b) => buf.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => buf.write_fmt_bounded(format_args!("{i}")),
        Value::Float(f) => write_float_shortest(buf, *f),
        Value::Str(s) => buf.push_str(s),
        Value::List(l) => {
            buf.push('[')?;
            for (i, item) in l.items.iter().enumerate() {
                if i > 0 {
                    buf.push(' ')?;
                }
                write_value(buf, item)?;
            }
            buf.push(']')
        }
        Value::Map(m) => {
            buf.push_str("map[")?;
            for (i, (k, v)) in m.entries.iter().enumerate() {
                if i > 0 {
                    buf.push(' ')?;
                }
                buf.push_str(k)?;
                buf.push(':')?;
                write_value(buf, v)?;
            }
            buf.push(']')
        }
    }
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits that
/// round-trip, in exponent form when the decimal exponent is below -4 or at least 6 (so
/// `1e+06`, but `123456`).
pub(crate) fn write_float_shortest(buf: &mut Buf, f: f64) -> Result<(), Fail> {
    if let Some(special) = special_float(f, false) {
        return buf.push_str(special);
    }
    let (negative, digits, exponent) = shortest_digits(f);
    if !(-4..6).contains(&exponent) {
        write_exponent_form(buf, negative, &digits, exponent, 'e')
    } else {
        // Rust's Display prints the same shortest round-trip digits without an exponent.
        buf.write_fmt_bounded(format_args!("{f}"))
    }
}

/// NaN and the infinities as Go prints them.
pub(crate) fn special_float(f: f64, plus: bool) -> Option<&'static str> {
    if f.is_nan() {
        Some(if plus { "+NaN" } else { "NaN" })
    } else if f == f64::INFINITY {
        Some("+Inf")
    } else if f == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// The shortest round-trip decimal digits of `f` and its decimal exponent (`d.ddd × 10^exp`).
pub(crate) fn shortest_digits(f: f64) -> (bool, String, i32) {
    split_exponent_form(&format!("{:e}", f))
}

/// Splits Rust's `{:e}` output (`-1.2345e-7`) into sign, digits (`12345`) and exponent.
pub(crate) fn split_exponent_form(formatted: &str) -> (bool, String, i32) {
    let (negative, rest) = match formatted.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, formatted),
    };
    let (mantissa, exponent) = rest.split_once('e').unwrap_or((rest, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (negative, digits, exponent.parse().unwrap_or(0))
}

/// Writes `d.ddde+XX` as Go does (at least two exponent digits, always a sign).
pub(crate) fn write_exponent_form(
    buf: &mut Buf,
    negative: bool,
    digits: &str,
    exponent: i32,
    e: char,
) -> Result<(), Fail> {
    if negative {
        buf.push('-')?;
    }
    let mut chars = digits.chars();
    buf.push(chars.next().unwrap_or('0'))?;
    let rest = chars.as_str();
    if !rest.is_empty() {
        buf.push('.')?;
        buf.push_str(rest)?;
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    buf.write_fmt_bounded(format_args!("{e}{sign}{:02}", exponent.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(value: &Value) -> String {
        let mut buf = Buf::new(1024);
        write_value(&mut buf, value).unwrap();
        buf.as_str().to_string()
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        for (f, go) in [
            (1.5, "1.5"),
            (5432.0, "5432"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-10, "-2.5e-10"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(shown(&Value::Float(f)), go, "{f}");
        }
    }

    #[test]
    fn buffer_refuses_before_growing_past_its_limit() {
        let mut buf = Buf::new(10);
        buf.push_str("12345").unwrap();
        assert_eq!(buf.push_str("123456"), Err(Fail::TooLarge));
        assert_eq!(buf.len(), 5);
        assert!(buf.s.capacity() <= 10);
        buf.push_str("12345").unwrap();
        assert_eq!(buf.push('x'), Err(Fail::TooLarge));
        assert_eq!(buf.repeat(' ', usize::MAX), Err(Fail::TooLarge));
    }
}
