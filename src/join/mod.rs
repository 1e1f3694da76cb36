//! Joins. A join of a stream with static tables becomes a [`lookup::LookupJoinExec`]
//! whose hash table is built when the tables load; a join of two streams becomes the
//! dataflow's join operator ([`crate::operator::join`]).

pub mod lookup;

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::ExecutionPlan;

use lookup::{LookupJoinExec, PlannedJoin, StaticSide};

/// Tells the leaves of a plan apart: a stream's scan, a static table's scan (with its
/// name), or neither.
pub trait Leaves {
    /// Whether `node` scans a stream.
    fn is_stream(&self, node: &Arc<dyn ExecutionPlan>) -> bool;
    /// The static table `node` scans, if it scans one.
    fn static_name(&self, node: &Arc<dyn ExecutionPlan>) -> Option<String>;
}

/// Replaces every join of a stream with a static side by a lookup join; returns the
/// plan and the static sides to build when the tables load. A static table left in
/// the plan outside such a join is an error: it would be read again every batch.
pub fn plan_lookups(
    plan: Arc<dyn ExecutionPlan>,
    leaves: &dyn Leaves,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<Arc<StaticSide>>)> {
    let mut sides = Vec::new();
    let plan = plan
        .transform_up(|node| {
            let Some(join) = planned_join(&node)? else {
                return Ok(Transformed::no(node));
            };
            let left_streams = reads_stream(&join.left, leaves)?;
            let right_streams = reads_stream(&join.right, leaves)?;
            let static_is_left = match (left_streams, right_streams) {
                (false, true) => true,
                (true, false) => false,
                // Two streams: refused by the planner's checks; two static sides: part
                // of a static side, run when it loads.
                _ => return Ok(Transformed::no(node)),
            };
            let static_plan = if static_is_left {
                &join.left
            } else {
                &join.right
            };
            let tables = static_names(static_plan, leaves)?;
            let lookup = LookupJoinExec::new(join, static_is_left, tables)?;
            sides.push(Arc::clone(lookup.static_side()));
            Ok(Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    let left_over = static_names(&plan, leaves)?;
    if !left_over.is_empty() {
        return Err(DataFusionError::Plan(format!(
            "static table {} is only read by joining it with a stream (JOIN … ON, or IN (SELECT … FROM it)); \
             a query cannot read it on its own or UNION it with a stream",
            left_over.join(", ")
        )));
    }
    Ok((plan, sides))
}

fn reads_stream(plan: &Arc<dyn ExecutionPlan>, leaves: &dyn Leaves) -> Result<bool> {
    plan.exists(|n| Ok(leaves.is_stream(n)))
}

/// The static tables `plan` scans, outside the static sides of lookup joins.
fn static_names(plan: &Arc<dyn ExecutionPlan>, leaves: &dyn Leaves) -> Result<Vec<String>> {
    let mut names = Vec::new();
    plan.apply(|n| {
        if let Some(name) = leaves.static_name(n) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// The parts of a planned hash, nested-loop or cross join.
pub(crate) fn planned_join(node: &Arc<dyn ExecutionPlan>) -> Result<Option<PlannedJoin>> {
    if let Some(h) = node.downcast_ref::<HashJoinExec>() {
        return Ok(Some(PlannedJoin {
            left: Arc::clone(h.left()),
            right: Arc::clone(h.right()),
            on: h.on().to_vec(),
            filter: h.filter().cloned(),
            join_type: *h.join_type(),
            projection: h.projection.as_ref().map(|p| p.to_vec()),
            null_equality: h.null_equality(),
            null_aware: h.null_aware,
            schema: node.schema(),
        }));
    }
    if let Some(n) = node.downcast_ref::<NestedLoopJoinExec>() {
        return Ok(Some(PlannedJoin {
            left: Arc::clone(n.left()),
            right: Arc::clone(n.right()),
            on: Vec::new(),
            filter: n.filter().cloned(),
            join_type: *n.join_type(),
            projection: n.projection().as_ref().map(|p| p.to_vec()),
            null_equality: NullEquality::NullEqualsNothing,
            null_aware: false,
            schema: node.schema(),
        }));
    }
    if let Some(c) = node.downcast_ref::<CrossJoinExec>() {
        return Ok(Some(PlannedJoin {
            left: Arc::clone(c.left()),
            right: Arc::clone(c.right()),
            on: Vec::new(),
            filter: None,
            join_type: JoinType::Inner,
            projection: None,
            null_equality: NullEquality::NullEqualsNothing,
            null_aware: false,
            schema: node.schema(),
        }));
    }
    Ok(None)
}
