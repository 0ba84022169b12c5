//! What the floor forwarders share: their arguments and the head parse that frames a message.

use std::io;

/// LISTEN_ADDR and UPSTREAM_ADDR from the command line (exits with a usage line otherwise).
pub fn args(name: &str) -> (String, String) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(l), Some(u)) => (l, u),
        _ => {
            eprintln!("usage: {name} LISTEN_ADDR UPSTREAM_ADDR");
            std::process::exit(2);
        }
    }
}

/// (head length, Content-Length) of a complete request or response head at the start of
/// `buf`; `None` while it is partial.
pub fn parse(buf: &[u8], request: bool) -> io::Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let parsed = if request {
        httparse::Request::new(&mut headers).parse(buf)
    } else {
        httparse::Response::new(&mut headers).parse(buf)
    };
    match parsed {
        Ok(httparse::Status::Complete(n)) => {
            let cl = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            Ok(Some((n, cl)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}
