//! Access logs: `[access_log]` (the gateway's default, for requests that reach no stage or a
//! stage without its own) and a stage's `access_log`; tracing: `[tracing]` (the OTLP
//! collector and the sampling ratio) and a stage's `tracing = { sample }`.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{file, Validator};
use crate::observe::access::Format;
use crate::observe::writer::Sink;

/// Where a stage's (or the gateway's) access log goes and how its lines look.
#[derive(Debug, Clone, Serialize)]
pub struct AccessLog {
    /// `stdout`, or the file's path (relative ones are resolved against the config's folder).
    #[serde(serialize_with = "ser_sink")]
    pub(crate) sink: Arc<Sink>,
    /// As written: `json`, `clf` or a template.
    pub format: String,
    #[serde(skip)]
    pub(crate) compiled: Arc<Format>,
}

fn ser_sink<S: serde::Serializer>(v: &Arc<Sink>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// `[tracing]`: spans exported over OTLP/HTTP.
#[derive(Debug, Clone, Serialize)]
pub struct Tracing {
    pub otlp_endpoint: super::FetchUrl,
    /// The ratio of traces sampled where the caller did not decide (errors always are).
    pub sample: f64,
    pub service_name: String,
    #[serde(serialize_with = "super::ser_duration")]
    pub timeout: std::time::Duration,
}

impl Tracing {
    /// Where the exporter sends spans.
    pub(crate) fn endpoint(&self) -> crate::observe::export::Endpoint {
        crate::observe::export::Endpoint {
            host: self.otlp_endpoint.host.clone(),
            port: self.otlp_endpoint.port,
            path: self.otlp_endpoint.path.clone(),
            service: self.service_name.clone(),
            timeout: self.timeout,
        }
    }
}

impl Validator {
    pub(super) fn tracing(&mut self, t: file::TracingFile) -> Option<Tracing> {
        let endpoint = match t.otlp_endpoint.as_deref().map(super::FetchUrl::parse) {
            None => {
                self.err(
                    "tracing.otlp_endpoint",
                    "is required: the collector's OTLP/HTTP traces URL, such as \"http://127.0.0.1:4318/v1/traces\"",
                );
                None
            }
            Some(Ok(u)) if u.tls => {
                self.bad(
                    "tracing.otlp_endpoint",
                    &u.text,
                    "an http:// URL (send to a collector on this host or network; https is not supported yet)",
                );
                None
            }
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                self.bad_url(
                    "tracing.otlp_endpoint",
                    t.otlp_endpoint.as_deref().unwrap_or_default(),
                    &e,
                    "the collector's OTLP/HTTP traces URL, such as \"http://127.0.0.1:4318/v1/traces\"",
                );
                None
            }
        };
        let sample = self.ratio("tracing.sample", t.sample).unwrap_or(0.01);
        let service_name = t.service_name.unwrap_or_else(|| "tollgate".into());
        if service_name.is_empty() {
            self.bad(
                "tracing.service_name",
                "",
                "a name for the service.name resource attribute",
            );
        }
        let timeout = self.duration_in(
            "tracing.timeout",
            t.timeout.as_ref(),
            std::time::Duration::from_secs(5),
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(60),
        );
        Some(Tracing {
            otlp_endpoint: endpoint?,
            sample,
            service_name,
            timeout,
        })
    }

    /// A sampling ratio from 0 to 1.
    pub(super) fn ratio(&mut self, key: &str, v: Option<f64>) -> Option<f64> {
        match v {
            Some(r) if (0.0..=1.0).contains(&r) => Some(r),
            Some(r) => {
                self.bad(
                    key,
                    r,
                    "a ratio from 0 to 1 (0.01 traces one request in a hundred)",
                );
                None
            }
            None => None,
        }
    }

    /// `None` when absent or `"off"`.
    pub(super) fn access_log(
        &mut self,
        key: &str,
        raw: file::AccessLogFile,
        base: &Path,
    ) -> Option<AccessLog> {
        let t = match raw {
            file::AccessLogFile::Off(s) if s == "off" => return None,
            file::AccessLogFile::Off(s) => {
                self.bad(
                    key,
                    s,
                    "a table { path = \"...\" | \"stdout\", format = \"json\" | \"clf\" | \"<template>\" }, or \"off\"",
                );
                return None;
            }
            file::AccessLogFile::On(t) => t,
        };
        let format = t.format.unwrap_or_else(|| "json".into());
        let compiled = match Format::parse(&format) {
            Ok(f) => f,
            Err(e) => {
                self.err(&format!("{key}.format"), format!("{format:?} {e}"));
                return None;
            }
        };
        let sink = match t.path.as_deref() {
            None => {
                self.err(
                    &format!("{key}.path"),
                    "is required: a file (appended to, created if missing) or \"stdout\"",
                );
                return None;
            }
            Some("stdout") => Sink::Stdout,
            Some("") => {
                self.bad(&format!("{key}.path"), "", "a file path or \"stdout\"");
                return None;
            }
            Some(p) if p.chars().any(char::is_control) => {
                self.bad(
                    &format!("{key}.path"),
                    p,
                    "a file path without control characters, or \"stdout\"",
                );
                return None;
            }
            Some(p) => {
                let path = match &self.log_root {
                    None => base.join(p),
                    Some(root) => {
                        let inside = Path::new(p).components().all(|c| {
                            matches!(
                                c,
                                std::path::Component::Normal(_) | std::path::Component::CurDir
                            )
                        });
                        // (A stage made or changed through the admin API also logs only to a
                        // `.log` file: `stage_settings`. Stored ones are not re-judged by it.)
                        if !inside {
                            self.bad(
                                &format!("{key}.path"),
                                p,
                                &format!(
                                    "\"stdout\" or a path relative to admin.access_log_dir ({}), without \"..\": an API made through the admin API logs there",
                                    root.display()
                                ),
                            );
                            return None;
                        }
                        root.join(p)
                    }
                };
                if let Err(e) = crate::observe::writer::check_writable(&path) {
                    self.err(
                        &format!("{key}.path"),
                        format!("cannot append to {}: {e}", path.display()),
                    );
                    return None;
                }
                Sink::File(path)
            }
        };
        Some(AccessLog {
            sink: Arc::new(sink),
            format,
            compiled: Arc::new(compiled),
        })
    }
}
