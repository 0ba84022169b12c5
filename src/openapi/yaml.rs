//! A YAML document as a JSON value, for OpenAPI import. One document; plain scalars read by
//! YAML 1.2's core schema (null, booleans, integers, floats, else strings), quoted ones as
//! strings (integers are decimal: `0x1f` stays text); mapping keys as written (`200:` is the
//! key "200", as OpenAPI means it). Anchors and aliases are expanded with two bounds, checked
//! before a copy is made: the nodes the whole value may hold, and the bytes of text it may
//! hold ([`EXPANSION`] of the input), so a small document cannot make the admin
//! server build an unbounded one — neither a "billion laughs" of many small nodes nor a few
//! aliases of one long string; nesting is bounded too.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// The most nodes (scalars, sequences, mappings; an alias counts what it expands to).
pub const MAX_NODES: usize = 500_000;
/// The text a document may expand to with its aliases: 16 times its size, at least 16 MiB
/// (room for anchors in small documents), at most 64 MiB (twice the admin API's largest
/// body), whatever its size.
pub(crate) const EXPANSION: super::Growth = super::Growth {
    factor: 16,
    min: 16 << 20,
    max: 64 << 20,
};
/// What a node costs in the byte bound besides its text, so that empty scalars count too.
const NODE_BYTES: usize = 1;
/// The deepest nesting: a JSON body's (what the state store reads back keeps a definition
/// within serde_json's 128 levels, its record's own included).
pub const MAX_DEPTH: usize = crate::syntax::json_strict::MAX_DEPTH;

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        start: Size,
    },
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        /// `<<` merge keys' values, applied at the end (explicit keys win).
        merged: Vec<Value>,
        anchor: usize,
        start: Size,
    },
}

/// How much of the bounds a value takes: its nodes, and its text in bytes (scalars, keys
/// included, plus [`NODE_BYTES`] a node).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

struct Builder {
    stack: Vec<Frame>,
    /// An anchored value and what it counts each time an alias repeats it.
    anchors: HashMap<usize, (Value, Size)>,
    /// What the value built so far holds, aliases expanded and anchors' copies included.
    used: Size,
    /// The most bytes `used` may reach (from the input's size).
    max_bytes: usize,
    root: Option<Value>,
}

impl Builder {
    /// Counts `n` before it is built: `Err` when the value would pass either bound.
    fn count(&mut self, n: Size) -> Result<(), String> {
        self.used.nodes = self.used.nodes.saturating_add(n.nodes);
        self.used.bytes = self.used.bytes.saturating_add(n.bytes);
        if self.used.nodes > MAX_NODES {
            return Err(format!(
                "the document expands to more than {MAX_NODES} nodes (anchors and aliases included)"
            ));
        }
        if self.used.bytes > self.max_bytes {
            return Err(format!(
                "the document expands to more than {} of text with its aliases expanded (the bound: {}): refused, not built",
                super::mib(self.max_bytes),
                EXPANSION.rule(),
            ));
        }
        Ok(())
    }

    /// What has been counted since `start`.
    fn since(&self, start: Size) -> Size {
        Size {
            nodes: self.used.nodes - start.nodes,
            bytes: self.used.bytes - start.bytes,
        }
    }

    /// A finished value where it belongs: the root, a sequence's item, a mapping's value.
    fn put(&mut self, v: Value) -> Result<(), String> {
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq { items, .. }) => items.push(v),
            Some(Frame::Map {
                map, key, merged, ..
            }) => match key.take() {
                Some(k) if k == "<<" => merged.push(v),
                Some(k) => {
                    if map.contains_key(&k) {
                        return Err(format!("the key {k:?} appears twice in one mapping"));
                    }
                    map.insert(k, v);
                }
                None => match v {
                    Value::String(s) => *key = Some(s),
                    Value::Number(n) => *key = Some(n.to_string()),
                    Value::Bool(b) => *key = Some(b.to_string()),
                    _ => return Err("a mapping's keys must be scalars".into()),
                },
            },
        }
        Ok(())
    }

    /// Whether the next scalar is a mapping's key (read as written).
    fn at_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn open(&mut self, f: Frame) -> Result<(), String> {
        self.count(Size {
            nodes: 1,
            bytes: NODE_BYTES,
        })?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("the document nests deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(f);
        Ok(())
    }

    fn close(&mut self) -> Result<(), String> {
        let (v, anchor, start) = match self.stack.pop() {
            Some(Frame::Seq {
                items,
                anchor,
                start,
            }) => (Value::Array(items), anchor, start),
            Some(Frame::Map {
                mut map,
                merged,
                anchor,
                start,
                ..
            }) => {
                // `<<: *a` or `<<: [*a, *b]`: the earlier mapping wins, explicit keys over all.
                for m in merged {
                    let list = match m {
                        Value::Array(l) => l,
                        other => vec![other],
                    };
                    for one in list {
                        let Value::Object(o) = one else {
                            return Err("a merge key (<<) takes a mapping or a list of them".into());
                        };
                        for (k, v) in o {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
                (Value::Object(map), anchor, start)
            }
            None => return Err("unbalanced document".into()),
        };
        let size = self.since(start);
        self.anchor(anchor, &v, size)?;
        self.put(v)
    }

    /// Keeps a copy of an anchored value for its aliases; the copy counts too (nodes and
    /// bytes, before it is made), so nested anchors cannot multiply memory past the bounds.
    fn anchor(&mut self, id: usize, v: &Value, size: Size) -> Result<(), String> {
        if id > 0 {
            self.count(size)?;
            self.anchors.insert(id, (v.clone(), size));
        }
        Ok(())
    }

    /// An alias: what its anchor holds is counted first, and copied only within the bounds.
    fn alias(&mut self, id: usize) -> Result<(), String> {
        let size = self
            .anchors
            .get(&id)
            .map(|(_, size)| *size)
            .ok_or("an alias names no anchor")?;
        self.count(size)?;
        let v = self.anchors.get(&id).map(|(v, _)| v.clone());
        self.put(v.unwrap_or(Value::Null))
    }
}

fn is_str_tag(tag: &Option<Tag>) -> bool {
    tag.as_ref().is_some_and(|t| {
        t.suffix == "str" && (t.handle == "tag:yaml.org,2002:" || t.handle == "!!")
    })
}

/// A plain scalar by the core schema.
fn plain(s: String) -> Result<Value, String> {
    Ok(match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Number(i.into())
            } else if let Ok(u) = s.parse::<u64>() {
                Value::Number(u.into())
            } else if let Some(n) = float(&s) {
                match Number::from_f64(n) {
                    Some(n) => Value::Number(n),
                    None => return Err(format!("{s:?} has no JSON value (infinity or NaN)")),
                }
            } else {
                Value::String(s)
            }
        }
    })
}

/// A core-schema float: digits with a point or an exponent, or `.inf`/`.nan`.
fn float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let ok = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// The document in `text` as JSON; `Err` says what is wrong and where.
pub fn to_json(text: &str) -> Result<Value, String> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        used: Size::default(),
        max_bytes: EXPANSION.budget(text.len()),
        root: None,
    };
    let mut documents = 0;
    loop {
        let (ev, mark) = parser
            .next_token()
            .map_err(|e| format!("invalid YAML: {e}"))?;
        let at = |e: String| format!("{e} (line {}, column {})", mark.line(), mark.col() + 1);
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(at("one YAML document expected, found more".into()));
                }
            }
            Event::SequenceStart(anchor, _) => b
                .open(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    start: b.used,
                })
                .map_err(at)?,
            Event::MappingStart(anchor, _) => b
                .open(Frame::Map {
                    map: Map::new(),
                    key: None,
                    merged: Vec::new(),
                    anchor,
                    start: b.used,
                })
                .map_err(at)?,
            Event::SequenceEnd | Event::MappingEnd => b.close().map_err(at)?,
            Event::Scalar(s, style, anchor, tag) => {
                let size = Size {
                    nodes: 1,
                    bytes: s.len() + NODE_BYTES,
                };
                b.count(size).map_err(at)?;
                let v = if b.at_key() || style != TScalarStyle::Plain || is_str_tag(&tag) {
                    Value::String(s)
                } else {
                    plain(s).map_err(at)?
                };
                b.anchor(anchor, &v, size).map_err(at)?;
                b.put(v).map_err(at)?;
            }
            Event::Alias(id) => b.alias(id).map_err(at)?,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    b.root
        .ok_or_else(|| "the YAML document is empty".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_openapi_documents_use() {
        let doc = "openapi: 3.0.1\ninfo:\n  title: Pets\n  version: '1.0'\npaths:\n  /pets/{id}:\n    get:\n      parameters:\n        - name: id\n          in: path\n          required: true\n      responses:\n        200:\n          description: ok\n        default: {description: \"err\"}\n      x-n: [1, 2.5, -3, null, ~, true, 'true', 0x1f]\n";
        let v = to_json(doc).unwrap();
        assert_eq!(v["openapi"], "3.0.1");
        assert_eq!(v["info"]["version"], "1.0");
        let get = &v["paths"]["/pets/{id}"]["get"];
        assert_eq!(get["parameters"][0]["required"], true);
        assert_eq!(get["responses"]["200"]["description"], "ok");
        assert_eq!(get["responses"]["default"]["description"], "err");
        assert_eq!(
            get["x-n"],
            json!([1, 2.5, -3, null, null, true, "true", "0x1f"])
        );
    }

    #[test]
    fn anchors_expand_within_a_bound() {
        let v = to_json("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(v["b"]["k"], "v");
        // Each level doubles the one before: 2^30 nodes from a few hundred bytes.
        let mut doc = String::from("l0: &l0 [x, x]\n");
        for i in 1..30 {
            doc.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
        }
        let e = to_json(&doc).unwrap_err();
        assert!(e.contains("more than 500000 nodes"), "{e}");
    }

    #[test]
    fn aliases_of_long_text_are_bounded_by_bytes() {
        // Few nodes, much text: a 1 MB string repeated by aliases.
        let long = "x".repeat(1_000_000);
        let doc = |n: usize| format!("a: &a \"{long}\"\nb: [{}]\n", vec!["*a"; n].join(","));
        // Within 16 MiB (more than 16 times this input): built.
        let v = to_json(&doc(10)).unwrap();
        assert_eq!(v["b"].as_array().unwrap().len(), 10);
        let e = to_json(&doc(1000)).unwrap_err();
        assert!(e.contains("more than 16 MiB of text"), "{e}");
        assert!(e.contains("16 times the document's size"), "{e}");
        // The anchor's copy counts too, so it cannot be used to double what the bound allows.
        let e = to_json(&doc(16)).unwrap_err();
        assert!(e.contains("more than 16 MiB"), "{e}");
        // The budget grows with the input: 16 times a 2 MB document is 32 MB.
        let big = format!("pad: \"{}\"\n{}", "y".repeat(1_000_000), doc(20));
        assert_eq!(to_json(&big).unwrap()["b"].as_array().unwrap().len(), 20);
        assert_eq!(EXPANSION.budget(2_000_000), 32_000_000);
        assert_eq!(EXPANSION.budget(10), 16 << 20);
        assert_eq!(EXPANSION.budget(32 << 20), 64 << 20);
    }

    #[test]
    fn merge_keys_and_nested_anchors() {
        let v = to_json("base: &b {type: http, uri: x}\nop: {<<: *b, uri: y}\n").unwrap();
        assert_eq!(v["op"], json!({"type": "http", "uri": "y"}));
        // Anchors nested inside each other each keep a copy: counted, so refused in time.
        let mut doc = String::from("l0: &l0 [x, x]\n");
        for i in 1..16 {
            doc.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
        }
        doc.push_str("w: ");
        for i in 0..120 {
            doc.push_str(&format!("&w{i} ["));
        }
        doc.push_str("*l15");
        doc.push_str(&"]".repeat(120));
        doc.push('\n');
        let e = to_json(&doc).unwrap_err();
        assert!(e.contains("more than 500000 nodes"), "{e}");
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        assert!(to_json("a: [1, 2\n").unwrap_err().contains("invalid YAML"));
        assert!(to_json("a: 1\na: 2\n").unwrap_err().contains("twice"));
        assert!(to_json("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .contains("one YAML document"));
        assert!(to_json("? [a]\n: 1\n").unwrap_err().contains("scalars"));
        assert!(to_json("a: .inf\n").unwrap_err().contains("no JSON value"));
        assert!(to_json("a: *nope\n").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(to_json(&deep).unwrap_err().contains("deeper"));
        assert!(to_json("").unwrap_err().contains("empty"));
    }
}
