//! What a running query says on stderr: one progress line per batch when stderr is a
//! file or a pipe (logs stay greppable), one live status line rewritten in place when it
//! is a terminal (a long run does not scroll thousands of lines past the user).
//!
//! ```text
//!  plain:  [sluice] batch 41: 1000000 input rows, 2100000 rows/s, …   (one per batch)
//!  live:   batch 41 │ in 1.93M rows/s │ processed 2.10M rows/s │ lag 12.3k │ …  (\r, in place)
//! ```
//! Messages that must stay (warnings, malformed records, falling behind) are printed as
//! whole lines above the live line in both modes.

use std::io::Write;

use super::{show_ms, BatchProgress};

/// How progress is shown on stderr (`--status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusMode {
    /// A live line when stderr is a terminal, plain lines otherwise.
    Auto,
    /// One live status line, rewritten after each batch.
    Line,
    /// One progress line per batch.
    Plain,
}

impl StatusMode {
    /// Resolves `auto` for an output that is (or is not) a terminal.
    pub fn resolve(self, is_terminal: bool) -> StatusMode {
        match self {
            StatusMode::Auto if is_terminal => StatusMode::Line,
            StatusMode::Auto => StatusMode::Plain,
            other => other,
        }
    }
}

/// Clears the terminal line the cursor is on and returns to its start.
pub const CLEAR_LINE: &str = "\r\x1b[2K";

/// Writes progress to one output in the chosen mode.
pub struct Status {
    live: bool,
    /// The live line currently on screen, if any.
    shown: Option<String>,
    width: usize,
}

impl Status {
    /// `mode` should be resolved already; `auto` counts as plain here.
    pub fn new(mode: StatusMode) -> Self {
        Self {
            live: mode == StatusMode::Line,
            shown: None,
            width: terminal_width().unwrap_or(120),
        }
    }

    /// A message that stays: printed on its own line, above the live line.
    pub fn say(&mut self, out: &mut dyn Write, message: &str) {
        let message = crate::secrets::redact(message);
        if let Some(line) = &self.shown {
            let _ = write!(out, "{CLEAR_LINE}{message}\n{line}");
        } else {
            let _ = writeln!(out, "{message}");
        }
        let _ = out.flush();
    }

    /// A finished batch: its progress line, or the live line rewritten.
    pub fn batch(&mut self, out: &mut dyn Write, p: &BatchProgress) {
        if !self.live {
            let _ = writeln!(out, "{}", crate::secrets::redact(&p.line()));
            return;
        }
        let line = fit(&crate::secrets::redact(&live_line(p)), self.width);
        let _ = write!(out, "{CLEAR_LINE}{line}");
        let _ = out.flush();
        self.shown = Some(line);
    }

    /// Takes the live line off the screen (until the next batch draws it again), so
    /// results printed to the same terminal do not run into it.
    pub fn clear(&mut self, out: &mut dyn Write) {
        if self.shown.take().is_some() {
            let _ = write!(out, "{CLEAR_LINE}");
            let _ = out.flush();
        }
    }

    /// Leaves the last live line on screen and moves below it.
    pub fn finish(&mut self, out: &mut dyn Write) {
        if self.shown.take().is_some() {
            let _ = writeln!(out);
        }
    }
}

/// The live line: the figures a user watches, most important first.
pub fn live_line(p: &BatchProgress) -> String {
    let mut parts = vec![
        format!("batch {}", p.batch_id),
        format!("in {} rows/s", si(p.input_rows_per_second())),
        format!("processed {} rows/s", si(p.processed_rows_per_second())),
        format!("lag {}", si(p.lag as f64)),
        format!("{:.2} s/batch", p.duration.as_secs_f64()),
    ];
    if p.state_groups > 0 {
        parts.push(format!("{} groups", si(p.state_groups as f64)));
    }
    if let Some(w) = p.watermark {
        parts.push(format!("watermark {}", show_ms(w)));
    }
    if p.late_rows > 0 {
        parts.push(format!("{} late", p.late_rows));
    }
    if p.malformed_rows > 0 {
        parts.push(format!("{} malformed", p.malformed_rows));
    }
    if let Some(rss) = super::rss_bytes() {
        parts.push(format!("{} MB", rss / 1_000_000));
    }
    parts.join(" │ ")
}

/// 1234567 as `1.23M`: three significant figures, SI suffix.
pub fn si(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        return format!("{v:.0}");
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

/// Cuts `line` to `width` characters so it never wraps (a wrapped line cannot be
/// rewritten in place).
fn fit(line: &str, width: usize) -> String {
    let width = width.saturating_sub(1).max(20);
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Columns of the terminal on stderr, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn batch(id: u64) -> BatchProgress {
        BatchProgress {
            batch_id: id,
            input_rows: 1_000_000,
            duration: Duration::from_millis(500),
            lag: 12_345,
            state_groups: 100,
            ..Default::default()
        }
    }

    #[test]
    fn live_mode_rewrites_one_line_and_keeps_messages() {
        let mut out = Vec::new();
        let mut s = Status::new(StatusMode::Line);
        s.batch(&mut out, &batch(0));
        s.say(&mut out, "[sluice] warning: something");
        s.batch(&mut out, &batch(1));
        s.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        // The warning is a whole line; batch lines are only ever rewritten, not scrolled.
        assert_eq!(text.matches('\n').count(), 2, "{text:?}");
        assert!(text.contains("\x1b[2K[sluice] warning: something\nbatch 0 │"));
        let last = text.rsplit(CLEAR_LINE).next().unwrap();
        assert!(last.starts_with("batch 1 │ in "), "{last:?}");
        assert!(last.contains("processed 2.00M rows/s") && last.contains("lag 12.3k"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn plain_mode_prints_one_line_per_batch() {
        let mut out = Vec::new();
        let mut s = Status::new(StatusMode::Plain);
        s.batch(&mut out, &batch(0));
        s.say(&mut out, "[sluice] warning: something");
        s.batch(&mut out, &batch(1));
        s.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\r') && !text.contains('\x1b'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("[sluice] batch 0: 1000000 input rows"));
        assert!(lines[2].starts_with("[sluice] batch 1: "));
    }

    #[test]
    fn auto_follows_the_terminal() {
        assert_eq!(StatusMode::Auto.resolve(true), StatusMode::Line);
        assert_eq!(StatusMode::Auto.resolve(false), StatusMode::Plain);
        assert_eq!(StatusMode::Plain.resolve(true), StatusMode::Plain);
    }

    #[test]
    fn numbers_and_width() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(2_110_000.0), "2.11M");
        assert_eq!(si(123_456_789.0), "123M");
        let cut = fit(&"x".repeat(200), 80);
        assert_eq!(cut.chars().count(), 79);
        assert!(cut.ends_with('…'));
    }
}
