//! The admin API, served by the control plane on `[admin].addr` only. Every call needs
//! `Authorization: Bearer <token>` with the token from the environment variable named by
//! `admin.token_env`; without that variable the admin API does not start (and says why).
//!
//! - `GET /healthz`: `{"status":"ok","generation":N}`
//! - `GET /config`: the effective configuration as JSON, secrets redacted
//! - `POST /reload`: reload the config file; 200 `{"generation":N}` or 400 with every error

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::net::{TcpListener, TcpStream};

use crate::control::Control;
use crate::http::conn::{read_into, write_all};
use crate::http::h1::{self, Framing};
use crate::http::write::status_line;

/// Time allowed for an admin request to arrive.
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts admin connections until the control plane stops.
pub async fn serve(listener: TcpListener, token: Rc<str>, ctl: Rc<RefCell<Control>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(handle(stream, token.clone(), ctl.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn token_ok(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn handle(mut stream: TcpStream, token: Rc<str>, ctl: Rc<RefCell<Control>>) {
    let mut buf = BytesMut::with_capacity(4096);
    let read = async {
        loop {
            match h1::parse_request(&buf, 16 << 10) {
                Ok(Some((len, parts))) => {
                    return Ok(Some(parts.into_head(buf.split_to(len).freeze())))
                }
                Ok(None) => {}
                Err(_) => return Ok(None),
            }
            if read_into(&mut stream, &mut buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
    };
    let head = match monoio::time::timeout(ADMIN_READ_TIMEOUT, read).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            let _ = write_all(
                &mut stream,
                respond(400, r#"{"message":"Bad Request"}"#.into()),
            )
            .await;
            return;
        }
        _ => return,
    };
    let authorized = head
        .header(b"authorization")
        .and_then(|v| {
            v.strip_prefix(b"Bearer ")
                .or_else(|| v.strip_prefix(b"bearer "))
        })
        .is_some_and(|t| token_ok(t.trim_ascii(), token.as_bytes()));
    let (status, body) = if !authorized {
        (401, r#"{"message":"Unauthorized"}"#.to_string())
    } else if !matches!(head.framing, Framing::None) {
        (
            400,
            r#"{"message":"Admin requests take no body"}"#.to_string(),
        )
    } else {
        route(head.method_bytes(), head.path_bytes(), &ctl)
    };
    let _ = write_all(&mut stream, respond(status, body)).await;
}

fn route(method: &[u8], path: &[u8], ctl: &Rc<RefCell<Control>>) -> (u16, String) {
    match (method, path) {
        (b"GET", b"/healthz") => (
            200,
            serde_json::json!({"status": "ok", "generation": ctl.borrow().generation()})
                .to_string(),
        ),
        (b"GET", b"/config") => {
            let c = ctl.borrow();
            (
                200,
                serde_json::json!({"generation": c.generation(), "config": &*c.config()})
                    .to_string(),
            )
        }
        (b"POST", b"/reload") => {
            let r = ctl.borrow_mut().reload();
            match r {
                Ok(g) => (200, serde_json::json!({"generation": g}).to_string()),
                Err(errors) => (400, serde_json::json!({"message": "configuration refused; the previous one keeps serving", "errors": errors}).to_string()),
            }
        }
        (_, b"/healthz" | b"/config" | b"/reload") => {
            (405, r#"{"message":"Method Not Allowed"}"#.to_string())
        }
        _ => (404, r#"{"message":"Not Found"}"#.to_string()),
    }
}

fn respond(status: u16, body: String) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(body.len() + 128);
    status_line(&mut out, 1, status);
    let _ = write!(
        out,
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if status == 401 {
        out.extend_from_slice(b"www-authenticate: Bearer\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}
