//! Response heads and bodies the gateway writes itself.

use std::io::Write;

/// The reason phrase for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
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
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Writes a status line.
pub fn status_line(out: &mut Vec<u8>, minor: u8, status: u16) {
    let _ = write!(
        out,
        "HTTP/1.{} {} {}\r\n",
        minor.min(1),
        status,
        reason(status)
    );
}

/// Writes `{"message": "..."}` with JSON escaping.
pub fn json_message(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"message\":");
    out.extend_from_slice(
        serde_json::to_string(message)
            .unwrap_or_else(|_| "\"\"".into())
            .as_bytes(),
    );
    out.push(b'}');
}
