//! Routing: which API and stage a request is for ([`Domains`]: host, then longest base path),
//! and which route inside that API ([`trie`]).

pub(crate) mod trie;

use ahash::AHashMap;

use crate::config::{Domain, HostPattern};
use crate::syntax::path::SegView;

/// A resolved API stage: indices into the snapshot, and how many path segments the base path
/// took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRef {
    pub api: usize,
    pub stage: usize,
    pub base_len: usize,
}

/// A base path's segments and what it serves: `Some((api, stage))`, or `None` for a base
/// path kept for a mapping that cannot be served now (404).
type CompiledMapping = (Vec<String>, Option<(usize, usize)>);

#[derive(Debug)]
struct CompiledDomain {
    /// Listener indices it serves; `None` = all.
    listeners: Option<Vec<usize>>,
    /// Longest first.
    mappings: Vec<CompiledMapping>,
}

/// Host → domain tables, compiled once per snapshot.
#[derive(Debug, Default)]
pub(crate) struct Domains {
    domains: Vec<CompiledDomain>,
    exact: AHashMap<String, Vec<usize>>,
    /// (suffix with leading dot, domain), longest suffix first.
    suffix: Vec<(String, usize)>,
    any: Vec<usize>,
}

impl Domains {
    pub(crate) fn compile(domains: &[Domain], listener_names: &[String]) -> Domains {
        let mut out = Domains::default();
        for (i, d) in domains.iter().enumerate() {
            let listeners = d.listeners.as_ref().map(|ls| {
                ls.iter()
                    .filter_map(|n| listener_names.iter().position(|x| x == n))
                    .collect()
            });
            let mut mappings: Vec<CompiledMapping> = d
                .mappings
                .iter()
                .map(|m| (m.base_path.clone(), Some((m.api, m.stage))))
                .collect();
            // The file's mappings to run-time stages not deployed yet, and run-time mappings
            // that cannot be served: theirs to answer (404), no shorter base path's.
            let kept = d
                .pending
                .iter()
                .map(|p| &p.base_path)
                .chain(&d.reserved)
                .filter(|b| !d.mappings.iter().any(|m| &m.base_path == *b));
            for b in kept {
                if !mappings.iter().any(|m| &m.0 == b) {
                    mappings.push((b.clone(), None));
                }
            }
            mappings.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
            out.domains.push(CompiledDomain {
                listeners,
                mappings,
            });
            match &d.host {
                HostPattern::Any => out.any.push(i),
                HostPattern::Exact(h) => out.exact.entry(h.clone()).or_default().push(i),
                HostPattern::Suffix(s) => out.suffix.push((s.clone(), i)),
            }
        }
        out.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        out
    }

    /// Picks the domain for `host` (port and one trailing dot stripped, any case) on
    /// `listener`, then its longest base path that prefixes `path`.
    pub(crate) fn resolve(
        &self,
        listener: usize,
        host: &[u8],
        path: SegView<'_>,
    ) -> Option<StageRef> {
        // An absolute name ("api.example.com.") is the same host, as nginx takes it.
        let host = host_without_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        let mut lower = [0u8; 256];
        if host.len() > lower.len() {
            return None;
        }
        for (d, s) in lower.iter_mut().zip(host) {
            *d = s.to_ascii_lowercase();
        }
        let host = std::str::from_utf8(&lower[..host.len()]).ok()?;
        let serves = |i: &usize| {
            self.domains[*i]
                .listeners
                .as_ref()
                .is_none_or(|ls| ls.contains(&listener))
        };
        let domain = self
            .exact
            .get(host)
            .and_then(|v| v.iter().find(|i| serves(i)))
            .or_else(|| {
                self.suffix
                    .iter()
                    .filter(|(s, _)| host.ends_with(s.as_str()) && host.len() > s.len())
                    .map(|(_, i)| i)
                    .find(|i| serves(i))
            })
            .or_else(|| self.any.iter().find(|i| serves(i)))?;
        let d = &self.domains[*domain];
        d.mappings
            .iter()
            .find(|(base, _)| {
                base.len() <= path.len() && base.iter().enumerate().all(|(k, s)| path.get(k) == s)
            })
            .and_then(|(base, to)| {
                to.map(|(api, stage)| StageRef {
                    api,
                    stage,
                    base_len: base.len(),
                })
            })
    }
}

/// "example.com:8080" → "example.com"; "[::1]:80" → "[::1]".
pub(crate) fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mapping;

    fn dom(host: HostPattern, maps: &[(&str, usize)], listeners: Option<Vec<String>>) -> Domain {
        Domain {
            host,
            tls: None,
            listeners,
            pending: Vec::new(),
            reserved: Vec::new(),
            mappings: maps
                .iter()
                .map(|(bp, api)| Mapping {
                    base_path: bp
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    api: *api,
                    stage: 0,
                })
                .collect(),
        }
    }

    fn resolve(d: &Domains, listener: usize, host: &str, path: &str) -> Option<(usize, usize)> {
        let segs = crate::syntax::path::normalise(path.as_bytes()).unwrap();
        d.resolve(listener, host.as_bytes(), segs.view())
            .map(|r| (r.api, r.base_len))
    }

    #[test]
    fn exact_beats_suffix_beats_any_and_longest_base_path_wins() {
        let ds = Domains::compile(
            &[
                dom(HostPattern::Any, &[("", 0), ("dev", 1)], None),
                dom(
                    HostPattern::Exact("api.example.test".into()),
                    &[("v1", 2), ("v1/admin", 3)],
                    None,
                ),
                dom(
                    HostPattern::Suffix(".example.test".into()),
                    &[("", 4)],
                    None,
                ),
            ],
            &["http".into()],
        );
        assert_eq!(resolve(&ds, 0, "localhost:8080", "/pets"), Some((0, 0)));
        assert_eq!(resolve(&ds, 0, "localhost", "/dev/pets"), Some((1, 1)));
        assert_eq!(
            resolve(&ds, 0, "API.example.test", "/v1/pets"),
            Some((2, 1))
        );
        assert_eq!(
            resolve(&ds, 0, "api.example.test", "/v1/admin/x"),
            Some((3, 2))
        );
        assert_eq!(resolve(&ds, 0, "api.example.test", "/pets"), None);
        assert_eq!(resolve(&ds, 0, "www.example.test", "/x"), Some((4, 0)));
        // One trailing dot (an absolute name) is the same host, with or without a port.
        assert_eq!(
            resolve(&ds, 0, "api.example.test.", "/v1/pets"),
            Some((2, 1))
        );
        assert_eq!(resolve(&ds, 0, "api.example.test.:80", "/pets"), None);
        assert_eq!(resolve(&ds, 0, "www.example.test.", "/x"), Some((4, 0)));
        assert_eq!(
            resolve(&ds, 0, "api.example.test..", "/v1/pets"),
            Some((0, 0))
        );
        // A base path matches whole segments only.
        assert_eq!(resolve(&ds, 0, "localhost", "/devices"), Some((0, 0)));
    }

    #[test]
    fn domains_can_be_limited_to_listeners() {
        let ds = Domains::compile(
            &[
                dom(HostPattern::Any, &[("", 0)], Some(vec!["backend".into()])),
                dom(HostPattern::Any, &[("", 1)], Some(vec!["http".into()])),
            ],
            &["http".into(), "backend".into()],
        );
        assert_eq!(resolve(&ds, 0, "h", "/"), Some((1, 0)));
        assert_eq!(resolve(&ds, 1, "h", "/"), Some((0, 0)));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port(b"a.b:80"), b"a.b");
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
        assert_eq!(host_without_port(b"a.b"), b"a.b");
    }
}
