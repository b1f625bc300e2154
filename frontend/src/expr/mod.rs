//! The expression language used in spec bindings: syntax tree and parser.

pub mod ast;
pub mod parser;

pub use ast::{BinOp, Expr, ExprKind, Span, UnaryOp};
pub use parser::{parse_expr, ParseError};
