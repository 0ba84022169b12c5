//! HTTP types shared by the front ends and the pipeline.
//!
//! The pipeline sees a [`Method`] and a request head made of byte ranges into the buffer the
//! head arrived in (see [`h1::RequestHead`]); an HTTP/2 front end can build the same head from
//! its header frames, so the phases do not care which protocol carried the request.

pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod cors;
pub(crate) mod drain;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod pollio;
pub(crate) mod proxy_protocol;
pub(crate) mod tls;

pub(crate) mod write;

/// A request id: the client's `x-request-id` when it is sane (1–128 visible ASCII
/// characters), else 32 hex digits unique per process. Kept inline: no allocation.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 128],
    len: u8,
}

impl RequestId {
    /// A client's id, when it is 1-128 letters, digits and `-._:+=` (UUIDs, hex, base64 of
    /// the URL-safe kind, trace ids) and not only dots: what templates paste into JSON, HTML,
    /// headers or an integration's path without escaping, as they may Amazon's generated ids.
    /// Anything else gets a generated id.
    pub fn from_client(v: &[u8]) -> Option<RequestId> {
        let safe = |b: &u8| b.is_ascii_alphanumeric() || b"-._:+=".contains(b);
        if v.is_empty() || v.len() > 128 || !v.iter().all(safe) || v.iter().all(|&b| b == b'.') {
            return None;
        }
        let mut buf = [0u8; 128];
        buf[..v.len()].copy_from_slice(v);
        Some(RequestId {
            buf,
            len: v.len() as u8,
        })
    }

    pub fn generated(prefix: u64, n: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 128];
        for (i, word) in [prefix, n].iter().enumerate() {
            for k in 0..16 {
                buf[i * 16 + k] = HEX[((word >> (60 - 4 * k)) & 15) as usize];
            }
        }
        RequestId { buf, len: 32 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) use crate::syntax::{is_tchar, is_value_byte};

/// Case-insensitive ASCII comparison of a header name.
#[inline]
pub(crate) fn name_eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The `Connection` tokens the framing rules need, gathered in one pass over each value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl ConnTokens {
    /// Adds one `Connection` header's value (a comma-separated, case-insensitive list).
    pub(crate) fn add(&mut self, value: &[u8]) {
        // The values nearly every message carries, whole: no split, no trim.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return;
        }
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            match t.len() {
                5 => self.close |= t.eq_ignore_ascii_case(b"close"),
                7 => self.upgrade |= t.eq_ignore_ascii_case(b"upgrade"),
                10 => self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive"),
                _ => {}
            }
        }
    }
}

/// True when a comma-separated header value contains `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}
