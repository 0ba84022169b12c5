//! Running the gateway under test: in this process ([`Gw`], from TOML text in a [`TempDir`])
//! or as the `tollgate` binary ([`Proc`], read through its JSON logs); the admin token, the
//! socket timeout and the driver every test uses; and small waiting helpers ([`eventually`],
//! [`closed_port`]).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tollgate::{Config, Driver};
use tollgate::{Gateway, Options};

pub const TOKEN: &str = "test-admin-token";
/// Upper bound for any single socket wait in tests; a hang fails instead of blocking CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The driver under test: `TOLLGATE_TEST_DRIVER=epoll|io_uring_basic|io_uring|auto` (default
/// auto).
pub fn driver() -> Driver {
    match std::env::var("TOLLGATE_TEST_DRIVER").as_deref() {
        Ok("epoll") => Driver::Epoll,
        Ok("io_uring") => Driver::IoUring,
        Ok("io_uring_basic") => Driver::IoUringBasic,
        _ => Driver::Auto,
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A gateway running in this process.
pub struct Gw {
    pub gw: Option<Gateway>,
    pub dir: TempDir,
    pub path: PathBuf,
}

impl Gw {
    /// Starts a gateway from TOML text (`{{name}}` placeholders already filled in).
    pub fn start(toml: &str) -> Gw {
        Gw::start_in(TempDir::new(), toml)
    }

    /// Starts a gateway whose config (and state store, `data/`) live in `dir`.
    pub fn start_in(dir: TempDir, toml: &str) -> Gw {
        Gw::try_start_in(dir, toml).unwrap_or_else(|(_, e)| panic!("gateway did not start: {e}"))
    }

    pub fn try_start_in(dir: TempDir, toml: &str) -> Result<Gw, (TempDir, String)> {
        let path = dir.0.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cfg = Config::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
        cfg.server.driver = driver();
        match Gateway::start(
            cfg,
            Options {
                config_path: Some(path.clone()),
                workers: None,
                admin_token: Some(TOKEN.into()),
                take_over: false,
            },
        ) {
            Ok(gw) => Ok(Gw {
                gw: Some(gw),
                dir,
                path,
            }),
            Err(e) => Err((dir, e.to_string())),
        }
    }

    /// Stops the gateway and hands back its directory (to start another on the same state).
    pub fn stop(mut self) -> TempDir {
        self.shutdown();
        std::mem::replace(&mut self.dir, TempDir(std::path::PathBuf::new()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw
            .as_ref()
            .unwrap()
            .addr("http")
            .expect("listener \"http\"")
    }

    /// The address of the listener named `name`.
    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.gw
            .as_ref()
            .unwrap()
            .addr(name)
            .unwrap_or_else(|| panic!("listener {name:?}"))
    }

    pub fn admin(&self) -> SocketAddr {
        self.gw.as_ref().unwrap().admin_addr().expect("admin API")
    }

    /// Rewrites the config file (for reload tests).
    pub fn rewrite(&self, toml: &str) {
        std::fs::write(&self.path, toml).unwrap();
    }

    pub fn shutdown(&mut self) {
        if let Some(g) = self.gw.take() {
            g.shutdown();
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A running binary; killed on drop if still alive.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// What the process writes to standard output (access logs with `path = "stdout"`).
    out: mpsc::Receiver<String>,
}

impl Proc {
    pub fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Proc {
        Proc::start_with(config, env, &[])
    }

    /// [`Proc::start`] with more command-line arguments (`--take-over`).
    pub fn start_with(config: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_tollgate")),
            config,
            env,
            args,
        )
    }

    /// [`Proc::start`] under an open-file limit of `nofile` from its first instruction (run
    /// through util-linux's `prlimit`, which execs it: the pid is the gateway's).
    pub fn start_limited(config: &std::path::Path, env: &[(&str, &str)], nofile: u32) -> Proc {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_tollgate"));
        Proc::spawn(cmd, config, env, &[])
    }

    fn spawn(
        mut cmd: Command,
        config: &std::path::Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proc {
        cmd.args(["--config", config.to_str().unwrap(), "--log-format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("TOLLGATE_ADMIN_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (otx, orx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = otx.send(line);
            }
        });
        Proc {
            child,
            lines: rx,
            out: orx,
        }
    }

    /// The next line the process writes to standard output.
    pub fn stdout_line(&self) -> String {
        self.out
            .recv_timeout(IO_TIMEOUT)
            .expect("no line on standard output")
    }

    /// Every log line (its fields) up to and including the first whose message starts with
    /// `prefix`.
    pub fn lines_until(&self, prefix: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(IO_TIMEOUT)
                .unwrap_or_else(|_| panic!("no log line starting {prefix:?}"));
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            let done = v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix));
            out.push(v["fields"].clone());
            if done {
                return out;
            }
        }
    }

    /// The `addr` field of the log line whose message is `msg` ("listening", "admin API
    /// listening").
    pub fn logged_addr(&self, msg: &str) -> SocketAddr {
        self.wait_for(msg)["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits for a log line whose message is `msg`; returns its fields.
    pub fn wait_for(&self, msg: &str) -> serde_json::Value {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(IO_TIMEOUT)
                .unwrap_or_else(|_| panic!("no log line {msg:?}; before it:\n{}", seen.join("\n")));
            seen.push(line.clone());
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if v["fields"]["message"] == msg {
                return v["fields"].clone();
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tollgate --config FILE check` on `toml`: whether it passed, and what it printed (stdout,
/// then stderr).
pub fn check_config(toml: &str) -> (bool, String) {
    let dir = TempDir::new();
    let path = dir.0.join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A local port that refuses connections for the rest of the test process: a socket stays
/// bound to it without listening, so that no other test's listener (tests run side by side)
/// can take the port in the meantime.
pub fn closed_port() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    addr
}

/// A local port free at the time of the call, for something the test is about to start
/// listening on (bound, then released).
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A local port whose connects neither complete nor fail: a listener with a backlog of 0
/// whose one queued connection is never accepted, so the kernel drops further SYNs (for
/// connect timeouts). Keep the returned sockets alive while the port is in use.
pub fn unanswering_port() -> (SocketAddr, socket2::Socket, std::net::TcpStream) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    // Fills the accept queue.
    let queued = std::net::TcpStream::connect(addr).unwrap();
    (addr, l, queued)
}

/// Polls `f` until it holds, for at most `limit` (for state that changes asynchronously,
/// such as health checks; never used to wait for the gateway's own answers).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
