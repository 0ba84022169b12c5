//! The live status page on the admin listener renders in a real browser (headless
//! Chromium) and shows the figures a test generated; without the token it shows none.

mod common;

use std::process::Command;

use common::*;

/// The page's DOM after its scripts ran (Chromium's virtual time lets the first fetch land).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium (scripts/test.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_live_figures_in_a_browser() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .workers(2)
            .upstream(format!(
                "[[upstreams]]\nname = \"pets\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .route(
                "GET /pets/{id}",
                "integration = { type = \"http\", uri = \"http://pets/pets/{id}\" }",
            )
            .toml(),
    );
    for _ in 0..7 {
        assert_eq!(get(g.addr(), "/m").status, 200);
    }
    for i in 0..3 {
        assert_eq!(get(g.addr(), &format!("/pets/{i}")).status, 200);
    }
    // The figures the page reads are published by the shards every 100 ms.
    assert!(eventually(IO_TIMEOUT, || {
        let s = admin(g.admin(), "GET", "/status.json", Some(TOKEN)).json();
        s["routed_requests"] == 10
    }));
    let page = admin(g.admin(), "GET", "/status", None);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(!page.text().contains("src=\"http"), "no external assets");

    let url = format!("http://{}/status#token={TOKEN}", g.admin());
    // TOLLGATE_STATUS_SCREENSHOT=path.png keeps a picture of the page (for docs and notes).
    if let Ok(shot) = std::env::var("TOLLGATE_STATUS_SCREENSHOT") {
        let _ = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,640",
                "--virtual-time-budget=3000",
                &format!("--screenshot={shot}"),
                &url,
            ])
            .output();
    }
    let dom = rendered(&url);
    assert!(dom.contains("data-loaded=\"1\""), "{dom}");
    let row = |key: &str| -> String {
        let at = dom
            .find(&format!("data-route=\"{key}\""))
            .unwrap_or_else(|| panic!("no row {key}: {dom}"));
        dom[at..at + dom[at..].find("</tr>").unwrap()].to_string()
    };
    let m = row("api/prod/GET /m");
    assert!(m.contains("<td class=\"requests\">7</td>"), "{m}");
    assert!(m.contains("<td class=\"e5\">0.0</td>"), "{m}");
    let pets = row("api/prod/GET /pets/{id}");
    assert!(pets.contains("<td class=\"requests\">3</td>"), "{pets}");
    // Latency quantiles are numbers in milliseconds.
    let p99 = pets
        .split("<td class=\"p99\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap();
    assert!(p99.parse::<f64>().is_ok_and(|v| v > 0.0), "{pets}");
    let target = format!("data-target=\"pets/{}\"", up.addr);
    assert!(dom.contains(&target), "{dom}");
    assert!(dom.contains("healthy"), "{dom}");
    assert!(dom.contains(">10<"), "the routed total: {dom}");

    // A token read as written (`+` is no space) that the gateway refuses: the form again.
    let dom = rendered(&format!("http://{}/status#token=a+b/c==", g.admin()));
    assert!(dom.contains("The admin token was refused."), "{dom}");
    assert!(!dom.contains("id=\"login\" hidden"), "{dom}");
    // Without the token: the form, no figures.
    let dom = rendered(&format!("http://{}/status", g.admin()));
    assert!(!dom.contains("data-route="), "{dom}");
    assert!(!dom.contains("id=\"login\" hidden"), "{dom}");
    assert_eq!(admin(g.admin(), "GET", "/status.json", None).status, 401);
}
