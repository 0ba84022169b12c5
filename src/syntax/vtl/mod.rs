//! Mapping templates: the part of Apache Velocity that Amazon API Gateway documents —
//! references (`$a.b`, `$!quiet`, `${a}`, indexes and method calls), `#set`, `#if` /
//! `#elseif` / `#else`, `#foreach` (with `$foreach.hasNext`, `$foreach.index`,
//! `$velocityCount`), comments — over JSON values, with `$input`, `$util`, `$context` and
//! `$stageVariables` supplied by the caller ([`Env`]).
//!
//! A template is parsed once at load ([`Template::parse`]), which refuses nesting deeper than
//! [`MAX_DEPTH`] and operator chains longer than [`MAX_OPERANDS`], so that no template can
//! take more than a fixed part of a shard's stack; an evaluation is bounded: each
//! `#foreach` runs at most [`MAX_LOOP`] times, the whole evaluation at most [`MAX_STEPS`]
//! steps, the output at most [`MAX_OUTPUT`] bytes, and the values it builds (lists, maps,
//! strings, copies: see [`Budget`]) at most [`MAX_BUILT`] bytes plus [`BUILT_PER_BODY_BYTE`]
//! per byte of body, and calls and comparisons read at most [`MAX_READ`] bytes plus
//! [`READ_PER_BODY_BYTE`] per byte of body — past any of them it stops with an error (the gateway answers 500), so a
//! template cannot hang a shard or take its memory.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Iterations of one `#foreach` (Amazon API Gateway's limit is 1,000).
pub(crate) const MAX_LOOP: usize = 1_000;
/// Nodes and expressions evaluated per template.
pub(crate) const MAX_STEPS: usize = 200_000;
/// Bytes a template may write.
pub(crate) const MAX_OUTPUT: usize = 4 << 20;
/// Bytes of values an evaluation may build besides its output, whatever the body (see
/// [`Budget`]).
pub(crate) const MAX_BUILT: usize = 16 << 20;
/// And per byte of body: a template may copy or split what it was given a few times over.
pub(crate) const BUILT_PER_BODY_BYTE: usize = 4;
/// Bytes of values calls and comparisons may go through, whatever the body (see [`Budget`]).
pub(crate) const MAX_READ: usize = 64 << 20;
/// And per byte of body: a template may read what it was given a few times over.
pub(crate) const READ_PER_BODY_BYTE: usize = 8;
/// Nesting of directives and expressions.
const MAX_DEPTH: usize = 64;
/// Operands of one chain of operators of the same precedence (`a + b - c ...`,
/// `x && y && ...`): far beyond what anyone writes, and under [`MAX_STEPS`], which a longer
/// chain would mostly spend. A chain is a list, so its length costs no stack.
const MAX_OPERANDS: usize = 10_000;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    /// What it reads besides the payload ([`READS_PARAMS`], [`READS_CONTEXT`],
    /// [`READS_STAGE_VARIABLES`]), so that callers build only that.
    roots: u8,
    /// What its `#set($context....)` override.
    overrides: Vec<Override>,
    /// How many variables it names (`#set`, `#foreach` and references: a slot each).
    slots: usize,
    /// The text it was parsed from (exports give it back).
    source: String,
}

pub(crate) const READS_PARAMS: u8 = 1;
pub(crate) const READS_CONTEXT: u8 = 2;
pub(crate) const READS_STAGE_VARIABLES: u8 = 4;
/// `$input.json` or `$input.path`: the payload parsed as JSON.
pub(crate) const READS_JSON: u8 = 8;

impl Template {
    /// Whether the template reads `$input.params`, `$context` or `$stageVariables` (bits).
    pub fn reads(&self, what: u8) -> bool {
        self.roots & what != 0
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it overrides any of `bits` ([`Override::bit`]).
    pub(crate) fn overrides(&self, bits: u8) -> bool {
        self.overrides.iter().any(|o| o.bit() & bits != 0)
    }

    /// The path variables it overrides.
    pub(crate) fn overridden_paths(&self) -> impl Iterator<Item = &str> {
        self.overrides.iter().filter_map(|o| match o {
            Override::RequestPath(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The headers it overrides (request or answer).
    pub(crate) fn overridden_headers(&self) -> impl Iterator<Item = &str> {
        self.overrides.iter().filter_map(|o| match o {
            Override::RequestHeader(n) | Override::ResponseHeader(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

/// What a JSONPath (`$.a.b`, `$['a'][0]`, `$.a[*]`) selects in `v` (`Err`: the path is not
/// one Tollgate reads).
pub(crate) fn select<'v>(v: &'v Value, path: &str) -> Result<Option<Cow<'v, Value>>, String> {
    funcs::json_path(v, path, usize::MAX)
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
        var: usize,
        value: Expr,
    },
    /// `#set($context.requestOverride....)`, `#set($context.responseOverride....)`.
    Override {
        target: Override,
        value: Expr,
    },
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Foreach {
        var: usize,
        list: Expr,
        body: Vec<Node>,
    },
}

/// `$root.a.b(args)[i]`.
#[derive(Debug, Clone, PartialEq)]
struct Ref {
    root: Root,
    steps: Vec<Step>,
}

/// What a reference starts from; variables by slot.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    Input,
    Util,
    Context,
    StageVariables,
    /// `$foreach` in a loop, else the variable of that name.
    Foreach(usize),
    /// `$velocityCount` in a loop, else the variable of that name.
    VelocityCount(usize),
    Var(usize),
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
    /// `first op1 x1 op2 x2 ...`, operators of one precedence, applied left to right.
    Chain(Box<Expr>, Vec<(Op, Expr)>),
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

mod budget;
mod funcs;
mod num;
mod overrides;
mod parse;
mod pattern;
#[cfg(test)]
mod tests;

pub(crate) use budget::{weight, Budget};
use funcs::{input_call, method, util_call};
use num::binary;
pub(crate) use overrides::{Override, Overrides, OVERRIDES_REQUEST, OVERRIDES_RESPONSE};

// --- evaluation ---------------------------------------------------------------------------

/// The start of a render's error when it read the JSON of a payload [`Env::not_json`] names.
pub(crate) const NOT_JSON: &str = "\u{0}not json: ";

/// What a template reads besides its own variables.
pub struct Env<'a> {
    /// The payload (`$input.body`), and its JSON (`$input.json`, `$input.path`) when it is.
    pub body: &'a str,
    pub json: Option<&'a Value>,
    /// Why the payload is not JSON where reading its JSON fails (a request template's 400)
    /// rather than reads `null`: the render's error is then [`NOT_JSON`] and this.
    pub not_json: Option<&'a str>,
    /// `$input.params()`: `{"path": {...}, "querystring": {...}, "header": {...}}`.
    pub params: &'a Value,
    /// `$context`.
    pub context: &'a Value,
    /// `$stageVariables`.
    pub stage_variables: &'a Value,
}

struct Eval<'t, 'e> {
    env: &'e Env<'e>,
    /// `#set` and `#foreach` variables: what they hold is borrowed from the payload or the
    /// environment where it can be, and copied only when a template builds a value.
    vars: Vec<Option<Slot<'e>>>,
    _t: std::marker::PhantomData<&'t ()>,
    steps: usize,
    out: String,
    built: Budget,
    /// The `#foreach` loops running: (index, length), innermost last.
    loops: Vec<(usize, usize)>,
    /// What `#set($context....Override....)` set.
    overrides: Overrides,
}

enum Slot<'e> {
    Owned(Value),
    Env(&'e Value),
}

static NULL: Value = Value::Null;

impl Template {
    /// Renders with `env`; `Err` when a limit is passed or a call fails.
    pub fn render(&self, env: &Env<'_>) -> Result<String, String> {
        self.render_overriding(env).map(|(out, _)| out)
    }

    /// Renders with `env`, and says what its `#set($context....Override....)` set.
    pub(crate) fn render_overriding(&self, env: &Env<'_>) -> Result<(String, Overrides), String> {
        let mut e = Eval {
            env,
            vars: (0..self.slots).map(|_| None).collect(),
            _t: std::marker::PhantomData,
            steps: 0,
            out: String::with_capacity(env.body.len().clamp(256, 64 << 10)),
            built: Budget::new(
                MAX_BUILT.saturating_add(env.body.len().saturating_mul(BUILT_PER_BODY_BYTE)),
                MAX_READ.saturating_add(env.body.len().saturating_mul(READ_PER_BODY_BYTE)),
            ),
            loops: Vec::new(),
            overrides: Overrides::default(),
        };
        e.nodes(&self.nodes)?;
        // What the last node wrote counts too (each tick checks what came before it).
        if e.out.len() > MAX_OUTPUT {
            return Err(format!("the template wrote more than {MAX_OUTPUT} bytes"));
        }
        Ok((e.out, e.overrides))
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
        // Integers as `Number`'s `Display` writes them, doubles as Java does.
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => out.push_str(itoa::Buffer::new().format(u)),
            (_, Some(i), _) => out.push_str(itoa::Buffer::new().format(i)),
            (_, _, Some(f)) => num::write_double(f, out),
            _ => {}
        },
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

/// A value as a position or a length (arithmetic reads operands with [`num::operand`]).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A position in a list or string: a whole number from 0 (a negative or fractional one finds
/// nothing, as Java's `get(-1)` would refuse it).
pub(super) fn index(n: f64) -> Option<usize> {
    (n >= 0.0 && n.fract() == 0.0 && n < usize::MAX as f64).then_some(n as usize)
}

impl<'t, 'e> Eval<'t, 'e> {
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

    fn nodes(&mut self, nodes: &'t [Node]) -> Result<(), String> {
        for n in nodes {
            self.tick()?;
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Ref { r, quiet, source } => {
                    if let Some(v) = self.plain(r)? {
                        match v {
                            Value::Null if *quiet => {}
                            Value::Null => self.out.push_str(source),
                            v => write_value(v, &mut self.out),
                        }
                        continue;
                    }
                    match self.reference(r)? {
                        Some(v) if !v.is_null() => write_value(&v, &mut self.out),
                        _ if *quiet => {}
                        _ => self.out.push_str(source),
                    }
                }
                Node::Override { target, value } => {
                    let v = self.expr(value)?;
                    let mut t = String::new();
                    write_value(&v, &mut t);
                    self.overrides.put(target.clone(), t)?;
                }
                Node::Set { var, value } => {
                    let v = match self.value(value)? {
                        Cow::Borrowed(v) => Slot::Env(v),
                        Cow::Owned(v) => Slot::Owned(v),
                    };
                    self.vars[*var] = Some(v);
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
                    let (var, none) = (*var, std::iter::empty());
                    match self.value(list)? {
                        Cow::Borrowed(Value::Array(a)) => {
                            self.each(var, body, a.len(), a.iter().map(Slot::Env))?
                        }
                        Cow::Borrowed(Value::Object(m)) => {
                            self.each(var, body, m.len(), m.values().map(Slot::Env))?
                        }
                        Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => {
                            self.each(var, body, 0, none)?
                        }
                        Cow::Borrowed(other) => {
                            self.each(var, body, 1, std::iter::once(Slot::Env(other)))?
                        }
                        Cow::Owned(Value::Array(a)) => {
                            self.each(var, body, a.len(), a.into_iter().map(Slot::Owned))?
                        }
                        Cow::Owned(Value::Object(m)) => {
                            let n = m.len();
                            self.each(var, body, n, m.into_iter().map(|(_, v)| Slot::Owned(v)))?
                        }
                        Cow::Owned(other) => {
                            self.each(var, body, 1, std::iter::once(Slot::Owned(other)))?
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs a `#foreach` body once per item (`n` of them) with the loop's variable set.
    fn each(
        &mut self,
        var: usize,
        body: &'t [Node],
        n: usize,
        items: impl Iterator<Item = Slot<'e>>,
    ) -> Result<(), String> {
        if n > MAX_LOOP {
            return Err(format!("#foreach over {n} items: at most {MAX_LOOP}"));
        }
        self.loops.push((0, n));
        for (i, item) in items.enumerate() {
            self.vars[var] = Some(item);
            if let Some(l) = self.loops.last_mut() {
                l.0 = i;
            }
            self.nodes(body)?;
        }
        self.loops.pop();
        Ok(())
    }

    /// A reference of properties only from a variable that borrows the environment (or from
    /// `$context`, `$stageVariables`) through objects: what it finds, borrowed (null when
    /// it is not there; `Ok(None)`: the reference needs [`Eval::reference`]).
    fn plain(&mut self, r: &'t Ref) -> Result<Option<&'e Value>, String> {
        let mut cur: &'e Value = match r.root {
            Root::Var(i) => match &self.vars[i] {
                Some(Slot::Env(v)) => v,
                _ => return Ok(None),
            },
            Root::Context => self.env.context,
            Root::StageVariables => self.env.stage_variables,
            _ => return Ok(None),
        };
        for s in &r.steps {
            match (s, cur) {
                (Step::Prop(p), Value::Object(m)) => cur = m.get(p).unwrap_or(&NULL),
                _ => return Ok(None),
            }
        }
        self.steps += r.steps.len();
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran past {MAX_STEPS} steps"));
        }
        Ok(Some(cur))
    }

    /// An expression's value, borrowed where it is a reference into the environment.
    fn value(&mut self, e: &'t Expr) -> Result<Cow<'e, Value>, String> {
        match e {
            Expr::Ref(r) => {
                self.tick()?;
                Ok(self.reference(r)?.unwrap_or(Cow::Owned(Value::Null)))
            }
            _ => self.expr(e).map(Cow::Owned),
        }
    }

    fn expr(&mut self, e: &'t Expr) -> Result<Value, String> {
        self.tick()?;
        const NODE: usize = std::mem::size_of::<Value>();
        Ok(match e {
            Expr::Lit(v) => {
                self.built.charge(weight(v))?;
                v.clone()
            }
            Expr::Interp(nodes) => {
                let saved = std::mem::take(&mut self.out);
                self.nodes(nodes)?;
                let s = std::mem::replace(&mut self.out, saved);
                self.built.charge(NODE + s.len())?;
                Value::String(s)
            }
            Expr::Ref(r) => match self.reference(r)? {
                None => Value::Null,
                Some(Cow::Owned(v)) => v,
                Some(Cow::Borrowed(v)) => {
                    self.built.charge(weight(v))?;
                    v.clone()
                }
            },
            // The items counted as they were made; the list itself here.
            Expr::List(items) => {
                self.built.charge(NODE)?;
                Value::Array(
                    items
                        .iter()
                        .map(|x| self.expr(x))
                        .collect::<Result<_, _>>()?,
                )
            }
            Expr::Map(entries) => {
                self.built.charge(NODE)?;
                let mut m = Map::new();
                for (k, v) in entries {
                    let k = text(&self.expr(k)?);
                    self.built.charge(NODE + k.len())?;
                    let v = self.expr(v)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            Expr::Range(a, b) => {
                let bound = |v: &Value| num::operand(v).map_or(0, num::Num::saturating_i64);
                let (a, b) = (bound(&self.expr(a)?), bound(&self.expr(b)?));
                // In i128: the bounds may be i64's extremes, whose difference overflows i64.
                if (b as i128 - a as i128).unsigned_abs() >= MAX_LOOP as u128 {
                    return Err(format!("range [{a}..{b}]: at most {MAX_LOOP} items"));
                }
                self.built
                    .charge(NODE * (1 + (b as i128 - a as i128).unsigned_abs() as usize))?;
                let items: Vec<Value> = if a <= b {
                    (a..=b).map(Value::from).collect()
                } else {
                    (b..=a).rev().map(Value::from).collect()
                };
                Value::Array(items)
            }
            Expr::Not(x) => Value::Bool(!truthy(&self.expr(x)?)),
            Expr::Neg(x) => num::negate(&self.expr(x)?),
            // A loop, not a recursion per operand: `((a op b) op c) ...` in constant stack.
            Expr::Chain(first, rest) => {
                let mut acc = self.expr(first)?;
                for (op, b) in rest {
                    // A step per operator, as when each was a node of its own.
                    self.tick()?;
                    acc = match op {
                        // Short-circuit as Velocity does.
                        Op::And if !truthy(&acc) => Value::Bool(false),
                        Op::Or if truthy(&acc) => Value::Bool(true),
                        _ => {
                            let b = self.expr(b)?;
                            // Compared or joined whole: what both hold is read.
                            if !matches!(op, Op::And | Op::Or) {
                                self.built.read(weight(&acc).saturating_add(weight(&b)))?;
                            }
                            // A string joined from the two, or a scalar.
                            self.built.made(binary(*op, &acc, &b))?
                        }
                    };
                }
                acc
            }
        })
    }

    fn reference(&mut self, r: &'t Ref) -> Result<Option<Cow<'e, Value>>, String> {
        let env = self.env;
        let steps = r.steps.as_slice();
        // Arguments first (they may need the evaluator), then a walk over borrowed values:
        // a reference copies only what it ends on, and only when that is not the payload's
        // or the environment's own.
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
        let base: Cow<'e, Value> = match r.root {
            Root::Input => match steps.first() {
                Some(Step::Prop(p)) if p == "body" => {
                    first = 1;
                    self.built.charge(env.body.len())?;
                    Cow::Owned(Value::String(env.body.to_string()))
                }
                Some(Step::Call(m, _)) => {
                    first = 1;
                    match input_call(env, m, arg(0), self.built.room())? {
                        Cow::Owned(v) => Cow::Owned(self.built.made(v)?),
                        b => b,
                    }
                }
                _ => return Ok(None),
            },
            Root::Util => match steps.first() {
                Some(Step::Call(m, _)) => {
                    first = 1;
                    Cow::Owned(self.built.made(util_call(m, arg(0))?)?)
                }
                _ => return Ok(None),
            },
            Root::Foreach(_) if !self.loops.is_empty() => {
                let (i, n) = *self.loops.last().unwrap_or(&(0, 0));
                let Some(Step::Prop(p)) = steps.first() else {
                    return Ok(None);
                };
                first = 1;
                Cow::Owned(match p.as_str() {
                    "hasNext" => Value::Bool(i + 1 < n),
                    "index" => Value::from(i),
                    "count" => Value::from(i + 1),
                    "first" => Value::Bool(i == 0),
                    "last" => Value::Bool(i + 1 == n),
                    _ => Value::Null,
                })
            }
            Root::VelocityCount(_) if !self.loops.is_empty() => {
                Cow::Owned(Value::from(self.loops.last().map_or(0, |l| l.0) + 1))
            }
            Root::Context => Cow::Borrowed(env.context),
            Root::StageVariables => Cow::Borrowed(env.stage_variables),
            Root::Var(i) | Root::Foreach(i) | Root::VelocityCount(i) => match &self.vars[i] {
                Some(Slot::Env(v)) => Cow::Borrowed(*v),
                Some(Slot::Owned(v)) => {
                    self.steps += steps.len();
                    if self.steps > MAX_STEPS {
                        return Err(format!("the template ran past {MAX_STEPS} steps"));
                    }
                    let v = match walk(Cow::Borrowed(v), steps, &args, 0, &mut self.built)? {
                        Cow::Owned(v) => v,
                        Cow::Borrowed(v) => {
                            self.built.charge(weight(v))?;
                            v.clone()
                        }
                    };
                    return Ok(Some(Cow::Owned(v)));
                }
                None => return Ok(None),
            },
        };
        let steps = &steps[first..];
        self.steps += steps.len();
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran past {MAX_STEPS} steps"));
        }
        walk(base, steps, &args, first, &mut self.built).map(Some)
    }
}

/// Follows a reference's properties, indexes and calls from `cur`, borrowing while it can;
/// what it makes (a method's result, an item copied out of a value made before) counts
/// against `built`.
fn walk<'v>(
    mut cur: Cow<'v, Value>,
    steps: &[Step],
    args: &[Vec<Value>],
    first: usize,
    built: &mut Budget,
) -> Result<Cow<'v, Value>, String> {
    for (k, s) in steps.iter().enumerate() {
        let a = args.get(first + k).map(Vec::as_slice).unwrap_or_default();
        cur = match (s, cur) {
            (Step::Prop(p), Cow::Borrowed(v)) => match v {
                Value::Object(m) => Cow::Borrowed(m.get(p).unwrap_or(&NULL)),
                // `$list.size` and the like: Velocity tries the getter.
                _ => Cow::Owned(method(v, p, &[], built)?.unwrap_or(Value::Null)),
            },
            (Step::Prop(p), Cow::Owned(v)) => Cow::Owned(match v {
                Value::Object(mut m) => m.remove(p.as_str()).unwrap_or(Value::Null),
                other => method(&other, p, &[], built)?.unwrap_or(Value::Null),
            }),
            (Step::Index(_), c) => {
                let i = a.first().unwrap_or(&NULL);
                match c {
                    Cow::Borrowed(v) => Cow::Borrowed(match v {
                        Value::Array(arr) => num(i)
                            .and_then(index)
                            .and_then(|n| arr.get(n))
                            .unwrap_or(&NULL),
                        Value::Object(m) => m.get(&text(i)).unwrap_or(&NULL),
                        _ => &NULL,
                    }),
                    Cow::Owned(v) => Cow::Owned(built.made(found_owned(&v, i))?),
                }
            }
            (Step::Call(m, _), c) => Cow::Owned(method(&c, m, a, built)?.unwrap_or(Value::Null)),
        };
    }
    Ok(cur)
}

/// What an index finds in an owned value.
fn found_owned(v: &Value, i: &Value) -> Value {
    match v {
        Value::Array(a) => num(i)
            .and_then(index)
            .and_then(|n| a.get(n))
            .cloned()
            .unwrap_or(Value::Null),
        Value::Object(m) => m.get(&text(i)).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}
