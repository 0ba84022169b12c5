//! API keys: how they are hashed, generated, compared and looked up.
//!
//! A key's value is never stored: only its SHA-256, hex-encoded in the state store and raw in
//! the [`KeyTable`] the shards look keys up in. The presented value is hashed once per request
//! and found by hash; the hashes are then compared in constant time. Values are never logged
//! and never returned after creation.

pub(crate) mod access;
pub(crate) mod external;
pub(crate) mod jwt;
pub(crate) mod sigv4;

use std::sync::Arc;

use ahash::AHashMap;
use sha2::{Digest, Sha256};

/// Shortest key value accepted (Amazon API Gateway's minimum).
pub(crate) const MIN_KEY_LEN: usize = 20;
/// Length of generated key values.
pub(crate) const GENERATED_KEY_LEN: usize = 40;

pub(crate) type KeyHash = [u8; 32];

pub(crate) fn hash_key(value: &[u8]) -> KeyHash {
    Sha256::digest(value).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<KeyHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let v = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(v, 16).ok()?;
    }
    Some(out)
}

/// Constant-time equality of two hashes.
pub(crate) fn same_hash(a: &KeyHash, b: &KeyHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random characters from [A-Za-z0-9], from the OS's CSPRNG.
pub(crate) fn random_token(n: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::getrandom(&mut buf).map_err(|e| format!("no randomness from the OS: {e}"))?;
        for b in buf {
            // 248 = 4 * 62: rejection sampling keeps the choice uniform.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Whether a value may be used as a key: 20–128 visible ASCII characters.
pub(crate) fn valid_key_value(v: &str) -> bool {
    (MIN_KEY_LEN..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// One key as the shards see it.
#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    pub id: Arc<str>,
    pub hash: KeyHash,
    pub enabled: bool,
    /// Indices into the snapshot's usage plans.
    pub plans: Vec<usize>,
}

/// Every key, by hash. Rebuilt by the control plane whenever keys or plans change.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    by_hash: AHashMap<KeyHash, KeyRecord>,
}

impl KeyTable {
    pub(crate) fn new(records: impl IntoIterator<Item = KeyRecord>) -> KeyTable {
        KeyTable {
            by_hash: records.into_iter().map(|r| (r.hash, r)).collect(),
        }
    }

    /// Finds the key a client presented.
    pub(crate) fn find(&self, presented: &[u8]) -> Option<&KeyRecord> {
        let h = hash_key(presented);
        self.by_hash.get(&h).filter(|r| same_hash(&r.hash, &h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_value_and_only_by_value() {
        let rec = KeyRecord {
            id: "k1".into(),
            hash: hash_key(b"acme-0123456789abcdef0123"),
            enabled: true,
            plans: vec![0],
        };
        let t = KeyTable::new([rec]);
        assert_eq!(&*t.find(b"acme-0123456789abcdef0123").unwrap().id, "k1");
        assert!(t.find(b"acme-0123456789abcdef0124").is_none());
        assert!(t.find(b"").is_none());
    }

    #[test]
    fn generated_tokens_are_long_random_and_alphanumeric() {
        let a = random_token(GENERATED_KEY_LEN).unwrap();
        let b = random_token(GENERATED_KEY_LEN).unwrap();
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(valid_key_value(&a));
        assert!(!valid_key_value("short"));
        assert!(!valid_key_value("has a space in it, twenty+"));
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = hash_key(b"x");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
    }
}
