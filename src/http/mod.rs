//! HTTP types shared by the front ends and the pipeline.
//!
//! The pipeline sees a [`Method`] and a request head made of byte ranges into the buffer the
//! head arrived in (see [`h1::RequestHead`]); an HTTP/2 front end can build the same head from
//! its header frames, so the phases do not care which protocol carried the request.

pub mod body;
pub mod conn;
pub mod drain;
pub mod h1;
pub mod h2;
pub mod pollio;
pub mod write;

/// Case-insensitive ASCII comparison of a header name.
#[inline]
pub fn name_eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// True when a comma-separated header value contains `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}
