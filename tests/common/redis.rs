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
