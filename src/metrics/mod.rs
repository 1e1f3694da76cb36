//! Per-batch progress: what one micro-batch did, printed as one line on stderr so
//! stdout carries only results.

use std::time::Duration;

/// What one micro-batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchProgress {
    /// The batch id.
    pub batch_id: u64,
    /// Records read from the source (good and malformed).
    pub input_rows: u64,
    /// Records that did not decode.
    pub malformed_rows: u64,
    /// Records the prefilter skipped (they cannot pass the filter).
    pub screened_rows: u64,
    /// Rows handed to the sink.
    pub output_rows: u64,
    /// Wall time of the batch, fetch to sink.
    pub duration: Duration,
    /// Groups held in state after the batch (0 for stateless queries).
    pub state_groups: usize,
    /// Windowed aggregations: open panes after the batch.
    pub open_panes: Option<usize>,
    /// Windowed aggregations: the watermark after the batch (epoch ms).
    pub watermark: Option<i64>,
    /// Rows dropped because they were behind the watermark.
    pub late_rows: u64,
    /// Offsets read, per partition: (partition, start, end).
    pub offsets: Vec<(usize, i64, i64)>,
}

impl BatchProgress {
    /// Input records per second of batch time.
    pub fn processed_rows_per_second(&self) -> f64 {
        self.input_rows as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// The one-line summary printed after each batch.
    pub fn line(&self) -> String {
        let offsets: Vec<String> = self
            .offsets
            .iter()
            .map(|(p, s, e)| format!("{p}:[{s},{e})"))
            .collect();
        let windows = match (self.open_panes, self.watermark) {
            (Some(panes), Some(w)) => format!(
                ", {panes} open panes, watermark {}, {} late rows dropped",
                show_ms(w),
                self.late_rows
            ),
            (Some(panes), None) => format!(", {panes} open panes"),
            _ => String::new(),
        };
        format!(
            "[sluice] batch {}: {} input rows, {:.0} rows/s, {:.3} s, {} output rows, {} groups in state{windows}, {} malformed, {} screened out, offsets {}",
            self.batch_id,
            self.input_rows,
            self.processed_rows_per_second(),
            self.duration.as_secs_f64(),
            self.output_rows,
            self.state_groups,
            self.malformed_rows,
            self.screened_rows,
            offsets.join(" ")
        )
    }
}

/// Epoch milliseconds as `2026-01-11 14:42:50.000` (UTC); `none` before any event.
pub fn show_ms(ms: i64) -> String {
    match ms {
        i64::MIN => "none".into(),
        i64::MAX => "end of input".into(),
        _ => arrow::array::temporal_conversions::timestamp_ms_to_datetime(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| ms.to_string()),
    }
}
