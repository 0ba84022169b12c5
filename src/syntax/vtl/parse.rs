//! The parser: template text into nodes, expressions and references.

use serde_json::Value;

use super::*;

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    depth: usize,
    roots: u8,
    /// What `#set($context....)` overrides.
    overrides: Vec<Override>,
    /// Variable names, by slot (one table for a template and the strings inside it).
    vars: Vec<String>,
}

/// What ended a block.
#[derive(Debug, PartialEq)]
enum Close {
    Eof,
    End,
    Else,
    ElseIf(Expr),
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl Template {
    /// Parses `src`. The error says what is wrong and where (a byte offset).
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut vars = Vec::new();
        let mut overrides = Vec::new();
        let (nodes, roots) = parse_in(src, &mut vars, 0, &mut overrides)?;
        Ok(Template {
            nodes,
            roots,
            overrides,
            slots: vars.len(),
            source: src.to_string(),
        })
    }
}

/// Parses `src` with the variable table `vars` (extended with the names it uses), `depth`
/// levels down already (a string inside an expression nests no deeper than the expression
/// may: the evaluator recurses through both).
fn parse_in(
    src: &str,
    vars: &mut Vec<String>,
    depth: usize,
    overrides: &mut Vec<Override>,
) -> Result<(Vec<Node>, u8), String> {
    let mut p = Parser {
        s: src.as_bytes(),
        src,
        i: 0,
        depth,
        roots: 0,
        overrides: std::mem::take(overrides),
        vars: std::mem::take(vars),
    };
    let out = p.block();
    *vars = std::mem::take(&mut p.vars);
    *overrides = std::mem::take(&mut p.overrides);
    let (nodes, end) = out?;
    match end {
        Close::Eof => Ok((nodes, p.roots)),
        _ => Err(format!(
            "#end, #else or #elseif without an opening directive at byte {}",
            p.i
        )),
    }
}

impl<'a> Parser<'a> {
    /// The slot of variable `name`.
    fn slot(&mut self, name: &str) -> usize {
        match self.vars.iter().position(|v| v == name) {
            Some(i) => i,
            None => {
                self.vars.push(name.to_string());
                self.vars.len() - 1
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at(&self, t: &str) -> bool {
        self.s[self.i..].starts_with(t.as_bytes())
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn block(&mut self) -> Result<(Vec<Node>, Close), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("directives nested too deeply");
        }
        let mut nodes = Vec::new();
        let mut text = String::new();
        let flush = |text: &mut String, nodes: &mut Vec<Node>| {
            if !text.is_empty() {
                nodes.push(Node::Text(std::mem::take(text)));
            }
        };
        while let Some(b) = self.peek() {
            match b {
                b'\\'
                    if self.s.get(self.i + 1) == Some(&b'$')
                        || self.s.get(self.i + 1) == Some(&b'#') =>
                {
                    text.push(self.s[self.i + 1] as char);
                    self.i += 2;
                }
                b'$' => match self.reference()? {
                    Some(n) => {
                        flush(&mut text, &mut nodes);
                        nodes.push(n);
                    }
                    None => {
                        text.push('$');
                        self.i += 1;
                    }
                },
                b'#' => {
                    if self.at("##") {
                        while let Some(c) = self.peek() {
                            self.i += 1;
                            if c == b'\n' {
                                break;
                            }
                        }
                        continue;
                    }
                    if self.at("#*") {
                        match self.src[self.i + 2..].find("*#") {
                            Some(n) => self.i += n + 4,
                            None => return self.err("unclosed #* comment"),
                        }
                        continue;
                    }
                    let name = self.directive_name();
                    match name.as_deref() {
                        Some("set") => {
                            flush(&mut text, &mut nodes);
                            nodes.push(self.set()?);
                        }
                        Some("if") => {
                            flush(&mut text, &mut nodes);
                            nodes.push(self.if_()?);
                        }
                        Some("foreach") => {
                            flush(&mut text, &mut nodes);
                            nodes.push(self.foreach()?);
                        }
                        Some("end") => {
                            flush(&mut text, &mut nodes);
                            self.depth -= 1;
                            return Ok((nodes, Close::End));
                        }
                        Some("else") => {
                            flush(&mut text, &mut nodes);
                            self.depth -= 1;
                            return Ok((nodes, Close::Else));
                        }
                        Some("elseif") => {
                            flush(&mut text, &mut nodes);
                            let cond = self.paren_expr()?;
                            self.depth -= 1;
                            return Ok((nodes, Close::ElseIf(cond)));
                        }
                        _ => {
                            text.push('#');
                            self.i += 1;
                        }
                    }
                }
                _ => {
                    let next = self.s[self.i..]
                        .iter()
                        .position(|&c| c == b'$' || c == b'#' || c == b'\\')
                        .map_or(self.s.len(), |n| self.i + n.max(1));
                    text.push_str(&self.src[self.i..next]);
                    self.i = next;
                }
            }
        }
        flush(&mut text, &mut nodes);
        self.depth -= 1;
        Ok((nodes, Close::Eof))
    }

    /// `#name` or `#{name}` of a known directive: consumes it and returns the name.
    fn directive_name(&mut self) -> Option<String> {
        let start = self.i;
        let mut j = self.i + 1;
        let braced = self.s.get(j) == Some(&b'{');
        if braced {
            j += 1;
        }
        let n0 = j;
        while self.s.get(j).is_some_and(|b| b.is_ascii_alphabetic()) {
            j += 1;
        }
        let name = &self.src[n0..j];
        if !matches!(name, "set" | "if" | "elseif" | "else" | "end" | "foreach") {
            return None;
        }
        if braced {
            if self.s.get(j) != Some(&b'}') {
                return None;
            }
            j += 1;
        }
        self.i = j;
        let _ = start;
        Some(name.to_string())
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", c as char))
        }
    }

    fn paren_expr(&mut self) -> Result<Expr, String> {
        self.expect(b'(')?;
        let e = self.expr()?;
        self.expect(b')')?;
        Ok(e)
    }

    fn set(&mut self) -> Result<Node, String> {
        self.expect(b'(')?;
        self.skip_ws();
        if self.peek() != Some(b'$') {
            return self.err("#set needs a $variable");
        }
        self.i += 1;
        if self.peek() == Some(b'{') {
            self.i += 1;
        }
        let var = self
            .ident()
            .ok_or_else(|| format!("#set needs a variable name at byte {}", self.i))?;
        if var == "context" && matches!(self.peek(), Some(b'.' | b'[')) {
            return self.set_override();
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
        }
        self.expect(b'=')?;
        let value = self.expr()?;
        self.expect(b')')?;
        // A directive alone on its line takes its line break with it.
        self.eat_newline();
        let var = self.slot(&var);
        Ok(Node::Set { var, value })
    }

    /// `#set($context.requestOverride.header.NAME = ...)` and the like (after `$context`):
    /// `.name` or `['name']` steps.
    fn set_override(&mut self) -> Result<Node, String> {
        let at = self.i;
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.i += 1;
                    // A header's name may hold '-' (`header.X-Why`): nothing is subtracted
                    // on this side of the '='.
                    let start = self.i;
                    while self.peek().is_some_and(ident_char) {
                        self.i += 1;
                    }
                    if self.i == start {
                        return self.err("a name after '.'");
                    }
                    path.push(self.src[start..self.i].to_string());
                }
                Some(b'[') => {
                    self.i += 1;
                    self.skip_ws();
                    let q = self.peek();
                    if !matches!(q, Some(b'\'' | b'"')) {
                        return self.err("a quoted name in [...]");
                    }
                    self.i += 1;
                    let end = self.src[self.i..]
                        .find(q.map_or('"', char::from))
                        .ok_or_else(|| format!("unclosed quote at byte {}", self.i))?;
                    path.push(self.src[self.i..self.i + end].to_string());
                    self.i += end + 1;
                    self.skip_ws();
                    self.expect(b']')?;
                }
                _ => break,
            }
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
        }
        let target = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["responseOverride", "status"] => Override::Status,
            ["responseOverride", "header", n] => Override::ResponseHeader(n.to_string()),
            ["requestOverride", "header", n] => Override::RequestHeader(n.to_string()),
            ["requestOverride", "querystring", n] => Override::RequestQuery(n.to_string()),
            ["requestOverride", "path", n] => Override::RequestPath(n.to_string()),
            _ => {
                return Err(format!(
                    "#set($context.{}) at byte {at}: only $context.requestOverride.header.NAME, .querystring.NAME and .path.NAME, and $context.responseOverride.status and .header.NAME can be set",
                    path.join(".")
                ))
            }
        };
        if let Override::ResponseHeader(n) | Override::RequestHeader(n) = &target {
            if n.is_empty() || !n.bytes().all(crate::syntax::is_tchar) {
                return Err(format!(
                    "#set($context...header.{n:?}) at byte {at}: not a header name"
                ));
            }
        }
        self.expect(b'=')?;
        let value = self.expr()?;
        self.expect(b')')?;
        self.eat_newline();
        self.overrides.push(target.clone());
        Ok(Node::Override { target, value })
    }

    fn eat_newline(&mut self) {
        let mut j = self.i;
        while self.s.get(j).is_some_and(|&b| b == b' ' || b == b'\t') {
            j += 1;
        }
        if self.s.get(j) == Some(&b'\n') {
            self.i = j + 1;
        } else if self.s[j..].starts_with(b"\r\n") {
            self.i = j + 2;
        }
    }

    fn if_(&mut self) -> Result<Node, String> {
        let mut cond = self.paren_expr()?;
        let mut branches = Vec::new();
        loop {
            let (body, end) = self.block()?;
            branches.push((cond, body));
            match end {
                Close::ElseIf(c) => cond = c,
                Close::Else => {
                    let (otherwise, end) = self.block()?;
                    if end != Close::End {
                        return self.err("#else without #end");
                    }
                    return Ok(Node::If {
                        branches,
                        otherwise,
                    });
                }
                Close::End => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                Close::Eof => return self.err("#if without #end"),
            }
        }
    }

    fn foreach(&mut self) -> Result<Node, String> {
        self.expect(b'(')?;
        self.skip_ws();
        if self.peek() != Some(b'$') {
            return self.err("#foreach needs a $variable");
        }
        self.i += 1;
        let var = self
            .ident()
            .ok_or_else(|| format!("#foreach needs a variable name at byte {}", self.i))?;
        self.skip_ws();
        if !self.at("in") {
            return self.err("expected 'in'");
        }
        self.i += 2;
        let list = self.expr()?;
        self.expect(b')')?;
        self.eat_newline();
        let (body, end) = self.block()?;
        if end != Close::End {
            return self.err("#foreach without #end");
        }
        let var = self.slot(&var);
        Ok(Node::Foreach { var, list, body })
    }

    fn ident(&mut self) -> Option<String> {
        if !self.peek().is_some_and(ident_start) {
            return None;
        }
        let start = self.i;
        while self.peek().is_some_and(|b| ident_char(b) && b != b'-') {
            self.i += 1;
        }
        Some(self.src[start..self.i].to_string())
    }

    /// A reference in text; `None` when the `$` starts none (it is then text).
    fn reference(&mut self) -> Result<Option<Node>, String> {
        let start = self.i;
        let mut j = self.i + 1;
        let quiet = self.s.get(j) == Some(&b'!');
        if quiet {
            j += 1;
        }
        let braced = self.s.get(j) == Some(&b'{');
        if braced {
            j += 1;
        }
        if !self.s.get(j).is_some_and(|&b| ident_start(b)) {
            return Ok(None);
        }
        self.i = j;
        let r = self.ref_body(!braced)?;
        if braced {
            if self.peek() != Some(b'}') {
                return self.err("unclosed ${");
            }
            self.i += 1;
        }
        Ok(Some(Node::Ref {
            r,
            quiet,
            source: self.src[start..self.i].to_string(),
        }))
    }

    /// The name and its steps, after `$`. `text`: in template text, where a `.` continues the
    /// reference only before a name.
    fn ref_body(&mut self, text: bool) -> Result<Ref, String> {
        let start = self.i;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let Some(root) = self.ident() else {
            return self.err("expected a name after $");
        };
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') if self.s.get(self.i + 1).is_some_and(|&b| ident_start(b)) => {
                    self.i += 1;
                    let name = self.ident().unwrap_or_default();
                    if self.peek() == Some(b'(') {
                        self.i += 1;
                        let args = self.args(b')')?;
                        steps.push(Step::Call(name, args));
                    } else {
                        steps.push(Step::Prop(name));
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let e = self.expr()?;
                    self.expect(b']')?;
                    steps.push(Step::Index(e));
                }
                _ => break,
            }
        }
        let _ = text;
        // Where the start is the `$`'s: a path or pattern the template spells out that
        // could never run is refused now, not with a 500 on every request.
        funcs::check_literals(&root, &steps)
            .map_err(|e| format!("{e} at byte {}", start.saturating_sub(1)))?;
        self.depth -= 1;
        self.roots |= match root.as_str() {
            "context" => READS_CONTEXT,
            "stageVariables" => READS_STAGE_VARIABLES,
            "input" if matches!(steps.first(), Some(Step::Call(m, _)) if m == "params") => {
                READS_PARAMS
            }
            "input" if matches!(steps.first(), Some(Step::Call(m, _)) if m == "json" || m == "path") => {
                READS_JSON
            }
            _ => 0,
        };
        let root = match root.as_str() {
            "input" => Root::Input,
            "util" => Root::Util,
            "context" => Root::Context,
            "stageVariables" => Root::StageVariables,
            "foreach" => Root::Foreach(self.slot("foreach")),
            "velocityCount" => Root::VelocityCount(self.slot("velocityCount")),
            name => Root::Var(self.slot(name)),
        };
        Ok(Ref { root, steps })
    }

    fn args(&mut self, close: u8) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(args);
                }
                _ => return self.err(&format!("expected ',' or '{}'", close as char)),
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let e = self.binary(0)?;
        self.depth -= 1;
        Ok(e)
    }

    fn op(&mut self, level: usize) -> Option<Op> {
        self.skip_ws();
        let table: &[(&str, Op)] = match level {
            0 => &[("||", Op::Or), ("or ", Op::Or)],
            1 => &[("&&", Op::And), ("and ", Op::And)],
            2 => &[
                ("==", Op::Eq),
                ("!=", Op::Ne),
                ("eq ", Op::Eq),
                ("ne ", Op::Ne),
            ],
            3 => &[
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("le ", Op::Le),
                ("ge ", Op::Ge),
                ("lt ", Op::Lt),
                ("gt ", Op::Gt),
            ],
            4 => &[("+", Op::Add), ("-", Op::Sub)],
            _ => &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Rem)],
        };
        for (t, op) in table {
            if self.at(t) {
                self.i += t.len();
                return Some(*op);
            }
        }
        None
    }

    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        if level > 5 {
            return self.unary();
        }
        let first = self.binary(level + 1)?;
        // Kept flat, not nested to the left: a chain as long as the template is long would
        // otherwise be a tree that deep, for the evaluator (and drop) to recurse through.
        let mut rest = Vec::new();
        while let Some(op) = self.op(level) {
            if rest.len() + 1 >= MAX_OPERANDS {
                return self.err(&format!(
                    "more than {MAX_OPERANDS} operands in one chain of operators"
                ));
            }
            rest.push((op, self.binary(level + 1)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Chain(Box::new(first), rest)
        })
    }

    /// Prefix operators nest as deeply as parentheses may (each is a level of the tree the
    /// evaluator walks).
    fn unary(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        let wrap: fn(Box<Expr>) -> Expr = if self.peek() == Some(b'!') {
            self.i += 1;
            Expr::Not
        } else if self.at("not ") {
            self.i += 4;
            Expr::Not
        } else if self.peek() == Some(b'-')
            && !self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit)
        {
            self.i += 1;
            Expr::Neg
        } else {
            return self.primary();
        };
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let e = wrap(Box::new(self.unary()?));
        self.depth -= 1;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                self.expect(b')')?;
                Ok(e)
            }
            Some(b'$') => {
                self.i += 1;
                if self.peek() == Some(b'!') {
                    self.i += 1;
                }
                let braced = self.peek() == Some(b'{');
                if braced {
                    self.i += 1;
                }
                let r = self.ref_body(false)?;
                if braced {
                    self.expect(b'}')?;
                }
                Ok(Expr::Ref(r))
            }
            Some(b'\'') => {
                self.i += 1;
                let end = self.src[self.i..]
                    .find('\'')
                    .ok_or_else(|| format!("unclosed ' at byte {}", self.i))?;
                let s = self.src[self.i..self.i + end].to_string();
                self.i += end + 1;
                Ok(Expr::Lit(Value::String(s)))
            }
            Some(b'"') => {
                self.i += 1;
                let end = self.src[self.i..]
                    .find('"')
                    .ok_or_else(|| format!("unclosed \" at byte {}", self.i))?;
                let inner = &self.src[self.i..self.i + end];
                self.i += end + 1;
                let (nodes, roots) =
                    parse_in(inner, &mut self.vars, self.depth, &mut self.overrides)?;
                self.roots |= roots;
                Ok(match nodes.as_slice() {
                    [] => Expr::Lit(Value::String(String::new())),
                    [Node::Text(s)] => Expr::Lit(Value::String(s.clone())),
                    _ => Expr::Interp(nodes),
                })
            }
            Some(b'[') => {
                self.i += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Expr::List(Vec::new()));
                }
                let first = self.expr()?;
                self.skip_ws();
                if self.at("..") {
                    self.i += 2;
                    let last = self.expr()?;
                    self.expect(b']')?;
                    return Ok(Expr::Range(Box::new(first), Box::new(last)));
                }
                let mut items = vec![first];
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            items.push(self.expr()?);
                        }
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Expr::List(items));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Expr::Map(entries));
                }
                loop {
                    let k = self.expr()?;
                    self.expect(b':')?;
                    let v = self.expr()?;
                    entries.push((k, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Expr::Map(entries));
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.peek().is_some_and(|c| {
                    c.is_ascii_digit()
                        || (c == b'.' && self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit))
                }) {
                    self.i += 1;
                }
                let t = &self.src[start..self.i];
                let v: Value = serde_json::from_str(t).map_err(|_| format!("bad number {t:?}"))?;
                Ok(Expr::Lit(v))
            }
            _ if self.at("true") => {
                self.i += 4;
                Ok(Expr::Lit(Value::Bool(true)))
            }
            _ if self.at("false") => {
                self.i += 5;
                Ok(Expr::Lit(Value::Bool(false)))
            }
            _ if self.at("null") => {
                self.i += 4;
                Ok(Expr::Lit(Value::Null))
            }
            _ => self.err("expected a value"),
        }
    }
}
