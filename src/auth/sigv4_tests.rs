use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SCOPE: &str = "20150830/us-east-1/service/aws4_request";

/// AWS's published SigV4 test suite (aws-sig-v4-test-suite): request, canonical request,
/// string to sign, signature.
const VECTORS: &[(&str, &str, &str, &str)] = &[
    ("GET / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
     "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("GET /?Param2=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
     "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1: value1\nMy-Header2: \"a   b   c\"\nX-Amz-Date:20150830T123600Z",
     "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value2\nMy-Header1:value2\nMy-Header1:value1\nX-Amz-Date:20150830T123600Z",
     "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
     "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
    ("POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
     "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
     "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
     "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
     "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    ("POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded; charset=utf8\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
     "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf8\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
     "2e1cf7ed91881a30569e46552437e4156c823447bf1781b921b5d486c568dd1c",
     "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"),
];

#[test]
fn the_aws_test_suite_verifies() {
    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    for (req, creq, sts_hash, sig) in VECTORS {
        let (head, body) = req.split_once("\n\n").unwrap_or((req, ""));
        let mut lines = head.lines();
        let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let (method, target) = (first[0], first[1]);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect();
        let mut signed: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        signed.sort();
        signed.dedup();
        let get = |name: &str| -> Vec<&[u8]> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_bytes())
                .collect()
        };
        let c = canonical_request(
            method,
            path.as_bytes(),
            query.as_bytes(),
            None,
            get,
            &signed,
            &sha256_hex(body.as_bytes()),
        )
        .unwrap();
        assert_eq!(&c, creq);
        let sts = string_to_sign("20150830T123600Z", SCOPE, &c);
        assert!(sts.ends_with(sts_hash), "{sts}");
        assert!(signature_matches(&key, &sts, &unhex(sig).unwrap()), "{req}");
        let mut wrong = unhex(sig).unwrap();
        wrong[0] ^= 1;
        assert!(!signature_matches(&key, &sts, &wrong));
    }
}

#[test]
fn utf8_paths_are_encoded_as_every_sdk_does() {
    let get = |_: &str| -> Vec<&[u8]> { vec![b"example.amazonaws.com"] };
    // A raw path (the suite's get-utf8) is encoded once; one already encoded on the wire
    // (as SDKs send it) is encoded again.
    let c = canonical_request(
        "GET",
        "/ሴ".as_bytes(),
        b"",
        None,
        get,
        &["host".into()],
        "x",
    )
    .unwrap();
    assert!(c.starts_with("GET\n/%E1%88%B4\n"), "{c}");
    let c = canonical_request("GET", b"/%E1%88%B4", b"", None, get, &["host".into()], "x").unwrap();
    assert!(c.starts_with("GET\n/%25E1%2588%25B4\n"), "{c}");
    // Query names and values: decoded, encoded strictly, sorted by name then value.
    let c = canonical_request(
        "GET",
        b"/",
        b"b=2&a=x%20y&a=1&c",
        None,
        get,
        &["host".into()],
        "x",
    )
    .unwrap();
    assert!(c.starts_with("GET\n/\na=1&a=x%20y&b=2&c=\n"), "{c}");
}

#[test]
fn authorization_headers_parse_or_say_why_not() {
    let h = parse_authorization(b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31").unwrap();
    assert_eq!(h.access_key, "AKIDEXAMPLE");
    assert_eq!(
        (h.date.as_str(), h.region.as_str(), h.service.as_str()),
        ("20150830", "us-east-1", "service")
    );
    assert_eq!(h.signed_headers, ["host", "x-amz-date"]);
    for bad in [
        &b"Bearer x"[..],
        b"AWS4-HMAC-SHA256",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/service/aws4_request, SignedHeaders=host",
        b"AWS4-HMAC-SHA256 Credential=A/2015/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/service, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=zz",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=Host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        b"\xff\xfe",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        b"AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=x-amz-date;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ] {
        assert!(parse_authorization(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn amz_dates() {
    assert_eq!(parse_amz_date(b"20150830T123600Z"), Some(1_440_938_160));
    assert_eq!(parse_amz_date(b"19700101T000000Z"), Some(0));
    for bad in [
        &b"20150830T1236Z"[..],
        b"20151330T123600Z",
        b"2015083OT123600Z",
        b"20150830 123600Z",
        b"",
        "2015083\u{e9}123600Z".as_bytes(),
        b"00000830T123600Z",
        b"+0150830T123600Z",
        b"20150830T+23600Z",
    ] {
        assert_eq!(parse_amz_date(bad), None);
    }
}

/// The presigned URL of Amazon S3's guide ("Authenticating Requests: Using Query
/// Parameters"): its parameters parsed, the signature left out of the canonical query, and
/// the guide's signature reproduced (S3 signs UNSIGNED-PAYLOAD; its path needs no encoding).
#[test]
fn presigned_urls_parse_and_verify() {
    let query = b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let q = parse_query(query).unwrap().unwrap();
    assert_eq!(q.sig.access_key, "AKIAIOSFODNN7EXAMPLE");
    assert_eq!(q.sig.date, "20130524");
    assert_eq!(q.sig.service, "s3");
    assert_eq!(q.sig.signed_headers, ["host"]);
    assert_eq!(q.amz_date, "20130524T000000Z");
    assert_eq!(q.expires, Some(86400));
    assert!(!q.token);
    let get = |_: &str| -> Vec<&[u8]> { vec![b"examplebucket.s3.amazonaws.com"] };
    let c = canonical_request(
        "GET",
        b"/test.txt",
        query,
        Some(QUERY_SIGNATURE),
        get,
        &q.sig.signed_headers,
        UNSIGNED_PAYLOAD,
    )
    .unwrap();
    assert_eq!(
        c,
        "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    let key = signing_key(
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "20130524",
        "us-east-1",
        "s3",
    );
    let sts = string_to_sign(&q.amz_date, "20130524/us-east-1/s3/aws4_request", &c);
    assert!(signature_matches(&key, &sts, &q.sig.signature));

    // Queries without the presigned parameters are not presigned.
    assert_eq!(parse_query(b""), None);
    assert_eq!(parse_query(b"a=1&X-Amz-Date=20130524T000000Z"), None);
    // Partial, repeated or out-of-range parameters are refused with Amazon's messages.
    let without = |name: &str| -> Vec<u8> {
        query
            .split(|&b| b == b'&')
            .filter(|p| !p.starts_with(name.as_bytes()))
            .collect::<Vec<_>>()
            .join(&b'&')
    };
    for name in [
        "X-Amz-Date",
        "X-Amz-SignedHeaders",
        "X-Amz-Credential",
        "X-Amz-Algorithm",
    ] {
        let e = parse_query(&without(name)).unwrap().unwrap_err();
        assert!(
            e.starts_with("AWS query-string parameters must include"),
            "{name}: {e}"
        );
    }
    let mut twice = query.to_vec();
    twice.extend_from_slice(
        b"&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    );
    assert!(parse_query(&twice).unwrap().is_err());
    for (expires, message) in [
        (
            "604801",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ),
        ("-1", "X-Amz-Expires should be a number"),
        ("", "X-Amz-Expires should be a number"),
        ("99999999999999999999", "X-Amz-Expires should be a number"),
    ] {
        let mut q = without("X-Amz-Expires");
        q.extend_from_slice(format!("&X-Amz-Expires={expires}").as_bytes());
        assert_eq!(parse_query(&q).unwrap().unwrap_err(), message);
    }
    let mut q = without("X-Amz-Expires");
    assert_eq!(parse_query(&q).unwrap().unwrap().expires, None);
    q.extend_from_slice(b"&X-Amz-Security-Token=abc");
    assert!(parse_query(&q).unwrap().unwrap().token);
    let mut q = without("X-Amz-Algorithm");
    q.extend_from_slice(b"&X-Amz-Algorithm=AWS4-HMAC-SHA512");
    assert!(parse_query(&q).unwrap().is_err());
}

/// Paths are signed as AWS signers normalize them (aws-sig-v4-test-suite's normalize-path
/// cases; botocore's `remove_dot_segments`): empty and dot segments dropped, the trailing
/// slash kept.
#[test]
fn paths_are_normalized_as_signers_sign_them() {
    for (path, want) in [
        ("/", "/"),
        ("", "/"),
        ("//", "/"),
        ("//example//", "/example/"),
        ("/example/..", "/"),
        ("/example1/example2/../..", "/"),
        ("/./", "/"),
        ("/a/./b/../c", "/a/c"),
        ("/pets//1", "/pets/1"),
        ("/pets/1/", "/pets/1/"),
    ] {
        assert_eq!(
            String::from_utf8(normalize_path(path.as_bytes())).unwrap(),
            want,
            "{path:?}"
        );
    }
}

/// Logs and traces keep a presigned URL's query without its credential.
#[test]
fn presigned_secrets_are_redacted_for_logs() {
    let q = b"a=1&X-Amz-Credential=AKID%2F20130524%2Fus-east-1&X-Amz-Date=20130524T000000Z&X-Amz-Signature=abc&X%2DAmz-Security-Token=t";
    assert_eq!(
        String::from_utf8(redact_query(q, &[]).into_owned()).unwrap(),
        "a=1&X-Amz-Credential=REDACTED&X-Amz-Date=20130524T000000Z&X-Amz-Signature=REDACTED&X%2DAmz-Security-Token=REDACTED"
    );
    assert!(matches!(
        redact_query(b"a=1&b=2", &[]),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(matches!(
        redact_query(b"", &[]),
        std::borrow::Cow::Borrowed(_)
    ));
    // The names an API's authorizers read credentials from, however they are spelled.
    let also: Vec<Box<str>> = vec!["access_token".into(), "my key".into()];
    assert_eq!(
        String::from_utf8(
            redact_query(b"a=1&access_token=eyJ&acc%65ss_token=x&my+key=k&b=2", &also).into_owned()
        )
        .unwrap(),
        "a=1&access_token=REDACTED&acc%65ss_token=REDACTED&my+key=REDACTED&b=2"
    );
    assert!(matches!(
        redact_query(b"a=1", &also),
        std::borrow::Cow::Borrowed(_)
    ));
}
