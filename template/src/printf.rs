//! Go's `fmt.Sprint`, `fmt.Sprintln` and `fmt.Sprintf` for template values: the verbs Secret
//! templates use (`%s %d %v %q %x %X %t %f %e %g %c %o %b %T %%`) with flags, width and
//! precision. Output goes into a bounded buffer; widths and precisions above Go's own cap
//! (1e6) print `%!(BADWIDTH)`/`%!(BADPREC)` as Go does.

use crate::value::{
    Buf, Fail, Value, shortest_digits, special_float, split_exponent_form, write_exponent_form,
    write_float_shortest, write_value,
};

/// Go's cap on widths and precisions.
const MAX_WIDTH: usize = 1_000_000;

/// `print`: operands printed with `%v`, a space between two operands when neither is a string.
pub(crate) fn sprint(buf: &mut Buf, args: &[Value]) -> Result<(), Fail> {
    let mut previous_is_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Value::Str(_));
        if i > 0 && !is_string && !previous_is_string {
            buf.push(' ')?;
        }
        write_value(buf, arg)?;
        previous_is_string = is_string;
    }
    Ok(())
}

/// `println`: operands with spaces between, and a newline.
pub(crate) fn sprintln(buf: &mut Buf, args: &[Value]) -> Result<(), Fail> {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            buf.push(' ')?;
        }
        write_value(buf, arg)?;
    }
    buf.push('\n')
}

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `printf`.
pub(crate) fn sprintf(buf: &mut Buf, format: &str, args: &[Value]) -> Result<(), Fail> {
    let mut args_used = 0;
    let mut chars = format.char_indices().peekable();
    let mut plain = 0;
    while let Some((at, c)) = chars.next() {
        if c != '%' {
            continue;
        }
        buf.push_str(&format[plain..at])?;
        let mut spec = Spec::default();
        while let Some(&(_, flag)) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        let mut bad_width = false;
        let mut bad_precision = false;
        spec.width = number_or_star(&mut chars, args, &mut args_used, &mut bad_width);
        if let Some(&(_, '.')) = chars.peek() {
            chars.next();
            spec.precision = Some(
                number_or_star(&mut chars, args, &mut args_used, &mut bad_precision).unwrap_or(0),
            );
        }
        let Some((verb_at, verb)) = chars.next() else {
            buf.push_str("%!(NOVERB)")?;
            plain = format.len();
            break;
        };
        plain = verb_at + verb.len_utf8();
        if bad_width {
            buf.push_str("%!(BADWIDTH)")?;
        }
        if bad_precision {
            buf.push_str("%!(BADPREC)")?;
        }
        if verb == '%' {
            buf.push('%')?;
            continue;
        }
        let Some(arg) = args.get(args_used) else {
            buf.write_fmt_bounded(format_args!("%!{verb}(MISSING)"))?;
            continue;
        };
        args_used += 1;
        format_one(buf, spec, verb, arg)?;
    }
    buf.push_str(&format[plain.min(format.len())..])?;
    if args_used < args.len() {
        buf.push_str("%!(EXTRA ")?;
        for (i, arg) in args[args_used..].iter().enumerate() {
            if i > 0 {
                buf.push_str(", ")?;
            }
            bad_form(buf, arg, None)?;
        }
        buf.push(')')?;
    }
    Ok(())
}

fn number_or_star(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    args: &[Value],
    args_used: &mut usize,
    bad: &mut bool,
) -> Option<usize> {
    if let Some(&(_, '*')) = chars.peek() {
        chars.next();
        let value = match args.get(*args_used) {
            Some(Value::Int(n)) => usize::try_from(*n).ok().filter(|n| *n <= MAX_WIDTH),
            _ => None,
        };
        *args_used += 1;
        if value.is_none() {
            *bad = true;
        }
        return value;
    }
    let mut number: Option<usize> = None;
    while let Some(&(_, d)) = chars.peek() {
        let Some(digit) = d.to_digit(10) else {
            break;
        };
        chars.next();
        let next = number
            .unwrap_or(0)
            .saturating_mul(10)
            .saturating_add(digit as usize);
        number = Some(next.min(MAX_WIDTH + 1));
    }
    if number.is_some_and(|n| n > MAX_WIDTH) {
        *bad = true;
        return None;
    }
    number
}

/// `%!v(type=value)`, Go's form for a verb that does not fit its operand (`%!v(<nil>)` for nil).
fn bad_form(buf: &mut Buf, arg: &Value, verb: Option<char>) -> Result<(), Fail> {
    if let Some(verb) = verb {
        buf.write_fmt_bounded(format_args!("%!{verb}("))?;
    }
    match arg {
        Value::NoValue | Value::Nil => buf.push_str("<nil>")?,
        other => {
            buf.push_str(other.type_name())?;
            buf.push('=')?;
            write_value(buf, other)?;
        }
    }
    if verb.is_some() {
        buf.push(')')?;
    }
    Ok(())
}

fn format_one(buf: &mut Buf, spec: Spec, verb: char, arg: &Value) -> Result<(), Fail> {
    let mut body = Buf::new(crate::functions::MAX_VALUE_BYTES);
    let mut numeric = false;
    let mut sign = "";
    match (verb, arg) {
        ('v', Value::Float(f)) => {
            numeric = true;
            sign = float_sign(*f, spec);
            write_float_shortest(&mut body, f.abs())?;
        }
        ('v', Value::Int(i)) | ('d', Value::Int(i)) => {
            numeric = true;
            sign = int_sign(*i, spec);
            integer(&mut body, i.unsigned_abs(), 10, false, spec.precision)?;
        }
        ('v' | 's', Value::Str(s)) => truncated(&mut body, s, spec.precision)?,
        ('v', _) => write_value(&mut body, arg)?,
        ('s', Value::List(_) | Value::Map(_)) => write_value(&mut body, arg)?,
        ('q', Value::Str(s)) => go_quote(&mut body, s, spec.plus)?,
        ('q', Value::Int(i)) => {
            let c = u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            body.push('\'')?;
            quote_char(&mut body, c, '\'', spec.plus)?;
            body.push('\'')?;
        }
        ('x' | 'X', Value::Int(i)) => {
            numeric = true;
            sign = int_sign(*i, spec);
            if spec.sharp {
                body.push_str(if verb == 'x' { "0x" } else { "0X" })?;
            }
            integer(&mut body, i.unsigned_abs(), 16, verb == 'X', spec.precision)?;
        }
        ('x' | 'X', Value::Str(s)) => {
            for (n, byte) in s.bytes().enumerate() {
                if n > 0 && spec.space {
                    body.push(' ')?;
                }
                if spec.sharp && (n == 0 || spec.space) {
                    body.push_str(if verb == 'x' { "0x" } else { "0X" })?;
                }
                if verb == 'x' {
                    body.write_fmt_bounded(format_args!("{byte:02x}"))?;
                } else {
                    body.write_fmt_bounded(format_args!("{byte:02X}"))?;
                }
            }
        }
        ('o' | 'b', Value::Int(i)) => {
            numeric = true;
            sign = int_sign(*i, spec);
            let radix = if verb == 'o' { 8 } else { 2 };
            if spec.sharp && verb == 'o' {
                body.push('0')?;
            }
            integer(&mut body, i.unsigned_abs(), radix, false, spec.precision)?;
        }
        ('c', Value::Int(i)) => {
            let c = u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            body.push(c)?;
        }
        ('U', Value::Int(i)) => {
            body.write_fmt_bounded(format_args!("U+{:04X}", i))?;
        }
        ('t', Value::Bool(b)) => body.push_str(if *b { "true" } else { "false" })?,
        ('e' | 'E' | 'f' | 'F' | 'g' | 'G', Value::Float(f)) => {
            numeric = true;
            sign = float_sign(*f, spec);
            float(&mut body, f.abs(), verb, spec.precision)?;
        }
        ('T', _) => body.push_str(arg.type_name())?,
        _ => {
            return bad_form(buf, arg, Some(verb));
        }
    }
    pad(buf, spec, sign, body.as_str(), numeric)
}

fn int_sign(i: i64, spec: Spec) -> &'static str {
    if i < 0 {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn float_sign(f: f64, spec: Spec) -> &'static str {
    if f.is_sign_negative() && !f.is_nan() {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn integer(
    buf: &mut Buf,
    magnitude: u64,
    radix: u32,
    upper: bool,
    precision: Option<usize>,
) -> Result<(), Fail> {
    let digits = match (radix, upper) {
        (16, false) => format!("{magnitude:x}"),
        (16, true) => format!("{magnitude:X}"),
        (8, _) => format!("{magnitude:o}"),
        (2, _) => format!("{magnitude:b}"),
        _ => format!("{magnitude}"),
    };
    if let Some(precision) = precision {
        if precision == 0 && magnitude == 0 {
            return Ok(());
        }
        buf.repeat('0', precision.saturating_sub(digits.len()))?;
    }
    buf.push_str(&digits)
}

fn truncated(buf: &mut Buf, s: &str, precision: Option<usize>) -> Result<(), Fail> {
    match precision {
        Some(p) => match s.char_indices().nth(p) {
            Some((at, _)) => buf.push_str(&s[..at]),
            None => buf.push_str(s),
        },
        None => buf.push_str(s),
    }
}

/// `%e %f %g` with a precision (Go's defaults: 6 for `%e`/`%f`; shortest for `%g`).
fn float(buf: &mut Buf, f: f64, verb: char, precision: Option<usize>) -> Result<(), Fail> {
    if let Some(special) = special_float(f, false) {
        return buf.push_str(special.trim_start_matches('+'));
    }
    let upper = verb.is_ascii_uppercase();
    let e = if upper { 'E' } else { 'e' };
    match verb.to_ascii_lowercase() {
        'f' => buf.write_fmt_bounded(format_args!("{:.*}", precision.unwrap_or(6), f)),
        'e' => {
            let p = precision.unwrap_or(6);
            let (negative, digits, exponent) = split_exponent_form(&format!("{:.*e}", p, f));
            write_exponent_form(buf, negative, &digits, exponent, e)
        }
        _ => {
            let Some(p) = precision else {
                let (negative, digits, exponent) = shortest_digits(f);
                return if !(-4..6).contains(&exponent) {
                    write_exponent_form(buf, negative, &digits, exponent, e)
                } else {
                    write_float_shortest(buf, f)
                };
            };
            let p = p.max(1);
            let (negative, digits, exponent) = split_exponent_form(&format!("{:.*e}", p - 1, f));
            let digits = digits.trim_end_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            let nd = digits.len() as i64;
            let dp = i64::from(exponent) + 1;
            let mut eprec = p as i64;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if exponent < -4 || i64::from(exponent) >= eprec {
                write_exponent_form(buf, negative, digits, exponent, e)
            } else {
                let decimals = if p as i64 > dp { (nd - dp).max(0) } else { 0 };
                buf.write_fmt_bounded(format_args!("{:.*}", decimals as usize, f))
            }
        }
    }
}

fn pad(buf: &mut Buf, spec: Spec, sign: &str, body: &str, numeric: bool) -> Result<(), Fail> {
    let length = sign.chars().count() + body.chars().count();
    let fill = spec.width.unwrap_or(0).saturating_sub(length);
    if spec.minus {
        buf.push_str(sign)?;
        buf.push_str(body)?;
        buf.repeat(' ', fill)
    } else if spec.zero && numeric {
        buf.push_str(sign)?;
        buf.repeat('0', fill)?;
        buf.push_str(body)
    } else {
        buf.repeat(' ', fill)?;
        buf.push_str(sign)?;
        buf.push_str(body)
    }
}

/// Go's `strconv.Quote` (`QuoteToASCII` with `+`).
fn go_quote(buf: &mut Buf, s: &str, ascii: bool) -> Result<(), Fail> {
    buf.push('"')?;
    for c in s.chars() {
        quote_char(buf, c, '"', ascii)?;
    }
    buf.push('"')
}

fn quote_char(buf: &mut Buf, c: char, quote: char, ascii: bool) -> Result<(), Fail> {
    match c {
        c if c == quote || c == '\\' => {
            buf.push('\\')?;
            buf.push(c)
        }
        '\u{7}' => buf.push_str("\\a"),
        '\u{8}' => buf.push_str("\\b"),
        '\u{c}' => buf.push_str("\\f"),
        '\n' => buf.push_str("\\n"),
        '\r' => buf.push_str("\\r"),
        '\t' => buf.push_str("\\t"),
        '\u{b}' => buf.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            buf.write_fmt_bounded(format_args!("\\x{:02x}", c as u32))
        }
        c if ascii && !c.is_ascii() || !is_printable(c) => {
            if (c as u32) < 0x10000 {
                buf.write_fmt_bounded(format_args!("\\u{:04x}", c as u32))
            } else {
                buf.write_fmt_bounded(format_args!("\\U{:08x}", c as u32))
            }
        }
        c => buf.push(c),
    }
}

/// An approximation of Go's `unicode.IsPrint`: not a control, not a space other than ' '.
fn is_printable(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(format: &str, args: &[Value]) -> String {
        let mut buf = Buf::new(1 << 20);
        sprintf(&mut buf, format, args).unwrap();
        buf.as_str().to_string()
    }

    fn s(text: &str) -> Value {
        Value::plain(text)
    }

    #[test]
    fn verbs_as_go_prints_them() {
        assert_eq!(f("%s-%d", &[s("a"), Value::Int(42)]), "a-42");
        assert_eq!(
            f(
                "%5d|%-5d|%05d",
                &[Value::Int(42), Value::Int(42), Value::Int(-42)]
            ),
            "   42|42   |-0042"
        );
        assert_eq!(f("%q", &[s("a\"b\n")]), r#""a\"b\n""#);
        assert_eq!(
            f("%x %X %x", &[Value::Int(255), Value::Int(255), s("hi")]),
            "ff FF 6869"
        );
        assert_eq!(
            f(
                "%v %v %v",
                &[Value::Bool(true), Value::Float(1.5), Value::Nil]
            ),
            "true 1.5 <nil>"
        );
        assert_eq!(
            f(
                "%.2f %e %g",
                &[
                    Value::Float(3.25159),
                    Value::Float(1234.5678),
                    Value::Float(0.000012)
                ]
            ),
            "3.25 1.234568e+03 1.2e-05"
        );
        assert_eq!(f("%.3g", &[Value::Float(1.0)]), "1");
        assert_eq!(f("%6.2f|", &[Value::Float(3.25159)]), "  3.25|");
        assert_eq!(f("%10s|%-4s|", &[s("abc"), s("é")]), "       abc|é   |");
        assert_eq!(f("%.2s", &[s("héllo")]), "hé");
        assert_eq!(f("100%%", &[]), "100%");
        assert_eq!(f("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(f("%s", &[Value::Nil]), "%!s(<nil>)");
        assert_eq!(f("%s %s", &[s("a")]), "a %!s(MISSING)");
        assert_eq!(f("%s", &[s("a"), Value::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(
            f("%T %c %q", &[Value::Int(1), Value::Int(65), Value::Int(66)]),
            "int A 'B'"
        );
        assert_eq!(f("%*d", &[Value::Int(4), Value::Int(7)]), "   7");
        assert_eq!(f("%", &[]), "%!(NOVERB)");
        assert_eq!(f("%9999999d", &[Value::Int(1)]), "%!(BADWIDTH)1");
    }

    #[test]
    fn print_spacing() {
        let mut buf = Buf::new(100);
        sprint(&mut buf, &[s("a"), Value::Int(1), Value::Int(2), s("b")]).unwrap();
        assert_eq!(buf.as_str(), "a1 2b");
    }
}
