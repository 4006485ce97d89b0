//! `toJson` and `fromJson`, both bounded: the encoder writes into a bounded buffer, and the
//! decoder counts what it builds and stops at the limit (serde_json bounds the nesting at 128).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use crate::value::{Buf, ENTRY_OVERHEAD, Fail, List, Map, Value};

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn write_string(buf: &mut Buf, s: &str) -> Result<(), Fail> {
    buf.push('"')?;
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            c if u32::from(c) < 0x20 => None,
            _ => continue,
        };
        buf.push_str(&s[plain..i])?;
        match escape {
            Some(e) => buf.push_str(e)?,
            None => buf.write_fmt_bounded(format_args!("\\u{:04x}", u32::from(c)))?,
        }
        plain = i + c.len_utf8();
    }
    buf.push_str(&s[plain..])?;
    buf.push('"')
}

/// Writes `value` as compact JSON (map keys in order; missing values and nil as `null`).
pub(crate) fn write_value(buf: &mut Buf, value: &Value) -> Result<(), Fail> {
    match value {
        Value::NoValue | Value::Nil => buf.push_str("null"),
        Value::Bool(b) => buf.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => buf.write_fmt_bounded(format_args!("{i}")),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => buf.write_fmt_bounded(format_args!("{n}")),
            None => buf.push_str("null"),
        },
        Value::Str(s) => write_string(buf, s),
        Value::List(list) => {
            buf.push('[')?;
            for (i, item) in list.items.iter().enumerate() {
                if i > 0 {
                    buf.push(',')?;
                }
                write_value(buf, item)?;
            }
            buf.push(']')
        }
        Value::Map(map) => {
            buf.push('{')?;
            for (i, (k, v)) in map.entries.iter().enumerate() {
                if i > 0 {
                    buf.push(',')?;
                }
                write_string(buf, k)?;
                buf.push(':')?;
                write_value(buf, v)?;
            }
            buf.push('}')
        }
    }
}

/// Parses JSON text into a value no larger than `limit` (strings by their bytes, each entry
/// counted with an overhead), refusing as soon as it would be.
pub(crate) fn parse(text: &str, limit: usize) -> Result<Value, Fail> {
    let room = Cell::new(limit);
    let exceeded = Cell::new(false);
    let seed = Seed {
        room: &room,
        exceeded: &exceeded,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if exceeded.get() => Err(Fail::TooLarge),
        Err(_) => Err(Fail::Exec),
    }
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    room: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Seed<'_> {
    fn take<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let left = self.room.get();
        if bytes > left {
            self.exceeded.set(true);
            return Err(E::custom("value too large"));
        }
        self.room.set(left - bytes);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.take(8)?;
        Ok(Value::Nil)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.take(8)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Value, E> {
        self.take(8)?;
        Ok(Value::Int(i))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        self.take(8)?;
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Value, E> {
        self.take(8)?;
        Ok(Value::Float(f))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.take(s.len())?;
        Ok(Value::text(Zeroizing::new(s.to_string())))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.take(s.len())?;
        Ok(Value::text(Zeroizing::new(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let start = self.room.get();
        let mut items = Vec::new();
        loop {
            self.take::<A::Error>(ENTRY_OVERHEAD)?;
            match seq.next_element_seed(self)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        let size = start - self.room.get();
        Ok(Value::List(Rc::new(List { items, size })))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let start = self.room.get();
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            self.take::<A::Error>(key.len() + ENTRY_OVERHEAD)?;
            let value = map.next_value_seed(self)?;
            entries.insert(key, value);
        }
        let size = start - self.room.get();
        Ok(Value::Map(Rc::new(Map { entries, size })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &Value) -> String {
        let mut buf = Buf::new(1 << 20);
        write_value(&mut buf, value).unwrap();
        buf.as_str().to_string()
    }

    #[test]
    fn round_trips_like_serde_json() {
        let text = r#"{"a":[1,2.5,"x\n\u0001\"",true,null],"b":{"c":-3}}"#;
        let value = parse(text, 1 << 20).unwrap();
        assert_eq!(encoded(&value), text);
        let serde: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(encoded(&value), serde.to_string());
    }

    #[test]
    fn refuses_to_build_past_the_limit() {
        let many = format!("[{}0]", "0,".repeat(10_000));
        assert_eq!(parse(&many, 1000).unwrap_err(), Fail::TooLarge);
        assert!(parse(&many, 1 << 20).is_ok());
        assert_eq!(parse("{", 1000).unwrap_err(), Fail::Exec);
        assert_eq!(parse("1 2", 1000).unwrap_err(), Fail::Exec);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep, 1 << 20).unwrap_err(), Fail::Exec);
    }
}
