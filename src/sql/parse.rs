//! Parsing a query file into sqlparser statements, with a position in every error and
//! limits on shapes that would make planning slow or overflow the stack.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_expressions, Expr, Spanned, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The longest chain of binary operators (`a + b + …`, `x OR y OR …`) a query may hold.
/// DataFusion's planning time grows with the square of a chain (measured: 1 000 terms
/// 1.4 s, 2 000 terms 5.9 s) and a chain of tens of thousands overflows its stack.
pub(super) const MAX_OPERATOR_CHAIN: usize = 1000;

/// The statements of `sql`, or the parser's message with a position. sqlparser gives
/// some errors without one (e.g. "expected OUTER, SEMI, ANTI or JOIN after LEFT"):
/// those are placed at the token the parser stopped on.
pub(super) fn statements(sql: &str) -> Result<Vec<Statement>, String> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| parse_message(&e, sql))?;
    let statements = parser.parse_statements().map_err(|e| {
        let m = parse_message(&e, sql);
        if m.contains(" at Line: ") {
            return m;
        }
        let at = parser.get_current_token().span.start;
        if at.line == 0 {
            return m;
        }
        format!("{m} at Line: {}, Column: {}", at.line, at.column)
    })?;
    if let Err(message) = check_chains(&statements) {
        // Dropping a tree tens of thousands deep recurses as deep as it: leak it instead
        // (once, on the way to an error).
        std::mem::forget(statements);
        return Err(message);
    }
    Ok(statements)
}

/// Refuses a chain of binary operators longer than [`MAX_OPERATOR_CHAIN`], placed at
/// its first term. Each chain is measured from its top before the visitor goes into
/// it, without recursion, so a chain of any length is refused before anything walks it.
fn check_chains(statements: &Vec<Statement>) -> Result<(), String> {
    let found = visit_expressions(statements, |e: &Expr| {
        let Expr::BinaryOp { .. } = e else {
            return ControlFlow::Continue(());
        };
        let (len, first) = chain(e);
        if len > MAX_OPERATOR_CHAIN {
            ControlFlow::Break((len, first.span().start))
        } else {
            ControlFlow::Continue(())
        }
    });
    match found {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break((len, at)) => {
            let at = if at.line == 0 {
                String::new()
            } else {
                format!(" at Line: {}, Column: {}", at.line, at.column)
            };
            Err(format!(
                "an expression chains {len} operators (at most {MAX_OPERATOR_CHAIN}){at}; \
                 planning time grows with the square of a chain: write a list of \
                 alternatives as IN (…), or split the expression (e.g. into a view)"
            ))
        }
    }
}

/// The number of binary operators on the longest path down `e` through binary
/// operators, and the leftmost leaf (where the chain starts in the text).
fn chain(e: &Expr) -> (usize, &Expr) {
    let (mut left, mut right) = (0, 0);
    let mut first = e;
    while let Expr::BinaryOp { left: l, .. } = first {
        left += 1;
        first = l;
    }
    let mut at = e;
    while let Expr::BinaryOp { right: r, .. } = at {
        right += 1;
        at = r;
    }
    (left.max(right), first)
}

/// The parser's message, with a position where sqlparser gives none: its recursion
/// limit (50 nested expressions) is placed at the parenthesis that goes past it.
fn parse_message(e: &datafusion::sql::sqlparser::parser::ParserError, sql: &str) -> String {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        ParserError::RecursionLimitExceeded => {
            let at = too_deep(sql, 50)
                .map(|(line, col)| format!(" at Line: {line}, Column: {col}"))
                .unwrap_or_default();
            format!("sql parser error: expressions nested more than 50 deep{at}; flatten the expression (e.g. fewer parentheses or a CASE instead of nested calls)")
        }
        e => {
            let m = e.to_string();
            // sqlparser's end-of-input token has no position: the end of the file has one.
            if m.ends_with("found: EOF") && !m.contains("Line: ") {
                let line = sql.lines().count().max(1);
                let col = sql.lines().last().map_or(0, |l| l.chars().count()) + 1;
                return format!("{m} (the end of the file) at Line: {line}, Column: {col}");
            }
            m
        }
    }
}

/// Line and column (from 1) of the first `(` nested deeper than `limit`, outside
/// quotes and comments.
fn too_deep(sql: &str, limit: usize) -> Option<(usize, usize)> {
    let (mut line, mut col, mut depth) = (1, 0, 0usize);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        match (quote, c) {
            (_, '\n') => {
                line += 1;
                col = 0;
                if quote == Some('-') {
                    quote = None;
                }
            }
            (Some(q), c) if c == q && q != '-' => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '-') if chars.peek() == Some(&'-') => quote = Some('-'),
            (None, '(') => {
                depth += 1;
                if depth > limit {
                    return Some((line, col));
                }
            }
            (None, ')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(terms: usize) -> String {
        format!("SELECT a,\n  {} FROM t", vec!["1"; terms].join(" + "))
    }

    #[test]
    fn a_long_operator_chain_is_refused_at_its_first_term() {
        assert!(statements(&sum(MAX_OPERATOR_CHAIN + 1)).is_ok());
        let e = statements(&sum(MAX_OPERATOR_CHAIN + 2)).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "an expression chains {} operators",
                MAX_OPERATOR_CHAIN + 1
            )) && e.contains("at Line: 2, Column: 3"),
            "{e}"
        );
        // Far past the limit: refused, not a stack overflow.
        let e = statements(&sum(200_000)).unwrap_err();
        assert!(e.contains("chains 199999 operators"), "{e}");
    }

    #[test]
    fn an_error_sqlparser_gives_without_a_position_gets_one() {
        let e = statements("SELECT a\nFROM t LEFT x ON true").unwrap_err();
        assert!(
            e.contains("after LEFT") && e.contains(" at Line: 2, Column: "),
            "{e}"
        );
    }
}
