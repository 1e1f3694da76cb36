//! The raw-byte prefilter: skip records whose bytes prove they cannot pass the query's
//! filter, before paying for JSON decoding.
//!
//! It is derived from the filter DataFusion planned directly over the source: each
//! conjunct `col LIKE '%lit%'`, `col ILIKE '%lit%'` or `lower(col)/upper(col) LIKE
//! '%lit%'` on a string column of the source requires `lit` to occur in the column's
//! value, hence in the record's raw bytes. The screen is exact only where the raw bytes
//! are the value's characters, so a record is always decoded when it holds a
//! backslash (a JSON escape such as `\u0063` can hide a letter) or any non-ASCII byte
//! (Unicode case mapping can turn a non-ASCII letter into an ASCII one). Otherwise it is
//! skipped when some required literal is absent, compared ASCII-case-insensitively
//! (a superset of every case-sensitive match).
//!
//! A skipped record is still counted as read. Whether it was well formed is only
//! checked at its edges (an object's braces); `--no-prefilter` decodes everything and
//! counts every malformed record exactly.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::{Column, LikeExpr, Literal};
use datafusion::physical_expr::{split_conjunction, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::ExecutionPlan;

use super::fold::FoldedLiteral;

/// Literals every matching record must contain.
#[derive(Debug, Clone)]
pub struct Prefilter {
    /// Required literals (ASCII), case-folded.
    literals: Vec<FoldedLiteral>,
    /// For messages: the literals as written.
    shown: Vec<String>,
}

impl Prefilter {
    /// A screen requiring each of `literals` (ASCII; case ignored). `None` when empty.
    pub fn new(literals: Vec<String>) -> Option<Self> {
        let literals: Vec<String> = literals
            .into_iter()
            .filter(|l| !l.is_empty() && l.is_ascii())
            .map(|l| l.to_ascii_lowercase())
            .collect();
        if literals.is_empty() {
            return None;
        }
        Some(Self {
            literals: literals
                .iter()
                .map(|l| FoldedLiteral::new(l.as_bytes()))
                .collect(),
            shown: literals,
        })
    }

    /// The required literals, lower-cased.
    pub fn literals(&self) -> &[String] {
        &self.shown
    }

    /// Whether `payload` must be decoded: it has every literal, or it lacks one but is
    /// not clean (non-ASCII or a backslash), or it is not an object at its edges. One
    /// pass per literal over the bytes (`decode::fold`), no copy.
    pub fn must_decode(&self, payload: &[u8]) -> bool {
        if !looks_like_object(payload) {
            return true;
        }
        for literal in &self.literals {
            let scan = literal.scan(payload);
            if !scan.found {
                return !scan.clean;
            }
        }
        true
    }

    /// The screen for a planned stage 1 (or stateless) plan, if its filter allows one.
    /// `is_leaf` tells the source's scan among the plan's nodes; `input_types` are the
    /// column types it produces. A screen needs exactly one scan of the source, right
    /// below a filter: a second scan (a union, a self-join) may pass records the first
    /// filter rejects.
    pub fn from_plan(
        plan: &Arc<dyn ExecutionPlan>,
        input_types: &[DataType],
        is_leaf: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
    ) -> Option<Self> {
        let mut scans = 0;
        let mut literals = Vec::new();
        let _ = plan.apply(|node| {
            if is_leaf(node) {
                scans += 1;
            }
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                if reads_source_directly(f.input(), is_leaf) {
                    for c in split_conjunction(f.predicate()) {
                        if let Some(l) = required_literal(c, input_types) {
                            literals.push(l);
                        }
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if scans != 1 {
            return None;
        }
        Self::new(literals)
    }
}

/// The first and last non-blank bytes are an object's braces.
fn looks_like_object(p: &[u8]) -> bool {
    let t = p.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

/// The filter's input is the source leaf itself (maybe behind batch coalescing or the
/// cooperative-scheduling wrapper DataFusion puts over leaves of plans without an
/// exchange), so its column indices are source columns and not computed values.
fn reads_source_directly(
    plan: &Arc<dyn ExecutionPlan>,
    is_leaf: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
) -> bool {
    if is_leaf(plan) {
        return true;
    }
    matches!(plan.name(), "CoalesceBatchesExec" | "CooperativeExec")
        && plan
            .children()
            .first()
            .is_some_and(|c| reads_source_directly(c, is_leaf))
}

/// `lit` when `e` is `[lower|upper](col) [I]LIKE '%lit%'` on a string source column.
fn required_literal(e: &Arc<dyn PhysicalExpr>, input_types: &[DataType]) -> Option<String> {
    let like = e.downcast_ref::<LikeExpr>()?;
    if like.negated() {
        return None;
    }
    let pattern = match like.pattern().downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(p))
        | ScalarValue::LargeUtf8(Some(p))
        | ScalarValue::Utf8View(Some(p)) => p.clone(),
        _ => return None,
    };
    let inner = pattern.strip_prefix('%')?.strip_suffix('%')?;
    if inner.is_empty() || inner.contains(['%', '_', '\\']) {
        return None;
    }
    let mut target = like.expr();
    if let Some(f) = target.downcast_ref::<ScalarFunctionExpr>() {
        if !matches!(f.name(), "lower" | "upper") || f.args().len() != 1 {
            return None;
        }
        target = &f.args()[0];
    }
    let col = target.downcast_ref::<Column>()?;
    match input_types.get(col.index()) {
        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Some(inner.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(lits: &[&str]) -> Prefilter {
        Prefilter::new(lits.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn skips_only_records_that_cannot_match() {
        let s = screen(&["crash"]);
        assert!(s.must_decode(br#"{"content":"a CRASH here"}"#));
        assert!(s.must_decode(br#"{"content":"crashed"}"#));
        assert!(!s.must_decode(br#"{"content":"all good"}"#));
        // An escape can hide a letter: always decode.
        assert!(s.must_decode(br#"{"content":"\u0063rash"}"#));
        // Non-ASCII can case-map to ASCII: always decode.
        assert!(s.must_decode("{\"content\":\"caf\u{e9}\"}".as_bytes()));
        // Not an object at its edges: decode, so it is counted as malformed.
        assert!(s.must_decode(b""));
        assert!(s.must_decode(br#"{"content":"trunc"#));
    }

    #[test]
    fn every_required_literal_must_be_present() {
        let s = screen(&["crash", "High"]);
        assert!(!s.must_decode(br#"{"severity":"High","content":"ok"}"#));
        assert!(s.must_decode(br#"{"severity":"high","content":"crash"}"#));
        assert!(Prefilter::new(vec![String::new()]).is_none());
    }
}
