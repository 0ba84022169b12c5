//! Route keys as written in the config: `METHOD /path/{param}/{proxy+}`, `ANY /path` and
//! `$default`. Parsed once at load into plain segments that the route trie is built from.

use super::Method;

/// One segment of a route's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    Param(String),
    /// `{name+}`: one or more remaining segments; only last.
    Greedy(String),
}

/// The longest route path, in bytes.
pub(crate) const MAX_ROUTE_PATH: usize = 4096;

/// Parses a route path like `/pets/{petId}/{proxy+}`.
pub fn parse_route_path(path: &str) -> Result<Vec<Seg>, String> {
    if path.len() > MAX_ROUTE_PATH {
        // Named in the admin API's paths (percent-encoded), whose heads take 16 KiB: a longer
        // one could be made but never addressed again (and no request's head would reach it).
        return Err(format!(
            "path {:?}... is {} bytes long: at most {MAX_ROUTE_PATH}",
            path.char_indices()
                .nth(32)
                .map_or(path, |(i, _)| &path[..i]),
            path.len()
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with /"));
    }
    let mut segs = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    let n = parts.len();
    for (i, raw) in parts.into_iter().enumerate() {
        if raw.is_empty() {
            if i + 1 == n {
                break; // "/" alone or a trailing slash
            }
            return Err(format!("path {path:?} has an empty segment"));
        }
        if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if !super::template::is_ident(name) {
                return Err(format!("bad path variable {raw:?} in {path:?}: use {{name}} or {{name+}} with letters, digits, _ or -"));
            }
            if segs
                .iter()
                .any(|s| matches!(s, Seg::Param(n) | Seg::Greedy(n) if n == name))
            {
                return Err(format!(
                    "path variable {{{name}}} appears twice in {path:?}"
                ));
            }
            if greedy {
                if i + 1 != n {
                    return Err(format!(
                        "greedy variable {raw:?} must be the last segment of {path:?}"
                    ));
                }
                segs.push(Seg::Greedy(name.to_string()));
            } else {
                segs.push(Seg::Param(name.to_string()));
            }
        } else {
            if raw.contains(['{', '}']) {
                return Err(format!("segment {raw:?} of {path:?} mixes text and a variable; a variable must be a whole segment"));
            }
            if crate::syntax::path::is_dot_segment(raw.as_bytes()) {
                return Err(format!("path {path:?} has a dot segment"));
            }
            // What no request's path can hold as written (RFC 3986: a space, `?` and `#`
            // end or break a path): a route with one is a mistake, not a route to
            // `/a%20b` (percent-encode it to mean that).
            if let Some(c) = raw
                .chars()
                .find(|c| c.is_ascii_control() || " ?#\"<>\\^`|".contains(*c))
            {
                return Err(format!(
                    "segment {raw:?} of {path:?} holds {c:?}, which a path cannot (percent-encode it)"
                ));
            }
            let decoded = super::path::normalise(format!("/{raw}").as_bytes())
                .map_err(|e| format!("segment {raw:?}: {}", e.message()))?;
            segs.push(Seg::Lit(
                decoded.iter().next().unwrap_or_default().to_string(),
            ));
        }
    }
    Ok(segs)
}

/// Which method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodSel {
    One(Method),
    Any,
}
