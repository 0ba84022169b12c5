//! What `GET /config` hides: values that are credentials. A name decides, never the value
//! (which could be anything): stage variables, query parameters and mapped headers whose
//! names suggest a secret, and the headers that carry credentials (`authorization`,
//! `proxy-authorization`, `x-api-key`, `cookie`). A value that is only a reference
//! (`$request.header.x-api-key`, `${stageVariables.key}`, `{key}`) holds no secret and stays.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// What a hidden value is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether a name (a stage variable, a query parameter, a header) suggests a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "token", "password", "passwd", "key", "credential"]
        .iter()
        .any(|w| name.contains(w))
}

/// Whether a header's value is a credential.
fn is_credential_header(name: &str) -> bool {
    ["authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        || is_secret_name(name)
}

/// A value that only names where it comes from: one `$a.b` or `${...}` expression, or a
/// `{name}` path variable.
fn is_reference(v: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:+[]".contains(&b))
    };
    if let Some(inner) = v.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return name(inner);
    }
    if let Some(inner) = v.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
        return name(inner);
    }
    v.strip_prefix('$').is_some_and(name)
}

/// `uri` with the values of query parameters whose names suggest a secret, and a password
/// in its user information, hidden.
pub(crate) fn redact_uri(uri: &str) -> Cow<'_, str> {
    let (head, fragment) = match uri.find('#') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let (path, query) = match head.find('?') {
        Some(i) => (&head[..i], Some(&head[i + 1..])),
        None => (head, None),
    };
    let mut changed = false;
    let mut out = String::with_capacity(uri.len());
    // scheme://user:password@host
    match path.find("://").map(|i| i + 3) {
        Some(start) => {
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            match path[start..end].rfind('@').map(|at| start + at) {
                Some(at) if path[start..at].contains(':') => {
                    let colon = start + path[start..at].find(':').unwrap_or(0);
                    out.push_str(&path[..=colon]);
                    out.push_str(REDACTED);
                    out.push_str(&path[at..]);
                    changed = true;
                }
                _ => out.push_str(path),
            }
        }
        None => out.push_str(path),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) if is_secret_name(name) && !is_reference(value) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                    changed = true;
                }
                _ => out.push_str(pair),
            }
        }
    }
    if !changed {
        return Cow::Borrowed(uri);
    }
    out.push_str(fragment);
    Cow::Owned(out)
}

/// Stage variables whose names suggest a secret are shown as "<redacted>".
pub(super) fn ser_redacted_vars<S: serde::Serializer>(
    v: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = v
        .iter()
        .map(|(k, val)| {
            let secret = is_secret_name(k);
            (k.as_str(), if secret { REDACTED } else { val.as_str() })
        })
        .collect();
    shown.serialize(s)
}

/// An integration's headers: credentials hidden, the rest as written.
pub(super) fn ser_redacted_headers<S: serde::Serializer>(
    v: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: Vec<(&str, &str)> = v
        .iter()
        .map(|(k, val)| {
            let secret = is_credential_header(k) && !is_reference(val);
            (k.as_str(), if secret { REDACTED } else { val.as_str() })
        })
        .collect();
    shown.serialize(s)
}

/// A URI with its secret query values hidden.
pub(super) fn ser_redacted_uri<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_uri(v))
}

/// Request parameter mappings: what a mapping writes into a credential header or a secret
/// query parameter is hidden, unless it only copies a value from the request or the context.
pub(super) fn ser_redacted_params<S: serde::Serializer>(
    v: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = v
        .iter()
        .map(|(k, val)| {
            let target = k.split_once(':').map_or(k.as_str(), |(_, t)| t);
            let secret = match target.split_once('.') {
                Some(("header", name)) => is_credential_header(name),
                Some(("querystring", name)) => is_secret_name(name),
                _ => false,
            };
            let hide = secret && !val.is_empty() && val != "''" && !is_reference(val);
            (k.as_str(), if hide { REDACTED } else { val.as_str() })
        })
        .collect();
    shown.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_lose_secret_query_values_and_passwords_only() {
        assert_eq!(redact_uri("http://pets/a?x=1"), "http://pets/a?x=1");
        assert_eq!(
            redact_uri("http://pets/sec?api_key=Z&page=2&Token=t#f"),
            "http://pets/sec?api_key=<redacted>&page=2&Token=<redacted>#f"
        );
        assert_eq!(
            redact_uri("http://pets/p?key={key}&k2=${stageVariables.k}"),
            "http://pets/p?key={key}&k2=${stageVariables.k}"
        );
        assert_eq!(
            redact_uri("http://u:pw@h:1/x?a=b"),
            "http://u:<redacted>@h:1/x?a=b"
        );
        assert_eq!(redact_uri("http://u@h/x"), "http://u@h/x");
    }
}
