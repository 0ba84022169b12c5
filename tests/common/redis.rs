//! A real `redis-server` on a free port for the fleet tests (installed by `scripts/test.sh`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::gateway::{eventually, free_port, TempDir};

/// A redis-server on a free port; killed (by PID) on drop.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
    /// Its working directory: a replica writes the primary's data there (`dump.rdb`), and a
    /// server would load one found where it starts.
    _dir: TempDir,
    /// Serves TLS only ([`Redis::with_tls`]): `cli` can't talk to it.
    tls: bool,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// On a given address (a Redis that comes back where it was).
    pub fn start_on(addr: SocketAddr) -> Redis {
        Redis::spawn(addr, &[])
    }

    /// With a password (`requirepass`), on a free port.
    pub fn with_password(password: &str) -> Redis {
        Redis::spawn(free_port(), &["--requirepass", password])
    }

    /// TLS only (no plain port), on a free port: its certificate and key, and the CA that
    /// signs client certificates (which it asks for but does not require).
    pub fn with_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Redis {
        let addr = free_port();
        let port = addr.port().to_string();
        let (cert, key, ca) = (
            cert.display().to_string(),
            key.display().to_string(),
            ca.display().to_string(),
        );
        let mut r = Redis::spawn(
            addr,
            &[
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "optional",
            ],
        );
        r.tls = true;
        r
    }

    /// A replica of `primary`, on a free port.
    pub fn replica_of(primary: SocketAddr) -> Redis {
        let port = primary.port().to_string();
        Redis::spawn(free_port(), &["--replicaof", "127.0.0.1", &port])
    }

    /// A Sentinel, on a free port, monitoring `primary` as `master` (quorum 1; the primary
    /// is down after 500 ms without an answer). Its config file (a Sentinel rewrites it) is
    /// in `dir`.
    pub fn sentinel(primary: SocketAddr, master: &str, dir: &std::path::Path) -> Redis {
        let addr = free_port();
        let conf = dir.join(format!("sentinel-{}.conf", addr.port()));
        std::fs::write(
            &conf,
            format!(
                "port {}\nbind 127.0.0.1\nsentinel monitor {master} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {master} 500\n\
                 sentinel failover-timeout {master} 5000\n",
                addr.port(),
                primary.port()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs Sentinels too (--sentinel)");
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok()),
            "the Sentinel did not start"
        );
        Redis {
            child,
            addr,
            _dir: TempDir::new(),
            tls: false,
        }
    }

    fn spawn(addr: SocketAddr, extra: &[&str]) -> Redis {
        let dir = TempDir::new();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &addr.port().to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it with apt)");
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok()),
            "redis-server did not start"
        );
        Redis {
            child,
            addr,
            _dir: dir,
            tls: false,
        }
    }

    /// SIGSTOP / SIGCONT: a Redis that hangs rather than dies.
    pub fn pause(&self, on: bool) {
        let sig = if on { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        assert!(!self.tls, "redis-cli here speaks plain TCP");
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
