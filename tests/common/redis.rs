//! A real `redis-server` on a free port for the fleet tests (installed by `scripts/test.sh`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::gateway::{closed_port, eventually};

/// A redis-server on a free port; killed (by PID) on drop.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(closed_port())
    }

    /// On a given address (a Redis that comes back where it was).
    pub fn start_on(addr: SocketAddr) -> Redis {
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
        Redis { child, addr }
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
