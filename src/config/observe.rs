//! Access logs: `[access_log]` (the gateway's default, for requests that reach no stage or a
//! stage without its own) and a stage's `access_log`.

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

impl Validator {
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
            Some(p) => {
                let path = base.join(p);
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
