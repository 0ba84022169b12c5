//! A resource policy as Amazon API Gateway's `x-amazon-apigateway-policy` (an IAM policy
//! document), both ways. Tollgate's policies speak of source addresses only: an allow list
//! (none: everyone) and a deny list, an explicit deny winning. Export writes one `Allow`
//! statement (with `IpAddress` on `aws:SourceIp` when there is an allow list) and one `Deny`
//! statement for the deny list; import reads back those and Amazon's usual shapes (`Deny`
//! with `NotIpAddress`: only those addresses), evaluated as Amazon does: a caller needs a
//! statement that allows it and none that denies it.
//!
//! A statement Tollgate cannot evaluate (a principal other than everyone, part of the API,
//! another condition) never lets anyone in that the document keeps out: an `Allow` is left
//! out (the API allows less), a `Deny` denies every caller; each is named in the warnings.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::config::ResourcePolicy;

/// Where a document keeps its resource policy (at its root).
pub(super) const KEY: &str = "x-amazon-apigateway-policy";

/// Every address, as a deny list: nobody gets in.
const EVERYONE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// `x-amazon-apigateway-policy` for `p`.
pub(super) fn export(p: &ResourcePolicy) -> Value {
    let statement = |effect: &str, list: &[crate::syntax::cidr::Cidr]| {
        let mut s = json!({
            "Effect": effect,
            "Principal": "*",
            "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*",
        });
        if !list.is_empty() {
            let ips: Vec<String> = list.iter().map(ToString::to_string).collect();
            s["Condition"] = json!({ "IpAddress": { "aws:SourceIp": ips } });
        }
        s
    };
    let mut statements = vec![statement("Allow", &p.allow)];
    if !p.deny.is_empty() {
        statements.push(statement("Deny", &p.deny));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Which callers a statement speaks of.
enum Callers {
    All,
    /// `IpAddress`.
    In(Vec<String>),
    /// `NotIpAddress`.
    NotIn(Vec<String>),
}

/// The definition's `resource_policy` for the document's policy `p`; `None` when it lets
/// every caller in (a definition has no policy then).
pub(super) fn import(p: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    let statements: Vec<&Value> = match &p["Statement"] {
        Value::Array(list) => list.iter().collect(),
        s @ Value::Object(_) => vec![s],
        _ => {
            warnings.push(format!(
                "{KEY}: no Statement Tollgate can read: every caller is denied rather than served without the policy"
            ));
            return Some(json!({ "deny": EVERYONE }));
        }
    };
    let mut allow_all = false;
    let mut allow: Vec<String> = Vec::new();
    let mut deny: Vec<String> = Vec::new();
    // What `Deny` + `NotIpAddress` statements leave: callers must be in each of these.
    let mut only: Option<Vec<String>> = None;
    let mut deny_all = false;
    for (n, st) in statements.into_iter().enumerate() {
        let effect = st["Effect"].as_str().unwrap_or("");
        let callers = match callers(st) {
            Ok(Some(c)) => c,
            // Not about invoking the API.
            Ok(None) => continue,
            Err(why) => {
                if effect == "Allow" {
                    warnings.push(format!(
                        "{KEY}.Statement[{n}]: {why}: left out (the API allows less than the document)"
                    ));
                } else {
                    warnings.push(format!(
                        "{KEY}.Statement[{n}]: {why}: every caller is denied rather than served without it"
                    ));
                    deny_all = true;
                }
                continue;
            }
        };
        match (effect, callers) {
            ("Allow", Callers::All) => allow_all = true,
            ("Allow", Callers::In(l)) => allow.extend(l),
            ("Allow", Callers::NotIn(_)) => warnings.push(format!(
                "{KEY}.Statement[{n}]: Allow with NotIpAddress is not supported: left out (the API allows less than the document)"
            )),
            ("Deny", Callers::All) => deny_all = true,
            ("Deny", Callers::In(l)) => deny.extend(l),
            ("Deny", Callers::NotIn(l)) => {
                only = Some(match only {
                    None => l,
                    Some(o) => intersect(&o, &l),
                })
            }
            (other, _) => {
                warnings.push(format!(
                    "{KEY}.Statement[{n}]: Effect {other:?} is neither Allow nor Deny: every caller is denied rather than served without it"
                ));
                deny_all = true;
            }
        }
    }
    // `Some(None)`: every caller; `Some(Some(list))`: those in the list; `None`: nobody.
    let allowed = match (allow_all, only) {
        (true, None) => Some(None),
        (true, Some(o)) => Some(Some(o)).filter(|o| o.as_ref().is_some_and(|o| !o.is_empty())),
        (false, None) => Some(Some(allow)).filter(|a| a.as_ref().is_some_and(|a| !a.is_empty())),
        (false, Some(o)) => {
            Some(Some(intersect(&allow, &o))).filter(|a| a.as_ref().is_some_and(|a| !a.is_empty()))
        }
    };
    // The definition's form of it: an allow list only when there is one (an empty one would
    // admit nobody, and is refused), no policy at all when it restricts nothing.
    match allowed {
        Some(None) if !deny_all && deny.is_empty() => None,
        Some(None) if !deny_all => Some(json!({ "deny": deny })),
        Some(Some(allow)) if !deny_all => Some(json!({ "allow": allow, "deny": deny })),
        None if !deny_all => {
            warnings.push(format!(
                "{KEY}: no statement allows a caller: every caller is denied (as Amazon API Gateway does)"
            ));
            Some(json!({ "deny": EVERYONE }))
        }
        _ => Some(json!({ "deny": EVERYONE })),
    }
}

/// A field that is one string or a list of them.
fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s]),
        Value::Array(a) => a.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Which callers a statement speaks of; `Ok(None)` when it is not about invoking the API;
/// `Err` says why Tollgate cannot evaluate it.
fn callers(st: &Value) -> Result<Option<Callers>, String> {
    for k in ["NotPrincipal", "NotAction", "NotResource"] {
        if st.get(k).is_some() {
            return Err(format!("{k} is not supported"));
        }
    }
    let everyone = match &st["Principal"] {
        Value::String(s) => s == "*",
        Value::Object(o) => o.len() == 1 && o.get("AWS").and_then(strings) == Some(vec!["*"]),
        _ => false,
    };
    if !everyone {
        return Err("a Principal other than everyone (\"*\") is not supported".into());
    }
    let actions = strings(&st["Action"]).ok_or("no Action")?;
    // IAM's actions take wildcards (`execute-api:Inv*`, `execute-api:Invok?`) and no case.
    let invoke = actions.iter().any(|a| {
        crate::auth::external::glob(a.to_ascii_lowercase().as_bytes(), b"execute-api:invoke")
    });
    if !invoke {
        return Ok(None);
    }
    let resources = strings(&st["Resource"]).ok_or("no Resource")?;
    if !resources.iter().any(|r| whole_api(r)) {
        return Err(format!(
            "Resource {resources:?} is part of the API; only the whole API (\"execute-api:/*\") is supported"
        ));
    }
    let Some(cond) = st.get("Condition") else {
        return Ok(Some(Callers::All));
    };
    let unsupported = || {
        "a Condition other than IpAddress or NotIpAddress on aws:SourceIp is not supported"
            .to_string()
    };
    let cond = cond
        .as_object()
        .filter(|c| c.len() == 1)
        .ok_or_else(unsupported)?;
    let (op, test) = cond.iter().next().ok_or_else(unsupported)?;
    let test = test
        .as_object()
        .filter(|t| t.len() == 1)
        .ok_or_else(unsupported)?;
    let (key, list) = test.iter().next().ok_or_else(unsupported)?;
    if !key.eq_ignore_ascii_case("aws:SourceIp") {
        return Err(unsupported());
    }
    let list: Vec<String> = strings(list)
        .ok_or_else(unsupported)?
        .into_iter()
        .map(str::to_string)
        .collect();
    match op.as_str() {
        "IpAddress" => Ok(Some(Callers::In(list))),
        "NotIpAddress" => Ok(Some(Callers::NotIn(list))),
        _ => Err(unsupported()),
    }
}

/// Whether a policy's resource is the whole API: `*`, `execute-api:/*`, or an ARN
/// `arn:aws:execute-api:REGION:ACCOUNT:API/*` (stage, method and path all `*`).
fn whole_api(r: &str) -> bool {
    let rest = if r == "*" {
        return true;
    } else if let Some(rest) = r.strip_prefix("execute-api:") {
        rest
    } else if let Some(arn) = r.strip_prefix("arn:aws:execute-api:") {
        match arn.splitn(3, ':').nth(2).and_then(|x| x.split_once('/')) {
            Some((_api, rest)) => rest,
            None => return false,
        }
    } else {
        return false;
    };
    rest.contains('*') && rest.bytes().all(|b| b == b'*' || b == b'/')
}

/// An address range: its address and prefix length (`None` for text that is none; the
/// definition's check names it).
fn range(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let p = if p.is_empty() {
        max
    } else {
        p.trim().parse().ok()?
    };
    (p <= max).then_some((ip, p))
}

/// Whether range `a` lies within range `b`.
fn within(a: (IpAddr, u8), b: (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        }
    };
    if a.0.is_ipv4() != b.0.is_ipv4() || a.1 < b.1 {
        return false;
    }
    // IPv4 in the top 32 bits: a prefix counts from the top either way.
    let mask = u128::MAX.checked_shl(128 - u32::from(b.1)).unwrap_or(0);
    bits(a.0) & mask == bits(b.0) & mask
}

/// The addresses in both lists, as ranges (two ranges are nested or apart: where they meet,
/// the smaller is the meeting). Text that is no range is kept, for the check to name.
fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (x, y) in [(a, b), (b, a)] {
        for s in x {
            let keep = match range(s) {
                Some(r) => y.iter().filter_map(|t| range(t)).any(|t| within(r, t)),
                None => true,
            };
            if keep && !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(statements: Value) -> (Value, Vec<String>) {
        let mut w = Vec::new();
        let v = import(&json!({ "Statement": statements }), &mut w);
        (v.unwrap_or(Value::Null), w)
    }

    #[test]
    fn tollgates_own_policies_come_back() {
        let p = ResourcePolicy {
            allow: vec![crate::syntax::cidr::Cidr::parse("10.0.0.0/8").unwrap()],
            deny: vec![crate::syntax::cidr::Cidr::parse("10.1.0.0/16").unwrap()],
        };
        let mut w = Vec::new();
        let v = import(&export(&p), &mut w);
        assert_eq!(
            v,
            Some(json!({"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]}))
        );
        assert!(w.is_empty(), "{w:?}");
        let deny_only = ResourcePolicy {
            allow: Vec::new(),
            deny: vec![crate::syntax::cidr::Cidr::parse("10.1.0.0/16").unwrap()],
        };
        assert_eq!(
            import(&export(&deny_only), &mut w),
            Some(json!({"deny": ["10.1.0.0/16"]}))
        );
        let open = ResourcePolicy {
            allow: Vec::new(),
            deny: Vec::new(),
        };
        assert_eq!(import(&export(&open), &mut w), None);
        assert!(w.is_empty(), "{w:?}");
    }

    /// An action spelled with IAM's wildcards is still Invoke: a deny so written keeps
    /// everyone out, an allow lets everyone in.
    #[test]
    fn wildcard_actions_are_invoke() {
        let allow = json!({"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*"});
        for action in [
            "execute-api:Inv*",
            "execute-api:Invok?",
            "EXECUTE-API:*",
            "*",
        ] {
            let deny = json!({"Effect": "Deny", "Principal": "*", "Action": action,
                "Resource": "execute-api:/*"});
            let (v, _) = policy(json!([allow, deny]));
            assert_eq!(v, json!({"deny": ["0.0.0.0/0", "::/0"]}), "{action}");
            let open = json!({"Effect": "Allow", "Principal": "*", "Action": [action],
                "Resource": "execute-api:/*"});
            assert_eq!(policy(json!([open])).0, Value::Null, "{action}");
        }
        // Another service's action is not about invoking the API.
        let other = json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:ManageConnections",
            "Resource": "execute-api:/*"});
        assert_eq!(policy(json!([allow, other])).0, Value::Null);
    }

    #[test]
    fn amazons_shapes_are_evaluated_as_amazon_does() {
        let all = json!({"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": "arn:aws:execute-api:us-east-1:123456789012:abc/*"});
        // Allow everyone, deny those not in a range: only that range.
        let only = json!({"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": ["execute-api:Invoke"],
            "Resource": "execute-api:/*/*/*", "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24"]}}});
        assert_eq!(
            policy(json!([all, only])).0,
            json!({"allow": ["192.0.2.0/24"], "deny": []})
        );
        // Two ranges allowed, one NotIpAddress deny: where they meet.
        let some = json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": ["192.0.2.128/25", "198.51.100.0/24"]}}});
        assert_eq!(
            policy(json!([some, only])).0,
            json!({"allow": ["192.0.2.128/25"], "deny": []})
        );
        // Only denies: nothing is allowed.
        let deny = json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*", "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.7"}}});
        let (v, w) = policy(json!([deny]));
        assert_eq!(v, json!({"deny": EVERYONE}));
        assert!(w[0].contains("no statement allows"), "{w:?}");
        // Something else than invoking: no effect.
        let manage = json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:ManageConnections", "Resource": "*"});
        assert_eq!(policy(json!([all, manage])).0, Value::Null);
        // Two NotIpAddress denies whose ranges do not meet: nobody is left.
        let elsewhere = json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*", "Condition": {"NotIpAddress": {"aws:SourceIp": "198.51.100.0/24"}}});
        assert_eq!(
            policy(json!([all, only, elsewhere])).0,
            json!({"deny": EVERYONE})
        );
    }

    #[test]
    fn what_cannot_be_evaluated_lets_nobody_in_that_the_document_keeps_out() {
        let all = json!({"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*"});
        let partial = json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": "execute-api:/prod/DELETE/*"});
        let (v, w) = policy(json!([all, partial]));
        assert_eq!(v, json!({"deny": EVERYONE}));
        assert!(
            w[0].contains("Statement[1]") && w[0].contains("every caller is denied"),
            "{w:?}"
        );
        let vpce = json!({"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*",
            "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}});
        let (v, w) = policy(json!([vpce]));
        assert_eq!(v, json!({"deny": EVERYONE}));
        assert!(w[0].contains("left out (the API allows less"), "{w:?}");
        let account = json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "execute-api:Invoke", "Resource": "*"});
        let (v, w) = policy(json!([all, account]));
        assert_eq!(v, Value::Null);
        assert!(w[0].contains("Principal"), "{w:?}");
        let mut w = Vec::new();
        assert_eq!(
            import(&json!("text"), &mut w),
            Some(json!({"deny": EVERYONE}))
        );
    }
}
