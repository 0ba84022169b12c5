//! `[server]`, `[admin]`, `[limits]` and `[http2]`: the process, its admin API and the limits
//! every request and connection is held to.

use super::*;

/// io_uring setup flags (`server.uring_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UringFlags {
    /// IORING_SETUP_COOP_TASKRUN (+ TASKRUN_FLAG): completions run when the shard next
    /// enters the kernel instead of interrupting it (kernel 5.19+).
    pub coop_taskrun: bool,
    /// IORING_SETUP_SINGLE_ISSUER: only the shard's own thread submits (6.0+).
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN: completion work deferred until the shard waits (6.1+;
    /// needs single_issuer).
    pub defer_taskrun: bool,
}

impl UringFlags {
    /// The default: COOP_TASKRUN + SINGLE_ISSUER. On the development VM (kernel 6.18) they
    /// took a proxied small GET from ~20 to ~13.5 µs of CPU (scripts/quick-bench.sh).
    pub const DEFAULT: UringFlags = UringFlags {
        coop_taskrun: true,
        single_issuer: true,
        defer_taskrun: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// `io_uring` on Linux 6.0 or later, else `io_uring_basic` where the kernel allows
    /// io_uring, else `epoll` (with a log line saying which).
    Auto,
    /// Tollgate's own io_uring runtime (multishot accept and receive, provided buffers):
    /// Linux 6.0 or later.
    IoUring,
    /// io_uring with one operation per read and write (monoio's driver).
    IoUringBasic,
    Epoll,
}

impl std::fmt::Display for Driver {
    /// The config's own spelling (`auto`, `io_uring`, `io_uring_basic`, `epoll`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::IoUringBasic => "io_uring_basic",
            Driver::Epoll => "epoll",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Shards; 0 = one per online CPU.
    pub workers: usize,
    pub pin: bool,
    pub cpus: Vec<usize>,
    /// Peers whose `X-Forwarded-For` names the client (for resource policies).
    pub trusted_proxies: Vec<crate::syntax::cidr::Cidr>,
    pub state_dir: PathBuf,
    pub driver: Driver,
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Repeated failures (same kind, same target) are logged once, then counted and
    /// summarised once per this interval.
    #[serde(serialize_with = "ser_duration")]
    pub log_summary_interval: Duration,
    pub uring_entries: u32,
    pub uring_flags: UringFlags,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token_env: String,
    /// Where the access logs of stages made through the admin API may be written: their
    /// paths are relative and stay inside it (relative to the config file's folder; default
    /// that folder). An admin token must not be a way to append to any file the process can.
    pub access_log_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_body: u64,
    /// What a shard may hold for request bodies read whole (validation, mapping, templates),
    /// counted as [`BODY_MEMORY_FACTOR`] bytes per body byte; past it a request answers 503.
    pub body_memory: u64,
    #[serde(serialize_with = "ser_duration")]
    pub integration_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Longest wait for the next bytes of a request body (408 after it); nginx's
    /// `client_body_timeout`.
    #[serde(serialize_with = "ser_duration")]
    pub body_timeout: Duration,
    /// Longest one write to a client may wait for it to read (the connection is closed
    /// after it); nginx's `send_timeout`.
    #[serde(serialize_with = "ser_duration")]
    pub send_timeout: Duration,
    /// Slowest average a request body may arrive at, in bytes per second (0: no minimum):
    /// a body may take `body_timeout` plus one second per `body_min_rate` bytes received
    /// (Apache's `RequestReadTimeout` `MinRate`).
    pub body_min_rate: u64,
    /// An upgraded (WebSocket) connection with no bytes either way for this long is closed
    /// (Amazon API Gateway's WebSocket idle limit, 10 min; nginx's `proxy_read_timeout`).
    #[serde(serialize_with = "ser_duration")]
    pub upgrade_idle_timeout: Duration,
    /// WebSocket APIs: the largest frame and message a client may send (Amazon's 32 KB and
    /// 128 KB; 1009 past them), and how long a connection may last (2 h; then 1001).
    pub websocket_frame: u64,
    pub websocket_message: u64,
    #[serde(serialize_with = "ser_duration")]
    pub websocket_lifetime: Duration,
    /// WebSocket APIs: messages a second one connection may send (a token bucket per
    /// connection; none by default, as Amazon's). Past it a message is answered "Too Many
    /// Requests" without reaching a route, and not logged.
    pub websocket_message_rate: Option<super::Rate>,
    /// Request header names with `_` (`X_Forwarded_For`): origins that fold `_` into `-`
    /// could be fooled by them.
    pub underscores_in_headers: Underscores,
    /// A body of known length up to this size is read whole before the upstream is asked
    /// (nginx's `proxy_request_buffering` up to `client_body_buffer_size`): a slow upload then
    /// holds no upstream connection, and the request can be retried. 0 streams every body.
    pub request_buffering: u64,
}

/// What happens to request header names with an underscore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Underscores {
    /// Not forwarded (nginx's default, `underscores_in_headers off`).
    Drop,
    /// Forwarded as sent.
    Allow,
    /// The request is refused with 400.
    Reject,
}

/// `[http2]`: HTTP/2 settings and flood limits, for every listener that speaks it.
#[derive(Debug, Clone, Serialize)]
pub struct Http2 {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Initial flow-control window of each stream, and of the whole connection.
    pub stream_window: u32,
    pub connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE the gateway accepts.
    pub max_frame_size: u32,
    /// PING, SETTINGS, PRIORITY and empty DATA frames: a token bucket per connection; a
    /// client past it gets GOAWAY ENHANCE_YOUR_CALM.
    pub control_frames_per_second: u32,
    pub control_frames_burst: u32,
    /// RST_STREAM frames from the client (rapid reset, CVE-2023-44487): likewise.
    pub resets_per_second: u32,
    pub resets_burst: u32,
    /// CONTINUATION frames in one header block (CONTINUATION floods).
    pub max_continuation_frames: u32,
    /// WINDOW_UPDATE frames a client may send per DATA frame the gateway sent it (beyond a
    /// first hundred); past it, GOAWAY ENHANCE_YOUR_CALM.
    pub window_updates_per_data_frame: u32,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: 128,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_frame_size: 16 << 10,
            control_frames_per_second: 100,
            control_frames_burst: 1000,
            resets_per_second: 100,
            resets_burst: 400,
            max_continuation_frames: 16,
            window_updates_per_data_frame: 10,
        }
    }
}

impl Validator {
    pub(super) fn server(&mut self, s: file::ServerFile, base: &Path) -> Server {
        let trusted_proxies = s
            .trusted_proxies
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| match crate::syntax::cidr::Cidr::parse(&c) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.err(&format!("server.trusted_proxies[{i}]"), e);
                    None
                }
            })
            .collect();
        let workers = self.int_in("server.workers", s.workers, 0, 0, 1024) as usize;
        let cpus: Vec<usize> = s
            .cpus
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                if (0..4096).contains(&c) {
                    Some(c as usize)
                } else {
                    self.bad(
                        &format!("server.cpus[{i}]"),
                        c,
                        "a CPU number from 0 to 4095",
                    );
                    None
                }
            })
            .collect();
        let pin = s.pin.unwrap_or(false);
        if pin && !cpus.is_empty() && workers > cpus.len() {
            self.err("server.cpus", format!("lists {} CPUs but server.workers = {workers}; list at least one CPU per worker", cpus.len()));
        }
        let driver = match s.driver.as_deref() {
            None | Some("auto") => Driver::Auto,
            Some("io_uring") => Driver::IoUring,
            Some("io_uring_basic") => Driver::IoUringBasic,
            Some("epoll") => Driver::Epoll,
            Some(other) => {
                self.bad(
                    "server.driver",
                    other,
                    "\"auto\", \"io_uring\", \"io_uring_basic\" or \"epoll\"",
                );
                Driver::Auto
            }
        };
        let state_dir = match s.state_dir {
            Some(d) if d.is_empty() => {
                self.bad("server.state_dir", d, "a folder (made if missing)");
                base.join("data")
            }
            d => base.join(d.unwrap_or_else(|| "data".into())),
        };
        if state_dir.exists() && !state_dir.is_dir() {
            self.err(
                "server.state_dir",
                format!("{} is not a folder", state_dir.display()),
            );
        }
        let mut uring_flags = UringFlags::DEFAULT;
        if let Some(flags) = s.uring_flags {
            uring_flags = UringFlags::default();
            for (i, f) in flags.iter().enumerate() {
                match f.as_str() {
                    "coop_taskrun" => uring_flags.coop_taskrun = true,
                    "single_issuer" => uring_flags.single_issuer = true,
                    "defer_taskrun" => uring_flags.defer_taskrun = true,
                    _ => self.bad(
                        &format!("server.uring_flags[{i}]"),
                        f,
                        "\"coop_taskrun\", \"single_issuer\" or \"defer_taskrun\"",
                    ),
                }
            }
            if uring_flags.defer_taskrun && !uring_flags.single_issuer {
                self.err(
                    "server.uring_flags",
                    "\"defer_taskrun\" needs \"single_issuer\" too",
                );
            }
        }
        Server {
            workers,
            pin,
            cpus,
            trusted_proxies,
            state_dir,
            driver,
            drain_timeout: self.duration(
                "server.drain_timeout",
                s.drain_timeout.as_ref(),
                DEFAULT_DRAIN_TIMEOUT,
            ),
            log_summary_interval: self.duration_in(
                "server.log_summary_interval",
                s.log_summary_interval.as_ref(),
                DEFAULT_LOG_SUMMARY_INTERVAL,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            uring_flags,
            uring_entries: self.int_in(
                "server.uring_entries",
                s.uring_entries,
                DEFAULT_URING_ENTRIES as i64,
                256,
                32768,
            ) as u32,
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str, s: Option<String>) -> Option<SocketAddr> {
        match s {
            None => {
                self.err(key, "is required");
                None
            }
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.bad(
                        key,
                        s,
                        "an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    );
                    None
                }
            },
        }
    }

    pub(super) fn admin(&mut self, a: file::AdminFile) -> Admin {
        let addr = self
            .socket_addr("admin.addr", a.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let token_env = match a.token_env {
            Some(s) if !s.is_empty() => s,
            Some(s) => {
                self.bad(
                    "admin.token_env",
                    s,
                    "the name of an environment variable that holds the admin token",
                );
                String::new()
            }
            None => "TOLLGATE_ADMIN_TOKEN".into(),
        };
        let access_log_dir = match a.access_log_dir {
            Some(s) if s.is_empty() || s.contains('\0') => {
                self.bad(
                    "admin.access_log_dir",
                    s,
                    "a folder (relative to the config file's) where stages made through the admin API may write their access logs",
                );
                ".".into()
            }
            Some(s) => s,
            None => ".".into(),
        };
        Admin {
            addr,
            token_env,
            access_log_dir,
        }
    }

    pub(super) fn limits(&mut self, mut l: file::LimitsFile) -> Limits {
        let max_header_bytes = self.size(
            "limits.max_header_bytes",
            l.max_header_bytes.as_ref(),
            DEFAULT_MAX_HEADER_BYTES,
        );
        let max_header_bytes = if (1024..=1 << 20).contains(&max_header_bytes) {
            max_header_bytes as usize
        } else {
            self.bad(
                "limits.max_header_bytes",
                max_header_bytes,
                "a size from 1KiB to 1MiB",
            );
            DEFAULT_MAX_HEADER_BYTES as usize
        };
        let mut ws_size = |key: &str, v: Option<&file::SizeValue>, default: u64| {
            let n = self.size(key, v, default);
            if (125..=64 << 20).contains(&n) {
                n
            } else {
                self.bad(key, n, "a size from 125 bytes to 64MiB");
                default
            }
        };
        let websocket_frame = ws_size(
            "limits.websocket_frame",
            l.websocket_frame.as_ref(),
            32 << 10,
        );
        let websocket_message = ws_size(
            "limits.websocket_message",
            l.websocket_message.as_ref(),
            128 << 10,
        );
        if websocket_frame > websocket_message {
            self.bad(
                "limits.websocket_frame",
                websocket_frame,
                "a size no larger than limits.websocket_message",
            );
        }
        let max_body = self.size("limits.max_body", l.max_body.as_ref(), DEFAULT_MAX_BODY);
        if max_body == 0 {
            // nginx's `client_max_body_size 0` means no limit; here it would refuse every
            // body: refused, saying so.
            self.bad(
                "limits.max_body",
                0,
                "a size of at least 1 byte (0 would refuse every request body; nginx reads 0 as no limit, which Tollgate does not offer)",
            );
        }
        Limits {
            max_body: max_body.max(1),
            body_memory: self.size(
                "limits.body_memory",
                l.body_memory.as_ref(),
                DEFAULT_BODY_MEMORY,
            ),
            integration_timeout: self.duration(
                "limits.integration_timeout",
                l.integration_timeout.as_ref(),
                DEFAULT_INTEGRATION_TIMEOUT,
            ),
            header_timeout: self.duration(
                "limits.header_timeout",
                l.header_timeout.as_ref(),
                DEFAULT_HEADER_TIMEOUT,
            ),
            idle_timeout: self.duration(
                "limits.idle_timeout",
                l.idle_timeout.as_ref(),
                DEFAULT_IDLE_TIMEOUT,
            ),
            max_header_bytes,
            max_connections: self.int_in(
                "limits.max_connections",
                l.max_connections,
                DEFAULT_MAX_CONNECTIONS as i64,
                1,
                10_000_000,
            ) as usize,
            body_timeout: self.duration(
                "limits.body_timeout",
                l.body_timeout.as_ref(),
                DEFAULT_BODY_TIMEOUT,
            ),
            send_timeout: self.duration(
                "limits.send_timeout",
                l.send_timeout.as_ref(),
                DEFAULT_SEND_TIMEOUT,
            ),
            body_min_rate: self.size("limits.body_min_rate", l.body_min_rate.as_ref(), 0),
            upgrade_idle_timeout: self.duration(
                "limits.upgrade_idle_timeout",
                l.upgrade_idle_timeout.as_ref(),
                DEFAULT_UPGRADE_IDLE_TIMEOUT,
            ),
            websocket_frame,
            websocket_message,
            websocket_lifetime: self.duration(
                "limits.websocket_lifetime",
                l.websocket_lifetime.as_ref(),
                Duration::from_secs(7200),
            ),
            websocket_message_rate: l
                .websocket_message_rate
                .take()
                .and_then(|r| self.rate("limits.websocket_message_rate", r)),
            underscores_in_headers: match l.underscores_in_headers.as_deref() {
                None | Some("drop") => Underscores::Drop,
                Some("allow") => Underscores::Allow,
                Some("reject") => Underscores::Reject,
                Some(other) => {
                    self.bad(
                        "limits.underscores_in_headers",
                        other,
                        "\"drop\", \"allow\" or \"reject\"",
                    );
                    Underscores::Drop
                }
            },
            request_buffering: {
                let n = self.size(
                    "limits.request_buffering",
                    l.request_buffering.as_ref(),
                    DEFAULT_REQUEST_BUFFERING,
                );
                if n > MAX_REQUEST_BUFFERING {
                    self.bad("limits.request_buffering", n, "a size up to 16MiB");
                }
                n.min(MAX_REQUEST_BUFFERING)
            },
        }
    }

    pub(super) fn http2(&mut self, h: file::Http2File) -> Http2 {
        let d = Http2::default();
        let window = |me: &mut Self, key: &str, v: Option<&file::SizeValue>, default: u32| {
            let n = me.size(key, v, default as u64);
            if (65_535..=(1u64 << 31) - 1).contains(&n) {
                n as u32
            } else {
                me.bad(
                    key,
                    n,
                    "a size from 65535 bytes to 2GiB - 1 (RFC 9113 6.9.2)",
                );
                default
            }
        };
        let stream_window = window(
            self,
            "http2.stream_window",
            h.stream_window.as_ref(),
            d.stream_window,
        );
        let connection_window = window(
            self,
            "http2.connection_window",
            h.connection_window.as_ref(),
            d.connection_window,
        );
        let frame = self.size(
            "http2.max_frame_size",
            h.max_frame_size.as_ref(),
            d.max_frame_size as u64,
        );
        let max_frame_size = if (16_384..=16_777_215).contains(&frame) {
            frame as u32
        } else {
            self.bad(
                "http2.max_frame_size",
                frame,
                "a size from 16KiB to 16MiB - 1 (RFC 9113 6.5.2)",
            );
            d.max_frame_size
        };
        let mut int = |key: &str, v: Option<i64>, default: u32, lo: i64, hi: i64| {
            self.int_in(&format!("http2.{key}"), v, default as i64, lo, hi) as u32
        };
        Http2 {
            max_concurrent_streams: int(
                "max_concurrent_streams",
                h.max_concurrent_streams,
                d.max_concurrent_streams,
                1,
                65_536,
            ),
            stream_window,
            connection_window,
            max_frame_size,
            control_frames_per_second: int(
                "control_frames_per_second",
                h.control_frames_per_second,
                d.control_frames_per_second,
                1,
                1_000_000,
            ),
            control_frames_burst: int(
                "control_frames_burst",
                h.control_frames_burst,
                d.control_frames_burst,
                1,
                1_000_000,
            ),
            resets_per_second: int(
                "resets_per_second",
                h.resets_per_second,
                d.resets_per_second,
                1,
                1_000_000,
            ),
            resets_burst: int("resets_burst", h.resets_burst, d.resets_burst, 1, 1_000_000),
            max_continuation_frames: int(
                "max_continuation_frames",
                h.max_continuation_frames,
                d.max_continuation_frames,
                1,
                1024,
            ),
            window_updates_per_data_frame: int(
                "window_updates_per_data_frame",
                h.window_updates_per_data_frame,
                d.window_updates_per_data_frame,
                1,
                1_000_000,
            ),
        }
    }
}
