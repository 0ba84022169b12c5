//! A connection's usage plan across reloads: found again by name, wherever the reload put it
//! in the list, and dropped (the key's plan limits no longer apply) when the reload took the
//! plan or the stage from it — never another plan's limits, never a panic.

use super::*;

const KEY: &str = "ws-plan-key-0123456789abcdef";

/// `wsplan` (this API's stage, a generous quota) and `other` (another API's stage, one
/// request a second), in `order`; the key on `key_plan`.
fn conf(order: [&str; 2], key_plan: &str) -> String {
    let plan = |name: &str| {
        match name {
        "wsplan" => "[[usage_plans]]\nname = \"wsplan\"\nstages = [\"api/prod\"]\nquota = { limit = 1000, period = \"day\" }\n".to_string(),
        _ => "[[usage_plans]]\nname = \"other\"\nstages = [\"h/s1\"]\nthrottle = { rate = 1, burst = 1 }\n".to_string(),
    }
    };
    Cfg::new()
        .api_extra("kind = \"websocket\"")
        .routes(
            "[[apis.routes]]\nroute = \"$connect\"\napi_key_required = true\nintegration = { type = \"mock\", status = 200, body = '' }\n\
             [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n",
        )
        .extra(format!(
            "[[apis]]\nname = \"h\"\n\n  [[apis.stages]]\n  name = \"s1\"\n\n  [[apis.routes]]\n  route = \"GET /x\"\n  integration = {{ type = \"mock\", body = \"x\" }}\n\n\
             {}\n{}\n[[api_keys]]\nname = \"k\"\nvalue = \"{KEY}\"\nplan = \"{key_plan}\"\n",
            plan(order[0]),
            plan(order[1])
        ))
        .toml()
}

#[test]
fn a_reload_that_moves_or_removes_the_plan_keeps_the_connection_right() {
    let g = Gw::start(&conf(["wsplan", "other"], "wsplan"));
    let (mut ws, _) = open_with(&g, &[("x-api-key", KEY)]).expect("upgrade");
    let ping = |ws: &mut WebSocket<TcpStream>| {
        ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
        next_text(ws)
    };
    for _ in 0..3 {
        assert_eq!(ping(&mut ws), json!({"pong": true}));
    }
    // The plans swapped in the file: still wsplan's (no throttle), not other's (1 a second).
    g.rewrite(&conf(["other", "wsplan"], "wsplan"));
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..3 {
        assert_eq!(ping(&mut ws), json!({"pong": true}));
    }
    // wsplan gone, the key on other alone: no plan covers this stage any more.
    g.rewrite(&conf(["other", "other"], "other").replacen(
        "[[usage_plans]]\nname = \"other\"\nstages = [\"h/s1\"]\nthrottle = { rate = 1, burst = 1 }\n",
        "",
        1,
    ));
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..3 {
        assert_eq!(ping(&mut ws), json!({"pong": true}));
    }
}
