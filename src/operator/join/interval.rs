//! Interval joins: a join whose ON condition bounds one side's event time by the
//! other's (`r.t BETWEEN l.t - INTERVAL '5' SECOND AND l.t + INTERVAL '10' SECOND`,
//! or the same with `>=` / `<=` / `<` / `>`), so a kept row can stop matching.
//!
//! ```text
//!  lo <= r.t - l.t <= hi        (from the condition's conjuncts)
//!  left row:  no right row to come can match once  l.t + hi <= watermark
//!  right row: no left row to come can match once   r.t - lo <= watermark
//! ```
//! Rows still to come are newer than the watermark: the join drops (and counts) rows of
//! either side at or behind it, as late. So each side's rows leave state after their
//! event time plus a fixed span, and state stays bounded by the interval and the
//! watermark delay. Only conjuncts over the two sides' event-time columns (a source's
//! `event_time` column, traced through the fragment below the join) count; the rest of
//! the condition is evaluated per pair as in any join.

use std::sync::Arc;

use datafusion::common::{JoinSide, ScalarValue};
use datafusion::logical_expr::Operator as Op;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::joins::utils::JoinFilter;

/// The time bounds of an interval join: `lo <= right.t - left.t <= hi` (either may be
/// open), over column `columns[s]` of side `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Each side's event-time column.
    pub columns: [usize; 2],
    /// Smallest `right.t - left.t` that matches (ms), if bounded.
    pub lo: Option<i64>,
    /// Largest `right.t - left.t` that matches (ms), if bounded.
    pub hi: Option<i64>,
}

impl Interval {
    /// The bounds the equality keys `on` and `filter` put on the two sides' event
    /// times, when they put any: `times[s]` lists side `s`'s columns that are event
    /// times (a key pair of two such columns is a window join: `lo = hi = 0`).
    pub fn of(
        on: &[(PhysicalExprRef, PhysicalExprRef)],
        filter: Option<&JoinFilter>,
        times: &[Vec<usize>; 2],
    ) -> Option<Self> {
        let keys = on.iter().filter_map(|(l, r)| {
            let (l, r) = (l.downcast_ref::<Column>()?, r.downcast_ref::<Column>()?);
            let both = times[0].contains(&l.index()) && times[1].contains(&r.index());
            both.then_some(([l.index(), r.index()], Some(0), Some(0)))
        });
        let conjuncts = filter.into_iter().flat_map(|f| {
            split_conjunction(f.expression())
                .into_iter()
                .filter_map(move |c| bound(c, f, times))
        });
        let mut found: Option<Self> = None;
        for (columns, lo, hi) in keys.chain(conjuncts) {
            let f = found.get_or_insert(Self {
                columns,
                lo: None,
                hi: None,
            });
            if f.columns != columns {
                continue; // bounds over another pair of columns: a plain condition
            }
            if let Some(lo) = lo {
                f.lo = Some(f.lo.map_or(lo, |old| old.max(lo)));
            }
            if let Some(hi) = hi {
                f.hi = Some(f.hi.map_or(hi, |old| old.min(hi)));
            }
        }
        found
    }

    /// How long after its own event time a row of side `s` can still match (ms), or
    /// `None` when rows of that side never stop matching.
    pub fn keep_ms(&self, s: usize) -> Option<i64> {
        match s {
            0 => self.hi,
            _ => self.lo.map(|lo| -lo),
        }
    }

    /// `lo <= r.t - l.t <= hi` in words, for explain.
    pub fn describe(&self, names: [&str; 2]) -> String {
        let [l, r] = names;
        match (self.lo, self.hi) {
            (Some(0), Some(0)) => format!("{r} = {l}: a window join"),
            (Some(lo), Some(hi)) if lo == hi => format!("{r} = {l} {}", signed(lo)),
            (Some(lo), Some(hi)) => format!("{r} within [{l} {}, {l} {}]", signed(lo), signed(hi)),
            (Some(lo), None) => format!("{r} >= {l} {}", signed(lo)),
            (None, Some(hi)) => format!("{r} <= {l} {}", signed(hi)),
            (None, None) => "unbounded".into(),
        }
    }
}

/// A span of ms in the largest whole unit.
pub fn span(ms: i64) -> String {
    match ms {
        0 => "0 s".into(),
        _ if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{} s", ms / 1000),
        _ => format!("{ms} ms"),
    }
}

/// `+ span` or `- span` of a signed ms offset.
pub fn signed(v: i64) -> String {
    match v < 0 {
        true => format!("- {}", span(-v)),
        false => format!("+ {}", span(v)),
    }
}

/// One conjunct's bounds on `right.t - left.t`: (columns, lower, upper).
type Bound = ([usize; 2], Option<i64>, Option<i64>);

fn bound(
    expr: &Arc<dyn PhysicalExpr>,
    filter: &JoinFilter,
    times: &[Vec<usize>; 2],
) -> Option<Bound> {
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let (a, a_off) = linear(b.left())?;
    let (c, c_off) = linear(b.right())?;
    let side_of = |i: usize| {
        let ci = filter.column_indices().get(i)?;
        let s = match ci.side {
            JoinSide::Left => 0,
            JoinSide::Right => 1,
            JoinSide::None => return None,
        };
        times[s].contains(&ci.index).then_some((s, ci.index))
    };
    let ((sa, ia), (sc, ic)) = (side_of(a)?, side_of(c)?);
    if sa == sc {
        return None;
    }
    // a + a_off OP c + c_off. With a on the left: r - l OP' a_off - c_off, OP flipped.
    let (op, diff, columns) = match sa {
        0 => (flip(*b.op())?, a_off - c_off, [ia, ic]),
        _ => (*b.op(), c_off - a_off, [ic, ia]),
    };
    // Now: r.t - l.t OP diff.
    Some(match op {
        Op::Lt | Op::LtEq => (columns, None, Some(diff)),
        Op::Gt | Op::GtEq => (columns, Some(diff), None),
        Op::Eq => (columns, Some(diff), Some(diff)),
        _ => return None,
    })
}

/// `x OP y` as `y OP' x`.
fn flip(op: Op) -> Option<Op> {
    Some(match op {
        Op::Lt => Op::Gt,
        Op::LtEq => Op::GtEq,
        Op::Gt => Op::Lt,
        Op::GtEq => Op::LtEq,
        Op::Eq => Op::Eq,
        _ => return None,
    })
}

/// `column + offset` (ms) for a column, a column plus or minus a constant, or a cast of
/// those.
fn linear(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some((c.index(), 0));
    }
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        return linear(c.expr());
    }
    let b = expr.downcast_ref::<BinaryExpr>()?;
    match b.op() {
        Op::Plus => match (
            linear(b.left()),
            millis(b.right()),
            linear(b.right()),
            millis(b.left()),
        ) {
            (Some((c, o)), Some(v), _, _) | (_, _, Some((c, o)), Some(v)) => {
                Some((c, o.checked_add(v)?))
            }
            _ => None,
        },
        Op::Minus => {
            let (c, o) = linear(b.left())?;
            Some((c, o.checked_sub(millis(b.right())?)?))
        }
        _ => None,
    }
}

/// A constant span in ms: an interval without months, a duration, or an integer (a
/// BIGINT event time counts milliseconds).
fn millis(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    let lit = expr.downcast_ref::<Literal>()?;
    Some(match lit.value() {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds)
        }
        ScalarValue::DurationMillisecond(Some(v)) => *v,
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1000)?,
        ScalarValue::DurationMicrosecond(Some(v)) => v / 1000,
        ScalarValue::DurationNanosecond(Some(v)) => v / 1_000_000,
        ScalarValue::Int64(Some(v)) => *v,
        ScalarValue::Int32(Some(v)) => i64::from(*v),
        _ => return None,
    })
}
