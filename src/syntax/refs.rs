//! The references of Amazon API Gateway's gateway-response templates, in Velocity's syntax:
//! `$context.error.message`, `${context.requestId}`, `$!stageVariables.name` (quiet). Parsed
//! once at load; rendering walks the pieces. Text that is not a reference (`$5`, `$`, a
//! `$name` of another root) stays as it is, as Velocity leaves it.

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `$context.error.message`: the gateway's message, as text.
    ErrorMessage,
    /// `$context.error.messageString`: the same as a quoted JSON string.
    ErrorMessageString,
    /// `$context.error.responseType`: `THROTTLED`, `DEFAULT_4XX`...
    ErrorResponseType,
    /// `$context.error.validationErrorString`: why request validation failed (else empty).
    ValidationError,
    /// `$context.requestId` (and `extendedRequestId`).
    RequestId,
    /// `$context.stage`.
    Stage,
    /// `$context.apiId`: the API's name.
    ApiId,
    /// `$context.domainName`: the request's host.
    DomainName,
    /// `$context.httpMethod`.
    HttpMethod,
    /// `$context.path`: the request's path, as sent.
    Path,
    /// `$context.routeKey`: the matched route's key, if any.
    RouteKey,
    /// `$context.resourcePath`: the matched route's path template (`/pets/{id}`), if any.
    ResourcePath,
    /// `$context.identity.sourceIp`.
    SourceIp,
    /// `$context.identity.userAgent`.
    UserAgent,
    /// `$context.protocol`: `HTTP/2.0`, `HTTP/1.1` or `HTTP/1.0`.
    Protocol,
    /// `$stageVariables.NAME`.
    StageVar(String),
}

const CONTEXT: [(&str, Ref); 16] = [
    ("context.error.message", Ref::ErrorMessage),
    ("context.error.messageString", Ref::ErrorMessageString),
    ("context.error.responseType", Ref::ErrorResponseType),
    ("context.error.validationErrorString", Ref::ValidationError),
    ("context.requestId", Ref::RequestId),
    ("context.extendedRequestId", Ref::RequestId),
    ("context.stage", Ref::Stage),
    ("context.apiId", Ref::ApiId),
    ("context.domainName", Ref::DomainName),
    ("context.httpMethod", Ref::HttpMethod),
    ("context.path", Ref::Path),
    ("context.resourcePath", Ref::ResourcePath),
    ("context.routeKey", Ref::RouteKey),
    ("context.identity.sourceIp", Ref::SourceIp),
    ("context.identity.userAgent", Ref::UserAgent),
    ("context.protocol", Ref::Protocol),
];

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefPiece {
    Lit(String),
    Ref(Ref),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefTemplate {
    pub pieces: Vec<RefPiece>,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A piece of text as Velocity reads it: literal text, or a reference's name (`$a.b`,
/// `$!a.b`, `${a.b}`: `a.b`; braced names run to the `}` and may hold `[0]` and the like).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Lit(String),
    Ref(String),
}

/// Splits `s` into text and references. A `$` not followed by a name is text.
pub(crate) fn lex(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = s[i..].find('$').map_or(b.len(), |n| i + n);
            lit.push_str(&s[i..next]);
            i = next;
            continue;
        }
        let mut j = i + 1;
        if b.get(j) == Some(&b'!') {
            j += 1;
        }
        let braced = b.get(j) == Some(&b'{');
        if braced {
            j += 1;
        }
        if !b.get(j).copied().is_some_and(ident_start) {
            lit.push('$');
            i += 1;
            continue;
        }
        let start = j;
        let name = if braced {
            let end = s[j..]
                .find('}')
                .ok_or_else(|| format!("unclosed \"${{\" at {:?}", &s[i..]))?;
            j += end + 1;
            &s[start..j - 1]
        } else {
            loop {
                while b.get(j).copied().is_some_and(ident_char) {
                    j += 1;
                }
                // `[0]`: an index (`$request.body.items[0].id`).
                if b.get(j) == Some(&b'[') {
                    let digits = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits > 0 && b.get(j + 1 + digits) == Some(&b']') {
                        j += digits + 2;
                        continue;
                    }
                }
                if b.get(j) == Some(&b'.') && b.get(j + 1).copied().is_some_and(ident_start) {
                    j += 1;
                    continue;
                }
                break;
            }
            &s[start..j]
        };
        if !lit.is_empty() {
            out.push(Token::Lit(std::mem::take(&mut lit)));
        }
        out.push(Token::Ref(name.to_string()));
        i = j;
    }
    if !lit.is_empty() {
        out.push(Token::Lit(lit));
    }
    Ok(out)
}

impl RefTemplate {
    /// Parses `s`; `Err` names a `$context.*` or `$input`/`$util` reference not available here.
    pub fn parse(s: &str) -> Result<RefTemplate, String> {
        let mut pieces: Vec<RefPiece> = Vec::new();
        let push_lit = |pieces: &mut Vec<RefPiece>, t: &str| match pieces.last_mut() {
            Some(RefPiece::Lit(l)) => l.push_str(t),
            _ => pieces.push(RefPiece::Lit(t.to_string())),
        };
        for t in lex(s)? {
            let name = match t {
                Token::Lit(l) => {
                    push_lit(&mut pieces, &l);
                    continue;
                }
                Token::Ref(name) => name,
            };
            let root = name.split('.').next().unwrap_or_default();
            let r = match root {
                "context" => CONTEXT
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| r.clone())
                    .ok_or_else(|| {
                        format!(
                            "${name} is not a variable gateway responses have: allowed are {}, $stageVariables.NAME",
                            CONTEXT.iter().map(|(n, _)| format!("${n}")).collect::<Vec<_>>().join(", ")
                        )
                    })?,
                "stageVariables" => match name.split_once('.') {
                    Some((_, v)) if !v.contains('.') => Ref::StageVar(v.to_string()),
                    _ => return Err(format!("${name}: expected $stageVariables.NAME")),
                },
                "input" | "util" | "method" => {
                    return Err(format!(
                        "${name}: gateway responses have $context and $stageVariables only"
                    ))
                }
                // Velocity leaves a reference it does not know as it was written.
                _ => {
                    push_lit(&mut pieces, &format!("${name}"));
                    continue;
                }
            };
            pieces.push(RefPiece::Ref(r));
        }
        Ok(RefTemplate { pieces })
    }

    /// Renders into `out`; `value` writes what a reference stands for.
    pub fn render(&self, out: &mut Vec<u8>, mut value: impl FnMut(&Ref, &mut Vec<u8>)) {
        for p in &self.pieces {
            match p {
                RefPiece::Lit(l) => out.extend_from_slice(l.as_bytes()),
                RefPiece::Ref(r) => value(r, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &RefTemplate) -> Vec<String> {
        let mut out = Vec::new();
        t.render(&mut out, |r, o| {
            o.extend_from_slice(format!("<{r:?}>").as_bytes())
        });
        vec![String::from_utf8(out).unwrap()]
    }

    #[test]
    fn references_in_velocitys_forms() {
        let t = RefTemplate::parse(
            r#"{"message":$context.error.messageString,"id":"${context.requestId}","s":"$!stageVariables.tier","cost":"$5 $ $x.y"}"#,
        )
        .unwrap();
        assert_eq!(
            names(&t),
            [
                r#"{"message":<ErrorMessageString>,"id":"<RequestId>","s":"<StageVar("tier")>","cost":"$5 $ $x.y"}"#
            ]
        );
        // A sentence's full stop ends the reference.
        let t = RefTemplate::parse("Denied: $context.error.message.").unwrap();
        assert_eq!(names(&t), ["Denied: <ErrorMessage>."]);
    }

    #[test]
    fn unknown_context_variables_are_refused() {
        for bad in [
            "$context.nope",
            "${context.requestId",
            "$input.body",
            "$util.urlEncode",
        ] {
            assert!(RefTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
