use super::*;

fn line() -> Line<'static> {
    Line {
        request_id: "abc123",
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
