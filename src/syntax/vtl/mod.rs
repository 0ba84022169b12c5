//! Mapping templates: the part of Apache Velocity that Amazon API Gateway documents —
//! references (`$a.b`, `$!quiet`, `${a}`, indexes and method calls), `#set`, `#if` /
//! `#elseif` / `#else`, `#foreach` (with `$foreach.hasNext`, `$foreach.index`,
//! `$velocityCount`), comments — over JSON values, with `$input`, `$util`, `$context` and
//! `$stageVariables` supplied by the caller ([`Env`]).
//!
//! A template is parsed once at load ([`Template::parse`]); an evaluation is bounded: each
//! `#foreach` runs at most [`MAX_LOOP`] times, the whole evaluation at most [`MAX_STEPS`]
//! steps, and the output at most [`MAX_OUTPUT`] bytes — past any of them it stops with an
//! error (the gateway answers 500), so a template cannot hang a shard.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// Iterations of one `#foreach` (Amazon API Gateway's limit is 1,000).
pub(crate) const MAX_LOOP: usize = 1_000;
/// Nodes and expressions evaluated per template.
pub(crate) const MAX_STEPS: usize = 200_000;
/// Bytes a template may write.
pub(crate) const MAX_OUTPUT: usize = 4 << 20;
/// Nesting of directives and expressions.
const MAX_DEPTH: usize = 64;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    /// What it reads besides the payload ([`READS_PARAMS`], [`READS_CONTEXT`],
    /// [`READS_STAGE_VARIABLES`]), so that callers build only that.
    roots: u8,
}

pub(crate) const READS_PARAMS: u8 = 1;
pub(crate) const READS_CONTEXT: u8 = 2;
pub(crate) const READS_STAGE_VARIABLES: u8 = 4;

impl Template {
    /// Whether the template reads `$input.params`, `$context` or `$stageVariables` (bits).
    pub fn reads(&self, what: u8) -> bool {
        self.roots & what != 0
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Ref {
        r: Ref,
        quiet: bool,
        source: String,
    },
    Set {
        var: String,
        value: Expr,
    },
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Foreach {
        var: String,
        list: Expr,
        body: Vec<Node>,
    },
}

/// `$root.a.b(args)[i]`.
#[derive(Debug, Clone, PartialEq)]
struct Ref {
    root: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Prop(String),
    Call(String, Vec<Expr>),
    Index(Expr),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    /// A double-quoted string: text with references.
    Interp(Vec<Node>),
    Ref(Ref),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Range(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

mod funcs;
mod parse;
#[cfg(test)]
mod tests;

use funcs::{input_call, method, util_call};

// --- evaluation ---------------------------------------------------------------------------

/// What a template reads besides its own variables.
pub struct Env<'a> {
    /// The payload (`$input.body`), and its JSON (`$input.json`, `$input.path`) when it is.
    pub body: &'a str,
    pub json: Option<&'a Value>,
    /// `$input.params()`: `{"path": {...}, "querystring": {...}, "header": {...}}`.
    pub params: &'a Value,
    /// `$context`.
    pub context: &'a Value,
    /// `$stageVariables`.
    pub stage_variables: &'a Value,
}

struct Eval<'a, 'e> {
    env: &'a Env<'e>,
    vars: BTreeMap<String, Value>,
    steps: usize,
    out: String,
    /// The `#foreach` loops running: (index, length), innermost last.
    loops: Vec<(usize, usize)>,
}

static NULL: Value = Value::Null;

impl Template {
    /// Renders with `env`; `Err` when a limit is passed or a call fails.
    pub fn render(&self, env: &Env<'_>) -> Result<String, String> {
        let mut e = Eval {
            env,
            vars: BTreeMap::new(),
            steps: 0,
            out: String::new(),
            loops: Vec::new(),
        };
        e.nodes(&self.nodes)?;
        Ok(e.out)
    }
}

/// Velocity's truth: false, null and undefined are false; everything else true.
fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

/// A value as Velocity writes it (maps and lists as Java prints them).
fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                write_value(x, out);
            }
            out.push('}');
        }
    }
}

fn text(v: &Value) -> String {
    let mut s = String::new();
    write_value(v, &mut s);
    s
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

impl Eval<'_, '_> {
    fn tick(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran past {MAX_STEPS} steps"));
        }
        if self.out.len() > MAX_OUTPUT {
            return Err(format!("the template wrote more than {MAX_OUTPUT} bytes"));
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.tick()?;
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Ref { r, quiet, source } => match self.reference(r)? {
                    Some(v) if !v.is_null() => write_value(&v, &mut self.out),
                    _ if *quiet => {}
                    _ => self.out.push_str(source),
                },
                Node::Set { var, value } => {
                    let v = self.expr(value)?;
                    self.vars.insert(var.clone(), v);
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mut done = false;
                    for (cond, body) in branches {
                        if truthy(&self.expr(cond)?) {
                            self.nodes(body)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.nodes(otherwise)?;
                    }
                }
                Node::Foreach { var, list, body } => {
                    let items: Vec<Value> = match self.expr(list)? {
                        Value::Array(a) => a,
                        Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    if items.len() > MAX_LOOP {
                        return Err(format!(
                            "#foreach over {} items: at most {MAX_LOOP}",
                            items.len()
                        ));
                    }
                    let n = items.len();
                    self.loops.push((0, n));
                    for (i, item) in items.into_iter().enumerate() {
                        self.vars.insert(var.clone(), item);
                        if let Some(l) = self.loops.last_mut() {
                            l.0 = i;
                        }
                        self.nodes(body)?;
                    }
                    self.loops.pop();
                }
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, String> {
        self.tick()?;
        Ok(match e {
            Expr::Lit(v) => v.clone(),
            Expr::Interp(nodes) => {
                let saved = std::mem::take(&mut self.out);
                self.nodes(nodes)?;
                Value::String(std::mem::replace(&mut self.out, saved))
            }
            Expr::Ref(r) => self.reference(r)?.unwrap_or(Value::Null),
            Expr::List(items) => Value::Array(
                items
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    let k = text(&self.expr(k)?);
                    let v = self.expr(v)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            Expr::Range(a, b) => {
                let (a, b) = (
                    num(&self.expr(a)?).unwrap_or(0.0) as i64,
                    num(&self.expr(b)?).unwrap_or(0.0) as i64,
                );
                if (b - a).unsigned_abs() as usize >= MAX_LOOP {
                    return Err(format!("range [{a}..{b}]: at most {MAX_LOOP} items"));
                }
                let items: Vec<Value> = if a <= b {
                    (a..=b).map(Value::from).collect()
                } else {
                    (b..=a).rev().map(Value::from).collect()
                };
                Value::Array(items)
            }
            Expr::Not(x) => Value::Bool(!truthy(&self.expr(x)?)),
            Expr::Neg(x) => number(-num(&self.expr(x)?).unwrap_or(0.0)),
            Expr::Bin(op, a, b) => {
                let a = self.expr(a)?;
                // Short-circuit as Velocity does.
                if *op == Op::And && !truthy(&a) {
                    return Ok(Value::Bool(false));
                }
                if *op == Op::Or && truthy(&a) {
                    return Ok(Value::Bool(true));
                }
                let b = self.expr(b)?;
                binary(*op, &a, &b)
            }
        })
    }

    fn reference(&mut self, r: &Ref) -> Result<Option<Value>, String> {
        let env = self.env;
        let mut steps = r.steps.as_slice();
        // Arguments first (they may need the evaluator), then a walk over borrowed values:
        // a reference clones only what it ends on.
        let mut args: Vec<Vec<Value>> = Vec::new();
        if steps.iter().any(|s| !matches!(s, Step::Prop(_))) {
            for s in steps {
                args.push(match s {
                    Step::Prop(_) => Vec::new(),
                    Step::Index(e) => vec![self.expr(e)?],
                    Step::Call(_, a) => a.iter().map(|x| self.expr(x)).collect::<Result<_, _>>()?,
                });
            }
        }
        let arg = |i: usize| args.get(i).map(Vec::as_slice).unwrap_or_default();
        let mut first = 0;
        let base: std::borrow::Cow<'_, Value> = match r.root.as_str() {
            "input" => match steps.first() {
                Some(Step::Prop(p)) if p == "body" => {
                    first = 1;
                    std::borrow::Cow::Owned(Value::String(env.body.to_string()))
                }
                Some(Step::Call(m, _)) => {
                    first = 1;
                    std::borrow::Cow::Owned(input_call(env, m, arg(0))?)
                }
                _ => return Ok(None),
            },
            "util" => match steps.first() {
                Some(Step::Call(m, _)) => {
                    first = 1;
                    std::borrow::Cow::Owned(util_call(m, arg(0))?)
                }
                _ => return Ok(None),
            },
            "foreach" if !self.loops.is_empty() => {
                let (i, n) = *self.loops.last().unwrap_or(&(0, 0));
                let Some(Step::Prop(p)) = steps.first() else {
                    return Ok(None);
                };
                first = 1;
                std::borrow::Cow::Owned(match p.as_str() {
                    "hasNext" => Value::Bool(i + 1 < n),
                    "index" => Value::from(i),
                    "count" => Value::from(i + 1),
                    "first" => Value::Bool(i == 0),
                    "last" => Value::Bool(i + 1 == n),
                    _ => Value::Null,
                })
            }
            "velocityCount" if !self.loops.is_empty() => {
                std::borrow::Cow::Owned(Value::from(self.loops.last().map_or(0, |l| l.0) + 1))
            }
            "context" => std::borrow::Cow::Borrowed(env.context),
            "stageVariables" => std::borrow::Cow::Borrowed(env.stage_variables),
            name => match self.vars.get(name) {
                Some(v) => std::borrow::Cow::Borrowed(v),
                None => return Ok(None),
            },
        };
        steps = &steps[first..];
        self.steps += steps.len();
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran past {MAX_STEPS} steps"));
        }
        let mut cur = base;
        for (k, s) in steps.iter().enumerate() {
            let a = arg(first + k);
            cur = match (s, cur) {
                (Step::Prop(p), std::borrow::Cow::Borrowed(v)) => match v {
                    Value::Object(m) => std::borrow::Cow::Borrowed(m.get(p).unwrap_or(&NULL)),
                    // `$list.size` and the like: Velocity tries the getter.
                    _ => std::borrow::Cow::Owned(method(v, p, &[])?.unwrap_or(Value::Null)),
                },
                (Step::Prop(p), std::borrow::Cow::Owned(v)) => std::borrow::Cow::Owned(match v {
                    Value::Object(mut m) => m.remove(p.as_str()).unwrap_or(Value::Null),
                    other => method(&other, p, &[])?.unwrap_or(Value::Null),
                }),
                (Step::Index(_), c) => {
                    let i = a.first().unwrap_or(&NULL);
                    match c {
                        std::borrow::Cow::Borrowed(v) => std::borrow::Cow::Borrowed(match v {
                            Value::Array(arr) => {
                                num(i).and_then(|n| arr.get(n as usize)).unwrap_or(&NULL)
                            }
                            Value::Object(m) => m.get(&text(i)).unwrap_or(&NULL),
                            _ => &NULL,
                        }),
                        std::borrow::Cow::Owned(v) => std::borrow::Cow::Owned(found_owned(&v, i)),
                    }
                }
                (Step::Call(m, _), c) => {
                    std::borrow::Cow::Owned(method(&c, m, a)?.unwrap_or(Value::Null))
                }
            };
        }
        Ok(Some(cur.into_owned()))
    }
}

/// What an index finds in an owned value.
fn found_owned(v: &Value, i: &Value) -> Value {
    match v {
        Value::Array(a) => num(i)
            .and_then(|n| a.get(n as usize))
            .cloned()
            .unwrap_or(Value::Null),
        Value::Object(m) => m.get(&text(i)).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn binary(op: Op, a: &Value, b: &Value) -> Value {
    let eq = || match (num(a), num(b), a, b) {
        (Some(x), Some(y), Value::Number(_), _) | (Some(x), Some(y), _, Value::Number(_)) => x == y,
        _ => text(a) == text(b) && a.is_null() == b.is_null(),
    };
    match op {
        Op::Eq => Value::Bool(eq()),
        Op::Ne => Value::Bool(!eq()),
        Op::And => Value::Bool(truthy(a) && truthy(b)),
        Op::Or => Value::Bool(truthy(a) || truthy(b)),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ord = match (num(a), num(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => Some(text(a).cmp(&text(b))),
            };
            let Some(o) = ord else {
                return Value::Bool(false);
            };
            Value::Bool(match op {
                Op::Lt => o.is_lt(),
                Op::Le => o.is_le(),
                Op::Gt => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        Op::Add if !(matches!(a, Value::Number(_)) && matches!(b, Value::Number(_))) => {
            Value::String(text(a) + &text(b))
        }
        _ => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return Value::Null;
            };
            let int = a.as_i64().is_some() && b.as_i64().is_some();
            match op {
                Op::Add => number(x + y),
                Op::Sub => number(x - y),
                Op::Mul => number(x * y),
                Op::Div if y == 0.0 => Value::Null,
                Op::Div if int => number((x / y).trunc()),
                Op::Div => number(x / y),
                Op::Rem if y == 0.0 => Value::Null,
                _ => number(x % y),
            }
        }
    }
}
