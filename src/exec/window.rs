//! Event-time windows as group keys (design.md: "Windows are group keys").
//!
//! `tumble(ts, size)` returns the row's window `{start, end}`; `hop(ts, slide, size)`
//! returns the row's *pane* of gcd(slide, size), and the state assembles each hop
//! window from its panes at emit time, so every row is aggregated once, not once per
//! window. `session(ts, gap)` returns each row's own `{ts, ts + gap}`; the state merges
//! a key's overlapping ones into sessions (`state::session`). Windows are aligned to the epoch; all arithmetic is in i64 milliseconds with
//! floor division, so timestamps at or before 0 land in the right window.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StructArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields, TimeUnit, TimestampMillisecondType};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

/// The window a windowed aggregation groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size` ms.
    Tumble { size: i64 },
    /// Windows of `size` ms starting every `slide` ms.
    Hop { slide: i64, size: i64 },
    /// Per key, events less than `gap` ms apart form one session `[first, last + gap)`.
    Session { gap: i64 },
}

impl WindowKind {
    /// Width of the panes state is kept in.
    pub fn pane(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size } => size,
            WindowKind::Hop { slide, size } => gcd(slide, size),
            WindowKind::Session { gap } => gap,
        }
    }

    /// Window length.
    pub fn size(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
            WindowKind::Session { gap } => gap,
        }
    }

    /// Distance between window starts.
    pub fn slide(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size } => size,
            WindowKind::Hop { slide, .. } => slide,
            WindowKind::Session { gap } => gap,
        }
    }

    /// Starts of the windows that contain pane `pane_start`, oldest first.
    pub fn windows_of_pane(&self, pane_start: i64) -> impl Iterator<Item = i64> {
        let (slide, size) = (self.slide(), self.size());
        let last = floor(pane_start, slide);
        let first = floor(pane_start - size, slide) + slide;
        (0..)
            .map(move |i| first + i * slide)
            .skip_while(move |s| *s + size <= pane_start)
            .take_while(move |s| *s <= last)
    }

    /// The kind named by a planned `tumble(...)`/`hop(...)` call, if `e` is one.
    pub fn from_expr(e: &Arc<dyn PhysicalExpr>) -> Option<Result<(Self, Arc<dyn PhysicalExpr>)>> {
        let f = e.downcast_ref::<ScalarFunctionExpr>()?;
        let args = f.args();
        let lit = |i: usize| -> Result<i64> {
            match args.get(i).and_then(|a| a.downcast_ref::<Literal>()) {
                Some(l) => interval_ms(l.value()),
                None => plan_err!(
                    "{}: window sizes must be constant intervals such as INTERVAL '10 seconds'",
                    f.name()
                ),
            }
        };
        let kind = match (f.name(), args.len()) {
            ("tumble", 2) => lit(1).map(|size| WindowKind::Tumble { size }),
            ("hop", 3) => {
                lit(1).and_then(|slide| lit(2).map(|size| WindowKind::Hop { slide, size }))
            }
            ("session", 2) => lit(1).map(|gap| WindowKind::Session { gap }),
            _ => return None,
        };
        Some(kind.map(|k| (k, Arc::clone(&args[0]))))
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// Floor of `t` to a multiple of `step` (correct for negative `t`).
pub fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// Milliseconds in an interval literal; months are refused (they vary in length).
pub fn interval_ms(v: &ScalarValue) -> Result<i64> {
    let ms = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i.days as i64 * 86_400_000 + i.milliseconds as i64,
        ScalarValue::Int64(Some(ms)) => *ms,
        other => {
            return plan_err!(
                "window size {other} is not a fixed interval such as INTERVAL '10 seconds'"
            )
        }
    };
    if ms <= 0 {
        return plan_err!("window sizes must be positive, got {ms} ms");
    }
    Ok(ms)
}

/// The `{start, end}` struct type windows have.
pub fn window_type() -> DataType {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    DataType::Struct(Fields::from(vec![
        Field::new("start", ts.clone(), false),
        Field::new("end", ts, false),
    ]))
}

/// Builds `{start, end}` structs from window starts (null where `starts` is null).
pub fn window_array(starts: &TimestampMillisecondArray, size: i64) -> Result<ArrayRef> {
    let ends: TimestampMillisecondArray = starts.unary(|s| s + size);
    let DataType::Struct(fields) = window_type() else {
        return exec_err!("window type is a struct");
    };
    let arrays: Vec<ArrayRef> = vec![Arc::new(starts.clone()), Arc::new(ends)];
    Ok(Arc::new(StructArray::try_new(
        fields,
        arrays,
        starts.nulls().cloned(),
    )?))
}

/// `tumble(ts, size)` / `hop(ts, slide, size)` / `session(ts, gap)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            DataType::Timestamp(_, _) | DataType::Int64 => Ok(window_type()),
            other => plan_err!(
                "{}: the event time must be a TIMESTAMP or BIGINT epoch milliseconds, got {other}",
                self.name
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = |i: usize| match &args.args[i] {
            ColumnarValue::Scalar(v) => interval_ms(v),
            ColumnarValue::Array(_) => plan_err!("{}: window sizes must be constants", self.name),
        };
        let kind = match self.name {
            "tumble" => WindowKind::Tumble { size: scalar(1)? },
            "session" => WindowKind::Session { gap: scalar(1)? },
            _ => WindowKind::Hop {
                slide: scalar(1)?,
                size: scalar(2)?,
            },
        };
        let ts = args.args[0].to_array(args.number_rows)?;
        let ms = event_time_ms(&ts)?;
        if let WindowKind::Session { gap } = kind {
            // Each event is its own session until the state merges it with its neighbours.
            return Ok(ColumnarValue::Array(window_array(&ms, gap)?));
        }
        let pane = kind.pane();
        let starts: TimestampMillisecondArray = ms.unary(|t| floor(t, pane));
        Ok(ColumnarValue::Array(window_array(&starts, pane)?))
    }
}

/// Event times as epoch milliseconds (timestamps of any unit, or BIGINT ms).
pub fn event_time_ms(ts: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let ms = match ts.data_type() {
        DataType::Int64 => cast(ts, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
        _ => cast(ts, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
    };
    Ok(ms.as_primitive::<TimestampMillisecondType>().clone())
}

/// The window functions, `proctime()` and the faster `to_char`, to register with a session.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut udfs: Vec<ScalarUDF> = [("tumble", 2), ("hop", 3), ("session", 2)]
        .into_iter()
        .map(|(name, n)| {
            ScalarUDF::new_from_impl(WindowUdf {
                name,
                signature: Signature::any(n, Volatility::Immutable),
            })
        })
        .collect();
    udfs.push(ScalarUDF::new_from_impl(ProcTime {
        signature: Signature::nullary(Volatility::Volatile),
    }));
    udfs.push(crate::functions::to_char());
    udfs
}

/// Whether an `event_time` option names processing time: `proctime()`, any case.
pub fn is_proctime(expr: &str) -> bool {
    expr.trim().eq_ignore_ascii_case("proctime()")
}

/// `proctime()`: the wall clock when the expression is evaluated, a TIMESTAMP(ms).
/// Volatile, so DataFusion neither folds it at planning (as it does `now()`) nor caches
/// it across batches: the rows of one batch share the instant their batch ran.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcTime {
    signature: Signature,
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        "proctime"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(crate::gen::wall_ms()),
            None,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_epoch_aligned_for_negative_times() {
        assert_eq!(floor(0, 10_000), 0);
        assert_eq!(floor(-1, 10_000), -10_000);
        assert_eq!(floor(-10_000, 10_000), -10_000);
        assert_eq!(floor(86_399_999, 10_000), 86_390_000);
    }

    #[test]
    fn panes_map_to_every_window_that_holds_them() {
        let hop = WindowKind::Hop {
            slide: 5_000,
            size: 15_000,
        };
        assert_eq!(hop.pane(), 5_000);
        assert_eq!(
            hop.windows_of_pane(20_000).collect::<Vec<_>>(),
            [10_000, 15_000, 20_000]
        );
        let hop = WindowKind::Hop {
            slide: 4_000,
            size: 10_000,
        };
        assert_eq!(hop.pane(), 2_000);
        // Pane [6000, 8000) lies in windows starting at 0 and 4000 (not 8000: it starts later).
        assert_eq!(hop.windows_of_pane(6_000).collect::<Vec<_>>(), [0, 4_000]);
        assert_eq!(
            hop.windows_of_pane(-2_000).collect::<Vec<_>>(),
            [-8_000, -4_000]
        );
        let t = WindowKind::Tumble { size: 10_000 };
        assert_eq!(t.windows_of_pane(-10_000).collect::<Vec<_>>(), [-10_000]);
    }
}
