//! `[[domains]]`: host patterns, base-path mappings to API stages, per-domain certificates.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPattern {
    Any,
    /// Lower-cased suffix including the leading dot: ".example.com".
    Suffix(String),
    Exact(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub host: HostPattern,
    /// The certificate served for this host (SNI) on TLS listeners.
    pub tls: Option<TlsCert>,
    /// Listener names this domain is served on; `None` = all.
    pub listeners: Option<Vec<String>>,
    pub mappings: Vec<Mapping>,
    /// Mappings naming an API the file does not declare: a run-time API's stage, mapped in
    /// when the run-time objects are merged in (served once that stage exists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingMapping>,
    /// Base paths of mappings that cannot be served now (a run-time mapping whose stage is
    /// not deployed or does not compile): they answer 404, never a shorter base path's API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Vec<String>>,
}

/// A `[[domains]]` mapping to a run-time API, by name.
#[derive(Debug, Clone, Serialize)]
pub struct PendingMapping {
    /// Where the file says it (`domains["*"].mappings[2]`), for messages.
    pub key: String,
    pub base_path: Vec<String>,
    pub api: String,
    pub stage: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mapping {
    /// Decoded segments of the base path; empty for "".
    pub base_path: Vec<String>,
    pub api: usize,
    pub stage: usize,
}

impl Validator {
    pub(super) fn domain(
        &mut self,
        i: usize,
        d: file::DomainFile,
        apis: &[Api],
        listeners: &[Listener],
        base: &Path,
    ) -> Domain {
        let key = item("domains", i, d.host.as_ref());
        let host = match d.host.as_deref() {
            None => {
                self.err(
                    &format!("{key}.host"),
                    "is required: a host name, \"*.suffix\" or \"*\"",
                );
                HostPattern::Any
            }
            Some("*") => HostPattern::Any,
            Some(h) => {
                let lower = h.to_ascii_lowercase();
                let (pat, name) = match lower.strip_prefix("*.") {
                    Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
                    None => (HostPattern::Exact(lower.clone()), lower.clone()),
                };
                let ok = !name.is_empty()
                    && name.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    self.bad(&format!("{key}.host"), h, "a host name such as \"api.example.com\", a wildcard \"*.example.com\", or \"*\"");
                }
                pat
            }
        };
        let tls = d.tls.and_then(|t| {
            if host == HostPattern::Any {
                self.err(
                    &format!("{key}.tls"),
                    "a certificate for every host belongs on the listener (listeners.tls)",
                );
                return None;
            }
            self.tls_cert(&format!("{key}.tls"), t, base)
        });
        if let Some(ls) = &d.listeners {
            if ls.is_empty() {
                self.err(
                    &format!("{key}.listeners"),
                    "lists no listener, so the domain would be served nowhere: remove `listeners` to serve it on every listener",
                );
            }
            for l in ls {
                if !listeners.iter().any(|x| &x.name == l) {
                    self.bad(
                        &format!("{key}.listeners"),
                        l,
                        "the name of a [[listeners]] entry",
                    );
                }
            }
        }
        if d.mappings.is_empty() {
            self.err(
                &format!("{key}.mappings"),
                "at least one mapping { base_path, api, stage } is required",
            );
        }
        let mut mappings: Vec<Mapping> = Vec::new();
        let mut pending: Vec<PendingMapping> = Vec::new();
        for (j, m) in d.mappings.into_iter().enumerate() {
            let mkey = format!("{key}.mappings[{j}]");
            let bp = m.base_path.unwrap_or_default();
            let base_path = match super::runtime::base_path(&bp) {
                Ok(p) => p,
                Err(why) => {
                    self.err(&format!("{mkey}.base_path"), why);
                    continue;
                }
            };
            let Some(api_name) = m.api else {
                self.err(&format!("{mkey}.api"), "is required");
                continue;
            };
            let stage_name = m.stage.unwrap_or_default();
            if mappings.iter().any(|o| o.base_path == base_path)
                || pending.iter().any(|o| o.base_path == base_path)
            {
                self.err(
                    &format!("{mkey}.base_path"),
                    format!("{bp:?} is mapped twice in this domain"),
                );
            }
            let Some(api) = apis.iter().position(|a| a.name == api_name) else {
                // Not the file's: a run-time API's stage, resolved when the run-time
                // objects are merged in.
                if !is_name(&api_name) || !is_name(&stage_name) {
                    self.bad(
                        &format!("{mkey}.api"),
                        format!("{api_name}/{stage_name}"),
                        "the name of an [[apis]] entry or of a run-time API, and one of its stages",
                    );
                }
                pending.push(PendingMapping {
                    key: mkey,
                    base_path,
                    api: api_name,
                    stage: stage_name,
                });
                continue;
            };
            let Some(stage) = apis[api].stages.iter().position(|s| s.name == stage_name) else {
                let names: Vec<&str> = apis[api].stages.iter().map(|s| s.name.as_str()).collect();
                self.bad(
                    &format!("{mkey}.stage"),
                    stage_name,
                    &format!("a stage of API {api_name:?}: {names:?}"),
                );
                continue;
            };
            mappings.push(Mapping {
                base_path,
                api,
                stage,
            });
        }
        Domain {
            host,
            tls,
            listeners: d.listeners,
            mappings,
            pending,
            reserved: Vec::new(),
        }
    }
}

/// A name as APIs and stages take them: letters, digits, `_` and `-`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
