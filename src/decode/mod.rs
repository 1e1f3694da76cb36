//! JSON message payloads → Arrow `RecordBatch`es, with arrow-json, straight from the
//! payload bytes and only for the columns the plan reads (the schema passed in is
//! already projected).
//!
//! Bad input never stops the stream and never vanishes: a payload that is not exactly
//! one JSON object of the right types in valid UTF-8 becomes a [`Malformed`] entry
//! (with its partition and offset) and the rest of the chunk decodes normally.
//!
//! ```text
//!  payloads ──► fast path (`flat`): one pass, only what it is sure of
//!               │ anything else: the whole chunk
//!               ▼
//!               exact path: each payload read by serde_json and checked against the
//!               schema (`conform`), then arrow-json; each must add exactly one row
//!               │ any anomaly (error, 0 or 2 rows, partial record, bad types at flush)
//!               ▼
//!               bisect the chunk until every bad payload stands alone
//! ```
//! The fast path costs nothing extra for clean input; a bad payload costs
//! O(log chunk) extra decodes of halves of its chunk.

pub mod conform;
pub mod flat;
pub mod fold;
pub mod prefilter;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};

/// A payload that did not decode, kept aside with where it came from.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// Source partition.
    pub partition: usize,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Why it did not decode.
    pub error: String,
    /// The raw payload bytes.
    pub payload: Vec<u8>,
}

/// A run of payloads from one partition, laid out contiguously: payload `i` is
/// `data[ends[i-1]..ends[i]]` (with `ends[-1] = 0`) at offset `offsets[i]`.
#[derive(Debug, Default)]
pub struct Payloads {
    /// Concatenated payload bytes.
    pub data: Vec<u8>,
    /// End of each payload in `data`.
    pub ends: Vec<usize>,
    /// Source offset of each payload.
    pub offsets: Vec<i64>,
}

impl Payloads {
    /// Appends one payload.
    pub fn push(&mut self, offset: i64, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len());
        self.offsets.push(offset);
    }

    /// Number of payloads.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no payloads.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.offsets.clear();
    }
}

/// What decoding produced: good rows as batches in offset order, each row's source
/// offset, and the payloads that did not decode.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Decoded rows.
    pub batches: Vec<RecordBatch>,
    /// `offsets[i][r]` is the source offset of row `r` of `batches[i]` (so late rows can
    /// be traced back to their record).
    pub offsets: Vec<Vec<i64>>,
    /// Records that did not decode.
    pub malformed: Vec<Malformed>,
}

/// Decodes payloads of one schema. One per worker thread.
pub struct JsonDecoder {
    schema: SchemaRef,
    /// The one-pass decoder for flat records, when the schema allows it.
    flat: Option<flat::FlatDecoder>,
}

impl JsonDecoder {
    /// A decoder producing batches of `schema` (fields not in it are skipped).
    pub fn new(schema: SchemaRef) -> Self {
        let flat = flat::FlatDecoder::new(&schema);
        Self { schema, flat }
    }

    /// The same decoder without the flat fast path: arrow-json for every chunk.
    pub fn exact(schema: SchemaRef) -> Self {
        Self { schema, flat: None }
    }

    /// The schema of the batches this decoder produces.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decoder(&self, rows: usize) -> Result<Decoder, String> {
        ReaderBuilder::new(Arc::clone(&self.schema))
            .with_batch_size(rows.max(1) + 1)
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    /// Decodes payloads `range` of `p` as one batch, or says why not. Every payload must
    /// add exactly one complete row.
    fn try_decode(
        &self,
        p: &Payloads,
        range: std::ops::Range<usize>,
    ) -> Result<RecordBatch, String> {
        let mut d = self.decoder(range.len())?;
        for i in range {
            let before = d.len();
            let payload = p.get(i);
            conform::check(payload, &self.schema)?;
            let fixed = conform::without_surrogate_escapes(payload);
            let used = d.decode(&fixed).map_err(|e| e.to_string())?;
            if used != fixed.len() || d.has_partial_record() {
                return Err("not a complete JSON object".into());
            }
            match d.len() - before {
                1 => {}
                0 => return Err("empty payload: no JSON object".into()),
                _ => return Err("more than one JSON value in one payload".into()),
            }
        }
        match d.flush().map_err(|e| e.to_string())? {
            Some(b) => Ok(b),
            None => Ok(RecordBatch::new_empty(Arc::clone(&self.schema))),
        }
    }

    /// Decodes every payload of `p` (from `partition`). Good rows come back as batches in
    /// offset order, with each row's source offset in `out.offsets`; bad payloads are
    /// appended to `out.malformed`.
    pub fn decode(&self, partition: usize, p: &Payloads, out: &mut Decoded) {
        if p.is_empty() {
            return;
        }
        if let Some(b) = self.flat.as_ref().and_then(|f| f.decode(p, 0..p.len())) {
            if b.num_rows() > 0 {
                out.batches.push(b);
                out.offsets.push(p.offsets.clone());
            }
            return;
        }
        self.decode_range(partition, p, 0..p.len(), out);
    }

    fn decode_range(
        &self,
        partition: usize,
        p: &Payloads,
        range: std::ops::Range<usize>,
        out: &mut Decoded,
    ) {
        match self.try_decode(p, range.clone()) {
            Ok(b) => {
                if b.num_rows() > 0 {
                    out.batches.push(b);
                    out.offsets.push(p.offsets[range].to_vec());
                }
            }
            Err(error) if range.len() == 1 => out.malformed.push(Malformed {
                partition,
                offset: p.offsets[range.start],
                error: error.trim_start_matches("Json error: ").to_string(),
                payload: p.get(range.start).to_vec(),
            }),
            Err(_) => {
                let mid = range.start + range.len() / 2;
                self.decode_range(partition, p, range.start..mid, out);
                self.decode_range(partition, p, mid..range.end, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("timestamp", DataType::Int64, true),
            Field::new("user_id", DataType::Utf8, true),
        ]))
    }

    fn run(payloads: &[&[u8]]) -> (Vec<i64>, Vec<i64>) {
        let mut p = Payloads::default();
        for (i, x) in payloads.iter().enumerate() {
            p.push(100 + i as i64, x);
        }
        let mut out = Decoded::default();
        JsonDecoder::new(schema()).decode(3, &p, &mut out);
        let (bad, out) = (out.malformed, out.batches);
        let good = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(-1))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(bad.iter().all(|m| m.partition == 3));
        (good, bad.iter().map(|m| m.offset).collect())
    }

    #[test]
    fn clean_payloads_decode_in_order() {
        let (good, bad) = run(&[
            br#"{"timestamp":1,"user_id":"a","extra":[1,2]}"#,
            br#"{"timestamp":2}"#,
            br#" {"user_id":"c","timestamp":3} "#,
        ]);
        assert_eq!(good, [1, 2, 3]);
        assert!(bad.is_empty());
    }

    #[test]
    fn each_kind_of_bad_payload_is_isolated() {
        let (good, bad) = run(&[
            br#"{"timestamp":1}"#,
            br#"{"timestamp":2"#, // truncated
            br#"{"timestamp":3}"#,
            br#"{"timestamp":"x"}"#,              // wrong type
            b"",                                  // empty
            br#"{"timestamp":6}{"timestamp":7}"#, // two values
            b"{\"user_id\":\"\xff\xfe\"}",        // invalid UTF-8
            br#"{"timestamp":8,"#,                // truncated, followed by a good record
            br#"{"timestamp":9}"#,
            br#"[1]"#, // not an object
        ]);
        assert_eq!(good, [1, 3, 9]);
        assert_eq!(bad, [101, 103, 104, 105, 106, 107, 109]);
    }

    #[test]
    fn truncated_record_cannot_swallow_the_next() {
        // `{"user_id":"a` + `b"}` must not merge into one row.
        let (good, bad) = run(&[
            br#"{"timestamp":1,"user_id":"a"#,
            br#"b"}"#,
            br#"{"timestamp":3}"#,
        ]);
        assert_eq!(good, [3]);
        assert_eq!(bad, [100, 101]);
    }

    #[test]
    fn malformed_keeps_payload_and_reason() {
        let mut p = Payloads::default();
        p.push(7, br#"{"timestamp":"x"}"#);
        let mut out = Decoded::default();
        JsonDecoder::new(schema()).decode(0, &p, &mut out);
        let (bad, out) = (out.malformed, out.batches);
        assert!(out.is_empty());
        assert_eq!(bad[0].payload, br#"{"timestamp":"x"}"#);
        assert!(!bad[0].error.is_empty());
        assert_eq!(out.iter().map(|b| b.column(0).len()).sum::<usize>(), 0);
    }

    /// The flat fast path yields what arrow-json yields, record for record, on clean
    /// and awkward input alike (it gives awkward chunks back to arrow-json).
    #[test]
    fn the_flat_path_agrees_with_arrow_json() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("i", DataType::Int32, true),
        ]));
        let samples: &[&str] = &[
            r#"{"a":1,"s":"x","f":1.5,"b":true,"t":1700000000000,"i":7}"#,
            r#" { "a" : -2 , "s" : "héllo" , "f" : -0.25e2 , "b" : false , "t" : 0 } "#,
            r#"{"s":null,"zz":{"n":[1,2,{"q":"}"}]},"a":3}"#,
            r#"{"a":4,"s":"esc\"aped","skip":"a\nb\u0041"}"#,
            r#"{"a":5.5}"#,
            r#"{"a":"6"}"#,
            r#"{"f":7,"i":2147483648}"#,
            r#"{"a":8,"a":9}"#,
            r#"{"a":10,"x":tru}"#,
            r#"{"a":11,"x":-}"#,
            r#"{"a":12} {"a":13}"#,
            r#"{"a":14,"t":"2026-01-14T09:00:00Z"}"#,
            r#"[1,2]"#,
            r#"{}"#,
            r#"{"a":15,"s":"tab	inside"}"#,
            r#"{"a":16,"x":01}"#,
            r#"{"a":17,"x":1.}"#,
            r#"{"b":"true","a":18}"#,
            r#"{"a":99999999999999999999}"#,
            r#"{"a":19,"x":[1,2]}"#,
        ];
        let flat = JsonDecoder::new(Arc::clone(&schema));
        // The clean samples take the fast path (so the comparison below tests it).
        let mut clean = Payloads::default();
        for (o, s) in samples[..2].iter().enumerate() {
            clean.push(o as i64, s.as_bytes());
        }
        let fast = flat
            .flat
            .as_ref()
            .expect("a flat schema")
            .decode(&clean, 0..2);
        assert_eq!(fast.map(|b| b.num_rows()), Some(2));
        let exact = JsonDecoder::exact(Arc::clone(&schema));
        // Each sample alone, and all of them in one chunk, and the clean ones together.
        let mut chunks: Vec<Vec<&[u8]>> = samples.iter().map(|s| vec![s.as_bytes()]).collect();
        chunks.push(samples.iter().map(|s| s.as_bytes()).collect());
        chunks.push(samples[..3].iter().map(|s| s.as_bytes()).collect());
        chunks.push(vec![b"{\"a\":20,\"s\":\"\xff\"}", samples[0].as_bytes()]); // not UTF-8
        for chunk in chunks {
            let mut p = Payloads::default();
            for (o, s) in chunk.iter().enumerate() {
                p.push(o as i64, s);
            }
            let (mut a, mut b) = (Decoded::default(), Decoded::default());
            flat.decode(0, &p, &mut a);
            exact.decode(0, &p, &mut b);
            let rows = |d: &Decoded| -> Vec<String> {
                let refs: Vec<&RecordBatch> = d.batches.iter().collect();
                let bytes = crate::sink::json_lines(&refs).unwrap();
                crate::sink::json_rows(&bytes)
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect()
            };
            assert_eq!(rows(&a), rows(&b), "{chunk:?}");
            let offsets =
                |d: &Decoded| -> Vec<i64> { d.offsets.iter().flatten().copied().collect() };
            assert_eq!(offsets(&a), offsets(&b), "{chunk:?}");
            let bad = |d: &Decoded| -> Vec<i64> { d.malformed.iter().map(|m| m.offset).collect() };
            assert_eq!(bad(&a), bad(&b), "{chunk:?}");
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    /// `cargo test --release --lib decode::bench -- --ignored --nocapture`: ns per
    /// Nexmark bid for the flat path and for arrow-json.
    #[test]
    #[ignore]
    fn decode_speed() {
        let cfg = nexmark::config::NexmarkConfig {
            base_time: 0,
            ..Default::default()
        };
        let mut p = Payloads::default();
        let mut buf = Vec::new();
        for (i, e) in nexmark::EventGenerator::new(cfg)
            .with_type_filter(nexmark::event::EventType::Bid)
            .take(16 * 1024)
            .enumerate()
        {
            buf.clear();
            crate::source::nexmark::write_json(&e, &mut buf).unwrap();
            p.push(i as i64, &buf);
        }
        for cols in [
            vec!["auction", "price"],
            vec![
                "auction",
                "bidder",
                "price",
                "channel",
                "url",
                "date_time",
                "extra",
            ],
        ] {
            let full = crate::source::nexmark::schema(nexmark::event::EventType::Bid);
            let fields: Vec<Field> = cols
                .iter()
                .map(|c| full.field_with_name(c).unwrap().clone())
                .collect();
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            for (name, d) in [
                ("flat", JsonDecoder::new(schema.clone())),
                ("arrow-json", JsonDecoder::exact(schema.clone())),
            ] {
                let t = std::time::Instant::now();
                let rounds = 20;
                for _ in 0..rounds {
                    let mut out = Decoded::default();
                    d.decode(0, &p, &mut out);
                    assert_eq!(
                        out.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                        p.len()
                    );
                }
                let ns = t.elapsed().as_nanos() as f64 / (rounds * p.len()) as f64;
                println!(
                    "{} columns, {name}: {ns:.0} ns/bid ({} bytes/bid)",
                    cols.len(),
                    p.data.len() / p.len()
                );
            }
        }
    }
}
