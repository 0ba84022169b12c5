//! External (`request` and `token`) authorizers' answers: Amazon API Gateway's two response
//! formats — the simple `{"isAuthorized": bool, "context": {...}}` and the IAM policy
//! (`principalId`, `policyDocument` with `Effect`/`Action`/`Resource` statements, `context`,
//! `usageIdentifierKey`) — parsed once into a [`Decision`], which is what the node caches and
//! evaluates against each request's ARN-like resource (a cached policy may allow one route and
//! not another, as Amazon's cached policies do). No I/O here.

use serde_json::{Map, Value};

/// Longest answer read from an authorizer.
pub(crate) const MAX_ANSWER: usize = 64 << 10;

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub verdict: Verdict,
    pub principal_id: Option<String>,
    /// `context`: values are strings, numbers or booleans (others are dropped, as Amazon does).
    pub context: Map<String, Value>,
    /// Selects the API key for usage plans (`usageIdentifierKey`).
    pub usage_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The simple response.
    Simple(bool),
    /// An IAM policy's statements.
    Policy(Vec<Statement>),
    /// An answer in both formats: allowed only where both allow (an explicit Deny in the
    /// policy wins over `isAuthorized: true`; `isAuthorized: false` refuses what the policy
    /// allows).
    Both(bool, Vec<Statement>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// What a decision says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allow,
    /// `isAuthorized: false`.
    Denied,
    /// No statement allows the resource.
    ImplicitDeny,
    /// A `Deny` statement names the resource.
    ExplicitDeny,
}

impl Decision {
    /// Parses an answer body; the error says what is wrong with it (for the log).
    pub(crate) fn parse(body: &[u8]) -> Result<Decision, &'static str> {
        let v: Value =
            serde_json::from_slice(body).map_err(|_| "the authorizer's answer is not JSON")?;
        // serde_json keeps the last of two members of one name: a decision that says two
        // things (`isAuthorized` false, then true) is refused, not read as its last word.
        serde_json::from_slice::<NoDuplicates>(body)
            .map_err(|_| "the authorizer's answer has an object with two members of one name")?;
        let obj = v
            .as_object()
            .ok_or("the authorizer's answer is not a JSON object")?;
        let context = match obj.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(_) => return Err("the authorizer's context is not an object"),
        };
        let simple = obj
            .get("isAuthorized")
            .map(|a| a.as_bool().ok_or("isAuthorized is not a boolean"))
            .transpose()?;
        let policy = obj.get("policyDocument").map(statements).transpose()?;
        let verdict = match (simple, policy) {
            (Some(a), None) => Verdict::Simple(a),
            (None, Some(st)) => Verdict::Policy(st),
            (Some(a), Some(st)) => Verdict::Both(a, st),
            (None, None) => {
                return Err("the authorizer's answer has neither isAuthorized nor policyDocument")
            }
        };
        let text = |k: &str| -> Result<Option<String>, &'static str> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err("principalId and usageIdentifierKey must be strings"),
            }
        };
        Ok(Decision {
            verdict,
            principal_id: text("principalId")?,
            context,
            usage_key: text("usageIdentifierKey")?,
        })
    }

    /// The decision for a request to `resource` (`arn:aws:execute-api:...:API/STAGE/METHOD/PATH`):
    /// an explicit deny wins, then any allow, else an implicit deny.
    pub(crate) fn evaluate(&self, resource: &str) -> Outcome {
        match &self.verdict {
            Verdict::Simple(true) => Outcome::Allow,
            Verdict::Simple(false) => Outcome::Denied,
            Verdict::Policy(st) => evaluate_policy(st, resource),
            Verdict::Both(simple, st) => match evaluate_policy(st, resource) {
                Outcome::Allow if !simple => Outcome::Denied,
                o => o,
            },
        }
    }

    /// Bytes this decision takes in a cache (about).
    pub(crate) fn weight(&self) -> u64 {
        let st: usize = match &self.verdict {
            Verdict::Simple(_) => 0,
            Verdict::Policy(s) | Verdict::Both(_, s) => s
                .iter()
                .map(|s| {
                    s.actions
                        .iter()
                        .chain(&s.resources)
                        .map(|x| x.len() + 24)
                        .sum::<usize>()
                        + 64
                })
                .sum(),
        };
        let ctx: usize = self
            .context
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len() + 48)
            .sum();
        // The principal and usage key too: an authorizer may answer kilobytes in either.
        let ids = [&self.principal_id, &self.usage_key]
            .into_iter()
            .flatten()
            .map(|s| s.len() + 24)
            .sum::<usize>();
        (st + ctx + ids + 128) as u64
    }
}

/// Any JSON document whose objects each name a member once; anything else is an error.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicates {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON whose objects name each member once")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        // Names as they read once unescaped: `"is\u0041uthorized"` is `isAuthorized`.
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k) {
                return Err(serde::de::Error::custom("a member named twice"));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(self)
    }
}

/// IAM's evaluation of `execute-api:Invoke` on `resource`: an explicit deny wins, then any
/// allow, else an implicit deny.
pub(crate) fn evaluate_policy(st: &[Statement], resource: &str) -> Outcome {
    evaluate_action(st, "execute-api:invoke", resource)
}

/// IAM's evaluation of `action` (lower case, e.g. `execute-api:manageconnections`) on
/// `resource`.
pub(crate) fn evaluate_action(st: &[Statement], action: &str, resource: &str) -> Outcome {
    let applies = |s: &&Statement| {
        s.actions
            .iter()
            .any(|a| glob(a.to_ascii_lowercase().as_bytes(), action.as_bytes()))
            && s.resources
                .iter()
                .any(|r| glob(r.as_bytes(), resource.as_bytes()))
    };
    if st.iter().filter(|s| !s.allow).any(|s| applies(&s)) {
        Outcome::ExplicitDeny
    } else if st.iter().filter(|s| s.allow).any(|s| applies(&s)) {
        Outcome::Allow
    } else {
        Outcome::ImplicitDeny
    }
}

/// A policy document's statements: `Statement` as one object or a list; `Action` and
/// `Resource` as a string or a list.
pub(crate) fn statements(doc: &Value) -> Result<Vec<Statement>, &'static str> {
    let bad = "the policyDocument is malformed";
    let list = match doc.get("Statement").ok_or(bad)? {
        Value::Array(a) => a.iter().collect::<Vec<_>>(),
        o @ Value::Object(_) => vec![o],
        _ => return Err(bad),
    };
    let strings = |v: Option<&Value>| -> Result<Vec<String>, &'static str> {
        match v {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or(bad))
                .collect(),
            _ => Err(bad),
        }
    };
    if doc.as_object().is_some_and(|o| {
        o.keys()
            .any(|k| !matches!(k.as_str(), "Version" | "Id" | "Statement"))
    }) {
        return Err("the policyDocument has a member other than Version, Id and Statement");
    }
    list.into_iter()
        .map(|s| {
            // An element this evaluation does not apply (a Condition, NotAction,
            // NotResource, Principal) is refused, never ignored: ignored, it would widen an
            // Allow (or narrow a Deny) past what the document says.
            let known = |k: &String| matches!(k.as_str(), "Sid" | "Effect" | "Action" | "Resource");
            if s.as_object().is_some_and(|o| !o.keys().all(known)) {
                return Err("a statement has an element other than Sid, Effect, Action and Resource (Condition, NotAction, NotResource and Principal are not evaluated, so they are refused)");
            }
            let allow = match s.get("Effect").and_then(Value::as_str) {
                Some(e) if e.eq_ignore_ascii_case("allow") => true,
                Some(e) if e.eq_ignore_ascii_case("deny") => false,
                _ => return Err(bad),
            };
            Ok(Statement {
                allow,
                actions: strings(s.get("Action"))?,
                resources: strings(s.get("Resource"))?,
            })
        })
        .collect()
}

/// IAM's wildcard match: `*` any run of characters, `?` one character; the rest literal.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative, with one backtrack point: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        // A `*` in the pattern is a wildcard even where the text has a `*` too.
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:execute-api:local:000000000000:petstore/prod/GET/pets/7";

    #[test]
    fn simple_answers_and_their_context() {
        let d = Decision::parse(br#"{"isAuthorized": true, "context": {"user": "u1", "n": 3, "ok": true, "deep": {"x": 1}}}"#).unwrap();
        assert_eq!(d.evaluate(ARN), Outcome::Allow);
        assert_eq!(d.context.len(), 3, "nested values are dropped");
        let d = Decision::parse(br#"{"isAuthorized": false}"#).unwrap();
        assert_eq!(d.evaluate(ARN), Outcome::Denied);
    }

    #[test]
    fn policies_allow_deny_and_match_wildcards() {
        let d = Decision::parse(br#"{"principalId": "user-1", "usageIdentifierKey": "k-123",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
              {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "arn:aws:execute-api:*:*:petstore/prod/GET/*"},
              {"Action": ["execute-api:*"], "Effect": "Deny", "Resource": ["arn:aws:execute-api:*:*:petstore/prod/GET/admin*"]}]}}"#).unwrap();
        assert_eq!(d.principal_id.as_deref(), Some("user-1"));
        assert_eq!(d.usage_key.as_deref(), Some("k-123"));
        assert_eq!(d.evaluate(ARN), Outcome::Allow);
        assert_eq!(
            d.evaluate("arn:aws:execute-api:local:000000000000:petstore/prod/GET/admin/x"),
            Outcome::ExplicitDeny
        );
        assert_eq!(
            d.evaluate("arn:aws:execute-api:local:000000000000:petstore/prod/POST/pets"),
            Outcome::ImplicitDeny
        );
        // One statement as an object; an action that is not Invoke allows nothing.
        let d = Decision::parse(br#"{"policyDocument": {"Statement": {"Action": "s3:GetObject", "Effect": "Allow", "Resource": "*"}}}"#).unwrap();
        assert_eq!(d.evaluate(ARN), Outcome::ImplicitDeny);
        let d = Decision::parse(br#"{"policyDocument": {"Statement": [{"Action": "*", "Effect": "allow", "Resource": "*"}]}}"#).unwrap();
        assert_eq!(d.evaluate(ARN), Outcome::Allow);
    }

    /// What a cached answer is weighed at counts its every string: a 60 KB principal was
    /// weighed at a few hundred bytes, and the authorizer's 16 MiB cache held gigabytes.
    #[test]
    fn an_answers_weight_counts_its_principal_and_usage_key() {
        let big = "x".repeat(60_000);
        for field in ["principalId", "usageIdentifierKey"] {
            let body = serde_json::json!({"isAuthorized": true, field: big}).to_string();
            let d = Decision::parse(body.as_bytes()).unwrap();
            assert!(d.weight() > 60_000, "{field}: {}", d.weight());
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for b in [&b"not json"[..], b"[]", b"{}", br#"{"isAuthorized": "yes"}"#,
            br#"{"policyDocument": {}}"#, br#"{"policyDocument": {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}}"#,
            br#"{"isAuthorized": true, "context": []}"#, br#"{"isAuthorized": true, "principalId": 5}"#] {
            assert!(Decision::parse(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
        // Elements that are not evaluated are refused, not ignored (an ignored Condition
        // would make its Allow unconditional).
        for extra in [
            r#""Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}"#,
            r#""NotResource": "arn:aws:execute-api:*:*:a/s/GET/admin""#,
            r#""NotAction": "execute-api:ManageConnections""#,
            r#""Principal": "*""#,
            r#""Bogus": 1"#,
        ] {
            let b = format!(
                r#"{{"policyDocument": {{"Version": "2012-10-17", "Statement": [{{"Sid": "s", "Effect": "Allow", "Action": "*", "Resource": "*", {extra}}}]}}}}"#
            );
            assert!(
                Decision::parse(b.as_bytes())
                    .unwrap_err()
                    .contains("other than Sid"),
                "{b}"
            );
        }
        let b = r#"{"policyDocument": {"Version": "2012-10-17", "Statement": [], "Extra": 1}}"#;
        assert!(Decision::parse(b.as_bytes()).is_err());
        let b = r#"{"policyDocument": {"Version": "2012-10-17", "Id": "x", "Statement": [{"Sid": "s", "Effect": "Allow", "Action": "*", "Resource": "*"}]}}"#;
        assert!(Decision::parse(b.as_bytes()).is_ok());
    }

    #[test]
    fn an_answer_in_both_formats_is_allowed_only_where_both_allow() {
        let both = |simple: bool, effect: &str| {
            Decision::parse(format!(r#"{{"isAuthorized": {simple}, "policyDocument": {{"Statement": [
                {{"Effect": "{effect}", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:*:*:petstore/prod/GET/pets/*"}}]}}}}"#).as_bytes())
            .unwrap()
        };
        let other = "arn:aws:execute-api:local:000000000000:petstore/prod/POST/pets";
        assert_eq!(both(true, "Allow").evaluate(ARN), Outcome::Allow);
        assert_eq!(both(true, "Allow").evaluate(other), Outcome::ImplicitDeny);
        assert_eq!(both(true, "Deny").evaluate(ARN), Outcome::ExplicitDeny);
        assert_eq!(both(false, "Allow").evaluate(ARN), Outcome::Denied);
        assert_eq!(both(false, "Deny").evaluate(ARN), Outcome::ExplicitDeny);
    }

    #[test]
    fn members_named_twice_are_refused() {
        for b in [
            r#"{"isAuthorized": false, "isAuthorized": true}"#,
            r#"{"isAuthorized": false, "is\u0041uthorized": true}"#,
            r#"{"isAuthorized": true, "context": {"t": "a", "t": "b"}}"#,
            r#"{"policyDocument": {"Statement": [{"Effect": "Deny", "Effect": "Allow", "Action": "*", "Resource": "*"}]}}"#,
        ] {
            assert_eq!(
                Decision::parse(b.as_bytes()),
                Err("the authorizer's answer has an object with two members of one name"),
                "{b}"
            );
        }
        // The same name in two objects is no duplicate.
        let b = r#"{"isAuthorized": true, "context": {"isAuthorized": "x"}}"#;
        assert!(Decision::parse(b.as_bytes()).is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(!glob(b"a*d", b"abc"));
        assert!(glob(b"*/GET/*", b"x/prod/GET/pets"));
        // A `*` in the text does not turn the pattern's `*` into a literal.
        assert!(glob(b"a/admin/*", b"a/admin/*x"));
        assert!(glob(b"*", b"*"));
        // Many stars on a long text stays fast (no exponential backtracking).
        let text = vec![b'a'; 10_000];
        assert!(!glob(b"*a*a*a*a*a*a*a*b", &text));
    }
}
