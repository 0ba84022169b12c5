//! What references call: methods of strings, lists and maps, `$input`, `$util`, and the
//! JSONPath `$input.json` and `$input.path` read with.

use std::borrow::Cow;

use serde_json::Value;

use super::pattern::pattern;
use super::*;

/// Methods of strings, lists and maps that Amazon API Gateway's examples use. What they make
/// counts against `built`; those that may make much more than they were given (`replace`,
/// `replaceAll`, `split`) stop as soon as they would pass it.
pub(super) fn method(
    v: &Value,
    m: &str,
    args: &[Value],
    built: &mut Budget,
) -> Result<Option<Value>, String> {
    // A call with more arguments than the method takes finds no method (Velocity's null
    // reference), rather than running as if the others were not there.
    if args.len() > max_args(m) {
        return Ok(None);
    }
    let arg_s = |i: usize| args.get(i).map(text).unwrap_or_default();
    let arg_n = |i: usize| args.get(i).and_then(num).unwrap_or(0.0);
    // What the call goes through: a string's every byte (its length counts characters, a
    // search scans it), a list's items for `contains`; its arguments too.
    let read = match (v, m) {
        (Value::String(s), _) => s.len(),
        (Value::Array(_), "contains") => weight(v),
        _ => 0,
    };
    if read > 0 {
        built.read(read.saturating_add(args.iter().map(weight).sum::<usize>()))?;
    }
    let room = built.room();
    let made = match (v, m) {
        // Positions and lengths count UTF-16 code units, as Java's String does (an emoji is
        // two): templates written for Amazon API Gateway index strings that way.
        (Value::String(s), "length") => Value::from(s.encode_utf16().count()),
        (Value::String(s), "toUpperCase") => Value::String(s.to_uppercase()),
        (Value::String(s), "toLowerCase") => Value::String(s.to_lowercase()),
        (Value::String(s), "trim") => Value::String(s.trim().to_string()),
        (Value::String(s), "contains") => Value::Bool(s.contains(&arg_s(0))),
        (Value::String(s), "startsWith") if args.len() > 1 => {
            // Inside a surrogate pair only "" starts there (Java compares code units).
            Value::Bool(match utf16_offset(s, arg_n(1)) {
                Some((at, true)) => s[at..].starts_with(&arg_s(0)),
                Some((_, false)) => arg_s(0).is_empty(),
                None => false,
            })
        }
        (Value::String(s), "startsWith") => Value::Bool(s.starts_with(&arg_s(0))),
        (Value::String(s), "endsWith") => Value::Bool(s.ends_with(&arg_s(0))),
        (Value::String(s), "equals") => Value::Bool(*s == arg_s(0)),
        (Value::String(s), "equalsIgnoreCase") => Value::Bool(s.eq_ignore_ascii_case(&arg_s(0))),
        (Value::String(s), "isEmpty") => Value::Bool(s.is_empty()),
        (Value::String(s), "indexOf") if args.len() > 1 => {
            // Java's `indexOf(str, fromIndex)`: a start before 0 is 0, past the end finds
            // nothing (but "" at the end).
            let from = arg_n(1).max(0.0);
            let units = s.encode_utf16().count();
            let needle = arg_s(0);
            match utf16_offset(s, from.min(units as f64)) {
                // "" is found where the search starts, even inside a surrogate pair.
                Some(_) if needle.is_empty() => Value::from(from.min(units as f64) as i64),
                // From inside a surrogate pair the search goes on from the next character.
                Some((at, _)) => Value::from(
                    s[at..]
                        .find(&needle)
                        .map_or(-1, |i| s[..at + i].encode_utf16().count() as i64),
                ),
                None => Value::from(-1),
            }
        }
        (Value::String(s), "indexOf") => Value::from(
            s.find(&arg_s(0))
                .map_or(-1, |i| s[..i].encode_utf16().count() as i64),
        ),
        (Value::String(s), "replace") => {
            let (from, to) = (arg_s(0), arg_s(1));
            // Known before it is made: an empty target matches between every character.
            let n = if from.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(from.as_str()).count()
            };
            let len = (s.len() - n * from.len()).saturating_add(n.saturating_mul(to.len()));
            if len > room {
                return Err(built.over());
            }
            Value::String(s.replace(&from, &to))
        }
        (Value::String(s), "replaceAll") => {
            let re = pattern(&arg_s(0)).map_err(|e| format!("replaceAll: {e}"))?;
            let with = arg_s(1);
            // As Java's `String.replaceAll` (Amazon's templates run on Java): in the
            // replacement `$n` / `${name}` are groups and `\c` is `c` (without either, the
            // matches alone are needed); a piece at a time, so that it stops at the budget.
            let mut out = String::new();
            let mut last = 0;
            let mut put = |out: &mut String, start: usize, end: usize| {
                out.push_str(&s[last..start]);
                last = end;
            };
            if with.contains(['$', '\\']) {
                for caps in re.captures_iter(s) {
                    built.search()?;
                    let Some(m) = caps.get(0) else { continue };
                    put(&mut out, m.start(), m.end());
                    java_replacement(&re, &caps, &with, &mut out)?;
                    if out.len() > room {
                        return Err(built.over());
                    }
                }
            } else {
                for m in re.find_iter(s) {
                    built.search()?;
                    put(&mut out, m.start(), m.end());
                    out.push_str(&with);
                    if out.len() > room {
                        return Err(built.over());
                    }
                }
            }
            out.push_str(&s[last..]);
            Value::String(out)
        }
        (Value::String(s), "matches") => {
            let re =
                pattern(&format!("^(?:{})$", arg_s(0))).map_err(|e| format!("matches: {e}"))?;
            built.search()?;
            Value::Bool(re.is_match(s))
        }
        (Value::String(s), "split") => {
            // Java's `String.split(regex[, limit])`: no empty first piece from a match of
            // nothing at the start, and "" split is [""]; a limit above 0 makes at most that
            // many pieces, the last the rest of the string; without one (or 0) trailing empty
            // pieces are dropped, below 0 kept.
            let re = pattern(&arg_s(0)).map_err(|e| format!("split: {e}"))?;
            let limit = if args.len() > 1 { arg_n(1) } else { 0.0 };
            let mut items = Vec::new();
            let mut size = 0usize;
            let mut push = |items: &mut Vec<Value>, p: &str| {
                size += std::mem::size_of::<Value>() + p.len();
                items.push(Value::String(p.to_string()));
                size <= room
            };
            if s.is_empty() {
                push(&mut items, s);
            } else {
                // As Java's `Matcher.find`: after an empty match the search moves on a
                // character; after any other, an empty match right at its end still counts
                // (`"a,,b".split(",*")` is [a, "", b]).
                let (mut last, mut from) = (0, 0);
                while from <= s.len() && (limit <= 0.0 || ((items.len() + 1) as f64) < limit) {
                    built.search()?;
                    let Some(m) = re.find_at(s, from) else {
                        break;
                    };
                    from = if m.start() == m.end() {
                        m.end() + s[m.end()..].chars().next().map_or(1, char::len_utf8)
                    } else {
                        m.end()
                    };
                    if m.end() == 0 {
                        continue;
                    }
                    if !push(&mut items, &s[last..m.start()]) {
                        return Err(built.over());
                    }
                    last = m.end();
                }
                if !push(&mut items, &s[last..]) {
                    return Err(built.over());
                }
                while limit == 0.0 && matches!(items.last(), Some(Value::String(p)) if p.is_empty())
                {
                    items.pop();
                }
            }
            Value::Array(items)
        }
        (Value::String(s), "substring") => {
            let units: Vec<u16> = s.encode_utf16().collect();
            let a = (arg_n(0).max(0.0) as usize).min(units.len());
            let b = if args.len() > 1 {
                (arg_n(1).max(0.0) as usize).min(units.len())
            } else {
                units.len()
            };
            Value::String(from_units(&units[a..b.max(a)]))
        }
        (Value::String(s), "charAt") => Value::String(
            s.encode_utf16()
                .nth(super::index(arg_n(0)).unwrap_or(usize::MAX))
                .map(|u| from_units(&[u]))
                .unwrap_or_default(),
        ),
        (_, "toString") => Value::String(text(v)),
        (Value::Array(a), "size") => Value::from(a.len()),
        (Value::Array(a), "isEmpty") => Value::Bool(a.is_empty()),
        (Value::Array(a), "get") => super::index(arg_n(0))
            .and_then(|i| a.get(i))
            .cloned()
            .unwrap_or(Value::Null),
        (Value::Array(a), "contains") => Value::Bool(args.first().is_some_and(|x| a.contains(x))),
        (Value::Object(o), "size") => Value::from(o.len()),
        (Value::Object(o), "isEmpty") => Value::Bool(o.is_empty()),
        (Value::Object(o), "get") => o.get(&arg_s(0)).cloned().unwrap_or(Value::Null),
        (Value::Object(o), "containsKey") => Value::Bool(o.contains_key(&arg_s(0))),
        (Value::Object(o), "keySet") => {
            Value::Array(o.keys().map(|k| Value::String(k.clone())).collect())
        }
        (Value::Object(o), "values") => Value::Array(o.values().cloned().collect()),
        (Value::Object(o), "entrySet") => Value::Array(
            o.iter()
                .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
                .collect(),
        ),
        _ => return Ok(None),
    };
    built.made(made).map(Some)
}

/// One match's replacement as Java's `Matcher.appendReplacement` writes it: `\c` is `c`;
/// `$n` is group n, its first digit always, each further digit while the number stays a group
/// of the pattern; `${name}` a named group; a group that took no part in the match is empty.
fn java_replacement(
    re: &regex::Regex,
    caps: &regex::Captures<'_>,
    with: &str,
    out: &mut String,
) -> Result<(), String> {
    let mut it = with.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        match c {
            '\\' => match it.next() {
                Some((_, e)) => out.push(e),
                None => return Err("replaceAll: character to be escaped is missing".into()),
            },
            '$' => {
                let group = match it.next() {
                    Some((_, '{')) => {
                        let mut name = String::new();
                        loop {
                            match it.next() {
                                Some((_, '}')) => break,
                                Some((_, ch)) if ch.is_ascii_alphanumeric() => name.push(ch),
                                _ => {
                                    return Err(
                                        "replaceAll: named capturing group is missing trailing '}'"
                                            .into(),
                                    )
                                }
                            }
                        }
                        if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
                            return Err(format!(
                                "replaceAll: capturing group name {{{name}}} starts with a digit character"
                            ));
                        }
                        if !re.capture_names().any(|n| n == Some(name.as_str())) {
                            return Err(format!("replaceAll: no group with name {{{name}}}"));
                        }
                        caps.name(&name)
                    }
                    Some((_, d)) if d.is_ascii_digit() => {
                        let mut n = d as usize - '0' as usize;
                        if n >= re.captures_len() {
                            return Err(format!("replaceAll: no group {n}"));
                        }
                        while let Some(&(_, d)) = it.peek() {
                            let Some(v) = d.to_digit(10) else { break };
                            let more = n * 10 + v as usize;
                            if more >= re.captures_len() {
                                break;
                            }
                            n = more;
                            it.next();
                        }
                        caps.get(n)
                    }
                    _ => return Err("replaceAll: illegal group reference".into()),
                };
                if let Some(g) = group {
                    out.push_str(g.as_str());
                }
            }
            c => out.push(c),
        }
    }
    Ok(())
}

/// The most arguments a method of [`method`] takes.
fn max_args(m: &str) -> usize {
    match m {
        "startsWith" | "indexOf" | "replace" | "replaceAll" | "split" | "substring" => 2,
        "contains" | "endsWith" | "equals" | "equalsIgnoreCase" | "matches" | "charAt" | "get"
        | "containsKey" => 1,
        _ => 0,
    }
}

/// The byte offset of UTF-16 code unit `n` of `s`, and whether it is one: inside a character
/// (the second half of a surrogate pair) the next character's, and `false`; `None` past the
/// end.
fn utf16_offset(s: &str, n: f64) -> Option<(usize, bool)> {
    if !(0.0..=s.len() as f64).contains(&n) {
        return None;
    }
    let n = n as usize;
    let mut units = 0;
    for (at, c) in s.char_indices() {
        if units == n {
            return Some((at, true));
        }
        units += c.len_utf16();
        if units > n {
            return Some((at + c.len_utf8(), false));
        }
    }
    (units == n).then_some((s.len(), true))
}

/// UTF-16 code units as text; half of a surrogate pair (a cut through an emoji) is `?`, what
/// Java writes for it in UTF-8.
fn from_units(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied())
        .map(|c| c.unwrap_or('?'))
        .collect()
}

/// `$input.json(path)`, `$input.path(path)`, `$input.params()`, `$input.params(name)`:
/// what `$input.path` selects is borrowed from the payload unless a wildcard made a list.
pub(super) fn input_call<'e>(
    env: &Env<'e>,
    m: &str,
    args: &[Value],
    room: usize,
) -> Result<Cow<'e, Value>, String> {
    let path = || args.first().map(text).unwrap_or_else(|| "$".into());
    if let (None, Some(why), "json" | "path") = (env.json, env.not_json, m) {
        // Read only when a branch taken reads it, as Amazon's templates parse lazily.
        return Err(format!("{}{why}", super::NOT_JSON));
    }
    Ok(match m {
        "json" => match env.json.map(|j| json_path(j, &path(), room)).transpose()? {
            Some(Some(v)) => Cow::Owned(Value::String(v.to_string())),
            _ => Cow::Owned(Value::String("null".into())),
        },
        "path" => env
            .json
            .map(|j| json_path(j, &path(), room))
            .transpose()?
            .flatten()
            .unwrap_or(Cow::Owned(Value::Null)),
        "params" if args.is_empty() => Cow::Borrowed(env.params),
        "params" => {
            let name = text(&args[0]);
            // Header names are compared without case (RFC 9110 5.1): HTTP/2 sends them in
            // lower case, HTTP/1.1 clients as they like.
            ["path", "querystring"]
                .iter()
                .find_map(|p| env.params[p].get(&name))
                .or_else(|| {
                    let h = env.params["header"].as_object()?;
                    h.get(&name).or_else(|| {
                        h.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                            .map(|(_, v)| v)
                    })
                })
                // A parameter the request lacks is the empty string, as Amazon's is (not a
                // null reference, which would print the expression itself).
                .map_or(Cow::Owned(Value::String(String::new())), Cow::Borrowed)
        }
        _ => {
            return Err(format!(
                "$input.{m}: not a method of $input (body, json, path, params)"
            ))
        }
    })
}

/// One step of a JSONPath.
enum PathStep<'p> {
    Name(&'p str),
    Index(i64),
    All,
}

/// A JSONPath (`$`, `.name`, `['name']`, `[n]`, `[*]`, `.*`) on `v`, borrowed from it; a
/// wildcard makes a list (of copies).
pub(super) fn json_path<'v>(
    v: &'v Value,
    path: &str,
    room: usize,
) -> Result<Option<Cow<'v, Value>>, String> {
    let p = path.trim();
    let rest = p
        .strip_prefix('$')
        .ok_or_else(|| format!("JSONPath {p:?} does not start with $"))?;
    let b = rest.as_bytes();
    let mut cur: Vec<&'v Value> = vec![v];
    let mut many = false;
    let mut i = 0;
    while i < b.len() {
        let step = if b[i] == b'.' {
            i += 1;
            if b.get(i) == Some(&b'.') {
                return Err(format!(
                    "JSONPath {p:?}: recursive descent is not supported"
                ));
            }
            let start = i;
            while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                i += 1;
            }
            match &rest[start..i] {
                "*" => PathStep::All,
                name => PathStep::Name(name),
            }
        } else if b[i] == b'[' {
            let end = rest[i..]
                .find(']')
                .ok_or_else(|| format!("JSONPath {p:?}: unclosed ["))?
                + i;
            let inner = rest[i + 1..end].trim();
            i = end + 1;
            if inner == "*" {
                PathStep::All
            } else if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                PathStep::Name(q)
            } else {
                PathStep::Index(
                    inner
                        .parse()
                        .map_err(|_| format!("JSONPath {p:?}: [{inner}] is not supported"))?,
                )
            }
        } else {
            return Err(format!("JSONPath {p:?}: unexpected {:?}", &rest[i..]));
        };
        let mut next = Vec::with_capacity(cur.len());
        for x in cur {
            match (&step, x) {
                (PathStep::Name(n), _) => next.extend(x.get(*n)),
                (PathStep::Index(n), Value::Array(a)) => {
                    let k = if *n < 0 { a.len() as i64 + n } else { *n };
                    next.extend(usize::try_from(k).ok().and_then(|k| a.get(k)));
                }
                (PathStep::Index(_), _) => {}
                (PathStep::All, Value::Array(a)) => next.extend(a.iter()),
                (PathStep::All, Value::Object(m)) => next.extend(m.values()),
                (PathStep::All, _) => {}
            }
        }
        if matches!(step, PathStep::All) {
            many = true;
        }
        cur = next;
    }
    Ok(if many {
        // The copies a wildcard makes are weighed before they are made: a 10 MiB body of
        // small items copied whole took hundreds of megabytes before the budget saw it.
        let mut weight = std::mem::size_of::<Value>();
        for x in &cur {
            weight = weight.saturating_add(super::weight(x));
            if weight > room {
                return Err(format!(
                    "JSONPath {p:?} selects more than the template may build ({room} bytes)"
                ));
            }
        }
        Some(Cow::Owned(Value::Array(cur.into_iter().cloned().collect())))
    } else {
        cur.into_iter().next().map(Cow::Borrowed)
    })
}

/// `$util.*`.
/// What `$util` offers.
const UTIL_METHODS: [&str; 6] = [
    "escapeJavaScript",
    "urlEncode",
    "urlDecode",
    "base64Encode",
    "base64Decode",
    "parseJson",
];

/// The standard alphabet, padding optional on decoding.
const STANDARD_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub(super) fn util_call(m: &str, args: &[Value]) -> Result<Value, String> {
    use base64::Engine;
    let s = args.first().map(text).unwrap_or_default();
    Ok(match m {
        "escapeJavaScript" => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '/' => out.push_str("\\/"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        for u in c.encode_utf16(&mut [0; 2]) {
                            out.push_str(&format!("\\u{u:04X}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            Value::String(out)
        }
        "urlEncode" => {
            let mut out = String::new();
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            Value::String(out)
        }
        "urlDecode" => {
            // Java's `URLDecoder.decode` refuses a `%` without two hex digits (the request
            // fails, as Amazon's template throws); it does not pass it on as text.
            let b = s.as_bytes();
            for (i, _) in b.iter().enumerate().filter(|(_, &c)| c == b'%') {
                match b.get(i + 1..i + 3) {
                    Some(h) if h.iter().all(u8::is_ascii_hexdigit) => {}
                    Some(h) if h.len() == 2 => {
                        return Err(
                            "$util.urlDecode: URLDecoder: Illegal hex characters in escape (%) pattern"
                                .into(),
                        )
                    }
                    _ => {
                        return Err(
                            "$util.urlDecode: URLDecoder: Incomplete trailing escape (%) pattern"
                                .into(),
                        )
                    }
                }
            }
            let mut out = Vec::with_capacity(s.len());
            crate::syntax::path::form_decode_into(s.as_bytes(), &mut out);
            Value::String(String::from_utf8_lossy(&out).into_owned())
        }
        "base64Encode" => Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())),
        "base64Decode" => Value::String(
            String::from_utf8_lossy(
                // Padding optional, as Java's decoders take it (a JWT's segment has none).
                &STANDARD_ANY_PADDING
                    .decode(s.trim())
                    .map_err(|e| format!("$util.base64Decode: {e}"))?,
            )
            .into_owned(),
        ),
        "parseJson" => serde_json::from_str(&s).map_err(|e| format!("$util.parseJson: {e}"))?,
        _ => {
            return Err(format!(
                "$util.{m}: not a method of $util (escapeJavaScript, urlEncode, urlDecode, base64Encode, base64Decode, parseJson)"
            ))
        }
    })
}

/// Checks, when the template is read, the arguments of a reference from `root` (`input`,
/// a variable's name) that it writes as literals and that could not run on any request:
/// the JSONPath of `$input.path` and `$input.json`, the regular expression of `matches`,
/// `replaceAll` and `split`. An argument made at run time is checked when it is used.
pub(super) fn check_literals(root: &str, steps: &[Step]) -> Result<(), String> {
    // A method `$input` or `$util` does not have would fail every request.
    if let Some(Step::Call(m, _)) = steps.first() {
        match root {
            "input" if !matches!(m.as_str(), "json" | "path" | "params") => {
                return Err(format!(
                    "$input.{m}(): not a method of $input (body, json, path, params)"
                ))
            }
            "util" if !UTIL_METHODS.contains(&m.as_str()) => {
                return Err(format!(
                    "$util.{m}(): not a method of $util ({})",
                    UTIL_METHODS.join(", ")
                ))
            }
            _ => {}
        }
    }
    for (k, s) in steps.iter().enumerate() {
        let Step::Call(m, args) = s else { continue };
        let Some(Expr::Lit(Value::String(a))) = args.first() else {
            continue;
        };
        match m.as_str() {
            "path" | "json" if k == 0 && root == "input" => {
                if let Err(e) = json_path(&Value::Null, a, usize::MAX) {
                    return Err(format!(
                        "$input.{m}('{a}'): {e} (a JSONPath here is $ then .name, ['name'], [n], [*] or .*)"
                    ));
                }
            }
            "matches" | "replaceAll" | "split" => {
                // As the call compiles it: `matches` tests the whole string.
                let p = if m == "matches" {
                    Cow::Owned(format!("^(?:{a})$"))
                } else {
                    Cow::Borrowed(a.as_str())
                };
                if let Err(e) = pattern(&p) {
                    let why = match &e {
                        // The last line names the fault; the others draw the pattern.
                        regex::Error::Syntax(t) => t.lines().last().unwrap_or(t).trim().to_string(),
                        other => other.to_string(),
                    };
                    return Err(format!(
                        ".{m}('{a}'): not a regular expression the gateway runs ({why})"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
