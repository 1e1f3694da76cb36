//! Session windows: per key, events less than `gap` apart form one session
//! `[first event, last event + gap)`, closed when the watermark passes its end.
//!
//! ```text
//!  stage 1: partial rows per (key, {ts, ts + gap})      one mini-session per event time
//!  state:   the partial rows of sessions still open      (bounded by the watermark delay)
//!  emit:    sort by (key, start), sweep: overlapping mini-sessions join one session;
//!           sessions with end <= watermark are merged with DataFusion's accumulators
//!           under their final {start, end} and emitted once; the rest stay
//! ```
//! A session cannot grow after it closed: a new event later than the watermark starts
//! a mini-session after every closed session's end.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, RecordBatch, StructArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::TimestampMillisecondType;
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};

use super::{AggregateSpec, ShardedState};
use crate::exec::window::window_type;

/// Splits the partial rows of `buffer` into closed sessions (merged and emitted: keys +
/// final values, the window column holding each session) and the rows of sessions
/// still open at `watermark` (returned to keep).
pub fn close_sessions(
    spec: &AggregateSpec,
    window_index: usize,
    buffer: &[RecordBatch],
    watermark: i64,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let all = concat_batches(&spec.partial_schema, buffer)?;
    if all.num_rows() == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let window = all.column(window_index).as_struct_opt().ok_or_else(|| {
        DataFusionError::Internal("the session key is not a {start, end} struct".into())
    })?;
    let starts = window.column(0).as_primitive::<TimestampMillisecondType>();
    let ends = window.column(1).as_primitive::<TimestampMillisecondType>();
    // The other group keys, as comparable byte rows.
    let key_cols: Vec<ArrayRef> = (0..spec.key_schema.fields().len())
        .filter(|&i| i != window_index)
        .map(|i| Arc::clone(all.column(i)))
        .collect();
    let converter = RowConverter::new(
        key_cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = converter.convert_columns(&key_cols)?;
    let mut order: Vec<usize> = (0..all.num_rows()).collect();
    order.sort_unstable_by(|&a, &b| {
        keys.row(a)
            .cmp(&keys.row(b))
            .then(starts.value(a).cmp(&starts.value(b)))
    });

    // Sweep each key's mini-sessions in start order, joining the overlapping ones.
    let (mut closed_rows, mut closed_starts, mut closed_ends, mut open_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut run: Vec<usize> = Vec::new();
    let mut flush = |run: &mut Vec<usize>, start: i64, end: i64| {
        if end <= watermark {
            for &i in run.iter() {
                closed_rows.push(i as u32);
                closed_starts.push(start);
                closed_ends.push(end);
            }
        } else {
            open_rows.extend(run.iter().map(|&i| i as u32));
        }
        run.clear();
    };
    let (mut start, mut end) = (0i64, 0i64);
    for (n, &i) in order.iter().enumerate() {
        let same_key = n > 0 && keys.row(order[n - 1]) == keys.row(i);
        if same_key && starts.value(i) < end {
            end = end.max(ends.value(i));
        } else {
            if !run.is_empty() {
                flush(&mut run, start, end);
            }
            start = starts.value(i);
            end = ends.value(i);
        }
        run.push(i);
    }
    flush(&mut run, start, end);

    let pick = |rows: Vec<u32>| -> Result<Vec<ArrayRef>> {
        let idx = UInt32Array::from(rows);
        all.columns()
            .iter()
            .map(|c| Ok(take(c, &idx, None)?))
            .collect()
    };
    let open = if open_rows.is_empty() {
        Vec::new()
    } else {
        vec![RecordBatch::try_new(
            Arc::clone(&spec.partial_schema),
            pick(open_rows)?,
        )?]
    };
    if closed_rows.is_empty() {
        return Ok((Vec::new(), open));
    }
    let mut cols = pick(closed_rows)?;
    let arrow::datatypes::DataType::Struct(fields) = window_type() else {
        return Err(DataFusionError::Internal("window type is a struct".into()));
    };
    cols[window_index] = Arc::new(StructArray::try_new(
        fields,
        vec![
            Arc::new(TimestampMillisecondArray::from(closed_starts)),
            Arc::new(TimestampMillisecondArray::from(closed_ends)),
        ],
        None,
    )?);
    let closed = RecordBatch::try_new(Arc::clone(&spec.partial_schema), cols)?;
    let mut sessions = ShardedState::new(spec.clone(), 1)?;
    let _ = sessions.merge(&[closed])?;
    Ok((sessions.emit(false)?, open))
}
