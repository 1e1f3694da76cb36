//! SQL functions Sluice registers over DataFusion's own.
//!
//! `to_char` (alias `date_format`, Flink's `DATE_FORMAT`): DataFusion's formats each
//! value through arrow's display code, which parses the chrono format string again for
//! every row; on Nexmark q10 (two `to_char`s per bid) that parsing and its iterator were
//! a fifth of the CPU. This version parses a constant format once per batch and formats
//! timestamps without a time zone with the parsed items; anything else (dates, times,
//! zoned timestamps, a format per row, a format chrono rejects, a value out of range)
//! goes to DataFusion's function unchanged, so results and errors stay DataFusion's.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, StringBuilder};
use arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::temporal_conversions::as_datetime;
use chrono::format::{Item, StrftimeItems};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// `to_char` with a parsed-once format for timestamps (see the module docs).
pub fn to_char() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToChar {
        inner: datafusion::functions::datetime::to_char(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    /// DataFusion's `to_char`: its signature, its docs, and every case not sped up.
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(values), ColumnarValue::Scalar(ScalarValue::Utf8(Some(f)))] =
            args.args.as_slice()
        {
            if let Some(out) = format_timestamps(values, f) {
                return Ok(ColumnarValue::Array(out));
            }
        }
        self.inner.invoke_with_args(args)
    }
}

/// `values` formatted with `format`, when they are timestamps without a time zone, the
/// format parses and every value is in chrono's range; `None` otherwise.
fn format_timestamps(values: &ArrayRef, format: &str) -> Option<ArrayRef> {
    let items: Vec<Item<'static>> = StrftimeItems::new(format).parse_to_owned().ok()?;
    match values.data_type() {
        DataType::Timestamp(TimeUnit::Second, None) => {
            format_with::<TimestampSecondType>(values.as_primitive(), &items)
        }
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            format_with::<TimestampMillisecondType>(values.as_primitive(), &items)
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            format_with::<TimestampMicrosecondType>(values.as_primitive(), &items)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, None) => {
            format_with::<TimestampNanosecondType>(values.as_primitive(), &items)
        }
        _ => None,
    }
}

fn format_with<T: ArrowPrimitiveType<Native = i64>>(
    values: &PrimitiveArray<T>,
    items: &[Item<'static>],
) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 16);
    for i in 0..values.len() {
        if values.is_null(i) {
            out.append_null();
            continue;
        }
        let t = as_datetime::<T>(values.value(i))?;
        write!(out, "{}", t.format_with_items(items.iter())).ok()?;
        out.append_value("");
    }
    Some(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampMillisecondArray, TimestampNanosecondArray};
    use datafusion::prelude::SessionContext;

    /// The same rows through DataFusion's `to_char` and Sluice's, compared.
    async fn both(values: ArrayRef, format: &str) -> (Vec<Option<String>>, Vec<Option<String>>) {
        let batch = arrow::record_batch::RecordBatch::try_from_iter([("t", values)]).unwrap();
        let sql = format!("SELECT to_char(t, '{format}') AS s FROM v");
        let mut got = Vec::new();
        for ours in [false, true] {
            let ctx = SessionContext::new();
            if ours {
                ctx.register_udf(to_char());
            }
            ctx.register_batch("v", batch.clone()).unwrap();
            let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let col: Vec<Option<String>> = rows
                .iter()
                .flat_map(|b| {
                    let s: &StringArray = b.column(0).as_string();
                    s.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
                })
                .collect();
            got.push(col);
        }
        let ours = got.pop().unwrap_or_default();
        (got.pop().unwrap_or_default(), ours)
    }

    #[tokio::test]
    async fn formats_timestamps_as_datafusion_does() {
        let ms: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_767_225_600_123),
            None,
            Some(-86_400_001),
            Some(0),
        ]));
        for format in [
            "%Y-%m-%d",
            "%H:%M",
            "%Y-%m-%dT%H:%M:%S%.3f",
            "%a %e %b %j",
            "day %%",
        ] {
            assert!(
                format_timestamps(&ms, format).is_some(),
                "{format}: not sped up"
            );
            let (theirs, ours) = both(Arc::clone(&ms), format).await;
            assert_eq!(ours, theirs, "{format}");
            assert!(ours.iter().flatten().count() == 3, "{format}: {ours:?}");
        }
        let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            1_700_000_000_123_456_789,
        ]));
        let (theirs, ours) = both(ns, "%Y-%m-%d %H:%M:%S%.9f").await;
        assert_eq!(ours, theirs);
        assert_eq!(ours, [Some("2023-11-14 22:13:20.123456789".to_string())]);
    }

    #[tokio::test]
    async fn leaves_what_it_does_not_speed_up_to_datafusion() {
        // A format chrono rejects: DataFusion's error, not a silent result.
        let ms: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![0]));
        assert!(format_timestamps(&ms, "%Q").is_none());
        // A zoned timestamp formats in its zone, as DataFusion does.
        let zoned: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![0]).with_timezone("+02:00"));
        assert!(format_timestamps(&zoned, "%H").is_none());
        let (theirs, ours) = both(zoned, "%H").await;
        assert_eq!(ours, theirs);
        assert_eq!(ours, [Some("02".to_string())]);
    }
}
