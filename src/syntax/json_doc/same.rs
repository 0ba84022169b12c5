//! JSON equality over a [`Doc`](super::Doc) in place, for `uniqueItems`, `const` and `enum`:
//! nothing is built. `uniqueItems` compares hashes of the elements, each node's hash made
//! once per document (lazily, on the first list checked), so that a recursive schema that
//! checks a list at every level of a deep body costs the body's size, not size × depth.

use std::sync::OnceLock;

use serde_json::{Number, Value};

use super::{after, name, DocNode, Item};

/// Hashes keyed once per process: a body cannot be made of colliding values.
fn keys() -> &'static ahash::RandomState {
    static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
    KEYS.get_or_init(ahash::RandomState::new)
}

/// Equal numbers (`1`, `1.0`, `-0`, `0`) hash alike.
fn number_bits(n: &Number) -> u64 {
    match n.as_f64() {
        // -0.0 == 0.0
        Some(f) => {
            if f == 0.0 {
                0
            } else {
                f.to_bits()
            }
        }
        None => 1,
    }
}

/// Every node's hash, by position; equal values hash alike (an object's members in name
/// order, as they are indexed).
pub(super) fn hashes(items: &[Item<'_>], keys_of: &[u32]) -> Vec<u64> {
    let k = keys();
    let mut h = vec![0u64; items.len()];
    // A node's descendants come after it: built from the end, each node finds its children's.
    for i in (0..items.len()).rev() {
        h[i] = match &items[i] {
            Item::Null | Item::Key(_) => k.hash_one(0u8),
            Item::Bool(b) => k.hash_one((1u8, *b)),
            Item::Num(n) => k.hash_one((2u8, number_bits(n))),
            Item::Str(s) => k.hash_one((3u8, &**s)),
            Item::Arr { len, .. } => {
                let mut acc = k.hash_one((4u8, *len));
                let mut c = i + 1;
                for _ in 0..*len {
                    acc = k.hash_one((acc, h[c]));
                    c = after(items, c);
                }
                acc
            }
            Item::Obj { len, keys, .. } => {
                let mut acc = k.hash_one((5u8, *len));
                for &p in &keys_of[*keys as usize..(*keys + *len) as usize] {
                    acc = k.hash_one((acc, name(items, p), h[p as usize + 1]));
                }
                acc
            }
        };
    }
    h
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// JSON equality of two nodes of one document (numbers mathematically).
pub(super) fn nodes_equal(a: DocNode<'_>, b: DocNode<'_>) -> bool {
    match (&a.items[a.i], &b.items[b.i]) {
        (Item::Null, Item::Null) => true,
        (Item::Bool(x), Item::Bool(y)) => x == y,
        (Item::Num(x), Item::Num(y)) => numbers_equal(x, y),
        (Item::Str(x), Item::Str(y)) => x == y,
        (Item::Arr { len: n, .. }, Item::Arr { len: m, .. }) => {
            n == m && {
                let (mut i, mut j) = (a.i + 1, b.i + 1);
                (0..*n).all(|_| {
                    let same = nodes_equal(a.at(i), b.at(j));
                    i = after(a.items, i);
                    j = after(b.items, j);
                    same
                })
            }
        }
        (Item::Obj { len: n, .. }, Item::Obj { len: m, .. }) => {
            // Names are sorted and distinct on both sides: equal objects list them alike.
            n == m
                && a.names().iter().zip(b.names()).all(|(&p, &q)| {
                    name(a.items, p) == name(b.items, q)
                        && nodes_equal(a.at(p as usize + 1), b.at(q as usize + 1))
                })
        }
        _ => false,
    }
}

/// JSON equality of a node and a value (`const`, `enum`).
pub(super) fn equals_value(a: DocNode<'_>, v: &Value) -> bool {
    match (&a.items[a.i], v) {
        (Item::Null, Value::Null) => true,
        (Item::Bool(x), Value::Bool(y)) => x == y,
        (Item::Num(x), Value::Number(y)) => numbers_equal(x, y),
        (Item::Str(x), Value::String(y)) => **x == **y,
        (Item::Arr { len, .. }, Value::Array(vs)) => {
            *len as usize == vs.len() && {
                let mut i = a.i + 1;
                vs.iter().all(|v| {
                    let same = equals_value(a.at(i), v);
                    i = after(a.items, i);
                    same
                })
            }
        }
        (Item::Obj { len, .. }, Value::Object(m)) => {
            *len as usize == m.len()
                && a.names().iter().all(|&p| {
                    m.get(name(a.items, p))
                        .is_some_and(|v| equals_value(a.at(p as usize + 1), v))
                })
        }
        _ => false,
    }
}

/// `uniqueItems` for the list at `list` (its elements' hashes sorted; equal hashes compared).
pub(super) fn unique(list: DocNode<'_>, all: &OnceLock<Vec<u64>>) -> bool {
    let n = list.len();
    if n < 2 {
        return true;
    }
    let h = all.get_or_init(|| hashes(list.items, list.keys));
    let mut at: Vec<(u64, usize)> = Vec::with_capacity(n);
    let mut c = list.i + 1;
    for _ in 0..n {
        at.push((h[c], c));
        c = after(list.items, c);
    }
    at.sort_unstable();
    for run in at.chunk_by(|x, y| x.0 == y.0) {
        for (j, x) in run.iter().enumerate() {
            if run[j + 1..]
                .iter()
                .any(|y| nodes_equal(list.at(x.1), list.at(y.1)))
            {
                return false;
            }
        }
    }
    true
}
