//! Response heads and bodies the gateway writes itself: status lines, JSON messages, and
//! [`Answer`], the typed answer that is rendered here and nowhere else.

use std::io::Write;

/// The reason phrase for a status.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

thread_local! {
    /// This thread's `Date` value and the second it is for: formatted once a second.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Writes `date: <IMF-fixdate>\r\n` for now (RFC 9110 6.6.1), formatted once a second per
/// thread.
pub(crate) fn date_header(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Writes a status line.
pub(crate) fn status_line(out: &mut Vec<u8>, minor: u8, status: u16) {
    let _ = write!(
        out,
        "HTTP/1.{} {} {}\r\n",
        minor.min(1),
        status,
        reason(status)
    );
}

/// Writes `{"message": "..."}` with JSON escaping.
pub(crate) fn json_message(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"message\":");
    out.extend_from_slice(
        serde_json::to_string(message)
            .unwrap_or_else(|_| "\"\"".into())
            .as_bytes(),
    );
    out.push(b'}');
}

/// An answer the gateway writes itself, as a value; [`Answer::render`] is the only place
/// that turns one into bytes (HTTP/1.1, which HTTP/2 streams map to frames).
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub status: u16,
    /// Header lines besides the ones every answer gets, each `name: value\r\n`.
    pub headers: Vec<u8>,
    /// `content-type`, unless `headers` has one.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// Carries the request's `RateLimit-*` headers (answers made after the throttle phase),
    /// which the caller passes to [`Answer::render`] as extra lines.
    pub ratelimit: bool,
}

impl Answer {
    /// Renders the answer: status line, its headers, `content-type`, `content-length`,
    /// `x-request-id`, the `extra` lines, `connection`; the body unless `head_only`.
    pub(crate) fn render(
        &self,
        out: &mut Vec<u8>,
        minor: u8,
        request_id: &str,
        extra: &[u8],
        keep_alive: bool,
        head_only: bool,
    ) {
        status_line(out, minor, self.status);
        let has_date = self
            .headers
            .split(|&b| b == b'\n')
            .any(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:"));
        if !has_date {
            date_header(out);
        }
        out.extend_from_slice(&self.headers);
        if let Some(ct) = self.content_type {
            out.extend_from_slice(b"content-type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // No body and no Content-Length on 204 and 304 (RFC 9110 8.6); a HEAD's answer that
        // says its GET's length already keeps it.
        let bodiless = matches!(self.status, 204 | 304);
        // 205 carries no content, and says so with a zero length (RFC 9110 15.3.6).
        let reset = self.status == 205;
        let said = head_only
            && self
                .headers
                .split(|&b| b == b'\n')
                .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"));
        if !bodiless && !said {
            let len = if reset { 0 } else { self.body.len() };
            let _ = write!(out, "content-length: {len}\r\n");
        }
        let _ = write!(out, "x-request-id: {request_id}\r\n");
        out.extend_from_slice(extra);
        connection_header(out, minor, keep_alive);
        out.extend_from_slice(b"\r\n");
        if !head_only && !bodiless && !reset {
            out.extend_from_slice(&self.body);
        }
    }
}

/// `connection: close` when closing; `connection: keep-alive` for HTTP/1.0 clients that stay.
pub(crate) fn connection_header(out: &mut Vec<u8>, minor: u8, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}
