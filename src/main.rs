//! The `tollgate` binary: parses the command line, sets up logging, loads the config and
//! runs the gateway. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tollgate::{Config, ConfigError};
use tollgate::{Gateway, Options};

// `--features system-alloc` builds on the C library's allocator instead, for heap profilers
// that hook malloc (`heaptrack`; see docs/tuning.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, asked for an alignment only when a layout needs more than every block has.
/// The `mimalloc` crate's `MiMalloc` passes every layout to `mi_malloc_aligned`; in mimalloc 3 that call
/// takes its fast path only when the page's free list has a block ready, and otherwise, for
/// any size whose block is not a power of two up to 4 KiB, over-allocates by the alignment
/// and marks the page as holding interior pointers (slower frees). That was most of the
/// allocations a proxied request makes (a future, a head, a buffer). Every mimalloc block is
/// aligned to the word (block sizes are multiples of 8 from a 16-aligned page start), so an
/// alignment up to 8 needs nothing but `mi_malloc`.
#[cfg(not(feature = "system-alloc"))]
struct Mimalloc;

#[cfg(not(feature = "system-alloc"))]
const WORD_ALIGN: usize = std::mem::size_of::<usize>();

// SAFETY: each method forwards to mimalloc with the layout's size, and with its alignment
// whenever that exceeds the word, the one alignment every mimalloc block has; pointers from
// any of these are freed and reallocated by mimalloc, which finds the block from the pointer.
#[cfg(not(feature = "system-alloc"))]
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = if layout.align() <= WORD_ALIGN {
            // SAFETY: any size; mimalloc returns null or a word-aligned block of it.
            unsafe { libmimalloc_sys::mi_malloc(layout.size()) }
        } else {
            // SAFETY: the alignment is a power of two (a `Layout`'s always is).
            unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) }
        };
        debug_assert!(
            (p as usize).is_multiple_of(layout.align()),
            "misaligned block for {layout:?}"
        );
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = if layout.align() <= WORD_ALIGN {
            // SAFETY: as in `alloc`, zeroed.
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()) }
        } else {
            // SAFETY: as in `alloc`, zeroed.
            unsafe { libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        debug_assert!(
            (p as usize).is_multiple_of(layout.align()),
            "misaligned block for {layout:?}"
        );
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = if layout.align() <= WORD_ALIGN {
            // SAFETY: `ptr` came from mimalloc; the new block is word-aligned like every block.
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size) }
        } else {
            // SAFETY: `ptr` came from mimalloc with this alignment, which is kept.
            unsafe { libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()) }
        };
        debug_assert!(
            (p as usize).is_multiple_of(layout.align()),
            "misaligned block for {layout:?}"
        );
        p.cast()
    }
}

extern "C" {
    /// mimalloc's: frees what the calling thread's heap holds but no longer uses.
    fn mi_collect(force: bool);
}

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A thread-per-core API gateway")]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// Shards to run; overrides server.workers (0 = one per CPU, at most 1024).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: Option<u16>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Take over from the gateway running on the same state_dir: its listening sockets and
    /// state store pass to this process, and it drains and exits (zero-downtime upgrade).
    #[arg(long)]
    take_over: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print what it would serve.
    Check,
    /// Print an API of the configuration file as OpenAPI 3.0 or Swagger 2.0 (what the admin
    /// API's GET /apis/{api}/stages/{stage}/export answers), without starting anything.
    Openapi {
        /// The API (default: the only one).
        #[arg(long)]
        api: Option<String>,
        /// The stage (default: the API's first).
        #[arg(long)]
        stage: Option<String>,
        /// oas30 or swagger.
        #[arg(long = "type", default_value = "oas30")]
        kind: String,
        /// Include Amazon API Gateway's x-amazon-apigateway-* extensions.
        #[arg(long)]
        extensions: bool,
    },
    /// Import an OpenAPI 3.x or Swagger 2.0 document (JSON or YAML) as a run-time API, through the
    /// running gateway's admin API ([admin].addr, the token from [admin].token_env).
    Import {
        /// The document.
        file: PathBuf,
        /// The API's name (default: the document's info.title).
        #[arg(long)]
        name: Option<String>,
        /// Refuse the import if anything could not be taken.
        #[arg(long)]
        fail_on_warnings: bool,
        /// The admin API's address, if not [admin].addr.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Print an API as a stage of the running gateway serves it (OpenAPI 3.0 or Swagger 2.0),
    /// through its admin API; run-time APIs included.
    Export {
        /// The API.
        api: String,
        /// The stage.
        #[arg(long)]
        stage: String,
        /// oas30 or swagger.
        #[arg(long = "type", default_value = "oas30")]
        kind: String,
        /// Include Amazon API Gateway's x-amazon-apigateway-* extensions.
        #[arg(long)]
        extensions: bool,
        /// The admin API's address, if not [admin].addr.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// The state store under server.state_dir.
    State {
        #[command(subcommand)]
        op: StateOp,
    },
}

#[derive(Subcommand)]
enum StateOp {
    /// Test the state file on a copy (it is not touched) and say what it holds.
    Check,
    /// Let the store repair a copy of a damaged state file and write every record that can
    /// be read into a new file; stop the gateway and put it in place of tollgate.redb.
    Recover {
        /// The new state file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        // The h2 crate logs a line per odd frame a client sends (an unsolicited PING ACK, say):
        // only its errors, so that no client can turn frames into log volume.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A successor started by SIGUSR2 inherits its parent's descriptors that lack close-on-exec
/// (monoio's io_uring accept sets no flags: every client connection). Held here, those
/// connections would never close when the old process drains them, and their clients would
/// wait forever. The successor gets what it needs over the take-over socket, so everything
/// above stdin/stdout/stderr is closed first.
#[allow(unsafe_code)]
fn close_inherited_descriptors() {
    // SAFETY: nothing in this process holds a descriptor above 2 yet (this runs first in
    // main, before anything is opened); close_range only closes.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.take_over {
        close_inherited_descriptors();
    }
    init_logging(cli.log_format);
    tollgate::install_panic_hook();
    // A write past RLIMIT_FSIZE must fail with EFBIG (the state store reports it and recovers)
    // rather than end the process, as SIGXFSZ's default action would.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            if matches!(cli.log_format, LogFormat::Json) && cli.command.is_none() {
                // A supervisor that reads JSON records gets this one as a record too.
                tracing::error!(
                    config = %cli.config.display(),
                    errors = %e.errors.join("; "),
                    "configuration refused"
                );
            } else {
                eprintln!("{}: configuration refused:", cli.config.display());
                for line in &e.errors {
                    eprintln!("  - {line}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Check) => match tollgate::check(&cfg)
            .and_then(|()| {
                tollgate::check_placement(&cfg, cli.workers.map(usize::from))
                    .map_err(|e| ConfigError { errors: vec![e] })
            })
            .and_then(|()| {
                let base = cli.config.parent().unwrap_or(std::path::Path::new(""));
                tollgate::check_store(&cfg, base)
            }) {
            Ok(store_warnings) => {
                out(format_args!(
                    "{}",
                    tollgate::summary(&cfg, cli.workers.map(usize::from))
                ));
                for w in store_warnings {
                    out(format_args!("warning: {w}\n"));
                }
                if let Some(w) = raise_nofile().and_then(|l| tollgate::fd_warning(&cfg, l)) {
                    out(format_args!("warning: {w}\n"));
                }
                if let Some(w) = tollgate::admin_warning(&cfg) {
                    out(format_args!("warning: {w}\n"));
                }
                if let Some(w) = tollgate::state_dir_warning(&cfg) {
                    out(format_args!("warning: {w}\n"));
                }
                for w in tollgate::cache_warnings(&cfg) {
                    out(format_args!("warning: {w}\n"));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: configuration refused:", cli.config.display());
                for line in &e.errors {
                    eprintln!("  - {line}");
                }
                ExitCode::FAILURE
            }
        },
        Some(Command::Openapi {
            api,
            stage,
            kind,
            extensions,
        }) => match openapi(&cfg, api, stage, &kind, extensions) {
            Ok(doc) => {
                out(format_args!("{doc}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Import {
            file,
            name,
            fail_on_warnings,
            admin,
        }) => {
            let mut q = String::from("/apis?mode=import");
            if let Some(n) = name {
                q.push_str("&name=");
                for b in n.bytes() {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        q.push(b as char);
                    } else {
                        q.push_str(&format!("%{b:02X}"));
                    }
                }
            }
            if fail_on_warnings {
                q.push_str("&failonwarnings=true");
            }
            let r = read_document(&file)
                .map_err(|e| format!("{}: {e}", file.display()))
                .and_then(|body| admin_call(&cfg, admin, "POST", &q, &body));
            print_answer(r)
        }
        Some(Command::Export {
            api,
            stage,
            kind,
            extensions,
            admin,
        }) => {
            let ext = if extensions {
                "&extensions=apigateway"
            } else {
                ""
            };
            let q = format!("/apis/{api}/stages/{stage}/export?type={kind}{ext}");
            print_answer(admin_call(&cfg, admin, "GET", &q, &[]))
        }
        Some(Command::State { op }) => {
            let r = match op {
                StateOp::Check => tollgate::state_check(&cfg),
                StateOp::Recover { out } => tollgate::state_recover(&cfg, &out),
            };
            match r {
                Ok(msg) => {
                    out(format_args!("{msg}\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => run(cfg, cli.config, cli.workers.map(usize::from), cli.take_over),
    }
}

/// One call to the running gateway's admin API: (status, body).
fn admin_call(
    cfg: &Config,
    addr: Option<std::net::SocketAddr>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let admin = cfg
        .admin
        .as_ref()
        .ok_or("the configuration has no [admin] table: the admin API is not served")?;
    let token = std::env::var(&admin.token_env)
        .map(|t| t.trim().to_string())
        .map_err(|_| format!("{} is not set (the admin API's token)", admin.token_env))?;
    let at = addr.unwrap_or(admin.addr);
    let mut s = std::net::TcpStream::connect_timeout(&at, std::time::Duration::from_secs(5))
        .map_err(|e| format!("admin API at {at}: {e}"))?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        at,
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("admin API: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("admin API: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("admin API: no status in the answer")?;
    Ok((status, body.to_string()))
}

/// Writes a command's output to stdout; a reader that went away (`tollgate check | head -1`)
/// ends the output, not the process with a panic.
fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// Prints an admin answer (pretty JSON); a failure status exits 1 with the message.
fn print_answer(r: Result<(u16, String), String>) -> ExitCode {
    match r {
        Ok((status, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or(body);
            if status < 400 {
                out(format_args!("{pretty}\n"));
                ExitCode::SUCCESS
            } else {
                eprintln!("{status}: {pretty}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `tollgate openapi`: the document for an API of the file, pretty-printed.
fn openapi(
    cfg: &Config,
    api: Option<String>,
    stage: Option<String>,
    kind: &str,
    extensions: bool,
) -> Result<String, String> {
    let kind = tollgate::openapi::Kind::parse(kind)
        .ok_or_else(|| format!("--type {kind:?}: expected oas30 or swagger"))?;
    let names: Vec<&str> = cfg.apis.iter().map(|a| a.name.as_str()).collect();
    let api = match (api, names.as_slice()) {
        (Some(a), _) => a,
        (None, [one]) => one.to_string(),
        (None, _) => return Err(format!("--api: one of {}", names.join(", "))),
    };
    let stage = match stage {
        Some(s) => s,
        None => cfg
            .apis
            .iter()
            .find(|a| a.name == api)
            .and_then(|a| a.stages.first())
            .map(|s| s.name.clone())
            .ok_or_else(|| format!("no API {api:?}"))?,
    };
    let doc = tollgate::openapi::export(cfg, &api, &stage, kind, extensions)?;
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default())
}

/// Tells systemd (`Type=notify`) what the gateway is doing: one datagram to `$NOTIFY_SOCKET`
/// (a path, or an abstract name after `@`); nothing without it.
fn sd_notify(state: &str) {
    use std::os::unix::ffi::OsStrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// CLOCK_MONOTONIC in microseconds, for `RELOADING=1`'s `MONOTONIC_USEC`.
#[allow(unsafe_code)]
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and a pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// SIGUSR2: starts a successor (`--take-over`) from this binary's path, with the same
/// arguments and environment; it takes the sockets and the store, and this process drains.
/// Under systemd the successor stays in the service (and announces itself as its main PID).
fn spawn_successor() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.is_empty() {
        return;
    }
    let program = args.remove(0);
    if !args.iter().any(|a| a == "--take-over") {
        args.push("--take-over".into());
    }
    match std::process::Command::new(&program).args(&args).spawn() {
        Ok(mut child) => {
            let pid = child.id();
            tracing::info!(pid, "SIGUSR2: started a successor to take over");
            // Reaped by a thread of its own, so that one that fails (a config it refuses, an
            // address it cannot bind) leaves no zombie and is logged here, where the operator
            // who sent the signal looks (nginx logs a new master that failed the same way).
            let reaper = std::thread::Builder::new()
                .name("tollgate-successor".into())
                .spawn(move || match child.wait() {
                    Ok(status) if status.success() => {
                        tracing::info!(pid, "SIGUSR2: the successor exited (status 0)")
                    }
                    Ok(status) => tracing::warn!(
                        pid,
                        status = %status,
                        "SIGUSR2: the successor failed; a gateway that did not hand over keeps serving, unless it was stopping"
                    ),
                    Err(e) => tracing::warn!(pid, error = %e, "SIGUSR2: cannot wait for the successor"),
                });
            if let Err(e) = reaper {
                tracing::warn!(pid, error = %e, "SIGUSR2: cannot watch the successor");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, program = %program.to_string_lossy(), "SIGUSR2: could not start a successor; still serving")
        }
    }
}

/// Raises the soft open-file limit to the hard one (each client connection and each upstream
/// connection is a descriptor); returns the soft limit now in force.
#[allow(unsafe_code)]
fn raise_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// A document to import: a regular file of at most what the admin API takes (32 MiB), read
/// whole (a device or a FIFO would be read without end).
fn read_document(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    const MAX: u64 = 32 << 20;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut body = Vec::new();
    f.take(MAX + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > MAX {
        return Err("larger than the admin API takes (32 MiB)".into());
    }
    Ok(body)
}

fn run(cfg: Config, path: PathBuf, workers: Option<usize>, take_over: bool) -> ExitCode {
    if let Some(limit) = raise_nofile() {
        if let Some(w) = tollgate::fd_warning(&cfg, limit) {
            tracing::warn!(open_file_limit = limit, "{w}");
        }
    }
    // Handlers first: a signal that arrives during start-up waits for the loop below instead
    // of taking its default action (ending the process). SIGPIPE is ignored by the Rust
    // runtime (a write to a closed socket is an EPIPE error).
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        // nginx's graceful stop (and its container image's STOPSIGNAL): a drain here too,
        // not the default action (a core dump, in-flight requests cut, usage unsaved).
        signal_hook::consts::SIGQUIT,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGUSR2,
    ]);
    let gw = match Gateway::start(
        cfg,
        Options {
            config_path: Some(path),
            workers,
            admin_token: None,
            take_over,
        },
    ) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // Start-up (config, certificates, the state store's allocator maps) leaves freed memory
    // in this thread's heap that serving never reuses: hand it back to the OS now.
    // SAFETY: mi_collect (linked in with mimalloc) only walks and purges the calling
    // thread's own heap.
    #[allow(unsafe_code)]
    unsafe {
        mi_collect(true)
    };
    let ctl = gw.controller();
    // Ready; after a take-over this process is the service's main one from now on.
    sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    match signals {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("tollgate-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig == signal_hook::consts::SIGHUP {
                            tracing::info!("SIGHUP: reloading configuration");
                            sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                            let _ = ctl.reload_wait();
                            sd_notify("READY=1");
                        } else if sig == signal_hook::consts::SIGUSR2 {
                            spawn_successor();
                        } else if sig == signal_hook::consts::SIGUSR1 {
                            // logrotate's habit: reopen the access-log files. The gateway's
                            // own log goes to standard error (the journal, or what the
                            // supervisor redirects it to).
                            tracing::info!("SIGUSR1: reopening the access-log files");
                            ctl.reopen_logs();
                        } else {
                            tracing::info!(signal = sig, "stopping");
                            sd_notify("STOPPING=1");
                            ctl.shutdown();
                        }
                    }
                })
                .ok();
        }
        Err(e) => tracing::warn!(error = %e, "cannot install signal handlers"),
    }
    match gw.wait() {
        0 => ExitCode::SUCCESS,
        cut => {
            // A supervisor can tell a forced stop from a clean one.
            tracing::error!(
                cut,
                "stopped after cutting connections still open at server.drain_timeout"
            );
            ExitCode::from(3)
        }
    }
}
