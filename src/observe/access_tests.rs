use super::*;

fn line() -> Line<'static> {
    Line {
        request_id: b"abc123",
        source_ip: Some("10.1.2.3".parse().unwrap()),
        user_agent: Some(b"curl/8.5 \"quoted\"\n\xff"),
        time_ms: 1_796_072_290_123, // 2026-11-30T20:58:10.123Z
        method: Some("GET"),
        route_key: Some("GET /pets/{petId}"),
        path: Some(b"/pets/7"),
        query: Some(b"x=1"),
        protocol: Some("HTTP/1.1"),
        status: 200,
        bytes_out: 321,
        bytes_in: 77,
        latency_us: Some(1_234),
        integration_latency_us: Some(987),
        integration_status: Some(200),
        stage: Some("prod"),
        api: Some("petstore"),
        shard: 1,
        ..Line::default()
    }
}

fn render(fmt: &str, l: &Line<'_>) -> String {
    let mut out = Vec::new();
    Format::parse(fmt).unwrap().render(l, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_json_format_is_one_valid_json_object_per_line() {
    let text = render("json", &line());
    assert!(text.ends_with('\n'));
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["requestId"], "abc123");
    assert_eq!(v["ip"], "10.1.2.3");
    assert_eq!(v["requestTime"], "30/Nov/2026:20:58:10 +0000");
    assert_eq!(v["requestTimeEpoch"], "1796072290123");
    assert_eq!(v["routeKey"], "GET /pets/{petId}");
    assert_eq!(v["path"], "/pets/7");
    assert_eq!(v["status"], "200");
    assert_eq!(v["responseLatency"], "1.234");
    assert_eq!(v["integrationLatency"], "0.987");
    assert_eq!(v["userAgent"], "curl/8.5 \"quoted\"\n\u{fffd}");
    // Absent values are "-", as Amazon API Gateway writes them.
    assert_eq!(v["apiKeyId"], "-");
    assert_eq!(v["errorResponseType"], "-");
    assert_eq!(v["shard"], "1");
    // What some readers take for a line break is escaped too.
    let mut l = line();
    l.user_agent = Some("a\u{2028}b\u{85}c".as_bytes());
    let text = render("json", &l);
    assert!(text.contains(r"a\u2028b\u0085c"), "{text}");
    // Every variable there is (under one of its names), but the forms of others'.
    for (name, var) in NAMES {
        if matches!(var, Var::ErrorMessageString | Var::ResourcePath) {
            continue;
        }
        assert!(
            NAMES
                .iter()
                .filter(|(_, v)| v == var)
                .any(|(n, _)| JSON.contains(&format!("\"$context.{n}\""))),
            "the json format lacks $context.{name}"
        );
    }
}

#[test]
fn clf_escapes_what_could_break_the_line() {
    let text = render("clf", &line());
    assert_eq!(
        text,
        "10.1.2.3 - - [30/Nov/2026:20:58:10 +0000] \"GET /pets/7?x=1 HTTP/1.1\" 200 321 abc123\n"
    );
    let ua = render("ua=$context.identity.userAgent.", &line());
    assert_eq!(ua, "ua=curl/8.5 \\x22quoted\\x22\\x0A\\xFF.\n");
}

#[test]
fn templates_name_variables_and_claims() {
    struct Claims;
    impl AuthorizerVars for Claims {
        fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "sub").then_some(Cow::Borrowed("user-1"))
        }
        fn value(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "principalId").then_some(Cow::Borrowed("p-9"))
        }
    }
    let mut l = line();
    l.authorizer = Some(&Claims);
    let text = render(
        "$context.httpMethod $context.status sub=$context.authorizer.claims.sub pid=$context.authorizer.principalId x=$context.authorizer.claims.email",
        &l,
    );
    assert_eq!(text, "GET 200 sub=user-1 pid=p-9 x=-\n");
}

/// A known name ends where a `:`, `-`, `_` or `.` follows it; a name that runs on into
/// letters is still unknown.
#[test]
fn a_separator_after_a_variable_ends_it() {
    assert_eq!(
        render("$context.requestId:$context.status", &line()),
        "abc123:200\n"
    );
    assert_eq!(
        render(
            "$context.identity.sourceIp:$context.status-$context.httpMethod_$context.stage.",
            &line()
        ),
        "10.1.2.3:200-GET_prod.\n"
    );
    assert!(Format::parse("$context.statusX").is_err());
    assert!(Format::parse("$context.nope:$context.status").is_err());
}

#[test]
fn bad_formats_are_refused_with_a_reason() {
    let e = Format::parse("$context.nope").unwrap_err();
    assert!(
        e.contains("$context.nope") && e.contains("$context.requestId"),
        "{e}"
    );
    let e = Format::parse("key=$context.identity.apiKey").unwrap_err();
    assert!(e.contains("apiKeyId"), "{e}");
    assert!(Format::parse("plain text")
        .unwrap_err()
        .contains("no $context"));
    assert!(Format::parse("a $context.status\nb")
        .unwrap_err()
        .contains("one line"));
    assert!(Format::parse(&"$context.status ".repeat(400))
        .unwrap_err()
        .contains("at most"));
}

#[test]
fn clf_time_formats_utc() {
    assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
    assert_eq!(clf_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
}

#[test]
fn source_addresses_are_written_as_they_print() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "::1",
        "2001:db8::7",
        "::ffff:10.0.0.1",
    ] {
        let mut l = line();
        l.source_ip = Some(ip.parse().unwrap());
        assert_eq!(render("$context.identity.sourceIp", &l), format!("{ip}\n"));
    }
}

#[test]
fn upstream_addresses_are_written_as_they_print() {
    for a in [
        "127.0.0.1:8080",
        "10.0.0.255:1",
        "0.0.0.0:65535",
        "[::1]:443",
        "[2001:db8::7]:80",
    ] {
        let mut l = line();
        let addr: SocketAddr = a.parse().unwrap();
        l.upstream = Some(addr);
        assert_eq!(render("$context.upstreamAddr", &l), format!("{addr}\n"));
    }
}

#[test]
fn the_word_at_a_time_check_agrees_with_the_byte_check() {
    let naive = |v: &[u8]| {
        v.iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    };
    // Every byte value at every position of strings that span a word, a word and a bit, two.
    for len in [1, 7, 8, 9, 15, 16, 17, 24] {
        for pos in 0..len {
            for b in 0..=255u8 {
                let mut v = vec![b'a'; len];
                v[pos] = b;
                assert_eq!(plain(&v), naive(&v), "byte {b:#x} at {pos} of {len}");
            }
        }
    }
    // Neighbours of the boundaries next to each other (borrows between bytes).
    let edges = [
        0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0xff, 0x00, 0x01,
    ];
    for &a in &edges {
        for &b in &edges {
            let v = [b'x', a, b, b'y', b'z', a, b, b'w', b, a];
            assert_eq!(plain(&v), naive(&v), "{v:?}");
        }
    }
    assert!(plain(b""));
    assert!(plain(b"GET /pets/{petId} 0123456789 abcdefghijklmnop"));
}

#[test]
fn amazons_forms_of_the_message_and_the_route() {
    let mut l = line();
    let fmt = r#"{"m": $context.error.messageString, "r": "$context.resourcePath"}"#;
    let v: serde_json::Value = serde_json::from_str(&render(fmt, &l)).unwrap();
    assert_eq!(v, serde_json::json!({"m": "-", "r": "/pets/{petId}"}));
    let msg: std::borrow::Cow<'static, str> = "say \"no\"".into();
    l.error_message = Some(msg);
    l.route_key = Some("$default");
    let v: serde_json::Value = serde_json::from_str(&render(fmt, &l)).unwrap();
    assert_eq!(v, serde_json::json!({"m": "say \"no\"", "r": "$default"}));
}
