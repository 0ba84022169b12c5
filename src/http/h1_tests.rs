//! The HTTP/1.1 head parser against RFC 9112 and the forms that smuggle requests.

use super::*;

fn req(s: &str) -> Result<RequestHead, HeadError> {
    match parse_request(s.as_bytes(), 16 << 10)? {
        Some((len, parts)) => Ok(parts.into_head(Bytes::copy_from_slice(&s.as_bytes()[..len]))),
        None => Err(HeadError::Malformed("incomplete")),
    }
}

#[test]
fn parses_a_simple_request() {
    let r = req("GET /pets/1?limit=2 HTTP/1.1\r\nHost: example.com\r\nX-A: b\r\n\r\n").unwrap();
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.path_bytes(), b"/pets/1");
    assert_eq!(r.query_bytes(), Some(&b"limit=2"[..]));
    assert_eq!(r.host_bytes(), Some(&b"example.com"[..]));
    assert_eq!(r.header(b"x-a"), Some(&b"b"[..]));
    assert_eq!(r.framing, Framing::None);
    assert!(r.keep_alive);
}

#[test]
fn incomplete_then_too_large() {
    assert!(matches!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", 1024),
        Ok(None)
    ));
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(2000));
    assert_eq!(
        parse_request(big.as_bytes(), 1024).unwrap_err(),
        HeadError::TooLarge
    );
    // The target alone over the limit: 414, whole or still arriving.
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    let lead = format!("\r\n{long}");
    assert_eq!(
        parse_request(lead.as_bytes(), 1024).unwrap_err(),
        HeadError::UriTooLong
    );
    // A version is judged on the whole line, however the bytes arrive.
    let v2 = b"GET / HTTP/2.0\r\nHost: a\r\n\r\n";
    for n in 13..v2.len() {
        match parse_request(&v2[..n], 1024) {
            Ok(None) | Err(HeadError::VersionNotSupported) => {}
            other => panic!("{n}: {:?}", other.map(|o| o.map(|(l, _)| l))),
        }
    }
    for n in [long.len(), 1500] {
        assert_eq!(
            parse_request(&long.as_bytes()[..n], 1024).unwrap_err(),
            HeadError::UriTooLong
        );
    }
    // A later minor version of HTTP/1 is read as HTTP/1.1 (RFC 9110 6.2), empty lines first
    // or not; the ranges point into the bytes as they came.
    for head in [
        &b"GET /p?q=1 HTTP/1.2\r\nHost: a\r\n\r\n"[..],
        &b"\r\nGET /p?q=1 HTTP/1.9\r\nHost: a\r\n\r\n"[..],
    ] {
        let (len, parts) = parse_request(head, 1024).unwrap().unwrap();
        assert_eq!(len, head.len());
        assert_eq!(parts.minor, 1);
        assert_eq!(
            &head[parts.path.start as usize..parts.path.end as usize],
            b"/p"
        );
        let host = parts.host.unwrap();
        assert_eq!(&head[host.start as usize..host.end as usize], b"a");
    }
    for (line, want) in [
        ("GET / HTTP/2.0", HeadError::VersionNotSupported),
        ("GET / HTTP/3", HeadError::VersionNotSupported),
        (
            "GET / HTTP/1.x",
            HeadError::Malformed("Unsupported HTTP version"),
        ),
        (
            "GET / HTTX/2.0",
            HeadError::Malformed("Unsupported HTTP version"),
        ),
    ] {
        let head = format!("{line}\r\nHost: a\r\n\r\n");
        assert_eq!(
            parse_request(head.as_bytes(), 1024).unwrap_err(),
            want,
            "{line}"
        );
    }
}

#[test]
fn smuggling_forms_are_refused() {
    let bad = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: b\r\n\r\n",
        "GET pets HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for b in bad {
        assert!(
            matches!(req(b), Err(HeadError::Malformed(_))),
            "accepted: {b:?}"
        );
    }
    // A coding before a final `chunked` is well framed, just not implemented (501).
    for b in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(matches!(req(b), Err(HeadError::UnknownCoding)), "{b:?}");
    }
}

#[test]
fn framing_and_connection() {
    let r = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
    assert_eq!(r.framing, Framing::Length(5));
    let r = req(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.keep_alive);
    let r = req("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!r.keep_alive);
    let r = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(r.keep_alive);
    let r = req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    assert!(r.upgrade);
    // RFC 9110 7.8: HTTP/1.0 cannot upgrade.
    let r = req("GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    assert!(!r.upgrade);
    let r = req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    assert!(r.expect_continue);
}

#[test]
fn content_length_values() {
    let cl = |v: &str| {
        let mut seen = None;
        content_length(v.as_bytes(), &mut seen).map(|()| seen)
    };
    assert_eq!(cl("0"), Ok(Some(0)));
    assert_eq!(cl(" 42 "), Ok(Some(42)));
    assert_eq!(cl("007"), Ok(Some(7)));
    assert_eq!(
        cl("9999999999999999999"),
        Ok(Some(9_999_999_999_999_999_999))
    );
    for bad in [
        "",
        "-1",
        "+1",
        "1e3",
        "0x10",
        "1 2",
        "18446744073709551616",
        "5,",
        "٣",
    ] {
        assert!(cl(bad).is_err(), "accepted Content-Length {bad:?}");
    }
}

#[test]
fn connection_tokens_in_any_case_and_list() {
    let tokens = |values: &[&str]| {
        let mut t = ConnTokens::default();
        for v in values {
            t.add(v.as_bytes());
        }
        (t.close, t.keep_alive, t.upgrade)
    };
    assert_eq!(tokens(&["keep-alive"]), (false, true, false));
    assert_eq!(tokens(&["Keep-Alive"]), (false, true, false));
    assert_eq!(tokens(&["CLOSE"]), (true, false, false));
    assert_eq!(tokens(&["keep-alive, Upgrade"]), (false, true, true));
    assert_eq!(tokens(&["upgrade,close"]), (true, false, true));
    assert_eq!(tokens(&[" close "]), (true, false, false));
    assert_eq!(
        tokens(&["closed", "keep-aliveX", "upgrades"]),
        (false, false, false)
    );
    assert_eq!(tokens(&["x-custom", "close"]), (true, false, false));
    let r = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-trace, Close\r\n\r\n").unwrap();
    assert!(!r.keep_alive);
}

#[test]
fn host_values() {
    for ok in [
        "a",
        "api.example.test:8443",
        "[::1]:80",
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
        "my_host-1",
        "a:",
    ] {
        let r = req(&format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n")).unwrap();
        assert_eq!(r.host_bytes(), Some(ok.as_bytes()));
    }
    let long = "a".repeat(256);
    for bad in [
        "a b",
        "a/b",
        "a@b",
        "a%20",
        "\u{e9}",
        "x:abc",
        "[::1",
        "x:80:80",
        "[::1]x",
        "[zz]:80",
        ":80",
        "x:123456",
        long.as_str(),
    ] {
        assert!(
            req(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")).is_err(),
            "accepted Host {bad:?}"
        );
    }
}

#[test]
fn absolute_form_sets_host() {
    let r = req("GET http://api.example.test/v1/pets?x=1 HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
    assert_eq!(r.host_bytes(), Some(&b"api.example.test"[..]));
    assert_eq!(r.path_bytes(), b"/v1/pets");
    assert_eq!(r.query_bytes(), Some(&b"x=1"[..]));
}

#[test]
fn response_framing() {
    let parse = |s: &str, head: bool| {
        parse_response(s.as_bytes(), 1 << 16, head)
            .unwrap()
            .unwrap()
            .1
    };
    assert_eq!(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).framing,
        Framing::Length(3)
    );
    assert_eq!(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).framing,
        Framing::None
    );
    assert_eq!(
        parse("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
        Framing::None
    );
    assert_eq!(
        parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .framing,
        Framing::Chunked
    );
    let p = parse("HTTP/1.1 200 OK\r\n\r\n", false);
    assert_eq!(p.framing, Framing::UntilClose);
    assert!(!p.keep_alive);
    // HTTP/1.0 with a transfer coding: faulty framing (RFC 9112 6.1), the connection not
    // kept after it, whatever Connection says.
    let p = parse(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert_eq!(p.framing, Framing::Chunked);
    assert!(!p.keep_alive);
    assert!(parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        1 << 16,
        false
    )
    .is_err());
    assert!(parse_response(b"garbage\r\n\r\n", 1 << 16, false).is_err());
    // Only `chunked` is relayed: another coding is refused (the client could not undo it),
    // on a HEAD's and a 304's answer too; a 204 or 1xx's codings are not looked at.
    for (head, head_request) in [
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            true,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
        ),
    ] {
        assert!(
            parse_response(head.as_bytes(), 1 << 16, head_request).is_err(),
            "{head}"
        );
    }
    assert_eq!(
        parse(
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
            false
        )
        .framing,
        Framing::None
    );
}

/// Random edits of requests and answers (escapes, split UTF-8, stray bytes, cut lines): a
/// parse never panics, every range it gives lies in the head (httparse's static `""` for a
/// missing or non-ASCII reason phrase once made one that did not), and a request path that
/// normalises gives segments that are whole strings (`/%C3/%A9` once split a character).
#[test]
fn random_heads_parse_into_ranges_inside_them() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: [&[u8]; 5] = [
        b"GET /a/b%C3%A9?q=1 HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
        b"POST /x/y HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAge: 5\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 304 \r\nETag: \"a\"\r\n\r\n",
    ];
    let tokens: [&[u8]; 14] = [
        b"%", b"/", b".", b"..", b"\\", b"\xc3", b"\xa9", b"\xff", b"\r\n", b" ", b":", b"%C3/%A9",
        b"\x94", b"%2e",
    ];
    let (mut requests, mut answers) = (0, 0);
    for _ in 0..50_000 {
        let mut b = seeds[rnd() as usize % seeds.len()].to_vec();
        for _ in 0..rnd() % 4 + 1 {
            let at = rnd() as usize % (b.len() + 1);
            match rnd() % 3 {
                0 => {
                    let t = tokens[rnd() as usize % tokens.len()];
                    b.splice(at..at, t.iter().copied());
                }
                1 if at < b.len() => b[at] = rnd() as u8,
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
        if let Ok(Some((n, parts))) = parse_request(&b, 16 << 10) {
            let head = parts.into_head(Bytes::copy_from_slice(&b[..n]));
            let _ = (head.method_bytes(), head.query_bytes(), head.host_bytes());
            assert!(head.headers().count() <= MAX_HEADERS);
            if let Ok(segs) = crate::syntax::path::normalise(head.path_bytes()) {
                let _: usize = segs.iter().map(str::len).sum();
            }
            requests += 1;
        }
        if let Ok(Some((n, parts))) = parse_response(&b, 16 << 10, false) {
            let head = parts.into_head(Bytes::copy_from_slice(&b[..n]));
            let _ = head.slice(&head.reason);
            assert!(head.headers().count() <= MAX_HEADERS);
            answers += 1;
        }
    }
    // Most edits still parse: the ranges were exercised, not only the refusals.
    assert!(requests > 1_000 && answers > 2_000, "{requests} {answers}");
}
