//! SigV4 access keys: the table the shards look callers up in, and how a key's secret is
//! kept at rest. A secret must be usable (SigV4 signs with it), so it is stored encrypted —
//! AES-256-GCM (ring), under a 32-byte key the operator gives through an environment variable
//! or a file, with the access key id as associated data (a sealed secret cannot be moved to
//! another id) — and decrypted only into this table. It is never logged, and never returned
//! after its creation.

use std::sync::Arc;

use ahash::AHashMap;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use super::external::Statement;

/// The key that seals secrets at rest.
pub(crate) struct SecretsKey(LessSafeKey);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// From its text: 32 bytes as base64 (standard or URL-safe, padded or not) or 64 hex digits.
    pub(crate) fn parse(text: &str) -> Result<SecretsKey, String> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect()
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|e| e.decode(t).ok())
                .ok_or("is neither base64 nor hex")?
        };
        if bytes.len() != 32 {
            return Err(format!(
                "is {} bytes; it must be 32 (e.g. `openssl rand -base64 32`)",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "is not an AES-256 key")?;
        Ok(SecretsKey(LessSafeKey::new(key)))
    }

    /// Seals `secret` for access key `id`: `v1:` and base64 of nonce, ciphertext and tag.
    pub(crate) fn seal(&self, id: &str, secret: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness from the OS: {e}"))?;
        let mut data = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "v1:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens what [`SecretsKey::seal`] made for `id`; fails for another key or id.
    pub(crate) fn open(&self, id: &str, sealed: &str) -> Result<String, String> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or("the sealed secret is malformed")?;
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| "the sealed secret is malformed")?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| {
                "the secret does not open with this secrets key (another key, or damaged)"
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the secret is not UTF-8".into())
    }
}

/// An access key as the shards see it.
pub(crate) struct AccessKey {
    pub id: Arc<str>,
    pub name: String,
    pub enabled: bool,
    /// What it may invoke (`execute-api:Invoke` statements).
    pub policy: Vec<Statement>,
    secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AccessKey({}, {:?}, enabled: {})",
            self.id, self.name, self.enabled
        )
    }
}

impl AccessKey {
    pub(crate) fn new(
        id: &str,
        name: &str,
        enabled: bool,
        policy: Vec<Statement>,
        secret: String,
    ) -> AccessKey {
        AccessKey {
            id: id.into(),
            name: name.into(),
            enabled,
            policy,
            secret,
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }
}

/// Every usable access key, by id. Rebuilt by the control plane when keys change.
#[derive(Debug, Default)]
pub(crate) struct AccessKeyTable {
    by_id: AHashMap<Arc<str>, AccessKey>,
}

impl AccessKeyTable {
    pub(crate) fn new(keys: impl IntoIterator<Item = AccessKey>) -> AccessKeyTable {
        AccessKeyTable {
            by_id: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }

    pub(crate) fn find(&self, id: &str) -> Option<&AccessKey> {
        self.by_id.get(id)
    }
}

/// A new access key id: `AKIA` and 16 upper-case letters and digits, as AWS's look.
pub(crate) fn new_key_id() -> Result<String, String> {
    let t = super::random_token(64)?;
    let upper: String = t
        .chars()
        .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    if upper.len() < 16 {
        return new_key_id();
    }
    Ok(format!("AKIA{upper}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_seal_and_open_only_with_their_key_and_id() {
        let k = SecretsKey::parse(&"ab".repeat(32)).unwrap();
        let sealed = k
            .seal("AKIA1", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .unwrap();
        assert!(!sealed.contains("wJalr"));
        assert_eq!(
            k.open("AKIA1", &sealed).unwrap(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        );
        assert!(k.open("AKIA2", &sealed).is_err(), "bound to its id");
        let other = SecretsKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
            .unwrap();
        assert!(other.open("AKIA1", &sealed).is_err());
        assert_ne!(
            k.seal("AKIA1", "s").unwrap(),
            k.seal("AKIA1", "s").unwrap(),
            "fresh nonces"
        );
        for bad in ["", "v1:", "v1:AAAA", "v2:xyz", "v1:!!!"] {
            assert!(k.open("AKIA1", bad).is_err());
        }
        assert!(SecretsKey::parse("short").is_err());
        assert!(SecretsKey::parse(&"ab".repeat(16)).is_err());
    }

    #[test]
    fn key_ids_look_like_aws_ones() {
        let id = new_key_id().unwrap();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    }
}
