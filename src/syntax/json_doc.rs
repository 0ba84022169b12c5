//! A request body's JSON read in place, for request validation: one pass of `serde_json`'s
//! parser into a flat list of items that borrow the body's strings (only a string with
//! escapes is copied), and `jsonschema`'s representation traits over that list, so a model
//! checks a body without building a `serde_json::Value` (a `String` per string, a map per
//! object, all freed again). Errors and the cold paths (`const`, `enum`, `uniqueItems`)
//! build a `Value` of the part they quote.
//!
//! An object's members are indexed by name once: sorted, a name written twice counted once
//! with its last value (as a parsed value keeps it); a lookup is a binary search. Validators
//! visit members in name order (a parsed value's are visited as written: the same errors,
//! perhaps in another order; in the order written, validation cost ~15 % more).

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

mod same;

/// A parsed body: its items in document order, the root first, and its objects' members.
pub struct Doc<'a> {
    items: Vec<Item<'a>>,
    /// Each object's member names (positions of [`Item::Key`]s), sorted by name with one per
    /// name (the last written), objects one after another.
    keys: Vec<u32>,
    /// Each node's hash, made on the first `uniqueItems` check of a list of two or more.
    hashes: OnceLock<Vec<u64>>,
}

enum Item<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    /// A list of `len` elements; its descendants are the items before `end`.
    Arr {
        len: u32,
        end: u32,
    },
    /// An object: in the items, each member is a [`Item::Key`] followed by its value; its
    /// `len` distinct names are `Doc::keys[keys..keys + len]`.
    Obj {
        len: u32,
        end: u32,
        keys: u32,
    },
    Key(Cow<'a, str>),
}

impl<'a> Doc<'a> {
    /// Parses `bytes` as one JSON value (with nothing but whitespace after it). JSON is
    /// UTF-8 (RFC 8259): the whole text is checked once, not string by string.
    pub fn parse(bytes: &'a [u8]) -> Result<Doc<'a>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 ({e})"))?;
        Self::parse_str(text).map_err(|e| e.to_string())
    }

    fn parse_str(text: &'a str) -> Result<Doc<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        // About one item per 16 bytes of typical JSON: one allocation for most bodies.
        let mut doc = Doc {
            items: Vec::with_capacity(text.len() / 16 + 1),
            keys: Vec::new(),
            hashes: OnceLock::new(),
        };
        Build(&mut doc).deserialize(&mut de)?;
        de.end()?;
        Ok(doc)
    }

    /// The document's root, for a validator.
    pub fn root(&self) -> DocNode<'_> {
        DocNode {
            items: &self.items,
            keys: &self.keys,
            i: 0,
            hashes: &self.hashes,
        }
    }

    /// The document as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        self.root().value()
    }
}

/// Pushes one value (and all it holds). (With serde_json's `arbitrary_precision` a number
/// would arrive as a map: `reads_back_what_it_parsed` would fail.)
struct Build<'v, 'a>(&'v mut Doc<'a>);

/// Pushes an object's member name.
struct KeySeed<'v, 'a>(&'v mut Vec<Item<'a>>);

/// `u32` positions: a body of four billion items is far past `limits.max_body`.
fn pos<E: serde::de::Error>(n: usize) -> Result<u32, E> {
    u32::try_from(n).map_err(|_| E::custom("the document holds too many values"))
}

impl<'de> DeserializeSeed<'de> for Build<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.items.push(Item::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.items.push(Item::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.items.push(Item::Num(v.into()));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.items.push(Item::Num(v.into()));
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // JSON has no NaN or infinity; serde_json reads an overflowing literal as an error.
        let n = Number::from_f64(v).ok_or_else(|| E::custom("a number JSON cannot hold"))?;
        self.0.items.push(Item::Num(n));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.items.push(Item::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.items.push(Item::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.items.len();
        self.0.items.push(Item::Arr { len: 0, end: 0 });
        let mut len = 0usize;
        while seq.next_element_seed(Build(&mut *self.0))?.is_some() {
            len += 1;
        }
        self.0.items[at] = Item::Arr {
            len: pos(len)?,
            end: pos(self.0.items.len())?,
        };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.items.len();
        self.0.items.push(Item::Obj {
            len: 0,
            end: 0,
            keys: 0,
        });
        while map.next_key_seed(KeySeed(&mut self.0.items))?.is_some() {
            map.next_value_seed(Build(&mut *self.0))?;
        }
        // The members' names, sorted (stably: a name written twice keeps its order), then
        // one per name, the last written. (The objects inside were indexed as they ended.)
        let Doc { items, keys, .. } = &mut *self.0;
        let first = keys.len();
        let mut p = at + 1;
        while p < items.len() {
            keys.push(pos(p)?);
            p = after(items, p + 1);
        }
        keys[first..].sort_by(|a, b| name(items, *a).cmp(name(items, *b)));
        let mut kept = first;
        for r in first..keys.len() {
            let twin_after = keys
                .get(r + 1)
                .is_some_and(|n| name(items, *n) == name(items, keys[r]));
            if !twin_after {
                keys[kept] = keys[r];
                kept += 1;
            }
        }
        keys.truncate(kept);
        items[at] = Item::Obj {
            len: pos(kept - first)?,
            end: pos(items.len())?,
            keys: pos(first)?,
        };
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Item::Key(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Item::Key(Cow::Owned(v.to_owned())));
        Ok(())
    }
}

/// The member name at `k` (an [`Item::Key`]'s position).
fn name<'s>(items: &'s [Item<'_>], k: u32) -> &'s str {
    match &items[k as usize] {
        Item::Key(n) => n,
        _ => "",
    }
}

/// The position after the value at `i` and all it holds.
fn after(items: &[Item<'_>], i: usize) -> usize {
    match items[i] {
        Item::Arr { end, .. } | Item::Obj { end, .. } => end as usize,
        _ => i + 1,
    }
}

/// The representation [`Doc`] gives validators (`jsonschema::options_for::<Body>()`).
pub struct Body;

impl Json for Body {
    type Node<'a> = DocNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    // A lookup is a binary search over the sorted names (as `Value`'s `BTreeMap`).
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(DocNode<'_>) -> T) -> T {
        let items = [Item::Str(Cow::Borrowed(string))];
        let hashes = OnceLock::new();
        f(DocNode {
            items: &items,
            keys: &[],
            i: 0,
            hashes: &hashes,
        })
    }
}

/// One value of a [`Doc`].
#[derive(Clone, Copy)]
pub struct DocNode<'a> {
    items: &'a [Item<'a>],
    keys: &'a [u32],
    i: usize,
    hashes: &'a OnceLock<Vec<u64>>,
}

impl<'a> DocNode<'a> {
    fn at(&self, i: usize) -> DocNode<'a> {
        DocNode { i, ..*self }
    }

    /// Members of an object, elements of a list.
    fn len(&self) -> usize {
        match self.items[self.i] {
            Item::Arr { len, .. } | Item::Obj { len, .. } => len as usize,
            _ => 0,
        }
    }

    /// An object's member names, sorted (positions of their [`Item::Key`]s).
    fn names(&self) -> &'a [u32] {
        match self.items[self.i] {
            Item::Obj { len, keys, .. } => &self.keys[keys as usize..(keys + len) as usize],
            _ => &[],
        }
    }

    fn value(&self) -> Value {
        match &self.items[self.i] {
            Item::Null | Item::Key(_) => Value::Null,
            Item::Bool(b) => Value::Bool(*b),
            Item::Num(n) => Value::Number(n.clone()),
            Item::Str(s) => Value::String(s.to_string()),
            Item::Arr { .. } => {
                Value::Array(DocArray(*self).elements().map(|n| n.value()).collect())
            }
            Item::Obj { .. } => Value::Object(
                DocObject(*self)
                    .members()
                    .map(|(k, n)| (k.to_owned(), n.value()))
                    .collect(),
            ),
        }
    }
}

impl<'a> Node<'a, Body> for DocNode<'a> {
    type Object = DocObject<'a>;
    type Array = DocArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<DocObject<'a>> {
        matches!(self.items[self.i], Item::Obj { .. }).then_some(DocObject(*self))
    }

    fn as_array(&self) -> Option<DocArray<'a>> {
        matches!(self.items[self.i], Item::Arr { .. }).then_some(DocArray(*self))
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match &self.items[self.i] {
            Item::Str(s) => Some(Cow::Borrowed(&**s)),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match &self.items[self.i] {
            Item::Num(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.items[self.i] {
            Item::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.items[self.i], Item::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.items[self.i] {
            Item::Null | Item::Key(_) => JsonType::Null,
            Item::Bool(_) => JsonType::Boolean,
            Item::Num(_) => JsonType::Number,
            Item::Str(_) => JsonType::String,
            Item::Arr { .. } => JsonType::Array,
            Item::Obj { .. } => JsonType::Object,
        }
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let s = self.as_string()?;
        // A code point is one to four bytes: the byte length often decides without counting.
        let bytes = s.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(s.chars().count() as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        same::equals_value(*self, expected)
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.value())
    }

    fn identity(&self) -> Option<NodeIdentity> {
        let tag = u32::try_from(self.i).ok()?;
        Some(NodeIdentity::tagged(self.items.as_ptr() as usize, tag))
    }
}

/// An object of a [`Doc`].
pub struct DocObject<'a>(DocNode<'a>);

/// A list of a [`Doc`].
pub struct DocArray<'a>(DocNode<'a>);

/// An object's members, by name.
pub struct Members<'a> {
    node: DocNode<'a>,
    names: std::slice::Iter<'a, u32>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, DocNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let k = *self.names.next()?;
        Some((name(self.node.items, k), self.node.at(k as usize + 1)))
    }
}

/// A list's elements in order.
pub struct Elements<'a> {
    node: DocNode<'a>,
    next: usize,
    left: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = DocNode<'a>;

    fn next(&mut self) -> Option<DocNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let i = self.next;
        self.next = after(self.node.items, i);
        Some(self.node.at(i))
    }
}

impl<'a> Object<'a, Body> for DocObject<'a> {
    type Node = DocNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &Box<str>) -> Option<DocNode<'a>> {
        let names = self.0.names();
        let k = names
            .binary_search_by(|n| name(self.0.items, *n).cmp(&**key))
            .ok()?;
        Some(self.0.at(names[k] as usize + 1))
    }

    fn members(&self) -> Members<'a> {
        Members {
            node: self.0,
            names: self.0.names().iter(),
        }
    }
}

impl<'a> Array<'a, Body> for DocArray<'a> {
    type Node = DocNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            node: self.0,
            next: self.0.i + 1,
            left: self.0.len(),
        }
    }

    fn is_unique(&self) -> bool {
        same::unique(self.0, self.0.hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validator(schema: Value) -> jsonschema::Validator<Body> {
        jsonschema::options_for::<Body>().build(&schema).unwrap()
    }

    #[test]
    fn reads_back_what_it_parsed() {
        let text =
            r#" {"a": [1, -2, 2.5, "x\ny", {"b": null, "c": true}], "d\u00e9": {}, "e": []} "#;
        let doc = Doc::parse(text.as_bytes()).unwrap();
        assert_eq!(doc.to_value(), serde_json::from_str::<Value>(text).unwrap());
        for bad in ["", "{", "[1,]", "{} x", "nul", "{\"a\" 1}", "1e999"] {
            assert!(Doc::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_and_bounds_see_each_name_once() {
        let v = validator(json!({"minProperties": 2, "maxProperties": 2}));
        let doc = |t: &'static str| Doc::parse(t.as_bytes()).unwrap();
        assert!(!v.is_valid(doc(r#"{"a": 1, "a": 2}"#).root()));
        assert!(v.is_valid(doc(r#"{"a": 1, "b": 2, "a": 3}"#).root()));
        let nested = doc(r#"{"b": {"y": 1, "x": 2, "y": 3}, "a": [{"k": 1}], "b2": null}"#);
        assert_eq!(
            nested.to_value(),
            json!({"a": [{"k": 1}], "b": {"x": 2, "y": 3}, "b2": null})
        );
    }

    #[test]
    fn unique_items_const_and_enum_compare_in_place_as_values_do() {
        let schemas = [
            json!({"uniqueItems": true}),
            json!({"items": {"$ref": "#"}, "uniqueItems": true}),
            json!({"const": {"a": [1, {"b": null}], "c": "x"}}),
            json!({"enum": [0, [1, 2], {"k": true}, "s", null]}),
        ];
        let bodies = [
            "[]",
            "[1]",
            "[1, 1.0]",
            "[0, -0]",
            "[0, -0.0]",
            "[1, 2, 3, 2]",
            r#"["a", "b", "a"]"#,
            r#"[{"x": 1, "y": 2}, {"y": 2, "x": 1}]"#,
            r#"[{"x": 1, "y": 2}, {"y": 2, "x": 3}]"#,
            r#"[{"x": 1, "x": 2}, {"x": 2}]"#,
            r#"[{"x": 1, "x": 2}, {"x": 1}]"#,
            "[[1, 2], [2, 1]]",
            "[[1, 2], [1, 2.0]]",
            "[[[]], [[]], 3]",
            "[[[1]], [[2]]]",
            "[null, false, 0, \"\", [], {}]",
            "[null, null]",
            "[18446744073709551615, 18446744073709551614]",
            "[-9223372036854775808, -9223372036854775807]",
            r#"{"a": [1, {"b": null}], "c": "x"}"#,
            r#"{"c": "x", "a": [1.0, {"b": null}]}"#,
            r#"{"a": [1, {"b": null}], "c": "x", "d": 1}"#,
            r#"{"a": [{"b": null}, 1], "c": "x"}"#,
            "[1, 2]",
            "[1, 2.0]",
            r#"{"k": true}"#,
            r#"{"k": 1}"#,
            "-0",
            "0.0",
            "\"s\"",
        ];
        for schema in schemas {
            let ours = validator(schema.clone());
            let theirs = jsonschema::validator_for(&schema).unwrap();
            for text in bodies {
                let doc = Doc::parse(text.as_bytes()).unwrap();
                let v: Value = serde_json::from_str(text).unwrap();
                assert_eq!(
                    ours.is_valid(doc.root()),
                    theirs.is_valid(&v),
                    "{schema} {text}"
                );
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(Doc::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn validates_as_a_parsed_value_does() {
        let schema = json!({
            "type": "object",
            "required": ["name", "tags"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 2, "maxLength": 4},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true},
                "kind": {"const": {"x": [1, 2]}},
                "rest": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
            }
        });
        let ours = validator(schema.clone());
        let theirs = jsonschema::validator_for(&schema).unwrap();
        for text in [
            r#"{"name": "rex", "tags": ["a"]}"#,
            r#"{"name": "ré€x", "tags": []}"#,
            r#"{"name": "r", "tags": []}"#,
            r#"{"name": "rexxx", "tags": []}"#,
            r#"{"name": "rex", "tags": ["a", "a"]}"#,
            r#"{"name": "rex", "tags": ["c"]}"#,
            r#"{"name": "rex", "tags": [], "age": 1.5}"#,
            r#"{"name": "rex", "tags": [], "age": -1}"#,
            r#"{"name": "rex", "tags": [], "other": 1}"#,
            r#"{"name": "rex", "tags": [], "kind": {"x": [1, 2.0]}}"#,
            r#"{"name": "rex", "tags": [], "kind": {"x": [2, 1]}}"#,
            r#"{"name": "rex", "tags": [], "rest": {"ok": 1, "Not": 2}}"#,
            r#"{"tags": []}"#,
            r#"[1, 2]"#,
            // A name written twice counts once, with its last value, as in a `Value`.
            r#"{"name": 1, "name": "rex", "tags": []}"#,
            r#"{"name": "rex", "name": 1, "tags": []}"#,
            // Several errors at one level: the same ones (ours in name order, a parsed value's
            // in the order written; visiting members sorted keeps validation ~15 % cheaper).
            r#"{"zz": 1, "name": 5, "aa": 2, "tags": "x", "age": "y"}"#,
        ] {
            let doc = Doc::parse(text.as_bytes()).unwrap();
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours.is_valid(doc.root()), theirs.is_valid(&v), "{text}");
            let a: Vec<String> = ours
                .iter_errors(doc.root())
                .map(|e| e.to_string())
                .collect();
            let b: Vec<String> = theirs.iter_errors(&v).map(|e| e.to_string()).collect();
            assert_eq!(unordered(a), unordered(b), "{text}");
        }
    }

    /// Errors in name order, and the names inside "Additional properties ... ('a', 'b' were
    /// unexpected)" too.
    fn unordered(errors: Vec<String>) -> Vec<String> {
        let mut out: Vec<String> = errors
            .into_iter()
            .map(|e| match (e.find('('), e.find(" were unexpected")) {
                (Some(open), Some(end)) if open < end => {
                    let mut names: Vec<&str> = e[open + 1..end].split(", ").collect();
                    names.sort_unstable();
                    format!("{}({}{}", &e[..open], names.join(", "), &e[end..])
                }
                _ => e,
            })
            .collect();
        out.sort();
        out
    }
}
