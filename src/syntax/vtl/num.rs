//! Operators and numbers as Velocity 1.7 (what Amazon API Gateway runs) has them: integers
//! stay integers (`+ - * / %` on two of them are exact, `/` and `%` truncate toward zero, as
//! Java's `long` arithmetic), an operand with a fraction makes the operation a `double` one,
//! division or remainder by zero is null, and a `double` is written as Java's
//! `Double.toString` writes it (`3.0`, `0.001`, `1.0E7`, `1.5E300`).
//!
//! Integers are computed in `i128` from the `i64` or `u64` that JSON numbers and literals hold;
//! a result outside `i64` and `u64` (past 18446744073709551615 or below
//! -9223372036854775808) becomes a `double`, where Velocity would keep a `BigInteger`. A
//! `double` result that is not finite (past 1.8E308) is null, where Java would write
//! `Infinity`: JSON has no such number.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::{text, truthy, Op};

/// A number an operator works on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    /// Velocity's `Integer`, `Long` (and the `BigInteger` a sum of two becomes).
    Int(i128),
    /// Velocity's `Double`.
    Float(f64),
}

impl Num {
    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// As a bound of `[a..b]`: a fraction cut off, beyond `i64` the nearest end of it.
    pub(super) fn saturating_i64(self) -> i64 {
        match self {
            Num::Int(i) => i.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            Num::Float(f) => f as i64,
        }
    }

    /// The value a result is.
    fn value(self) -> Value {
        match self {
            Num::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => Value::from(i),
                (_, Ok(u)) => Value::from(u),
                _ => Num::Float(i as f64).value(),
            },
            Num::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

/// `v` as an operand: a number as it is, and a string that reads as one (`'5' * 2` is 10, as
/// Tollgate has always read it; Velocity would say null).
pub(super) fn operand(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::Int(i.into()),
            (_, Some(u)) => Num::Int(u.into()),
            _ => Num::Float(n.as_f64()?),
        }),
        Value::String(s) => {
            let s = s.trim();
            match (s.parse::<i64>(), s.parse::<u64>()) {
                (Ok(i), _) => Some(Num::Int(i.into())),
                (_, Ok(u)) => Some(Num::Int(u.into())),
                _ => s.parse().ok().map(Num::Float),
            }
        }
        _ => None,
    }
}

/// `-x` (a value that is no number is taken as 0).
pub(super) fn negate(v: &Value) -> Value {
    match operand(v).unwrap_or(Num::Int(0)) {
        Num::Int(i) => Num::Int(-i).value(),
        Num::Float(f) => Num::Float(-f).value(),
    }
}

/// Exact for two integers, as doubles otherwise (as Velocity's `MathUtils.compare`).
fn compare(x: Num, y: Num) -> Option<Ordering> {
    match (x, y) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        _ => x.float().partial_cmp(&y.float()),
    }
}

/// `a op b` (`&&` and `||` here only once their left side did not decide them).
pub(super) fn binary(op: Op, a: &Value, b: &Value) -> Value {
    let eq = || match (operand(a), operand(b), a, b) {
        (Some(x), Some(y), Value::Number(_), _) | (Some(x), Some(y), _, Value::Number(_)) => {
            compare(x, y) == Some(Ordering::Equal)
        }
        _ => text(a) == text(b) && a.is_null() == b.is_null(),
    };
    match op {
        Op::Eq => Value::Bool(eq()),
        Op::Ne => Value::Bool(!eq()),
        Op::And => Value::Bool(truthy(a) && truthy(b)),
        Op::Or => Value::Bool(truthy(a) || truthy(b)),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ord = match (operand(a), operand(b)) {
                (Some(x), Some(y)) => compare(x, y),
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
        _ => match (operand(a), operand(b)) {
            (Some(x), Some(y)) => arithmetic(op, x, y),
            _ => Value::Null,
        },
    }
}

/// `+ - * / %` on two numbers.
fn arithmetic(op: Op, x: Num, y: Num) -> Value {
    if let (Num::Int(a), Num::Int(b)) = (x, y) {
        // From 64-bit operands only a product can pass i128; it is a double then.
        let r = match op {
            Op::Div | Op::Rem if b == 0 => return Value::Null,
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div => a.checked_div(b),
            _ => a.checked_rem(b),
        };
        if let Some(r) = r {
            return Num::Int(r).value();
        }
    }
    let (a, b) = (x.float(), y.float());
    Num::Float(match op {
        Op::Div | Op::Rem if b == 0.0 => return Value::Null,
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div => a / b,
        // Java's `%` on doubles: the sign of the dividend, as Rust's.
        _ => a % b,
    })
    .value()
}

/// A finite `f` as Java's `Double.toString` writes it: from 10^-3 up to 10^7 in plain notation
/// with at least one digit after the point, else as `d.dddE±n`, with the shortest digits that
/// read back as `f` (where those are one digit, Java 19 may choose a closer two: the smallest
/// double is `4.9E-324` there, `5.0E-324` here).
pub(super) fn write_double(f: f64, out: &mut String) {
    let mut buf = zmij::Buffer::new();
    // The shortest digits, as `1.5e+300`, `5e-324`, `0.001` or `249.99`.
    let s = buf.format_finite(f);
    let (s, neg) = match s.strip_prefix('-') {
        Some(s) => (s, true),
        None => (s, false),
    };
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The significant digits d1 d2 ... and the power of ten of d1.
    let all = int.bytes().chain(frac.bytes());
    let lead = all.clone().take_while(|&d| d == b'0').count();
    let mut digits: Vec<u8> = all.skip(lead).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if neg {
        out.push('-');
    }
    if digits.is_empty() {
        out.push_str("0.0");
        return;
    }
    let e = int.len() as i32 - lead as i32 - 1 + exp;
    let put = |out: &mut String, d: &[u8]| out.extend(d.iter().map(|&b| b as char));
    if (-3..7).contains(&e) {
        if e < 0 {
            out.push_str("0.");
            (0..-e - 1).for_each(|_| out.push('0'));
            put(out, &digits);
        } else {
            let n = e as usize + 1;
            put(out, &digits[..n.min(digits.len())]);
            (digits.len()..n).for_each(|_| out.push('0'));
            out.push('.');
            match digits.get(n..) {
                Some(rest) if !rest.is_empty() => put(out, rest),
                _ => out.push('0'),
            }
        }
    } else {
        put(out, &digits[..1]);
        out.push('.');
        match &digits[1..] {
            [] => out.push('0'),
            rest => put(out, rest),
        }
        out.push('E');
        out.push_str(itoa::Buffer::new().format(e));
    }
}
