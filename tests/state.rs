//! The state store under faults: a damaged `tollgate.redb` (empty, truncated, a flipped byte,
//! a page of garbage) never panics the gateway, is never reset and never modified; start-up
//! stops with the reason, and `tollgate state check` / `state recover` are the way back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn conf() -> String {
    Cfg::new()
        .extra(
            r#"
[[usage_plans]]
name = "gold"
stages = ["api/prod"]
"#,
        )
        .toml()
}

fn state_file(dir: &TempDir) -> PathBuf {
    dir.0.join("data").join("tollgate.redb")
}

/// A gateway's state directory holding five keys created through the admin API.
fn seeded() -> TempDir {
    let gw = Gw::start(&conf());
    for i in 0..5 {
        let r = admin_with(
            gw.admin(),
            "POST",
            "/apikeys",
            &format!(r#"{{"name": "k{i}", "plan": "gold"}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    gw.stop()
}

fn keys_listed(gw: &Gw) -> usize {
    admin(gw.admin(), "GET", "/apikeys", Some(TOKEN)).json()["items"]
        .as_array()
        .unwrap()
        .len()
}

/// Deterministic bytes that are not a redb page.
fn garbage(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn tollgate(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn damaged_state_files_stop_start_up_and_are_left_untouched() {
    type Damage = fn(&[u8]) -> Vec<u8>;
    let kinds: [(&str, Damage); 3] = [
        ("empty", |_| Vec::new()),
        ("truncated to half", |b| b[..b.len() / 2].to_vec()),
        ("header page garbage", |b| {
            let mut v = b.to_vec();
            v[..4096].copy_from_slice(&garbage(4096));
            v
        }),
    ];
    for (what, damage) in kinds {
        let dir = seeded();
        let path = state_file(&dir);
        let damaged = damage(&std::fs::read(&path).unwrap());
        std::fs::write(&path, &damaged).unwrap();
        let (dir, err) = match Gw::try_start_in(dir, &conf()) {
            Ok(gw) => panic!(
                "{what}: a damaged state file was served from ({} keys)",
                keys_listed(&gw)
            ),
            Err(e) => e,
        };
        assert!(err.contains("tollgate.redb"), "{what}: {err}");
        assert!(err.contains("tollgate state recover"), "{what}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "{what}: the file was modified"
        );
        // `tollgate state check` says the same, and leaves the file alone too.
        let (ok, text) = tollgate(&dir.0.join("config.toml"), &["state", "check"]);
        assert!(!ok, "{what}: {text}");
        assert!(text.contains("left untouched"), "{what}: {text}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "{what}");
    }
}

/// A flipped byte or a page of garbage anywhere either stops start-up (file untouched) or
/// is harmless (it hit space the store does not use: every key is still there): never a
/// panic, never a silent loss.
#[test]
fn flipped_bytes_and_garbage_pages_are_refused_or_harmless() {
    let dir = seeded();
    let path = state_file(&dir);
    let good = std::fs::read(&path).unwrap();
    let mut dir = dir;
    let (mut refused, mut harmless) = (0, 0);
    for i in 0..32 {
        let at = (good.len() / 16) * (i % 16) + 7;
        let mut bad = good.clone();
        if i < 16 {
            bad[at] ^= 0x5a;
        } else {
            let page = (at / 4096) * 4096;
            let end = (page + 4096).min(bad.len());
            bad[page..end].copy_from_slice(&garbage(end - page));
        }
        std::fs::write(&path, &bad).unwrap();
        dir = match Gw::try_start_in(dir, &conf()) {
            Ok(gw) => {
                assert_eq!(keys_listed(&gw), 5, "byte {at}: keys lost silently");
                harmless += 1;
                gw.stop()
            }
            Err((dir, e)) => {
                assert!(e.contains("tollgate.redb"), "byte {at}: {e}");
                assert_eq!(std::fs::read(&path).unwrap(), bad, "byte {at}: modified");
                refused += 1;
                dir
            }
        };
    }
    assert_eq!(refused + harmless, 32);
    assert!(refused > 0, "no damage was noticed at all");
    std::fs::write(&path, &good).unwrap();
    let gw = Gw::start_in(dir, &conf());
    assert_eq!(keys_listed(&gw), 5);
}

/// A record whose bytes changed on disk but still read (a letter of a key's description, so
/// the JSON stays valid) is damage all the same: redb's checksums say so, and start-up and
/// `state check` refuse the file, untouched, rather than serve what it now says.
#[test]
fn a_record_changed_on_disk_that_still_reads_is_refused() {
    let dir = seeded();
    let gw = Gw::start_in(dir, &conf());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        r#"{"name": "marked", "description": "marker-zzzzqqqq", "plan": "gold"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = gw.stop();
    let path = state_file(&dir);
    let mut bad = std::fs::read(&path).unwrap();
    let at = bad
        .windows(15)
        .position(|w| w == b"marker-zzzzqqqq")
        .expect("the description is in the file");
    bad[at + 14] = b'r';
    std::fs::write(&path, &bad).unwrap();
    let (ok, text) = tollgate(&dir.0.join("config.toml"), &["state", "check"]);
    assert!(!ok && text.contains("is damaged"), "{text}");
    let (_dir, err) = match Gw::try_start_in(dir, &conf()) {
        Ok(gw) => panic!(
            "served a changed record: {}",
            admin(gw.admin(), "GET", "/apikeys", Some(TOKEN)).text()
        ),
        Err(e) => e,
    };
    assert!(err.contains("tollgate state recover"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bad, "the file was modified");
}

/// A second gateway on a state directory another one has open is refused for that reason,
/// without the damaged-file advice (the file is sound; recovering it would be wrong).
#[test]
fn a_state_file_in_use_is_refused_as_in_use_not_damaged() {
    let first = Gw::start(&conf());
    let data = first.dir.0.join("data");
    let second = Cfg::new()
        .server(format!("state_dir = {:?}", data.display().to_string()))
        .extra("[[usage_plans]]\nname = \"gold\"\nstages = [\"api/prod\"]\n")
        .toml();
    let err = match Gw::try_start_in(TempDir::new(), &second) {
        Ok(_) => panic!("two gateways share one state file"),
        Err((_, e)) => e,
    };
    assert!(err.contains("is in use by another process"), "{err}");
    assert!(!err.contains("state recover"), "{err}");
    drop(first);
}

/// `tollgate check` says which run-time objects the checked file would not serve as stored
/// (a start or a reload serves without them): here an API the file now declares itself.
#[test]
fn check_warns_of_run_time_apis_the_file_would_not_serve() {
    let gw = Gw::start(&conf());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apis",
        r#"{"name": "shop", "routes": [{"route": "GET /items", "integration": {"type": "mock", "body": "items"}}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = gw.stop();
    let config = dir.0.join("config.toml");
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(ok && !text.contains("would not be served"), "{text}");
    let clash = conf().replace(
        "[[usage_plans]]",
        "[[apis]]\nname = \"shop\"\n\n[[apis.stages]]\nname = \"prod\"\n\n[[usage_plans]]",
    );
    std::fs::write(&config, clash).unwrap();
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: a run-time object would not be served as stored: apis[\"shop\"]: the configuration file declares an API of this name"),
        "{text}"
    );
}

/// A state file that is a link to a file not there (a disk not mounted) is no first start:
/// refused, rather than a new empty store made through the link.
#[test]
fn a_dangling_link_for_the_state_file_is_refused() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::create_dir_all(dir.0.join("mnt")).unwrap();
    let target = dir.0.join("mnt").join("tollgate.redb");
    std::os::unix::fs::symlink(&target, state_file(&dir)).unwrap();
    let err = match Gw::try_start_in(dir, &conf()) {
        Ok(_) => panic!("started with an empty store made through a dangling link"),
        Err((_, e)) => e,
    };
    assert!(
        err.contains("is a symbolic link to a file that does not exist"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn state_check_and_recover() {
    let dir = seeded();
    // A run-time API with a deployment and a stage, kept in the same file.
    let gw = Gw::start_in(dir, &conf());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apis",
        r#"{"name": "shop", "routes": [{"route": "GET /items", "integration": {"type": "mock", "body": "items"}}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apis/shop/deployments",
        r#"{"stage": "prod"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = gw.stop();
    let config = dir.0.join("config.toml");
    std::fs::write(&config, conf()).unwrap();
    let (ok, text) = tollgate(&config, &["state", "check"]);
    assert!(ok, "{text}");
    assert!(text.contains("5 API keys"), "{text}");
    assert!(text.contains("3 run-time objects"), "{text}");
    let path = state_file(&dir);
    let good = std::fs::read(&path).unwrap();
    let out = dir.0.join("recovered.redb");
    // One key's record damaged in place (a control character inside its JSON): the check
    // refuses the file, and recover writes the other four into a new one.
    let at = good
        .windows(11)
        .position(|w| w == br#""name":"k2""#)
        .expect("the key's record is in the file");
    let mut bad = good.clone();
    bad[at + 9] = 0x01;
    std::fs::write(&path, &bad).unwrap();
    let (ok, text) = tollgate(&config, &["state", "check"]);
    assert!(!ok && text.contains("damaged"), "{text}");
    let (ok, text) = tollgate(
        &config,
        &["state", "recover", "--out", out.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("4 API keys"), "{text}");
    assert!(text.contains("3 run-time objects"), "{text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bad,
        "recover touched the damaged file"
    );
    // A byte that is not UTF-8 in another key's record (redb panics reading it as text):
    // that record alone is left out.
    let at3 = good
        .windows(11)
        .position(|w| w == br#""name":"k3""#)
        .expect("the key's record is in the file");
    let mut bad3 = good.clone();
    bad3[at3 + 9] = 0xff;
    std::fs::write(&path, &bad3).unwrap();
    let out3 = dir.0.join("recovered-3.redb");
    let (ok, text) = tollgate(
        &config,
        &["state", "recover", "--out", out3.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("4 API keys"), "{text}");
    std::fs::write(&path, &bad).unwrap();
    // recover never overwrites.
    let (ok, text) = tollgate(
        &config,
        &["state", "recover", "--out", out.to_str().unwrap()],
    );
    assert!(!ok && text.contains("exists"), "{text}");
    std::fs::rename(&out, &path).unwrap();
    let gw = Gw::start_in(dir, &conf());
    assert_eq!(keys_listed(&gw), 4);
    // The run-time API came through with its deployment and stage.
    let r = admin(gw.admin(), "GET", "/apis/shop/stages/prod", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let dir = gw.stop();
    // Cut short: refused as damaged, in words, without a panic's report on the way.
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let (ok, text) = tollgate(&config, &["state", "check"]);
    assert!(!ok && text.contains("damaged"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    std::fs::write(&path, &whole).unwrap();
    // A page of garbage in the header: beyond repair; recover says so and writes nothing.
    let mut bad = std::fs::read(&path).unwrap();
    bad[..4096].copy_from_slice(&garbage(4096));
    std::fs::write(&path, &bad).unwrap();
    let (ok, text) = tollgate(
        &config,
        &["state", "recover", "--out", out.to_str().unwrap()],
    );
    assert!(!ok, "{text}");
    assert!(!out.exists());
    assert_eq!(std::fs::read(&path).unwrap(), bad);
    drop(dir);
}

fn prlimit_fsize(pid: u32, limit: &str) {
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}")])
        .status()
        .expect("prlimit (util-linux)")
        .success();
    assert!(ok, "prlimit --fsize={limit}");
}

/// A write that fails for real (the state file may not grow: RLIMIT_FSIZE lowered on the
/// running gateway with prlimit) answers 500 while the fault lasts; once it clears, the store
/// is reopened within a flush interval, usage counted meanwhile is saved, and a restart finds
/// everything.
#[test]
fn a_failed_write_does_not_break_the_store_for_good() {
    const KEY: &str = "acme-0123456789abcdef0123";
    let toml = Cfg::new()
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"k\" }",
        )
        .extra(format!(
            r#"
[[usage_plans]]
name = "gold"
stages = ["api/prod"]
quota = {{ limit = 1000, period = "day" }}

[[api_keys]]
name = "acme"
value = "{KEY}"
plan = "gold"
"#
        ))
        .toml();
    let dir = TempDir::new();
    let config = dir.0.join("config.toml");
    std::fs::write(&config, &toml).unwrap();
    let env = [("TG_TEST_TOKEN", "t0ken")];
    let start = |p: &Proc| -> (std::net::SocketAddr, std::net::SocketAddr) {
        let addr = p.logged_addr("listening");
        let adm = p.logged_addr("admin API listening");
        (addr, adm)
    };
    let mut p = Proc::start(&config, &env);
    let (addr, adm) = start(&p);
    let post = |body: &str, path: &str| {
        Client::connect(adm).request(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    assert_eq!(
        post(r#"{"name": "before", "plan": "gold"}"#, "/apikeys").status,
        201
    );
    let file = dir.0.join("data").join("tollgate.redb");
    let size = std::fs::metadata(&file).unwrap().len();
    prlimit_fsize(p.child.id(), &format!("{size}:unlimited"));
    // Keys until the file must grow: that write fails.
    let mut failed = None;
    for b in 0..40 {
        let mut csv = String::from("Name,Key,UsagePlanIds\n");
        for i in 0..3000 {
            csv.push_str(&format!("b{b}k{i},bulk-key-{b:04}-{i:016},gold\n"));
        }
        let r = post(&csv, "/apikeys/import");
        if r.status != 200 {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("the state file never had to grow");
    assert_eq!(r.status, 500, "{}", r.text());
    // A write the file must grow for fails again while the fault lasts (the store is
    // reopened meanwhile: one that fits may pass).
    let mut csv = String::from("Name,Key,UsagePlanIds\n");
    for i in 0..3000 {
        csv.push_str(&format!("during{i},bulk-key-during-{i:016},gold\n"));
    }
    let r = post(&csv, "/apikeys/import");
    assert_eq!(r.status, 500);
    // In the gateway's words, not the store library's ("Previous I/O error occurred").
    assert!(!r.text().contains("Previous I/O error"), "{}", r.text());
    // Requests are still served and counted (in memory while the store cannot take them).
    let mut c = Client::connect(addr);
    for _ in 0..7 {
        let r = c.request(
            format!("GET /keyed HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    prlimit_fsize(p.child.id(), "unlimited");
    // Within a few flush intervals the store is reopened and takes writes again.
    assert!(
        eventually(std::time::Duration::from_secs(10), || post(
            r#"{"name": "after", "plan": "gold"}"#,
            "/apikeys"
        )
        .status
            == 201),
        "writes never worked again"
    );
    // The fault's start and end are each said (not a pair of lines every second while it
    // lasts: a full disk filled the log that shares it).
    let said = p.lines_until("state store writes work again");
    let failed = said
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("a state store write failed"))
        })
        .count();
    assert!(failed >= 1, "{said:?}");
    assert!(
        !said.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("state store reopened"))),
        "{said:?}"
    );
    let m = Client::connect(adm)
        .request(b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\n\r\n")
        .text();
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_state_store_reopens_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    p.signal("TERM");
    assert!(p.child.wait().unwrap().success());
    // A restart finds the keys written before and after the fault, and the usage.
    let p = Proc::start(&config, &env);
    let (_, adm) = start(&p);
    let keys = Client::connect(adm)
        .request(b"GET /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\n\r\n")
        .json();
    let names: Vec<&str> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&"before") && names.contains(&"after"),
        "{names:?}"
    );
    let today = tollgate::day_string(tollgate::today());
    let u = Client::connect(adm)
        .request(
            format!("GET /usageplans/gold/usage?startDate={today}&endDate={today} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\n\r\n")
                .as_bytes(),
        )
        .json();
    assert_eq!(u["items"]["acme"][0]["used"], 7, "{u}");
}

/// `state check` and `state recover` count the same records (quota counters and daily
/// usage); a check whose copy cannot be written (the file-size limit, as a full disk) leaves
/// no partial copy behind, which would hold the room it took.
#[test]
fn recover_counts_what_check_counts_and_a_failed_copy_leaves_nothing() {
    const KEY: &str = "acme-0123456789abcdef0123";
    let toml = Cfg::new()
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"k\" }",
        )
        .extra(format!(
            "[[usage_plans]]\nname = \"gold\"\nstages = [\"api/prod\"]\nquota = {{ limit = 100, period = \"day\" }}\n\n[[api_keys]]\nname = \"acme\"\nvalue = \"{KEY}\"\nplan = \"gold\"\n"
        ))
        .toml();
    let gw = Gw::start(&toml);
    for _ in 0..2 {
        let r = Client::connect(gw.addr()).request(
            format!(
                "GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    let dir = gw.stop();
    let config = dir.0.join("config.toml");
    let (ok, text) = tollgate(&config, &["state", "check"]);
    assert!(ok && text.contains("2 usage records"), "{text}");
    let out = dir.0.join("recovered.redb");
    let (ok, text) = tollgate(
        &config,
        &["state", "recover", "--out", out.to_str().unwrap()],
    );
    assert!(ok && text.contains("2 usage records"), "{text}");
    // The copy the check works on may not grow past 4 KiB: it fails part way.
    let out = Command::new("prlimit")
        .arg("--fsize=4096")
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--config", config.to_str().unwrap(), "state", "check"])
        .output()
        .expect("prlimit (util-linux)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("cannot copy to check it"),
        "{text}"
    );
    let left: Vec<String> = std::fs::read_dir(dir.0.join("data"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("check-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `tollgate check` refuses what start-up would refuse: a config key with the value of a key
/// made through the admin API (read from the state store, on a copy).
#[test]
fn check_sees_a_file_key_that_clashes_with_a_stored_one() {
    const RUNTIME: &str = "runtime-key-0123456789abcdef";
    let gw = Gw::start(&conf());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        &format!(r#"{{"name": "rt", "value": "{RUNTIME}", "plan": "gold"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = gw.stop();
    let config = dir.0.join("config.toml");
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(ok, "{text}");
    std::fs::write(
        &config,
        format!(
            "{}\n[[api_keys]]\nname = \"clash\"\nvalue = \"{RUNTIME}\"\nplan = \"gold\"\n",
            conf()
        ),
    )
    .unwrap();
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("api_keys[\"clash\"].value") && text.contains("admin API"),
        "{text}"
    );
}

/// A start's check copy left by a process killed during it (`tollgate.check-PID`, as big as
/// the state file) is removed at the next start; one of a process still running is not.
#[test]
fn check_copies_of_dead_processes_are_removed_at_start() {
    let dir = seeded();
    let data = dir.0.join("data");
    let dead = data.join("tollgate.check-99999999");
    // PID 1 runs as long as the machine does.
    let alive = data.join("tollgate.check-1");
    std::fs::write(&dead, b"left by a killed start").unwrap();
    std::fs::write(&alive, b"another process's check").unwrap();
    let gw = Gw::start_in(dir, &conf());
    assert_eq!(keys_listed(&gw), 5);
    assert!(!dead.exists());
    assert!(alive.exists());
}

/// `check` refuses what start-up refuses of the stored keys' plans too: a key made through
/// the admin API on two plans that the file now makes cover one stage (check said OK, and
/// the start failed with advice to use the admin API, which was not running).
#[test]
fn check_sees_a_stored_keys_plans_that_now_cover_one_stage() {
    let plans = |silver: &str| {
        Cfg::new()
            .stage("dev", "")
            .extra(format!(
                "[[usage_plans]]\nname = \"gold\"\nstages = [\"api/prod\"]\n\n[[usage_plans]]\nname = \"silver\"\nstages = {silver}\n"
            ))
            .toml()
    };
    let gw = Gw::start(&plans("[\"api/dev\"]"));
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        r#"{"name": "both", "plans": ["gold", "silver"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let dir = gw.stop();
    let config = dir.0.join("config.toml");
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(ok, "{text}");
    std::fs::write(&config, plans("[\"api/dev\", \"api/prod\"]")).unwrap();
    let (ok, text) = tollgate(&config, &["check"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("API key \"{id}\"")) && text.contains("usage_plans"),
        "{text}"
    );
}
