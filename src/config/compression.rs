//! A stage's `compression = { min_size, max_size, types, level }`: gzip and brotli answers for
//! clients that accept them (Amazon API Gateway's `minimumCompressionSize`, nginx `gzip`).

use super::*;

/// Compressed when at least this large (1 KiB, nginx's `gzip_min_length` is 20 B).
pub(crate) const DEFAULT_MIN_COMPRESS: u64 = 1 << 10;
/// Answers up to this size are compressed; larger ones stream as they are (1 MiB).
pub(crate) const DEFAULT_MAX_COMPRESS: u64 = 1 << 20;
/// The most `max_size` may be: an answer is held in memory while it is compressed.
pub(crate) const MAX_MAX_COMPRESS: u64 = 10 << 20;

/// Media types compressed by default (a `/*` suffix matches a whole family).
pub(crate) const DEFAULT_TYPES: [&str; 9] = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/x-www-form-urlencoded",
    "image/svg+xml",
    "application/wasm",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Compression {
    pub min_size: u64,
    pub max_size: u64,
    /// Lower-case media types; `text/*` a family, `application/*+json` a suffix.
    pub types: Vec<String>,
    /// 1 (fast) to 9 (small): gzip's level; brotli's quality follows it (1 to 11).
    pub level: u32,
}

impl Compression {
    /// Whether answers of this media type are compressed.
    pub fn type_matches(&self, content_type: &[u8]) -> bool {
        let ct = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t == "*/*" {
                true
            } else if let Some(family) = t.strip_suffix("/*") {
                ct.split('/').next() == Some(family)
            } else if let Some((family, suffix)) = t.split_once("/*") {
                ct.split_once('/')
                    .is_some_and(|(f, sub)| f == family && sub.ends_with(suffix))
            } else {
                ct == *t
            }
        })
    }
}

impl Validator {
    pub(super) fn compression(&mut self, key: &str, c: file::CompressionFile) -> Compression {
        let min_size = self.size(
            &format!("{key}.min_size"),
            c.min_size.as_ref(),
            DEFAULT_MIN_COMPRESS,
        );
        let mut max_size = self.size(
            &format!("{key}.max_size"),
            c.max_size.as_ref(),
            DEFAULT_MAX_COMPRESS,
        );
        if max_size > MAX_MAX_COMPRESS {
            self.bad(
                &format!("{key}.max_size"),
                max_size,
                "at most 10MiB (answers are held in memory while compressed)",
            );
            max_size = DEFAULT_MAX_COMPRESS;
        }
        if min_size > max_size {
            self.err(
                &format!("{key}.min_size"),
                format!("is above max_size ({max_size} bytes)"),
            );
        }
        let level = match c.level {
            None => 5,
            Some(l) if (1..=9).contains(&l) => l as u32,
            Some(l) => {
                self.bad(&format!("{key}.level"), l, "1 (fastest) to 9 (smallest)");
                5
            }
        };
        let types = match c.types {
            None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            Some(ts) => ts
                .into_iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let l = t.trim().to_ascii_lowercase();
                    // `*` as a family only in `*/*` (every type): `*/json` would match none.
                    let ok = l.split_once('/').is_some_and(|(a, b)| {
                        (a != "*" || b == "*")
                            && !a.is_empty()
                            && !b.is_empty()
                            && a.bytes().all(crate::syntax::is_tchar)
                            && b.bytes().all(|c| crate::syntax::is_tchar(c) || c == b'*')
                    });
                    if ok {
                        Some(l)
                    } else {
                        self.bad(
                            &format!("{key}.types[{i}]"),
                            &t,
                            "a media type (\"application/json\", \"text/*\", \"application/*+json\", or \"*/*\" for every type)",
                        );
                        None
                    }
                })
                .collect(),
        };
        Compression {
            min_size,
            max_size,
            types,
            level,
        }
    }
}
