//! Column lineage through a fragment: which column of an operator's output an
//! expression over the fragment's rows reads. The planner uses it to see that an
//! aggregate groups by the window of the aggregate below it (Nexmark q5's
//! `GROUP BY starttime, endtime` over per-window counts): those windows arrive whole,
//! one batch each, so every group of the aggregate above is final when its batch ends.

use std::sync::Arc;

use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

use super::input::{BatchInputExec, InputSlot};

/// A column of an operator's output, possibly one field of it (`w['start']`).
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    /// The column's index in the operator's output.
    pub column: usize,
    /// The struct field read, if any.
    pub field: Option<String>,
}

/// What `expr`, evaluated over the rows of `node`, reads from the leaf that reads
/// `slot`: a column or one field of it, through projections, filters and
/// repartitioning; `None` for anything computed from more (or other) than that.
pub fn source_of(
    expr: &Arc<dyn PhysicalExpr>,
    node: &Arc<dyn ExecutionPlan>,
    slot: &Arc<InputSlot>,
) -> Option<Source> {
    if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() {
        let [arg, name] = f.args() else { return None };
        if f.name() != "get_field" {
            return None;
        }
        let name = name
            .downcast_ref::<Literal>()?
            .value()
            .try_as_str()??
            .to_string();
        let inner = source_of(arg, node, slot)?;
        return inner.field.is_none().then_some(Source {
            column: inner.column,
            field: Some(name),
        });
    }
    let c = expr.downcast_ref::<Column>()?;
    if let Some(leaf) = node.downcast_ref::<BatchInputExec>() {
        return leaf.reads(slot).then_some(Source {
            column: c.index(),
            field: None,
        });
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        return source_of(&p.expr().get(c.index())?.expr, p.input(), slot);
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        let index = match f.projection() {
            Some(p) => *p.get(c.index())?,
            None => c.index(),
        };
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(c.name(), index));
        return source_of(&column, f.input(), slot);
    }
    match node.name() {
        "CoalesceBatchesExec"
        | "CoalescePartitionsExec"
        | "RepartitionExec"
        | "CooperativeExec" => source_of(expr, node.children().first()?, slot),
        _ => None,
    }
}
