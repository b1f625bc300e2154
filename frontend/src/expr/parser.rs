//! Lexer and recursive-descent parser for the expression language.
//!
//! Grammar, lowest precedence first:
//!
//! ```text
//! expr    := "if" expr "then" expr "else" expr | or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | cmp
//! cmp     := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
//! sum     := term (("+" | "-") term)*
//! term    := unary (("*" | "/" | "//" | "%") unary)*
//! unary   := "-" unary | power
//! power   := postfix ("**" unary)?            (right-associative; -x**2 is -(x**2))
//! postfix := primary ("[" expr "]")*
//! primary := number | "true" | "false" | name ("." name)* | name "(" args ")"
//!          | "[" (expr ("," expr)*)? "]" | "(" expr ")"
//! args    := (arg ("," arg)*)? ; arg := expr | name "=" expr
//! ```
//!
//! Spans are byte offsets into the spec file: the caller passes the offset at which the
//! expression text starts.

use super::ast::{BinOp, Expr, ExprKind, Span, UnaryOp};

/// A syntax error at a span.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Ident(String),
    Punct(&'static str),
    End,
}

const PUNCT: [&str; 22] = [
    "**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "=", "(", ")", "[", "]", ",", ".", "!", ":",
];

fn lex(text: &str, base: usize) -> Result<Vec<(Tok, Span)>, ParseError> {
    let bytes = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let mut float = false;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1).is_none_or(|b| !b.is_ascii_alphabetic()) {
                float = true;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let s = text[start..i].replace('_', "");
            let span = base + start..base + i;
            let tok = if float {
                s.parse()
                    .map(Tok::Float)
                    .map_err(|_| ParseError { span: span.clone(), message: format!("bad number `{s}`") })?
            } else {
                s.parse()
                    .map(Tok::Int)
                    .map_err(|_| ParseError { span: span.clone(), message: format!("integer `{s}` is too large") })?
            };
            toks.push((tok, span));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            toks.push((Tok::Ident(text[start..i].to_string()), base + start..base + i));
            continue;
        }
        match PUNCT.iter().find(|p| text[i..].starts_with(**p)) {
            Some(p) => {
                i += p.len();
                toks.push((Tok::Punct(p), base + start..base + i));
            }
            None => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ParseError {
                    span: base + i..base + i + ch.len_utf8(),
                    message: format!("unexpected character `{ch}`"),
                });
            }
        }
    }
    toks.push((Tok::End, base + text.len()..base + text.len()));
    Ok(toks)
}

/// Parses one expression occupying all of `text`, which starts at byte `base` of its file.
pub fn parse_expr(text: &str, base: usize) -> Result<Expr, ParseError> {
    let toks = lex(text, base)?;
    let mut p = Parser { toks, pos: 0 };
    if p.peek() == &Tok::End {
        return Err(ParseError { span: base..base + text.len(), message: "empty expression".into() });
    }
    let e = p.expr()?;
    match p.peek() {
        Tok::End => Ok(e),
        _ => Err(p.error("expected an operator or the end of the expression")),
    }
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
}

const KEYWORDS: [&str; 8] = ["if", "then", "else", "and", "or", "not", "true", "false"];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn span(&self) -> Span {
        self.toks[self.pos].1.clone()
    }

    fn bump(&mut self) -> (Tok, Span) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, expected: &str) -> ParseError {
        let found = match self.peek() {
            Tok::Int(n) => format!("`{n}`"),
            Tok::Float(x) => format!("`{x}`"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::End => "the end of the expression".into(),
        };
        ParseError { span: self.span(), message: format!("{expected}, found {found}") }
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == k)
    }

    fn expect_punct(&mut self, p: &str, what: &str) -> Result<Span, ParseError> {
        if self.is_punct(p) {
            Ok(self.bump().1)
        } else {
            Err(self.error(what))
        }
    }

    fn expect_keyword(&mut self, k: &str) -> Result<(), ParseError> {
        if self.is_keyword(k) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(&format!("expected `{k}`")))
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        if self.is_keyword("if") {
            let start = self.bump().1.start;
            let cond = self.expr()?;
            self.expect_keyword("then")?;
            let then = self.expr()?;
            self.expect_keyword("else")?;
            let other = self.expr()?;
            let span = start..other.span.end;
            return Ok(Expr {
                kind: ExprKind::If { cond: Box::new(cond), then: Box::new(then), other: Box::new(other) },
                span,
            });
        }
        self.or()
    }

    fn binary(lhs: Expr, op: BinOp, rhs: Expr) -> Expr {
        let span = lhs.span.start..rhs.span.end;
        Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.is_keyword("or") {
            self.bump();
            let rhs = self.and()?;
            e = Self::binary(e, BinOp::Or, rhs);
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.not()?;
        while self.is_keyword("and") {
            self.bump();
            let rhs = self.not()?;
            e = Self::binary(e, BinOp::And, rhs);
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.is_keyword("not") {
            let start = self.bump().1.start;
            let e = self.not()?;
            let span = start..e.span.end;
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Not, Box::new(e)), span });
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let e = self.sum()?;
        let op = match self.peek() {
            Tok::Punct("==") => BinOp::Eq,
            Tok::Punct("!=") => BinOp::Ne,
            Tok::Punct("<") => BinOp::Lt,
            Tok::Punct("<=") => BinOp::Le,
            Tok::Punct(">") => BinOp::Gt,
            Tok::Punct(">=") => BinOp::Ge,
            _ => return Ok(e),
        };
        self.bump();
        let rhs = self.sum()?;
        Ok(Self::binary(e, op, rhs))
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.term()?;
        loop {
            let op = match self.peek() {
                Tok::Punct("+") => BinOp::Add,
                Tok::Punct("-") => BinOp::Sub,
                _ => return Ok(e),
            };
            self.bump();
            let rhs = self.term()?;
            e = Self::binary(e, op, rhs);
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Punct("*") => BinOp::Mul,
                Tok::Punct("/") => BinOp::Div,
                Tok::Punct("//") => BinOp::FloorDiv,
                Tok::Punct("%") => BinOp::Rem,
                _ => return Ok(e),
            };
            self.bump();
            let rhs = self.unary()?;
            e = Self::binary(e, op, rhs);
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_punct("-") {
            let start = self.bump().1.start;
            let e = self.unary()?;
            let span = start..e.span.end;
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Neg, Box::new(e)), span });
        }
        self.power()
    }

    fn power(&mut self) -> Result<Expr, ParseError> {
        let base = self.postfix()?;
        if self.is_punct("**") {
            self.bump();
            let exp = self.unary()?;
            return Ok(Self::binary(base, BinOp::Pow, exp));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        while self.is_punct("[") {
            self.bump();
            let index = self.expr()?;
            let end = self.expect_punct("]", "expected `]` after the index")?.end;
            let span = e.span.start..end;
            e = Expr { kind: ExprKind::Index(Box::new(e), Box::new(index)), span };
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (tok, span) = self.toks[self.pos].clone();
        match tok {
            Tok::Int(n) => {
                self.bump();
                Ok(Expr { kind: ExprKind::Int(n), span })
            }
            Tok::Float(x) => {
                self.bump();
                Ok(Expr { kind: ExprKind::Float(x), span })
            }
            Tok::Ident(ref s) if s == "true" || s == "false" => {
                self.bump();
                Ok(Expr { kind: ExprKind::Bool(s == "true"), span })
            }
            Tok::Ident(ref s) if KEYWORDS.contains(&s.as_str()) => Err(self.error("expected a value")),
            Tok::Ident(name) => {
                self.bump();
                if self.is_punct("(") {
                    return self.call(name, span);
                }
                let mut parts = vec![name];
                let mut end = span.end;
                while self.is_punct(".") {
                    self.bump();
                    match self.bump() {
                        (Tok::Ident(field), s) => {
                            parts.push(field);
                            end = s.end;
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("expected a field name after `.`"));
                        }
                    }
                }
                Ok(Expr { kind: ExprKind::Name(parts), span: span.start..end })
            }
            Tok::Punct("[") => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    items.push(self.expr()?);
                    if !self.is_punct("]") {
                        self.expect_punct(",", "expected `,` or `]` in the list")?;
                    }
                }
                let end = self.bump().1.end;
                Ok(Expr { kind: ExprKind::List(items), span: span.start..end })
            }
            Tok::Punct("(") => {
                self.bump();
                let mut e = self.expr()?;
                let end = self.expect_punct(")", "expected `)`")?.end;
                e.span = span.start..end;
                Ok(e)
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn call(&mut self, callee: String, callee_span: Span) -> Result<Expr, ParseError> {
        self.bump(); // (
        let mut args = Vec::new();
        let mut kwargs: Vec<(String, Span, Expr)> = Vec::new();
        while !self.is_punct(")") {
            let is_kwarg = matches!(self.peek(), Tok::Ident(_)) && matches!(self.toks[self.pos + 1].0, Tok::Punct("="));
            if is_kwarg {
                let (tok, kspan) = self.bump();
                self.bump(); // =
                let Tok::Ident(key) = tok else { unreachable!("checked above") };
                if kwargs.iter().any(|(k, _, _)| *k == key) {
                    return Err(ParseError { span: kspan, message: format!("argument `{key}` is given twice") });
                }
                kwargs.push((key, kspan, self.expr()?));
            } else {
                if let Some((_, kspan, _)) = kwargs.first() {
                    return Err(ParseError {
                        span: kspan.start..self.span().end,
                        message: "positional arguments must come before named ones".into(),
                    });
                }
                args.push(self.expr()?);
            }
            if !self.is_punct(")") {
                self.expect_punct(",", "expected `,` or `)` in the argument list")?;
            }
        }
        let end = self.bump().1.end;
        Ok(Expr {
            kind: ExprKind::Call { callee, callee_span: callee_span.clone(), args, kwargs },
            span: callee_span.start..end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Int(n) => n.to_string(),
            ExprKind::Float(x) => format!("{x:?}"),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Name(p) => p.join("."),
            ExprKind::List(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
            ExprKind::Unary(UnaryOp::Neg, x) => format!("(-{})", show(x)),
            ExprKind::Unary(UnaryOp::Not, x) => format!("(not {})", show(x)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", show(a), op.symbol(), show(b)),
            ExprKind::Call { callee, args, kwargs, .. } => {
                let mut parts: Vec<String> = args.iter().map(show).collect();
                parts.extend(kwargs.iter().map(|(k, _, v)| format!("{k}={}", show(v))));
                format!("{callee}({})", parts.join(", "))
            }
            ExprKind::Index(a, i) => format!("{}[{}]", show(a), show(i)),
            ExprKind::If { cond, then, other } => {
                format!("(if {} then {} else {})", show(cond), show(then), show(other))
            }
        }
    }

    fn p(s: &str) -> String {
        show(&parse_expr(s, 0).unwrap())
    }

    #[test]
    fn precedence() {
        assert_eq!(p("a + b * c - d"), "((a + (b * c)) - d)");
        assert_eq!(p("-x ** 2"), "(-(x ** 2))");
        assert_eq!(p("2 ** -1"), "(2 ** (-1))");
        assert_eq!(p("a // 2 % 3"), "((a // 2) % 3)");
        assert_eq!(p("i == 0 and not t or u"), "(((i == 0) and (not t)) or u)");
        assert_eq!(p("if i == 0 then f(x) else x"), "(if (i == 0) then f(x) else x)");
        assert_eq!(p("1e-5 + 1.5 + 3"), "((1e-5 + 1.5) + 3)");
        assert_eq!(p("-1e30"), "(-1e30)");
    }

    #[test]
    fn calls_names_lists() {
        assert_eq!(p("scan(wkv, over = [k, v], carry = [state.num])"), "scan(wkv, over=[k, v], carry=[state.num])");
        assert_eq!(p("limit[1]"), "limit[1]");
        assert_eq!(p("mean(x, axis = -1, keepdim = true)"), "mean(x, axis=(-1), keepdim=true)");
    }

    #[test]
    fn errors_have_spans() {
        let e = parse_expr("a + * b", 10).unwrap_err();
        assert_eq!(e.span, 14..15);
        assert_eq!(e.message, "expected a value, found `*`");
        let e = parse_expr("f(a = 1, b)", 0).unwrap_err();
        assert_eq!(e.message, "positional arguments must come before named ones");
        let e = parse_expr("x $ y", 0).unwrap_err();
        assert_eq!((e.span, e.message.as_str()), (2..3, "unexpected character `$`"));
        assert!(parse_expr("(a + b", 0).unwrap_err().message.starts_with("expected `)`"));
    }
}
