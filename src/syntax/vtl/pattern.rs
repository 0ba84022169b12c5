//! The regular expressions of `matches`, `replaceAll` and `split`, read as Java reads them
//! (Amazon API Gateway's templates run on Java): `\d`, `\w` and `\s` are ASCII classes,
//! not Unicode ones, so that `$id.matches('\d+')` refuses `١٢٣` as Java does (and a pattern
//! with a few `\w` stays small enough to compile). Each thread keeps the last ones it
//! compiled: a template calls `matches` in a loop with the same pattern.

use std::cell::RefCell;
use std::collections::HashMap;

/// Compiled patterns kept per thread, and the longest pattern kept.
const KEPT: usize = 32;
const KEPT_LEN: usize = 1024;

thread_local! {
    static COMPILED: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// A regular expression a template names (it may come from the request): compiled within
/// 64 KiB, so that a pattern such as `(a{1000}){1000}` is refused at once instead of costing
/// the shard tens of milliseconds to build.
pub(super) fn pattern(p: &str) -> Result<regex::Regex, regex::Error> {
    if let Some(re) = COMPILED.with(|c| c.borrow().get(p).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(&java_classes(p))
        .size_limit(64 << 10)
        .dfa_size_limit(256 << 10)
        .build()?;
    if p.len() <= KEPT_LEN {
        COMPILED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= KEPT {
                c.clear();
            }
            c.insert(p.to_string(), re.clone());
        });
    }
    Ok(re)
}

/// `p` with Java's ASCII meaning of `\d \D \w \W \s \S` (as classes, nested inside a
/// class); everything else as written (`\b` too: Java's word boundary has been Unicode's).
fn java_classes(p: &str) -> String {
    const DIGIT: &str = "0-9";
    const WORD: &str = "0-9A-Za-z_";
    const SPACE: &str = "\\t\\n\\x0B\\f\\r ";
    let mut out = String::with_capacity(p.len() + 16);
    let mut class_depth = 0usize;
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let (set, negated) = match e {
                    'd' => (DIGIT, false),
                    'D' => (DIGIT, true),
                    'w' => (WORD, false),
                    'W' => (WORD, true),
                    's' => (SPACE, false),
                    'S' => (SPACE, true),
                    _ => {
                        out.push('\\');
                        out.push(e);
                        continue;
                    }
                };
                out.push('[');
                if negated {
                    out.push('^');
                }
                out.push_str(set);
                out.push(']');
            }
            '[' => {
                out.push('[');
                if class_depth > 0 && chars.peek() == Some(&':') {
                    // A POSIX class (`[[:alpha:]]`): copied to its `:]`.
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == ']' && out.ends_with(":]") {
                            break;
                        }
                    }
                    continue;
                }
                class_depth += 1;
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                // A `]` first in a class is itself.
                if chars.peek() == Some(&']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ascii_as_in_java() {
        let m = |p: &str, s: &str| pattern(&format!("^(?:{p})$")).unwrap().is_match(s);
        assert!(m(r"\d+", "123"));
        assert!(!m(r"\d+", "١٢٣"));
        assert!(!m(r"\s+", "\u{a0}"));
        assert!(m(r"\s+", " \t\n\u{b}\u{c}\r"));
        assert!(!m(r"\w+", "é"));
        assert!(m(r"[\w.]+@[\w.]+", "a.b@c_d.e"));
        assert!(m(r"[^\d]+", "abc"));
        assert!(!m(r"[^\d]+", "a1"));
        assert!(m(r"[\D]+", "é"));
        assert!(m(r"\W", "é"));
        assert!(m(r"[]a]+", "]a"));
        assert!(m(r"[[:alpha:]\d]+", "a1"));
        assert!(m(r"\\d", "\\d"));
        assert!(m(r"a\.b", "a.b"));
        assert!(pattern(r"\bfoo\b").unwrap().is_match("a foo."));
        // Fifty Unicode `\d` passed the size limit; the ASCII class does not.
        assert!(pattern(r"\d{50}").is_ok());
        assert!(pattern(r"\w{2}").is_ok());
        assert!(pattern("(a{1000}){1000}").is_err());
    }
}
