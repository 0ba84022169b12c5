//! Parameter mapping (Amazon API Gateway's HTTP APIs): the keys (`append:header.x-a`,
//! `overwrite:querystring.q`, `remove:header.b`, `overwrite:path`, `overwrite:statuscode`) and
//! the values — static text mixed with `$request.header.NAME`, `$request.querystring.NAME`,
//! `$request.body.PATH`, `$request.path`, `$request.path.NAME`, `$context.NAME`,
//! `$stageVariables.NAME`, and in responses `$response.header.NAME` — parsed once at load.

use super::refs::{lex, Token};

/// What a mapping does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Append,
    Overwrite,
    Remove,
}

/// Where it does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A header (lower-case).
    Header(String),
    Query(String),
    Path,
    StatusCode,
}

/// One step of a body path: a member or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// What a value reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Lower-case; repeated headers are joined with `,`.
    Header(String),
    /// Repeated values are joined with `,`.
    Query(String),
    /// The JSON body (whole when empty), at this path.
    Body(Vec<Step>),
    /// The request path (after the stage's base path).
    Path,
    /// A path variable, by name (its index is resolved at load).
    PathVar(String),
    /// `$context.NAME`.
    Context(String),
    StageVar(String),
    ResponseHeader(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Src(Source),
}

/// The context variables a mapping may read.
pub(crate) const CONTEXT: [&str; 10] = [
    "requestId",
    "extendedRequestId",
    "stage",
    "apiId",
    "domainName",
    "httpMethod",
    "path",
    "routeKey",
    "identity.sourceIp",
    "identity.userAgent",
];

/// Parses a key: `append|overwrite|remove:header.NAME`, `...:querystring.NAME`,
/// `overwrite:path`, and in responses `overwrite:statuscode` (and no query or path).
pub(crate) fn parse_key(k: &str, response: bool) -> Result<(Action, Target), String> {
    let allowed = if response {
        "append|overwrite|remove:header.NAME or overwrite:statuscode"
    } else {
        "append|overwrite|remove:header.NAME, append|overwrite|remove:querystring.NAME or overwrite:path"
    };
    let (action, place) = k.split_once(':').ok_or_else(|| allowed.to_string())?;
    let action = match action {
        "append" => Action::Append,
        "overwrite" => Action::Overwrite,
        "remove" => Action::Remove,
        _ => return Err(allowed.into()),
    };
    let target = match place.split_once('.') {
        Some(("header", n)) if !n.is_empty() && n.bytes().all(super::is_tchar) => {
            Target::Header(n.to_ascii_lowercase())
        }
        Some(("querystring", n)) if !response && !n.is_empty() => Target::Query(n.into()),
        None if place == "path" && !response && action == Action::Overwrite => Target::Path,
        None if place == "statuscode" && response && action == Action::Overwrite => {
            Target::StatusCode
        }
        _ => return Err(allowed.into()),
    };
    Ok((action, target))
}

/// Parses a value.
pub(crate) fn parse_value(v: &str, response: bool) -> Result<Vec<Piece>, String> {
    if v.contains("request.body..") {
        return Err(format!(
            "{v:?}: recursive descent ($request.body..NAME) is not supported"
        ));
    }
    let mut out = Vec::new();
    let mut tokens = lex(v)?.into_iter().peekable();
    while let Some(t) = tokens.next() {
        let name = match t {
            Token::Lit(l) => {
                out.push(Piece::Lit(l));
                continue;
            }
            Token::Ref(name) => name,
        };
        // A body path ends where a filter, a slice or a wildcard begins (`a[?(@.b)]`,
        // `a[0:1]`, `a.*`): that would be pasted in as text after the value; refused as
        // Amazon refuses such paths.
        if let (Some("request.body"), Some(Token::Lit(next))) = (
            name.get(..12)
                .filter(|_| name.len() == 12 || name.as_bytes()[12] == b'.'),
            tokens.peek(),
        ) {
            if next.starts_with("..") {
                return Err(format!(
                    "${name}..: recursive descent ($request.body..NAME) is not supported"
                ));
            }
            if next.starts_with('[') || next.starts_with(".*") || next.starts_with(".[") {
                let end = next.find([' ', ',', ';']).unwrap_or(next.len());
                return Err(format!(
                    "${name}{}: wildcards, slices and filter expressions are not supported in a body path",
                    &next[..end]
                ));
            }
        }
        let (root, rest) = name.split_once('.').unwrap_or((&name, ""));
        let src = match (root, rest) {
            ("request", r) if !response => request_source(r)?,
            ("response", r) if response => match r.split_once('.') {
                Some(("header", n)) if !n.is_empty() => {
                    Source::ResponseHeader(n.to_ascii_lowercase())
                }
                _ => {
                    return Err(format!(
                        "${name}: a response mapping reads $response.header.NAME (not the body)"
                    ))
                }
            },
            ("context", c) => {
                let known = CONTEXT.contains(&c)
                    || c.strip_prefix("authorizer.").is_some_and(|a| !a.is_empty());
                if !known {
                    return Err(format!(
                        "${name} is not a variable mappings have: allowed are $context.{}, $context.authorizer.NAME, $context.authorizer.claims.NAME",
                        CONTEXT.join(", $context.")
                    ));
                }
                Source::Context(c.into())
            }
            ("stageVariables", v) if !v.is_empty() && !v.contains('.') => {
                Source::StageVar(v.into())
            }
            _ => {
                return Err(format!(
                    "${name}: expected {}, $context.NAME or $stageVariables.NAME",
                    if response {
                        "$response.header.NAME"
                    } else {
                        "$request.header|querystring|path.NAME, $request.body.PATH, $request.path"
                    }
                ))
            }
        };
        out.push(Piece::Src(src));
    }
    Ok(out)
}

fn request_source(r: &str) -> Result<Source, String> {
    Ok(match r.split_once('.').unwrap_or((r, "")) {
        ("header", n) if !n.is_empty() => Source::Header(n.to_ascii_lowercase()),
        ("querystring", n) if !n.is_empty() => Source::Query(n.into()),
        ("path", "") => Source::Path,
        ("path", n) => Source::PathVar(n.into()),
        ("body", p) => Source::Body(body_path(p)?),
        _ => {
            return Err(format!(
                "$request.{r}: expected $request.header.NAME, $request.querystring.NAME, $request.path, $request.path.NAME or $request.body.PATH"
            ))
        }
    })
}

/// `a.b[0].c` as steps. Recursive descent and filters are refused, as Amazon API Gateway does.
fn body_path(p: &str) -> Result<Vec<Step>, String> {
    if p.contains("..") || p.contains('?') || p.contains('*') {
        return Err(format!(
            "$request.body.{p}: recursive descent, wildcards and filter expressions are not supported"
        ));
    }
    let mut steps = Vec::new();
    for part in p.split('.').filter(|s| !s.is_empty()) {
        let (key, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key.into()));
        }
        while let Some(rest) = idx.strip_prefix('[') {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("$request.body.{p}: unclosed '['"))?;
            let n: usize = rest[..end]
                .parse()
                .map_err(|_| format!("$request.body.{p}: an index must be a number"))?;
            steps.push(Step::Index(n));
            idx = &rest[end + 1..];
        }
        if !idx.is_empty() {
            return Err(format!("$request.body.{p}: unexpected {idx:?}"));
        }
    }
    Ok(steps)
}

/// The value at `steps` in `v`, as text (a string as it is, anything else as JSON).
pub(crate) fn body_text(v: &serde_json::Value, steps: &[Step]) -> Option<String> {
    let mut cur = v;
    for s in steps {
        cur = match s {
            Step::Key(k) => cur.get(k)?,
            Step::Index(i) => cur.get(*i)?,
        };
    }
    Some(match cur {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(
            parse_key("append:header.X-A", false).unwrap(),
            (Action::Append, Target::Header("x-a".into()))
        );
        assert_eq!(
            parse_key("overwrite:path", false).unwrap(),
            (Action::Overwrite, Target::Path)
        );
        assert!(parse_key("append:path", false).is_err());
        assert!(parse_key("overwrite:statuscode", false).is_err());
        assert_eq!(
            parse_key("overwrite:statuscode", true).unwrap(),
            (Action::Overwrite, Target::StatusCode)
        );
        assert_eq!(
            parse_value(
                "/v2/$request.path.proxy?x=${request.body.items[1].id}",
                false
            )
            .unwrap(),
            [
                Piece::Lit("/v2/".into()),
                Piece::Src(Source::PathVar("proxy".into())),
                Piece::Lit("?x=".into()),
                Piece::Src(Source::Body(vec![
                    Step::Key("items".into()),
                    Step::Index(1),
                    Step::Key("id".into())
                ])),
            ]
        );
        // Unbraced, as Amazon writes it: an index continues the reference.
        assert_eq!(
            parse_value("$request.body.items[2].id!", false).unwrap(),
            [
                Piece::Src(Source::Body(vec![
                    Step::Key("items".into()),
                    Step::Index(2),
                    Step::Key("id".into())
                ])),
                Piece::Lit("!".into()),
            ]
        );
        for bad in [
            "$request.body..a",
            "$request.cookie.a",
            "$context.nope",
            "$response.header.a",
            "${request.header.a",
        ] {
            assert!(parse_value(bad, false).is_err(), "{bad}");
        }
        assert!(parse_value("$response.body.a", true).is_err());
        let v = serde_json::json!({"a": {"b": [1, {"c": "x"}]}});
        assert_eq!(
            body_text(
                &v,
                &[
                    Step::Key("a".into()),
                    Step::Key("b".into()),
                    Step::Index(1),
                    Step::Key("c".into())
                ]
            )
            .as_deref(),
            Some("x")
        );
        assert_eq!(
            body_text(&v, &[Step::Key("a".into())]).as_deref(),
            Some(r#"{"b":[1,{"c":"x"}]}"#)
        );
    }
}
