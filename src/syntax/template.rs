//! String templates used by integrations: `${stageVariables.NAME}`, `${context.requestId}`,
//! `${context.identity.sourceIp}`, `${context.identity.clientCert.FIELD}` (mutual TLS:
//! `subjectDN`, `issuerDN`, `serialNumber`, `validity.notBefore`, `validity.notAfter`,
//! `clientCertPem`, and `fingerprint`, `sans`), `${request.path.NAME}` and `{NAME}` (a path
//! variable of the route).
//!
//! A template is parsed once at load into pieces; stage variables are substituted when the
//! snapshot is compiled (they are fixed per stage), so at request time only path variables
//! and the request id remain, and rendering is a walk over a few pieces into one buffer.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    StageVar(String),
    /// Index into the route's path variables.
    PathVar(usize),
    RequestId,
    SourceIp,
    ClientCert(crate::syntax::CertField),
    /// `${context.authorizer.claims.NAME}`: a claim of the request's verified JWT.
    Claim(String),
    /// `${context.authorizer.NAME}`: a value of an external authorizer's `context` (or
    /// `principalId`).
    AuthorizerValue(String),
}

/// What an authorizer established about the caller, for `${context.authorizer.*}`.
pub trait AuthorizerVars {
    /// A claim of a verified token, as text.
    fn claim(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
    /// A value an external authorizer returned, as text.
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
}

/// How an identity value (a certificate field) is written where it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encoded (a URI path or query).
    Uri,
    /// Control bytes dropped (a header value: [`super::is_value_byte`]).
    Header,
    /// As it is (a body).
    Raw,
}

/// The request-time values a template may name.
pub struct Vars<'a> {
    pub request_id: &'a [u8],
    pub source_ip: &'a str,
    /// The verified client certificate's fields (`CertField as usize`), if any.
    pub client_cert: Option<&'a [String]>,
    /// What the route's authorizer established, if it has one.
    pub authorizer: Option<&'a dyn AuthorizerVars>,
    pub escape: Escape,
}

/// The `${context.identity.clientCert.*}` names, as Amazon API Gateway spells them.
fn cert_field(name: &str) -> Option<crate::syntax::CertField> {
    use crate::syntax::CertField as F;
    Some(match name {
        "subjectDN" => F::SubjectDN,
        "issuerDN" => F::IssuerDN,
        "serialNumber" => F::SerialNumber,
        "validity.notBefore" => F::NotBefore,
        "validity.notAfter" => F::NotAfter,
        "clientCertPem" => F::ClientCertPem,
        "fingerprint" => F::Fingerprint,
        "sans" => F::Sans,
        _ => return None,
    })
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

/// How `{NAME}` that names no path variable is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownBraces {
    /// Kept as literal text (bodies: JSON is full of braces).
    Literal,
    /// An error (URIs: braces are not valid there).
    Error,
}

impl Template {
    /// The path variable a URI's path ends with (`http://b/files/{proxy}`, or before its
    /// `?`), if it ends with one.
    pub fn path_ends_with_var(&self) -> Option<usize> {
        let mut last = None;
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => {
                    if let Some(q) = s.find('?') {
                        return if q == 0 { last } else { None };
                    }
                    if !s.is_empty() {
                        last = None;
                    }
                }
                Piece::PathVar(i) => last = Some(*i),
                _ => last = None,
            }
        }
        last
    }
    /// Parses `s`. `params` are the route's path variable names, in order.
    pub fn parse(s: &str, params: &[String], unknown: UnknownBraces) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed \"${{\" in {s:?}"))?;
                let name = &after[..end];
                let piece = if let Some(v) = name.strip_prefix("stageVariables.") {
                    if !is_ident(v) {
                        return Err(format!("bad stage variable name {v:?} in {s:?}"));
                    }
                    Piece::StageVar(v.to_string())
                } else if name == "context.requestId" {
                    Piece::RequestId
                } else if name == "context.identity.sourceIp" {
                    Piece::SourceIp
                } else if let Some(f) = name.strip_prefix("context.identity.clientCert.") {
                    Piece::ClientCert(cert_field(f).ok_or_else(|| {
                        format!(
                            "unknown field ${{context.identity.clientCert.{f}}}: allowed are \
                             subjectDN, issuerDN, serialNumber, validity.notBefore, \
                             validity.notAfter, clientCertPem, fingerprint, sans"
                        )
                    })?)
                } else if let Some(c) = name.strip_prefix("context.authorizer.claims.") {
                    if c.is_empty() || c.contains(char::is_whitespace) {
                        return Err(format!("bad claim name {c:?} in {s:?}"));
                    }
                    Piece::Claim(c.to_string())
                } else if let Some(c) = name.strip_prefix("context.authorizer.") {
                    if c.is_empty() || c.contains(char::is_whitespace) {
                        return Err(format!("bad authorizer value name {c:?} in {s:?}"));
                    }
                    Piece::AuthorizerValue(c.to_string())
                } else if let Some(p) = name.strip_prefix("request.path.") {
                    let idx = params.iter().position(|n| n == p).ok_or_else(|| {
                        format!("${{request.path.{p}}} names no path variable of the route")
                    })?;
                    Piece::PathVar(idx)
                } else {
                    return Err(format!(
                        "unknown variable ${{{name}}}: allowed are ${{stageVariables.NAME}}, \
                         ${{context.requestId}}, ${{context.identity.sourceIp}}, \
                         ${{context.identity.clientCert.FIELD}}, \
                         ${{context.authorizer.claims.NAME}}, ${{context.authorizer.NAME}}, \
                         ${{request.path.NAME}}"
                    ));
                };
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(piece);
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix('{') {
                if let Some(end) = after.find('}') {
                    let name = &after[..end];
                    if let Some(idx) = params.iter().position(|n| n == name) {
                        if !lit.is_empty() {
                            pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                        }
                        pieces.push(Piece::PathVar(idx));
                        rest = &after[end + 1..];
                        continue;
                    }
                    if unknown == UnknownBraces::Error {
                        return Err(format!("{{{name}}} names no path variable of the route"));
                    }
                } else if unknown == UnknownBraces::Error {
                    return Err(format!("unclosed \"{{\" in {s:?}"));
                }
            }
            let ch = rest.chars().next().unwrap_or_default();
            lit.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// Substitutes stage variables; a variable the stage does not define is an error.
    pub fn with_stage(
        &self,
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Result<Template, String> {
        let mut pieces: Vec<Piece> = Vec::with_capacity(self.pieces.len());
        for p in &self.pieces {
            let p = match p {
                Piece::StageVar(name) => match vars.get(name) {
                    Some(v) => Piece::Lit(v.clone()),
                    None => return Err(format!("${{stageVariables.{name}}} is not defined")),
                },
                other => other.clone(),
            };
            // Merge adjacent literals so rendering does fewer pushes.
            match (pieces.last_mut(), p) {
                (Some(Piece::Lit(prev)), Piece::Lit(s)) => prev.push_str(&s),
                (_, p) => pieces.push(p),
            }
        }
        Ok(Template { pieces })
    }

    /// Whether the path part (before the first literal `?`) holds a value an authorizer or a
    /// client certificate gave: a value the route's config does not fix, which could make a
    /// `.` or `..` segment once rendered.
    pub fn identity_in_path(&self) -> bool {
        for p in &self.pieces {
            match p {
                Piece::Lit(s) if s.contains('?') => return false,
                Piece::ClientCert(_) | Piece::Claim(_) | Piece::AuthorizerValue(_) => return true,
                _ => {}
            }
        }
        false
    }

    /// Whether the path part's literal text (before the first literal `?`), with every value
    /// taken as a plain word, already has a `.` or `..` segment, percent-decoded.
    pub fn literal_dot_segment(&self) -> bool {
        let mut path = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => match s.split_once('?') {
                    Some((before, _)) => {
                        path.extend_from_slice(before.as_bytes());
                        break;
                    }
                    None => path.extend_from_slice(s.as_bytes()),
                },
                _ => path.push(b'x'),
            }
        }
        crate::syntax::path::has_dot_segment(&path)
    }

    /// The template's text when it has no request-time pieces.
    pub fn as_literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Renders into `out`; `path_var(i, out)` writes path variable `i`. A certificate field
    /// of a request without a certificate renders as nothing.
    pub fn render(
        &self,
        out: &mut Vec<u8>,
        vars: &Vars<'_>,
        mut path_var: impl FnMut(usize, &mut Vec<u8>),
    ) {
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Piece::PathVar(i) => path_var(*i, out),
                Piece::RequestId => out.extend_from_slice(vars.request_id),
                Piece::SourceIp => out.extend_from_slice(vars.source_ip.as_bytes()),
                Piece::ClientCert(f) => {
                    let v = vars
                        .client_cert
                        .and_then(|c| c.get(*f as usize))
                        .map(String::as_str)
                        .unwrap_or_default();
                    write_escaped(v, vars.escape, out);
                }
                Piece::Claim(name) => {
                    if let Some(v) = vars.authorizer.and_then(|a| a.claim(name)) {
                        write_escaped(&v, vars.escape, out);
                    }
                }
                Piece::AuthorizerValue(name) => {
                    if let Some(v) = vars.authorizer.and_then(|a| a.value(name)) {
                        write_escaped(&v, vars.escape, out);
                    }
                }
                // Substituted at compile time; an unresolved one renders as nothing.
                Piece::StageVar(_) => {}
            }
        }
    }
}

/// An identity value (certificate field, claim) written where it lands.
fn write_escaped(v: &str, escape: Escape, out: &mut Vec<u8>) {
    match escape {
        Escape::Uri => encode_strict(v, out),
        Escape::Header => out.extend(v.bytes().filter(|&b| super::is_value_byte(b))),
        Escape::Raw => out.extend_from_slice(v.as_bytes()),
    }
}

/// Percent-encodes all but RFC 3986 unreserved characters: safe in a path segment and in a
/// query value alike (a DN's `=`, `,` and `&` cannot add parameters).
fn encode_strict(v: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// `[A-Za-z0-9_-]+`: the names allowed for variables.
pub(crate) fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_in_the_path_are_found_and_in_the_query_not() {
        let t = |s: &str| Template::parse(s, &params(), UnknownBraces::Error).unwrap();
        assert!(t("/t/${context.authorizer.tenant}/x").identity_in_path());
        assert!(t("/u/${context.authorizer.claims.sub}").identity_in_path());
        assert!(t("/c/${context.identity.clientCert.subjectDN}").identity_in_path());
        assert!(!t("/x/{petId}?t=${context.authorizer.tenant}").identity_in_path());
        assert!(!t("/x/{petId}/${context.requestId}").identity_in_path());
        assert!(t("/a/../${context.authorizer.tenant}").literal_dot_segment());
        assert!(t("/a/%2e/${context.authorizer.tenant}").literal_dot_segment());
        assert!(t("/a\\..\\b").literal_dot_segment());
        assert!(!t("/a/..b/${context.authorizer.tenant}/.x").literal_dot_segment());
        // A value is a word, not a dot, and the query is not the path.
        assert!(!t("/a/${context.authorizer.tenant}/{petId}?p=..").literal_dot_segment());
    }

    use std::collections::BTreeMap;

    #[test]
    fn a_uri_path_ending_with_a_variable_is_told() {
        let t = |s: &str| Template::parse(s, &params(), UnknownBraces::Error).unwrap();
        assert_eq!(t("/f/{proxy}").path_ends_with_var(), Some(1));
        assert_eq!(t("/f/{proxy}?a=1").path_ends_with_var(), Some(1));
        assert_eq!(t("/f/{petId}/tail").path_ends_with_var(), None);
        assert_eq!(t("/f/{proxy}x?a=1").path_ends_with_var(), None);
        assert_eq!(t("/f?q={proxy}").path_ends_with_var(), None);
        assert_eq!(t("/f").path_ends_with_var(), None);
    }

    fn params() -> Vec<String> {
        vec!["petId".to_string(), "proxy".to_string()]
    }

    #[test]
    fn parses_all_piece_kinds() {
        let t = Template::parse(
            "${stageVariables.backend}/pets/{petId}?r=${context.requestId}&p=${request.path.proxy}",
            &params(),
            UnknownBraces::Error,
        )
        .unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::StageVar("backend".into()),
                Piece::Lit("/pets/".into()),
                Piece::PathVar(0),
                Piece::Lit("?r=".into()),
                Piece::RequestId,
                Piece::Lit("&p=".into()),
                Piece::PathVar(1),
            ]
        );
    }

    #[test]
    fn json_braces_stay_literal_in_bodies() {
        let t = Template::parse(
            r#"{"message":"Not Found"}"#,
            &params(),
            UnknownBraces::Literal,
        )
        .unwrap();
        assert_eq!(t.as_literal(), Some(r#"{"message":"Not Found"}"#));
        let t = Template::parse(r#"{"id":"{petId}"}"#, &params(), UnknownBraces::Literal).unwrap();
        let mut out = Vec::new();
        let vars = Vars {
            request_id: b"rid",
            source_ip: "10.0.0.1",
            client_cert: None,
            authorizer: None,
            escape: Escape::Raw,
        };
        t.render(&mut out, &vars, |_, o| o.extend_from_slice(b"7"));
        assert_eq!(out, br#"{"id":"7"}"#);
    }

    struct Claims;
    impl AuthorizerVars for Claims {
        fn claim(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
            (name == "cognito:groups").then(|| "a&b\r\nx: y".into())
        }
        fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
            (name == "tenant").then(|| "t 1".into())
        }
    }

    #[test]
    fn claims_render_escaped_and_absent_ones_as_nothing() {
        let t = Template::parse(
            "/g/${context.authorizer.claims.cognito:groups}/${context.authorizer.claims.sub}",
            &params(),
            UnknownBraces::Error,
        )
        .unwrap();
        let mut vars = Vars {
            request_id: b"rid",
            source_ip: "10.0.0.1",
            client_cert: None,
            authorizer: Some(&Claims),
            escape: Escape::Uri,
        };
        let mut out = Vec::new();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/g/a%26b%0D%0Ax%3A%20y/");
        let t2 = Template::parse(
            "/t/${context.authorizer.tenant}",
            &params(),
            UnknownBraces::Error,
        )
        .unwrap();
        let mut o2 = Vec::new();
        t2.render(&mut o2, &vars, |_, _| {});
        assert_eq!(o2, b"/t/t%201");
        vars.escape = Escape::Header;
        out.clear();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/g/a&bx: y/");
        vars.authorizer = None;
        out.clear();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/g//");
        assert!(Template::parse(
            "${context.authorizer.claims.}",
            &params(),
            UnknownBraces::Error
        )
        .is_err());
    }

    #[test]
    fn identity_values_are_escaped_for_where_they_land() {
        let t = Template::parse(
            "/who/${context.identity.clientCert.subjectDN}?ip=${context.identity.sourceIp}",
            &params(),
            UnknownBraces::Error,
        )
        .unwrap();
        let mut fields = vec![String::new(); crate::syntax::CertField::ALL.len()];
        fields[crate::syntax::CertField::SubjectDN as usize] = "CN=a b,O=x".into();
        let mut vars = Vars {
            request_id: b"rid",
            source_ip: "10.0.0.1",
            client_cert: Some(&fields),
            authorizer: None,
            escape: Escape::Uri,
        };
        let mut out = Vec::new();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/who/CN%3Da%20b%2CO%3Dx?ip=10.0.0.1");
        vars.escape = Escape::Raw;
        out.clear();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/who/CN=a b,O=x?ip=10.0.0.1");
        vars.client_cert = None;
        out.clear();
        t.render(&mut out, &vars, |_, _| {});
        assert_eq!(out, b"/who/?ip=10.0.0.1");
        let e = Template::parse(
            "${context.identity.clientCert.colour}",
            &params(),
            UnknownBraces::Literal,
        )
        .unwrap_err();
        assert!(e.contains("allowed are subjectDN"), "{e}");
    }

    #[test]
    fn unknown_names_are_errors_in_uris() {
        assert!(Template::parse("/x/{nope}", &params(), UnknownBraces::Error).is_err());
        assert!(Template::parse("${foo.bar}", &params(), UnknownBraces::Literal).is_err());
        assert!(Template::parse("${stageVariables.a", &params(), UnknownBraces::Literal).is_err());
    }

    #[test]
    fn stage_substitution_merges_literals_and_reports_missing() {
        let t =
            Template::parse("${stageVariables.b}/pets", &params(), UnknownBraces::Error).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("b".to_string(), "http://pets".to_string());
        assert_eq!(
            t.with_stage(&vars).unwrap().as_literal(),
            Some("http://pets/pets")
        );
        assert!(t.with_stage(&BTreeMap::new()).is_err());
    }
}
