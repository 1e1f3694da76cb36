//! The reference reading of a record: what serde_json makes of the payload, checked
//! against the declared schema. The exact path (arrow-json) runs every payload through
//! it first, so a record is decoded only when serde_json reads it as one JSON object
//! whose declared fields hold values of their column's type; anything else is
//! malformed.
//!
//! Without it arrow-json coerces where a typed reader would refuse: `"6"` or `5.9` into
//! an integer column (6, 5), `1e400` into a float column (infinity), raw control
//! characters in strings, lone surrogates. Spark's JSON reader and serde both refuse
//! those, and a value silently changed is worse than one kept aside.
//!
//! The rules, per column type: integers take JSON integers in range; floats take any
//! number serde reads (finite); strings take strings; booleans take `true`/`false`;
//! timestamps, dates and times take an integer (in the column's unit) or a string
//! (arrow-json parses it); decimals take a number or a string; structs take objects, lists arrays, maps objects, recursively;
//! `null` or a missing field is NULL. (serde reads `-0` as the float -0.0, so an integer
//! column refuses it.) Fields not declared are only checked for syntax
//! (serde's: valid UTF-8, no lone surrogates, nesting at most 128 deep).

use arrow::datatypes::{DataType, Schema};
use serde_json::Value;

/// `Ok` when serde_json reads `payload` as one JSON object whose fields named in
/// `schema` conform to their types; otherwise why not.
pub fn check(payload: &[u8], schema: &Schema) -> Result<(), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let Value::Object(map) = v else {
        return Err(format!("not a JSON object but {}", kind(&v)));
    };
    for f in schema.fields() {
        if let Some(v) = map.get(f.name()) {
            value(v, f.data_type()).map_err(|e| format!("field {:?}: {e}", f.name()))?;
        }
    }
    Ok(())
}

/// `payload` with every surrogate-pair escape (`\uD83D\uDE00`) written as the UTF-8
/// character it stands for. arrow-json 59 combines a pair with `|` where `+` is
/// needed (`char_from_surrogate_pair`), so characters at U+20000 and above come out
/// wrong (`\uDBFF\uDFFF` as U+FFFFF, not U+10FFFF); the fuzz test found it. Only
/// for payloads [`check`] accepted: valid JSON, so a backslash is always an escape
/// inside a string. Borrowed unchanged when there is no pair.
pub fn without_surrogate_escapes(payload: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let hex = |b: &[u8]| -> Option<u32> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u32::from_str_radix(s, 16).ok()
    };
    let pair_at = |i: usize| -> Option<char> {
        let high = hex(payload.get(i + 2..)?)?;
        let low = hex(payload.get(i + 8..)?)?;
        let escaped = payload.get(i + 6..i + 8)? == b"\\u";
        let pair = (0xD800..0xDC00).contains(&high) && (0xDC00..0xE000).contains(&low);
        (escaped && pair)
            .then(|| char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)))
            .flatten()
    };
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(j) = memchr::memchr(b'\\', &payload[i..]) {
        let at = i + j;
        if payload.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        match pair_at(at) {
            Some(c) => {
                let o = out.get_or_insert_with(|| Vec::with_capacity(payload.len()));
                o.extend_from_slice(&payload[copied..at]);
                o.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                copied = at + 12;
                i = copied;
            }
            None => i = at + 6,
        }
        if i >= payload.len() {
            break;
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(payload),
        Some(mut o) => {
            o.extend_from_slice(&payload[copied.min(payload.len())..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// Whether `v` is a value of type `dt`.
fn value(v: &Value, dt: &DataType) -> Result<(), String> {
    use DataType as D;
    if v.is_null() {
        return Ok(());
    }
    let ok = match dt {
        D::Int8 => int_in(v, i8::MIN as i64, i8::MAX as i64),
        D::Int16 => int_in(v, i16::MIN as i64, i16::MAX as i64),
        D::Int32 => int_in(v, i32::MIN as i64, i32::MAX as i64),
        D::Int64 => v.as_i64().is_some(),
        D::UInt8 => v.as_u64().is_some_and(|u| u <= u8::MAX as u64),
        D::UInt16 => v.as_u64().is_some_and(|u| u <= u16::MAX as u64),
        D::UInt32 => v.as_u64().is_some_and(|u| u <= u32::MAX as u64),
        D::UInt64 => v.as_u64().is_some(),
        D::Float16 | D::Float32 | D::Float64 => v.is_number(),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => v.is_string(),
        D::Boolean => v.is_boolean(),
        D::Timestamp(..) | D::Date32 | D::Date64 | D::Time32(_) | D::Time64(_) => {
            v.is_i64() || v.is_string()
        }
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => {
            v.is_i64() || v.is_u64() || v.is_f64() || v.is_string()
        }
        D::Struct(fields) => {
            let Value::Object(map) = v else {
                return Err(format!("expected an object, found {}", kind(v)));
            };
            for f in fields {
                if let Some(c) = map.get(f.name()) {
                    value(c, f.data_type()).map_err(|e| format!("{:?}: {e}", f.name()))?;
                }
            }
            return Ok(());
        }
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::ListView(f) => {
            let Value::Array(items) = v else {
                return Err(format!("expected an array, found {}", kind(v)));
            };
            return items.iter().try_for_each(|i| value(i, f.data_type()));
        }
        D::Map(entries, _) => {
            let Value::Object(map) = v else {
                return Err(format!("expected an object, found {}", kind(v)));
            };
            let value_type = match entries.data_type() {
                D::Struct(kv) if kv.len() == 2 => kv[1].data_type().clone(),
                _ => return Ok(()),
            };
            return map.values().try_for_each(|i| value(i, &value_type));
        }
        _ => true,
    };
    match ok {
        true => Ok(()),
        false => Err(format!("expected {}, found {}", expected(dt), shown(v))),
    }
}

fn int_in(v: &Value, min: i64, max: i64) -> bool {
    v.as_i64().is_some_and(|i| (min..=max).contains(&i))
}

/// What a column of `dt` takes, for messages.
fn expected(dt: &DataType) -> String {
    use DataType as D;
    match dt {
        D::Float16 | D::Float32 | D::Float64 => "a number".into(),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "a string".into(),
        D::Boolean => "true or false".into(),
        dt if dt.is_integer() => format!("an integer that fits {dt}"),
        D::Timestamp(..) | D::Date32 | D::Date64 | D::Time32(_) | D::Time64(_) => {
            format!("an integer or a string for {dt}")
        }
        dt => format!("a number or string for {dt}"),
    }
}

/// The JSON kind of `v`, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `v` for messages: a number as written, else its kind.
fn shown(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("the number {n}"),
        v => kind(v).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
        ])
    }

    #[test]
    fn typed_reading_refuses_what_arrow_json_would_coerce() {
        let s = schema();
        for ok in [
            r#"{"i":1,"s":"x","f":2}"#,
            r#"{"i":null,"f":-1.5e3,"other":[{"deep":"\u0000"}]}"#,
            r#"{"\u0069":7}"#,
        ] {
            assert_eq!(check(ok.as_bytes(), &s), Ok(()), "{ok}");
        }
        for bad in [
            r#"{"i":"6"}"#,
            r#"{"i":5.9}"#,
            r#"{"i":2147483648}"#,
            r#"{"f":1e400}"#,
            r#"{"s":5}"#,
            r#"{"x":"\ud800"}"#,
            "{\"s\":\"a\u{1}b\"}",
            "\u{feff}{\"i\":1}",
            r#"[1]"#,
            r#"{"i":1} {"i":2}"#,
        ] {
            assert!(check(bad.as_bytes(), &s).is_err(), "{bad}");
        }
        // A pair is rewritten; an escaped backslash before `uD83D` and a lone low
        // surrogate are not pairs.
        let fixed = without_surrogate_escapes(br#"{"s":"a\uDBFF\uDFFF \\uD83D\uDE00 \u0041"}"#);
        let want = "{\"s\":\"a\u{10FFFF} \\\\uD83D\\uDE00 \\u0041\"}";
        assert_eq!(std::str::from_utf8(&fixed).unwrap(), want);
        let emoji = without_surrogate_escapes(br#"["\ud83d\ude00"]"#);
        assert_eq!(std::str::from_utf8(&emoji).unwrap(), "[\"\u{1F600}\"]");
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(check(deep.as_bytes(), &s).is_err());
        let msg = check(br#"{"i":"6"}"#, &s).unwrap_err();
        assert!(msg.contains("\"i\"") && msg.contains("integer"), "{msg}");
    }
}
