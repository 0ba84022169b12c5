//! Request validation and mapping templates per request, each beside a naive baseline:
//! checking a 1 KiB JSON body against its model (the model compiled once, as a snapshot does)
//! beside the same checks written by hand over a parsed `serde_json::Value`; and the developer
//! guide's PetStore response template (parsed once) beside the same output built with
//! `format!` from the parsed JSON. Both sides parse the body, as the gateway must. Beside
//! them: the model over a parsed `serde_json::Value` (how validation read bodies before the
//! in-place document), and the template alone over JSON parsed once (a mock's answer).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use tollgate::internals::{compile_schema, JsonDoc, VtlEnv, VtlTemplate};

const PETS: &str = r#"[ { "id": 1, "type": "dog", "price": 249.99 }, { "id": 2, "type": "cat", "price": 124.99 }, { "id": 3, "type": "fish", "price": 0.99 } ]"#;
const PETSTORE: &str = "#set($inputRoot = $input.path('$'))\n[\n#foreach($elem in $inputRoot)\n  {\n    \"description\" : \"Item $elem.id is a $elem.type.\",\n    \"askingPrice\" : $elem.price\n  }#if($foreach.hasNext),#end\n\n#end\n]";

fn body_1k() -> String {
    let notes: Vec<String> = (0..14).map(|_| "n".repeat(60)).collect();
    json!({"name": "rex", "tag": "dog", "notes": notes}).to_string()
}

fn bench(c: &mut Criterion) {
    let body = body_1k();
    assert!((900..1200).contains(&body.len()), "{}", body.len());
    let schema = json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "tag": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 100}}}});
    let model = compile_schema(&schema).unwrap();
    let mut g = c.benchmark_group("validate_1k_body");
    g.bench_function("tollgate_model", |b| {
        b.iter(|| {
            let doc = JsonDoc::parse(black_box(body.as_bytes())).unwrap();
            model.is_valid(doc.root())
        })
    });
    let by_value = jsonschema::validator_for(&schema).unwrap();
    g.bench_function("model_over_serde_value", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(&body)).unwrap();
            by_value.is_valid(&v)
        })
    });
    g.bench_function("naive_hand_written", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(&body)).unwrap();
            let o = v.as_object().unwrap();
            o.get("name").is_some_and(Value::is_string)
                && o.get("tag").is_none_or(Value::is_string)
                && o.get("notes").is_none_or(|n| {
                    n.as_array().is_some_and(|a| {
                        a.iter()
                            .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 100))
                    })
                })
        })
    });
    g.finish();

    let tpl = VtlTemplate::parse(PETSTORE).unwrap();
    let (params, context, stage) = (
        json!({"path": {}, "querystring": {}, "header": {}}),
        json!({}),
        json!({}),
    );
    let mut g = c.benchmark_group("petstore_template");
    g.bench_function("tollgate_vtl", |b| {
        b.iter(|| {
            let json: Value = serde_json::from_str(black_box(PETS)).unwrap();
            let env = VtlEnv {
                body: PETS,
                json: Some(&json),
                not_json: None,
                params: &params,
                context: &context,
                stage_variables: &stage,
            };
            tpl.render(&env).unwrap().len()
        })
    });
    let parsed: Value = serde_json::from_str(PETS).unwrap();
    g.bench_function("tollgate_vtl_parsed_once", |b| {
        b.iter(|| {
            let env = VtlEnv {
                body: PETS,
                json: Some(black_box(&parsed)),
                not_json: None,
                params: &params,
                context: &context,
                stage_variables: &stage,
            };
            tpl.render(&env).unwrap().len()
        })
    });
    g.bench_function("naive_format", |b| {
        b.iter(|| {
            let json: Value = serde_json::from_str(black_box(PETS)).unwrap();
            let items: Vec<String> = json
                .as_array()
                .unwrap()
                .iter()
                .map(|e| format!("  {{\n    \"description\" : \"Item {} is a {}.\",\n    \"askingPrice\" : {}\n  }}", e["id"], e["type"].as_str().unwrap(), e["price"]))
                .collect();
            format!("[\n{}\n]", items.join(",\n")).len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
