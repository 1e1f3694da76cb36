//! The fast path for flat records: one pass over each payload's bytes, no tape, writing
//! the wanted fields straight into Arrow builders.
//!
//! It takes only what it is sure of: objects whose wanted fields are JSON scalars of the
//! column's type (integers for integer and millisecond-timestamp columns, any number for
//! float columns, strings without escapes for string columns, true/false for booleans,
//! null), with the other fields skipped after a strict check of their syntax. Anything
//! else — an escape in a wanted string, a nested value, a duplicate wanted key, a string
//! where a number is expected, a syntax error — makes it give the whole chunk back, and
//! the exact path (serde's typed reading checked, then arrow-json, with per-record error
//! isolation) decodes it. So on every chunk it accepts, it yields what the exact path
//! would.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::Payloads;

/// The column kinds the fast path writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    I16,
    I32,
    I64,
    F32,
    F64,
    Bool,
    Str,
    TsMs,
}

enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    TsMs(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::I16 => Builder::I16(Int16Builder::with_capacity(rows)),
            Kind::I32 => Builder::I32(Int32Builder::with_capacity(rows)),
            Kind::I64 => Builder::I64(Int64Builder::with_capacity(rows)),
            Kind::F32 => Builder::F32(Float32Builder::with_capacity(rows)),
            Kind::F64 => Builder::F64(Float64Builder::with_capacity(rows)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Str => Builder::Str(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::TsMs => Builder::TsMs(TimestampMillisecondBuilder::with_capacity(rows)),
        }
    }

    fn null(&mut self) {
        match self {
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::TsMs(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::I16(mut b) => Arc::new(b.finish()),
            Builder::I32(mut b) => Arc::new(b.finish()),
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::F32(mut b) => Arc::new(b.finish()),
            Builder::F64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::TsMs(mut b) => Arc::new(b.finish()),
        }
    }
}

/// A value the fast path read for a wanted field.
enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
}

impl Value<'_> {
    /// The value, unless it is an infinite or NaN float.
    fn filter_finite(self) -> Option<Self> {
        match self {
            Value::Float(f) if !f.is_finite() => None,
            v => Some(v),
        }
    }
}

/// The fast decoder for one (projected) schema.
#[derive(Debug, Clone)]
pub struct FlatDecoder {
    schema: SchemaRef,
    names: Vec<Vec<u8>>,
    kinds: Vec<Kind>,
}

impl FlatDecoder {
    /// A fast decoder for `schema`, when every column is a kind it writes.
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        let kinds = schema
            .fields()
            .iter()
            .map(|f| {
                Some(match f.data_type() {
                    DataType::Int16 => Kind::I16,
                    DataType::Int32 => Kind::I32,
                    DataType::Int64 => Kind::I64,
                    DataType::Float32 => Kind::F32,
                    DataType::Float64 => Kind::F64,
                    DataType::Boolean => Kind::Bool,
                    DataType::Utf8 => Kind::Str,
                    DataType::Timestamp(TimeUnit::Millisecond, None) => Kind::TsMs,
                    _ => return None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            schema: Arc::clone(schema),
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().to_vec())
                .collect(),
            kinds,
        })
    }

    /// Decodes payloads `range` of `p` as one batch, or `None` to leave the chunk to
    /// arrow-json.
    pub fn decode(&self, p: &Payloads, range: std::ops::Range<usize>) -> Option<RecordBatch> {
        let rows = range.len();
        let mut builders: Vec<Builder> =
            self.kinds.iter().map(|k| Builder::new(*k, rows)).collect();
        let mut seen = vec![false; self.kinds.len()];
        for i in range {
            seen.iter_mut().for_each(|s| *s = false);
            self.record(p.get(i), &mut builders, &mut seen)?;
            for (b, s) in builders.iter_mut().zip(&seen) {
                if !s {
                    b.null(); // a missing field is NULL
                }
            }
        }
        let columns = builders.into_iter().map(Builder::finish).collect();
        RecordBatch::try_new(Arc::clone(&self.schema), columns).ok()
    }

    fn record(&self, payload: &[u8], builders: &mut [Builder], seen: &mut [bool]) -> Option<()> {
        // Valid UTF-8 up front: every string slice below is then a valid &str.
        let text = std::str::from_utf8(payload).ok()?;
        let b = text.as_bytes();
        let mut at = ws(b, 0);
        if b.get(at) != Some(&b'{') {
            return None;
        }
        let mut next_col: Option<usize> = Some(0);
        at = ws(b, at + 1);
        if b.get(at) == Some(&b'}') {
            at += 1;
        } else {
            loop {
                if b.get(at) != Some(&b'"') {
                    return None;
                }
                let key_end = at + 1 + memchr::memchr2(b'"', b'\\', &b[at + 1..])?;
                let key = &b[at + 1..key_end];
                if b[key_end] != b'"' || has_control(key) {
                    return None; // an escaped key or a raw control character: not ours
                }
                at = ws(b, key_end + 1);
                if b.get(at) != Some(&b':') {
                    return None;
                }
                at = ws(b, at + 1);
                // Fields mostly come in the same order: try the one after the last.
                let guess =
                    next_col.filter(|c| self.names.get(*c).is_some_and(|n| n.as_slice() == key));
                let found = guess.or_else(|| self.names.iter().position(|n| n.as_slice() == key));
                next_col = found.map(|c| c + 1);
                match found {
                    Some(col) => {
                        if seen[col] {
                            return None; // duplicate key
                        }
                        seen[col] = true;
                        let (value, end) = scalar(text, at)?;
                        put(&mut builders[col], value)?;
                        at = end;
                    }
                    None => at = skip(b, at)?,
                }
                at = ws(b, at);
                match b.get(at) {
                    Some(b',') => at = ws(b, at + 1),
                    Some(b'}') => {
                        at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (ws(b, at) == b.len()).then_some(())
    }
}

/// Whether `s` holds a control character (which JSON strings may not hold raw). No
/// early exit, so it vectorizes.
fn has_control(s: &[u8]) -> bool {
    s.iter().fold(false, |any, &c| any | (c < 0x20))
}

fn ws(b: &[u8], mut at: usize) -> usize {
    while at < b.len() && matches!(b[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// A wanted field's value at `at`: a scalar, or `None` for anything the fast path does
/// not take.
fn scalar(text: &str, at: usize) -> Option<(Value<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(at)? {
        b'"' => {
            let end = at + 1 + memchr::memchr2(b'"', b'\\', &b[at + 1..])?;
            if b[end] != b'"' || has_control(&b[at + 1..end]) {
                return None; // escapes and control characters: arrow-json's call
            }
            Some((Value::Str(&text[at + 1..end]), end + 1))
        }
        b't' if b[at..].starts_with(b"true") => Some((Value::Bool(true), at + 4)),
        b'f' if b[at..].starts_with(b"false") => Some((Value::Bool(false), at + 5)),
        b'n' if b[at..].starts_with(b"null") => Some((Value::Null, at + 4)),
        b'-' | b'0'..=b'9' => {
            if let Some((i, end)) = integer(b, at) {
                return Some((Value::Int(i), end));
            }
            let end = number_end(b, at)?;
            let f: f64 = text[at..end].parse().ok()?;
            // Out of f64's range: serde refuses it, so the exact path says why.
            Some((Value::Float(f).filter_finite()?, end))
        }
        _ => None,
    }
}

fn put(b: &mut Builder, v: Value<'_>) -> Option<()> {
    match (b, v) {
        (b, Value::Null) => b.null(),
        (Builder::I16(b), Value::Int(i)) => b.append_value(i16::try_from(i).ok()?),
        (Builder::I32(b), Value::Int(i)) => b.append_value(i32::try_from(i).ok()?),
        (Builder::I64(b), Value::Int(i)) => b.append_value(i),
        (Builder::TsMs(b), Value::Int(i)) => b.append_value(i),
        (Builder::F64(b), Value::Int(i)) => b.append_value(i as f64),
        (Builder::F64(b), Value::Float(f)) => b.append_value(f),
        (Builder::F32(b), Value::Int(i)) => b.append_value(i as f32),
        (Builder::F32(b), Value::Float(f)) => b.append_value(f as f32),
        (Builder::Bool(b), Value::Bool(v)) => b.append_value(v),
        (Builder::Str(b), Value::Str(s)) => b.append_value(s),
        _ => return None,
    }
    Some(())
}

/// The JSON integer at `at` (no fraction or exponent, fits an i64) and its end, in one
/// pass; `None` for any other number.
fn integer(b: &[u8], at: usize) -> Option<(i64, usize)> {
    let negative = b[at] == b'-';
    let mut i = at + usize::from(negative);
    let first = i;
    let mut v: i64 = 0;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
        i += 1;
    }
    let digits = i - first;
    let leading_zero = digits > 1 && b[first] == b'0';
    // serde reads `-0` as the float -0.0 (so an integer column refuses it): not ours.
    let negative_zero = negative && v == 0;
    if digits == 0 || leading_zero || negative_zero || matches!(b.get(i), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    Some((v, i))
}

/// The end of the JSON number at `at` (strict grammar), or `None`.
fn number_end(b: &[u8], mut at: usize) -> Option<usize> {
    let digits = |b: &[u8], mut at: usize| {
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        (at > start).then_some(at)
    };
    if b.get(at) == Some(&b'-') {
        at += 1;
    }
    match b.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(b, at)?,
        _ => return None,
    }
    if b.get(at) == Some(&b'.') {
        at = digits(b, at + 1)?;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = digits(b, at)?;
    }
    Some(at)
}

/// Skips an unwanted field's value, checking its syntax as strictly as a parser would;
/// nested values are left to arrow-json.
fn skip(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => {
            let mut i = at + 1;
            loop {
                let j = i + memchr::memchr2(b'"', b'\\', &b[i..])?;
                if has_control(&b[i..j]) {
                    return None;
                }
                if b[j] == b'"' {
                    return Some(j + 1);
                }
                // A simple escape; \u escapes (surrogate pairs) are arrow-json's call.
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i = j + 2,
                    _ => return None,
                }
            }
        }
        b't' if b[at..].starts_with(b"true") => Some(at + 4),
        b'f' if b[at..].starts_with(b"false") => Some(at + 5),
        b'n' if b[at..].starts_with(b"null") => Some(at + 4),
        b'-' | b'0'..=b'9' => {
            // A number that may overflow f64 (serde refuses those): the exact path's call.
            let end = number_end(b, at)?;
            let may_overflow = end - at > 300 || b[at..end].iter().any(|&c| c | 0x20 == b'e');
            (!may_overflow).then_some(end)
        }
        _ => None,
    }
}
