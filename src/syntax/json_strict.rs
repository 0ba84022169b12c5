//! JSON as the admin API reads it: `serde_json`'s parser (its nesting limit included) into a
//! `serde_json::Value`, but an object that names a member twice is refused — `Value` would
//! keep the last and drop the first without a word (two `"routes"`, two `"/a"` paths of an
//! OpenAPI document), where YAML documents refuse the same thing; and nothing nests deeper
//! than [`MAX_DEPTH`], so that what the store keeps (a body inside a record) reads back.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON value; a member named twice in one object is an error, and so
/// is a document of more than [`MAX_NODES`] values.
pub(crate) fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if values_at_least(bytes) > MAX_NODES {
        return Err(serde_json::Error::custom(format!(
            "the document holds more than {MAX_NODES} values"
        )));
    }
    let mut d = serde_json::Deserializer::from_slice(bytes);
    let v = Strict(0).deserialize(&mut d)?;
    d.end()?;
    Ok(v)
}

/// Most values a document may hold (as a YAML document may expand to): a `Value` takes tens
/// of bytes a value, so 32 MiB of `[0,0,0,...]` built gigabytes.
pub(crate) const MAX_NODES: usize = 500_000;

/// A lower bound of the values in `bytes`, read without building them: the separators and
/// openings outside strings (each `,` `:` `[` `{` begins one more).
fn values_at_least(bytes: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Objects and arrays within one another. The store reads a record back with serde_json's
/// limit (128), and a record holds the body a level or two down: a body accepted at 126
/// levels was answered 201, then lost at the next start.
pub(crate) const MAX_DEPTH: usize = 100;

/// How deep the value being read is.
struct Strict(usize);

impl Strict {
    fn inner<E: serde::de::Error>(&self) -> Result<Strict, E> {
        if self.0 >= MAX_DEPTH {
            return Err(E::custom(format!(
                "objects and arrays nest deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Strict(self.0 + 1))
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict(inner.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(A::Error::custom(format!(
                    "the key {k:?} appears twice in one object"
                )));
            }
            let v = map.next_value_seed(Strict(inner.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::from_slice;

    #[test]
    fn a_member_named_twice_is_refused_and_the_rest_reads_as_serde_json_does() {
        let e = from_slice(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("the key \"b\" appears twice"), "{e}");
        // Escapes that spell one name twice.
        assert!(from_slice(br#"{"a": 1, "\u0061": 2}"#).is_err());
        for doc in [
            &br#"{"a": [1, -2, 3.5, "x\n", true, null, {}], "b": {"c": 18446744073709551615}}"#[..],
            b"[]",
            b"\"s\"",
        ] {
            let want: serde_json::Value = serde_json::from_slice(doc).unwrap();
            assert_eq!(from_slice(doc).unwrap(), want);
        }
        assert!(from_slice(b"{} x").is_err());
        // The parser's nesting limit holds, and this one below it.
        assert!(from_slice("[".repeat(200).as_bytes()).is_err());
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(from_slice(deep(super::MAX_DEPTH).as_bytes()).is_ok());
        let e = from_slice(deep(super::MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nest deeper than 100 levels"), "{e}");
    }

    #[test]
    fn a_document_of_too_many_values_is_refused_before_it_is_built() {
        let array = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        assert!(from_slice(array(super::MAX_NODES).as_bytes()).is_ok());
        let e = from_slice(array(super::MAX_NODES + 2).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 500000 values"), "{e}");
        // Separators inside strings are text, escaped quotes included.
        let text = format!("{{\"a\": \"{}\\\",\"}}", ",".repeat(super::MAX_NODES + 10));
        assert!(from_slice(text.as_bytes()).is_ok(), "{}", &text[..20]);
    }
}
