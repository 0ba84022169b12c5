//! The engine against the developer guide's examples, and its bounds.

use super::*;
use serde_json::json;

fn run(t: &str, body: &str) -> Result<String, String> {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let params = json!({"path": {"petId": "7"}, "querystring": {"limit": "2"}, "header": {"x-tenant": "t1"}});
    let context = json!({"requestId": "rid-1", "stage": "prod", "httpMethod": "GET"});
    let stage = json!({"tier": "gold"});
    let env = Env {
        body,
        json: json.as_ref(),
        not_json: None,
        params: &params,
        context: &context,
        stage_variables: &stage,
    };
    Template::parse(t)?.render(&env)
}

const PETS: &str = r#"[ { "id": 1, "type": "dog", "price": 249.99 }, { "id": 2, "type": "cat", "price": 124.99 }, { "id": 3, "type": "fish", "price": 0.99 } ]"#;

/// Amazon API Gateway's developer guide, "Mapping template example" (PetStore).
#[test]
fn the_petstore_example_gives_what_the_guide_shows() {
    let t = "#set($inputRoot = $input.path('$'))\n[\n#foreach($elem in $inputRoot)\n  {\n    \"description\" : \"Item $elem.id is a $elem.type.\",\n    \"askingPrice\" : $elem.price\n  }#if($foreach.hasNext),#end\n\n#end\n]";
    let out: Value = serde_json::from_str(&run(t, PETS).unwrap()).unwrap();
    assert_eq!(
        out,
        json!([
            {"description": "Item 1 is a dog.", "askingPrice": 249.99},
            {"description": "Item 2 is a cat.", "askingPrice": 124.99},
            {"description": "Item 3 is a fish.", "askingPrice": 0.99}
        ])
    );
}

/// The guide's more complex template: a cut-off price decides what is said.
#[test]
fn filtering_a_list_with_foreach_and_if() {
    let t = "#set($inputRoot = $input.path('$'))\n[\n#foreach($elem in $inputRoot)\n#if($elem.price < 150)\n  {\"id\": $elem.id, \"deal\": #if($elem.price < 100)\"great\"#else\"fair\"#end}#if($foreach.hasNext),#end\n#end\n#end\n]";
    let out = run(t, PETS).unwrap();
    // The last kept item is not the last in the list: strip the dangling comma Velocity leaves.
    let out: Value = serde_json::from_str(&out.replace(",\n]", "\n]")).unwrap();
    assert_eq!(
        out,
        json!([{"id": 2, "deal": "fair"}, {"id": 3, "deal": "great"}])
    );
}

#[test]
fn json_to_xml() {
    let t = "#set($root = $input.path('$'))<pets>#foreach($p in $root)<pet id=\"$p.id\"><type>$p.type</type></pet>#end</pets>";
    assert_eq!(
        run(t, PETS).unwrap(),
        "<pets><pet id=\"1\"><type>dog</type></pet><pet id=\"2\"><type>cat</type></pet><pet id=\"3\"><type>fish</type></pet></pets>"
    );
}

#[test]
fn input_util_context_and_references() {
    let body = r#"{"name":"Rex \"the\" dog","tags":["a","b"],"n":{"x":1}}"#;
    let t = r#"{"name":"$util.escapeJavaScript($input.path('$.name'))","json":$input.json('$.n'),"tags":$input.json('$.tags'),"count":$input.path('$.tags').size(),"first":"$input.path('$.tags[0]')","pet":"$input.params('petId')","limit":"$input.params().querystring.limit","tenant":"$input.params().header.get('x-tenant')","rid":"$context.requestId","tier":"${stageVariables.tier}","missing":"$!nothing","kept":"$nothing","up":"$util.escapeJavaScript($input.path('$.name').toUpperCase())","b64":"$util.base64Encode('hi')","unb64":"$util.base64Decode('aGk=')","unpadded":"$util.base64Decode('aGVsbG8gd29ybGQ')","url":"$util.urlEncode('a b&c')","unurl":"$util.urlDecode('a+b%26c')","parsed":"$util.parseJson('{"k":5}').k"}"#;
    let text = run(t, body).unwrap();
    let out: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        out,
        json!({"name": "Rex \"the\" dog", "json": {"x": 1}, "tags": ["a", "b"], "count": 2, "first": "a",
               "pet": "7", "limit": "2", "tenant": "t1", "rid": "rid-1", "tier": "gold", "missing": "",
               "kept": "$nothing", "up": "REX \"THE\" DOG", "b64": "aGk=", "unb64": "hi", "unpadded": "hello world",
               "url": "a+b%26c", "unurl": "a b&c", "parsed": "5"})
    );
}

#[test]
fn set_if_elseif_else_and_velocity_count() {
    let t = "#set($n = 5)#if($n > 10)big#elseif($n >= 5 && $n != 6)mid#{else}small#end;#foreach($i in [1..3])$velocityCount:$i#if($foreach.hasNext),#end#end;#set($s = \"x$n\")$s;$n.toString().length()";
    assert_eq!(run(t, "{}").unwrap(), "mid;1:1,2:2,3:3;x5;1");
    // Comments leave nothing; escaped references are text.
    assert_eq!(
        run("a## gone\nb#* gone *#c\\$d", "{}").unwrap(),
        "ab\nc$d".replace("\n", "")
    );
}

#[test]
fn broken_input_is_an_error_not_a_panic() {
    for t in [
        "$",
        "#",
        "${",
        "$!{",
        "#set(",
        "#set($x",
        "#set($x =",
        "#foreach($x in",
        "$a.b(",
        "$a[",
        "#if(",
        "#if($a",
        "'",
        "\"",
        "#{",
        "#{end",
        "[1..",
        "{",
        "#set($x = {'a': })",
        "é$é#é",
        "#if(1 <)#end",
        "#foreach($x in [1..3)#end",
        "$a.b('é",
        "##é",
        "#*é",
    ] {
        if let Ok(tpl) = Template::parse(t) {
            let _ = run(t, "{}");
            let _ = tpl;
        }
    }
    // A `%` without two hex digits fails the call, as Java's `URLDecoder` throws.
    for t in [
        "$util.urlDecode('é%4')",
        "$util.urlDecode('%C3%A9x%2')",
        "$util.urlDecode('%')",
    ] {
        let e = run(t, "{}").unwrap_err();
        assert!(e.contains("Incomplete trailing escape"), "{t}: {e}");
    }
    let e = run("$util.urlDecode('a%zzb')", "{}").unwrap_err();
    assert!(e.contains("Illegal hex characters"), "{e}");
    assert_eq!(run("$util.urlDecode('%C3%A9+x')", "{}").unwrap(), "é x");
    let e = run("$input.path('$.a[é]')", "{\"a\":[1]}").unwrap_err();
    assert!(e.contains("not supported"), "{e}");
}

/// A parameter the request lacks is the empty string, as in Amazon API Gateway.
#[test]
fn missing_parameters_are_empty() {
    let t = "[$input.params('nope')][$input.params('limit')][$input.params('x-tenant')]";
    assert_eq!(run(t, "{}").unwrap(), "[][2][t1]");
    // A header is found whatever the case of its name (HTTP/2 sends them in lower case).
    assert_eq!(run("[$input.params('X-Tenant')]", "{}").unwrap(), "[t1]");
    // Path and query names keep their case.
    assert_eq!(run("[$input.params('LIMIT')]", "{}").unwrap(), "[]");
}

/// The output's bound holds for what the last node writes too: one reference to a body
/// past it is refused, not written out whole.
#[test]
fn the_last_write_counts_against_the_output_bound() {
    let body = "x".repeat(MAX_OUTPUT + 10);
    let e = run("ok $input.body", &body).unwrap_err();
    assert!(e.contains("wrote more than"), "{e}");
    assert_eq!(run("$input.body", "small").unwrap(), "small");
}

/// A negative or fractional position finds nothing (Java's `get(-1)` refuses it), where a
/// cast would have clamped it to the first item.
#[test]
fn negative_positions_find_nothing() {
    let t = "#set($l = $input.path('$'))#set($s = 'ab')[$!l.get(-1)][$!l[-1]][$!l.get(0.5)][$l.get(1)][$s.charAt(-1)][$s.charAt(1)]";
    assert_eq!(run(t, "[10, 20]").unwrap(), "[][][][20][][b]");
}

#[test]
fn work_is_bounded() {
    let big: Vec<Value> = (0..5000).map(Value::from).collect();
    let body = Value::Array(big).to_string();
    let e = run("#foreach($x in $input.path('$'))$x#end", &body).unwrap_err();
    assert!(e.contains("at most 1000"), "{e}");
    let t = "#foreach($a in [1..999])#foreach($b in [1..999])x#end#end";
    let e = run(t, "{}").unwrap_err();
    assert!(e.contains("steps"), "{e}");
    // Bounds from the request at i64's extremes: refused, not an allocation of 2^64 items.
    for body in [
        r#"{"from": -1e19, "to": 1e19}"#,
        r#"{"from": -9223372036854775808, "to": 9223372036854775807}"#,
        r#"{"from": 9223372036854775807, "to": -9223372036854775808}"#,
    ] {
        let t = "#set($r = $input.path('$'))#foreach($i in [$r.from..$r.to])$i,#end";
        let e = run(t, body).unwrap_err();
        assert!(e.contains("at most 1000 items"), "{body}: {e}");
    }
    assert!(Template::parse("#if(true)unclosed").is_err());
    assert!(Template::parse("#end").is_err());
    assert!(
        Template::parse(&"#if(true)".repeat(100)).is_err(),
        "nesting is bounded"
    );
    // A pattern too big to build cheaply is refused, not built: when the template is read if
    // it is written there, else when it is used.
    let e = Template::parse("#set($s = 'aaa')$s.matches('(a{1000}){1000}')").unwrap_err();
    assert!(e.contains("size limit"), "{e}");
    let t = Template::parse("#set($p = '(a{1000}){1000}')#set($s = 'aaa')$s.matches($p)");
    let e = run(t.unwrap().source(), "{}").unwrap_err();
    assert!(e.contains("size limit"), "{e}");
    assert_eq!(
        run("#set($s = 'aaa')$s.matches('a+')", "{}").unwrap(),
        "true"
    );
    let e = run("$util.nope('x')", "{}").unwrap_err();
    assert!(e.contains("not a method of $util"), "{e}");
}

/// Values a template builds count against the budget when they are made: doubling a list,
/// splitting or replacing in a body stop there, with an error, before they take the memory.
#[test]
fn what_templates_build_is_bounded() {
    let over = |t: &str, body: &str| {
        let e = run(t, body).unwrap_err();
        assert!(e.contains("bytes of values"), "{t}: {e}");
    };
    over(
        "#set($l=[1])#foreach($i in [1..40])#set($l=[$l,$l])#end$l.size()",
        "{}",
    );
    let commas = ",".repeat(1 << 20);
    // A wildcard's copies are weighed before they are made.
    let items = format!("[{}1]", "1,".repeat(2 << 20));
    let e = run("$input.path('$[*]').size()", &items).unwrap_err();
    assert!(
        e.contains("selects more than the template may build"),
        "{e}"
    );
    over("#set($p = $input.body.split(','))$p.size()", &commas);
    over("#set($p = $input.body.split(''))$p.size()", &commas);
    let b = "b".repeat(6000);
    over("#set($b = $input.body)$b.replace('', $b).length()", &b);
    over("#set($b = $input.body)$b.replaceAll('', $b).length()", &b);
    over(
        &format!("$input.body.replaceAll('b', '{}').length()", "c".repeat(30)),
        &"b".repeat(1 << 20),
    );
    over("#set($s = 'abcdefgh')#foreach($i in [1..17])#set($s = \"$s$s\")#end#foreach($i in [1..999])#set($t = $s.toUpperCase())#end", "{}");
    over(
        "#set($m = {})#foreach($i in [1..999])#set($m = {'a': $m, 'b': $m})#end",
        "{}",
    );
    // A call or comparison that goes through a big value borrowed from the payload costs
    // what it reads: a loop of them stops, where it kept the shard for seconds.
    let big = format!(
        "{{\"t\": \"{}\", \"u\": \"{}\"}}",
        "a".repeat(200_000),
        "a".repeat(200_000)
    );
    for t in [
        "#set($r = $input.path('$'))#foreach($i in [1..999])#if($r.t.length() > 0)x#end#end",
        "#set($r = $input.path('$'))#foreach($i in [1..999])#if($r.t.contains('b'))x#end#end",
    ] {
        let e = run(t, &big).unwrap_err();
        assert!(e.contains("read more than"), "{t}: {e}");
    }
    // A comparison's operands are copies, which the build budget counts (and stops) first.
    let t = "#set($r = $input.path('$'))#foreach($i in [1..999])#if($r.t == $r.u)x#end#end";
    let e = run(t, &big).unwrap_err();
    assert!(e.contains("built more than"), "{t}: {e}");
    assert_eq!(
        run(
            "#set($r = $input.path('$'))#if($r.t == $r.u)$r.t.length()#end",
            &big
        )
        .unwrap(),
        "200000"
    );
    // The same calls on what fits give what they always did.
    assert_eq!(run("$input.body.split(',').size()", "a,b,,c").unwrap(), "4");
    assert_eq!(run("$input.body.replace('', '-')", "ab").unwrap(), "-a-b-");
    assert_eq!(
        run("$input.body.replace('b', 'xx')", "abab").unwrap(),
        "axxaxx"
    );
    assert_eq!(
        run("$input.body.replaceAll('(a)(b)', '$2$1.')", "abab").unwrap(),
        "ba.ba."
    );
    assert_eq!(
        run("$input.body.replaceAll('', '-')", "ab").unwrap(),
        "-a-b-"
    );
    assert_eq!(
        run("$input.body.replaceAll('(?P<x>b)', '[${x}]')", "abab").unwrap(),
        "a[b]a[b]"
    );
    // The replacement is read as Java reads it: `$1px` is group 1 then `px`, `$12` group 1
    // then `2` where there is no group 12, `\c` is `c` (the JSON-escaping idiom), a group
    // that took no part is empty.
    for (t, body, want) in [
        (
            "$input.body.replaceAll('(\\d+)', '$1px')",
            "w=12 h=30",
            "w=12px h=30px",
        ),
        (
            "$input.body.replaceAll('(\\w)=(\\d+)', '$2_$1')",
            "w=12 h=30",
            "12_w 30_h",
        ),
        ("$input.body.replaceAll('(a)', '$12')", "ab", "a2b"),
        (
            "$input.body.replaceAll('\"', '\\\\\"')",
            "x\", \"r",
            "x\\\", \\\"r",
        ),
        ("$input.body.replaceAll('a', '\\$')", "ab", "$b"),
        ("$input.body.replaceAll('(a)|(b)', '<$2>')", "ab", "<><b>"),
    ] {
        assert_eq!(run(t, body).unwrap(), want, "{t}");
    }
    for (t, want) in [
        ("$input.body.replaceAll('a', '$2')", "no group 2"),
        (
            "$input.body.replaceAll('a', '$x')",
            "illegal group reference",
        ),
        (
            "$input.body.replaceAll('a', '${y}')",
            "no group with name {y}",
        ),
        (
            "$input.body.replaceAll('a', 'x\\')",
            "character to be escaped is missing",
        ),
    ] {
        let e = run(t, "ab").unwrap_err();
        assert!(e.contains(want), "{t}: {e}");
    }
    assert_eq!(
        run(
            "#set($l=[1])#foreach($i in [1..10])#set($l=[$l,$l])#end$l.size()",
            "{}"
        )
        .unwrap(),
        "2"
    );
    // A body may be copied and split a few times over.
    let words = "ab,".repeat(100_000);
    assert_eq!(
        run("$input.body.length() $input.body.split(',').size()", &words).unwrap(),
        "300000 100000"
    );
}

/// `split` is Java's `String.split`, which Amazon's templates run: trailing empty pieces are
/// dropped, a match of nothing at the start makes no empty first piece, and an empty string
/// splits into itself.
#[test]
fn string_positions_count_utf16_units_as_java() {
    // "é" is one unit, "😀" two (a surrogate pair), as Java's String counts them.
    let body = "aé😀b";
    assert_eq!(run("$input.body.length()", body).unwrap(), "5");
    assert_eq!(run("$input.body.indexOf('b')", body).unwrap(), "4");
    assert_eq!(run("$input.body.substring(2, 4)", body).unwrap(), "😀");
    assert_eq!(run("$input.body.substring(4)", body).unwrap(), "b");
    assert_eq!(run("[$input.body.charAt(1)]", body).unwrap(), "[é]");
    // A cut through the pair leaves half of it, which Java writes as `?`.
    assert_eq!(run("$input.body.substring(0, 3)", body).unwrap(), "aé?");
    assert_eq!(run("[$input.body.charAt(3)]", body).unwrap(), "[?]");
}

#[test]
fn split_is_javas() {
    let size =
        |body: &str, sep: &str| run(&format!("$input.body.split('{sep}').size()"), body).unwrap();
    assert_eq!(size("a,b,,c", ","), "4");
    assert_eq!(size("a,b,,", ","), "2");
    assert_eq!(size(",a", ","), "2");
    assert_eq!(size(",,,", ","), "0");
    assert_eq!(size("abc", ""), "3");
    assert_eq!(size("abc", "x"), "1");
    assert_eq!(size("", ","), "1");
    // An empty match right after another match is a split point too (Java's `find`).
    assert_eq!(size("a,,b", ",*"), "3");
    assert_eq!(size("a1b22c", "\\d*"), "5");
    assert_eq!(
        run("#foreach($p in $input.body.split(''))[$p]#end", "abc").unwrap(),
        "[a][b][c]"
    );
    assert_eq!(
        run(
            "#foreach($p in $input.body.split('\\s*;\\s*'))[$p]#end",
            " x ; y;;"
        )
        .unwrap(),
        "[ x][y]"
    );
    // With a limit, as Java's `split(regex, limit)`.
    let parts = |s: &str, n: i32| {
        let t = format!("#set($s = '{s}')#foreach($p in $s.split(',', {n}))[$p]#end");
        run(&t, "").unwrap()
    };
    assert_eq!(parts("a,b,c", 2), "[a][b,c]");
    assert_eq!(parts("a,b,,", -1), "[a][b][][]");
    assert_eq!(parts("a,b,,", 0), "[a][b]");
    assert_eq!(parts("a,b", 1), "[a,b]");
    assert_eq!(parts("a,b,,", 9), "[a][b][][]");
}

/// The two-argument forms of Java's `indexOf` and `startsWith` (in UTF-16 code units), and
/// a call with more arguments than the method takes: no such method, a null reference.
#[test]
fn methods_take_javas_arguments_and_no_more() {
    let r = |t: &str| run(t, "").unwrap();
    assert_eq!(r("#set($s = 'abcabc')$s.indexOf('a', 1)"), "3");
    assert_eq!(r("#set($s = 'abcabc')$s.indexOf('a', -5)"), "0");
    assert_eq!(r("#set($s = 'abcabc')$s.indexOf('a', 99)"), "-1");
    assert_eq!(r("#set($s = 'abc')$s.indexOf('', 99)"), "3");
    assert_eq!(r("#set($s = '😀abca')$s.indexOf('a', 3)"), "5");
    // From inside a surrogate pair: on from the next character (Java searches code units).
    assert_eq!(r("#set($s = '😀abca')$s.indexOf('a', 1)"), "2");
    assert_eq!(r("#set($s = '😀abca')$s.indexOf('', 1)"), "1");
    assert_eq!(r("#set($s = '😀abca')$s.startsWith('', 1)"), "true");
    assert_eq!(r("#set($s = '😀abca')$s.startsWith('a', 1)"), "false");
    assert_eq!(r("#set($s = 'abcabc')$s.startsWith('b', 1)"), "true");
    assert_eq!(r("#set($s = 'abcabc')$s.startsWith('a', 1)"), "false");
    assert_eq!(r("#set($s = 'abc')$s.startsWith('', 3)"), "true");
    assert_eq!(r("#set($s = 'abc')$s.startsWith('', 4)"), "false");
    assert_eq!(
        r("#set($s = 'abc')$!s.contains('a', 'b')|$!s.length(1)|$!s.replace('a', 'b', 'c')|"),
        "|||"
    );
}

/// Regular expressions are Java's: `\d`, `\w`, `\s` are ASCII, and a search that would rescan
/// the rest of the string after each match stops at the time limit instead of holding the shard
/// for minutes.
#[test]
fn regular_expressions_are_javas_and_bounded() {
    let r = |t: &str, body: &str| run(t, body).unwrap();
    assert_eq!(r("$input.body.matches('\\d+')", "123"), "true");
    assert_eq!(r("$input.body.matches('\\d+')", "١٢٣"), "false");
    assert_eq!(
        r("$input.body.matches('[\\w.]+@[\\w.]+')", "a.b@c.d"),
        "true"
    );
    assert_eq!(
        r("$input.body.replaceAll('\\s', '_')", "a b\u{a0}c"),
        "a_b\u{a0}c"
    );
    let spaces = format!("{}x", " ".repeat(150_000));
    let e = run("$input.body.replaceAll('\\s+$|\\s', '_').length()", &spaces).unwrap_err();
    assert!(
        e.contains("regular expressions searched for more than"),
        "{e}"
    );
}

/// Integers as JSON has them, doubles as Velocity writes them (Java's `Double.toString`:
/// plain from 10^-3 up to 10^7, with a digit after the point; else `d.dddE±n`).
#[test]
fn numbers_are_written_as_velocity_writes_them() {
    let body = "[0, 7, -7, 18446744073709551615, -9223372036854775808, 0.1, 249.99, 1.5e300, -2.5e-7, 1e21, 100.0, -0.0, 0.001, 0.00012, 1234567.5, 12345678.5, 1e7, 1.7976931348623157e308, 1e16]";
    let out = run("#foreach($n in $input.path('$'))$n;#end", body).unwrap();
    assert_eq!(
        out,
        "0;7;-7;18446744073709551615;-9223372036854775808;0.1;249.99;1.5E300;-2.5E-7;1.0E21;100.0;-0.0;0.001;1.2E-4;1234567.5;1.23456785E7;1.0E7;1.7976931348623157E308;1.0E16;"
    );
    // Plain references from a variable and from $context go the borrowed way, the rest
    // through calls; both write the same.
    let out = run(
        "#set($p = $input.path('$'))$p.a.b $p.get('a').b $context.stage $!p.nope $p.nope",
        r#"{"a": {"b": 2.5}}"#,
    )
    .unwrap();
    assert_eq!(out, "2.5 2.5 prod  $p.nope");
}

/// Prefix operators nest no deeper than parentheses: a template of 10,000 `!` (or `-`, or
/// `not `) is refused when it is read, as 10,000 `(` are, instead of overflowing the stack.
#[test]
fn prefix_operators_nest_no_deeper_than_parentheses() {
    for op in ["!", "-", "not "] {
        let t = format!("#set($a = {}1)$a", op.repeat(10_000));
        let e = run(&t, "{}").unwrap_err();
        assert!(e.contains("nested too deeply"), "{op}: {e}");
    }
    let t = format!("#set($a = {}1)$a", "(".repeat(10_000));
    assert!(run(&t, "{}").unwrap_err().contains("nested too deeply"));
    assert_eq!(run("#set($a = !!true)$a", "{}").unwrap(), "true");
    assert_eq!(run("#set($a = - -3)$a", "{}").unwrap(), "3");
}

/// Runs `f` on a thread with a stack of `kib` KiB, less than a shard thread's (src/runtime.rs
/// leaves it at std's default, 2 MiB), so that what passes here has room to spare there.
fn on_small_stack(kib: usize, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(kib << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// A chain of operators is a list, not a tree as deep as the chain is long: evaluating and
/// dropping one of the longest allowed takes no more stack than a short one.
#[test]
fn long_operator_chains_run_in_little_stack() {
    on_small_stack(256, || {
        let t = format!("#set($a = 1{})$a", " + 1".repeat(MAX_OPERANDS - 1));
        assert_eq!(run(&t, "{}").unwrap(), MAX_OPERANDS.to_string());
        let t = format!("#set($a = 1{})$a", " + 1".repeat(5_000));
        assert_eq!(run(&t, "{}").unwrap(), "5001");
        let t = format!("#if(true{})yes#end", " && true".repeat(MAX_OPERANDS - 1));
        assert_eq!(run(&t, "{}").unwrap(), "yes");
        let t = format!("#if(false{})yes#end", " || false".repeat(MAX_OPERANDS - 1));
        assert_eq!(run(&t, "{}").unwrap(), "");
        // Chains of chains (each `*` chain an operand of the `+` one): parsed and dropped.
        let inner = format!("2{}", " * 1".repeat(50));
        let chain = format!("{inner}{}", format!(" - {inner} + {inner}").repeat(2_000));
        drop(Template::parse(&format!("#set($a = {chain})$a")).unwrap());
        // Left to right, as Velocity's tree: (8 - 4) - 2, (8 / 4) / 2.
        assert_eq!(run("#set($a = 8 - 4 - 2)$a", "{}").unwrap(), "2");
        assert_eq!(run("#set($a = 8 / 4 / 2)$a", "{}").unwrap(), "1");
        assert_eq!(run("#set($a = 1 + 2 * 3 - 4)$a", "{}").unwrap(), "3");
    });
}

/// A chain longer than [`MAX_OPERANDS`] is refused when the template is read.
#[test]
fn operator_chains_are_bounded_at_load() {
    for t in [
        format!("#set($a = 1{})$a", " + 1".repeat(MAX_OPERANDS)),
        format!("#if(true{})x#end", " && true".repeat(10_000)),
        format!("$a[1{}]", " * 1".repeat(MAX_OPERANDS)),
    ] {
        let e = Template::parse(&t).unwrap_err();
        assert!(e.contains("more than 10000 operands"), "{e}");
    }
}

/// The deepest expression allowed — every precedence level in each of the parentheses
/// [`MAX_DEPTH`] allows, the innermost a string with its own — runs in half a shard's stack
/// (a debug build's frames; a release build's are smaller). A string nests no deeper than its
/// expression may.
#[test]
fn the_deepest_expressions_run_in_half_a_shards_stack() {
    let levels = |n: usize| {
        format!(
            "{}1{}",
            "(1 || 1 && 1 == 1 < 1 + 1 * ".repeat(n),
            ")".repeat(n)
        )
    };
    let t = format!("#set($a = {})$a", levels(MAX_DEPTH - 2));
    let in_string = format!(
        "#set($a = {}\"#set($b = {})$b\"{})$a",
        "(1 + ".repeat(30),
        levels(MAX_DEPTH - 34),
        ")".repeat(30)
    );
    on_small_stack(1024, move || {
        assert_eq!(run(&t, "{}").unwrap(), "true");
        assert_eq!(
            run(&in_string, "{}").unwrap(),
            format!("{}true", "1".repeat(30))
        );
    });
    let t = format!(
        "#set($a = {}\"#set($b = {})$b\"{})$a",
        "(".repeat(40),
        "(".repeat(40),
        ")".repeat(40)
    );
    assert!(run(&t, "{}").unwrap_err().contains("nested too deeply"));
}

/// JSONPaths and regular expressions written in the template that could never run are
/// refused when it is read, naming the call and what is wrong; the same made at run time
/// fail the request that makes them.
#[test]
fn literal_paths_and_patterns_are_checked_at_load() {
    for (t, want) in [
        (
            "$input.path('$..x')",
            "$input.path('$..x'): JSONPath \"$..x\": recursive descent is not supported (a JSONPath here is $ then .name, ['name'], [n], [*] or .*) at byte 0",
        ),
        ("$input.path('$.a[?(@.b)]')", "[?(@.b)] is not supported"),
        ("$input.path('$.a[0:2]')", "[0:2] is not supported"),
        ("$input.path('$.a[')", "unclosed ["),
        ("x ${input.json('a.b')}", "$input.json('a.b'): JSONPath \"a.b\" does not start with $"),
        ("#set($v = $input.json(\"$..x\"))", "recursive descent"),
        ("#if($input.path('$.a').size() > 0 && $input.path('$.b[1:]'))#end", "[1:]"),
        (
            "#set($x='a')$x.matches('(')",
            ".matches('('): not a regular expression the gateway runs (error: unclosed group) at byte 12",
        ),
        ("$input.body.split('[')", ".split('['): not a regular expression"),
        ("\"$input.body.replaceAll('a{2,1}', '')\"", ".replaceAll('a{2,1}'): not a regular expression the gateway runs (error: invalid repetition count range"),
        // Methods $input and $util do not have.
        ("$input.nope()", "$input.nope(): not a method of $input (body, json, path, params)"),
        ("$util.nope('x')", "$util.nope(): not a method of $util (escapeJavaScript, urlEncode"),
    ] {
        let e = Template::parse(t).unwrap_err();
        assert!(e.contains(want), "{t}: {e}");
    }
    // What can run is read as before; what is made at run time is checked then.
    for t in [
        "$input.path('$')$input.path('$.a.b')$input.json('$[0].a')$input.path(\"$['a'][*]\")",
        "$input.path('$.a.*')$input.json()#set($s = 'a')$s.matches('a|b')$s.split(',')",
        "$util.escapeJavaScript('$..x')$input.params('$..x')$s.replace('(', '')",
    ] {
        Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    let e = run("#set($p = '$..x')$input.path($p)", "{}").unwrap_err();
    assert!(e.contains("recursive descent"), "{e}");
    let e = run("#set($p = '(')#set($s = 'a')$s.matches($p)", "{}").unwrap_err();
    assert!(e.contains("unclosed group"), "{e}");
}

/// Velocity 1.7's arithmetic: integers stay integers and are exact (past `u64` or below
/// `i64`, a double), `/` and `%` on two integers truncate, a double operand makes a double,
/// and a division by zero is null.
#[test]
fn arithmetic_keeps_integers_exact_and_doubles_doubles() {
    let eval = |e: &str, body: &str| run(&format!("#set($x = {e})$x"), body).unwrap();
    for (e, want) in [
        ("10000000000000001 + 1", "10000000000000002"),
        ("9223372036854775807 + 1", "9223372036854775808"),
        ("18446744073709551615 - 1", "18446744073709551614"),
        ("-9223372036854775807 - 1", "-9223372036854775808"),
        ("3037000500 * 3037000500", "9223372037000250000"),
        (
            "4294967296 * 4294967296 * 4294967296",
            "7.922816251426434E28",
        ),
        ("18446744073709551615 + 1", "1.8446744073709552E19"),
        ("7 / 2", "3"),
        ("-7 / 2", "-3"),
        ("7 % 3", "1"),
        ("-7 % 3", "-1"),
        ("10000000000000001 / 1", "10000000000000001"),
        ("1.5 * 2", "3.0"),
        ("3 - 1.0", "2.0"),
        ("7 / 2.0", "3.5"),
        ("7.5 % 2", "1.5"),
        ("10000000000000001 * 1.0", "1.0E16"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("- 5", "-5"),
        ("-(2.5)", "-2.5"),
        ("-(9223372036854775807 + 1)", "-9223372036854775808"),
        ("2 + 3 * 4", "14"),
    ] {
        assert_eq!(eval(e, "{}"), want, "{e}");
    }
    for e in ["1 / 0", "1 % 0", "1.5 / 0", "1 / 0.0", "1.0 % 0"] {
        assert_eq!(
            run(&format!("#set($x = {e})[$!x]"), "{}").unwrap(),
            "[]",
            "{e}"
        );
    }
    // Numbers from the payload keep theirs.
    let body = r#"{"id": 10000000000000001, "big": 18446744073709551615, "p": 1.5, "n": 2}"#;
    assert_eq!(eval("$input.path('$.id') + 1", body), "10000000000000002");
    assert_eq!(
        eval("$input.path('$.big') - 1", body),
        "18446744073709551614"
    );
    assert_eq!(eval("$input.path('$.p') * $input.path('$.n')", body), "3.0");
    assert_eq!(eval("$input.path('$.n') * $input.path('$.n')", body), "4");
    assert_eq!(eval("$util.parseJson('{\"a\": 3}').a / 2", "{}"), "1");
    // Strings that read as numbers, as before.
    assert_eq!(eval("'10000000000000001' * 1", "{}"), "10000000000000001");
    assert_eq!(eval("'5' + 1", "{}"), "51");
}

/// Comparisons of two integers are exact; with a double, as doubles.
#[test]
fn comparisons_of_integers_are_exact() {
    let test = |e: &str| run(&format!("#if({e})t#{{else}}f#end"), "{}").unwrap();
    for (e, want) in [
        ("10000000000000001 > 10000000000000000", "t"),
        ("10000000000000001 == 10000000000000000", "f"),
        ("10000000000000001 != 10000000000000000", "t"),
        ("18446744073709551615 > 18446744073709551614", "t"),
        ("-9223372036854775808 < -9223372036854775807", "t"),
        ("9223372036854775807 <= 9223372036854775806", "f"),
        ("1 == 1.0", "t"),
        ("2 > 1.5", "t"),
        ("'10' > 9", "t"),
        ("'b' > 'a'", "t"),
    ] {
        assert_eq!(test(e), want, "{e}");
    }
    let body = r#"{"a": 10000000000000001, "b": 10000000000000000}"#;
    let t = "#if($input.path('$.a') > $input.path('$.b'))t#{else}f#end";
    assert_eq!(run(t, body).unwrap(), "t");
    // Range bounds are integers too, exact past 2^53.
    let t = "#foreach($i in [10000000000000001..10000000000000003])$i,#end";
    assert_eq!(
        run(t, "{}").unwrap(),
        "10000000000000001,10000000000000002,10000000000000003,"
    );
}

/// `#set($context.responseOverride.status = ...)` and the other overrides: what they set,
/// each once, in the names Amazon API Gateway's templates use (`.name` or `['name']`).
#[test]
fn overrides_are_collected_once_each() {
    let env_body = r#"{"error": "out of range"}"#;
    let json: Value = serde_json::from_str(env_body).unwrap();
    let (params, context, stage) = (json!({}), json!({}), json!({}));
    let env = Env {
        body: env_body,
        json: Some(&json),
        not_json: None,
        params: &params,
        context: &context,
        stage_variables: &stage,
    };
    let t = Template::parse(
        "#set($r = $input.path('$'))$input.json('$')\n#if($r.toString().contains(\"error\"))\n#set($context.responseOverride.status = 400)\n#set($context.responseOverride.header['X-Why'] = \"$r.error\")\n#end",
    )
    .unwrap();
    assert!(t.overrides(OVERRIDES_RESPONSE));
    assert!(!t.overrides(OVERRIDES_REQUEST));
    let (out, o) = t.render_overriding(&env).unwrap();
    assert_eq!(out.trim(), r#"{"error":"out of range"}"#);
    assert_eq!(
        o.set,
        vec![
            (Override::Status, "400".to_string()),
            (
                Override::ResponseHeader("X-Why".into()),
                "out of range".to_string()
            )
        ]
    );
    let t = Template::parse(
        "#set($context.requestOverride.header.x-a = 'b')#set($context.requestOverride.querystring.q = 1)#set($context.requestOverride.path.p = 'x')",
    )
    .unwrap();
    assert!(t.overrides(OVERRIDES_REQUEST) && !t.overrides(OVERRIDES_RESPONSE));
    assert_eq!(t.overridden_paths().collect::<Vec<_>>(), ["p"]);
    assert_eq!(t.render_overriding(&env).unwrap().1.set.len(), 3);
    // Twice is an error (Amazon answers 5XX); so is a header name twice in two cases.
    let t = Template::parse(
        "#set($context.responseOverride.header.X-A = 1)#set($context.responseOverride.header['x-a'] = 2)",
    )
    .unwrap();
    let e = t.render(&env).unwrap_err();
    assert!(e.contains("overridden twice"), "{e}");
    // Only the overrides Amazon names can be set.
    for (src, want) in [
        (
            "#set($context.stage = 'x')",
            "only $context.requestOverride",
        ),
        ("#set($context.responseOverride.header.a b = 1)", "at byte"),
        (
            "#set($context.responseOverride.header[x] = 1)",
            "a quoted name",
        ),
    ] {
        let e = Template::parse(src).unwrap_err();
        assert!(e.contains(want), "{src}: {e}");
    }
}

/// Objects keep their members in the order the payload wrote them, as Amazon's templates do:
/// `$input.json('$')` passes a body on byte for byte in its order (a backend that checks a
/// signature over it, or reads it as a stream, sees what the client sent), and `keySet` lists
/// the members in it.
#[test]
fn objects_keep_the_payloads_order() {
    let body = r#"{"zeta":1,"alpha":{"y":2,"b":3},"mid":[1,2]}"#;
    assert_eq!(run("$input.json('$')", body).unwrap(), body);
    assert_eq!(
        run("#foreach($k in $input.path('$').keySet())$k,#end", body).unwrap(),
        "zeta,alpha,mid,"
    );
}
