//! Tollgate: a self-hosted API gateway, built as a thread-per-core io_uring proxy.
//!
//! # Layout
//! Leaves first; each module depends only on those above it (`scripts/module-cycles.py`
//! checks that there is no cycle, in CI).
//! - [`syntax`]: what the config and requests spell out — methods, paths, route keys,
//!   templates, client-certificate fields. Imports nothing from the crate.
//! - [`auth`]: API key hashing and the key table. [`listener`]: `SO_REUSEPORT` sockets.
//! - [`config`]: the file's serde mirror and the validated [`config::Config`], plain data
//!   split by section; imports only `syntax` and `auth`.
//! - [`error`]: the error type and its HTTP status. [`metrics`]: per-shard counters.
//!   [`memory`]: futures boxed in place, freed pages handed back by a quiet shard.
//! - [`tls`]: certificate loading, SNI, server and client configs (no I/O).
//! - [`http`]: protocol only: HTTP/1.1 heads and bodies, the client connection and its
//!   transport (plain, TLS), HTTP/2 framing and the HTTP/2 connection driver (the gateway
//!   passes its stream handler in), the drain signal, request ids.
//! - [`throttle`]: token buckets (GCRA on one atomic word), per-shard leases, quotas, Redis.
//! - [`cache`]: the stage response cache: key, freshness, byte-bounded segments,
//!   single-flight. [`route`]: the route trie and domain/base-path resolution.
//! - [`upstream`]: connections to upstreams (plain, TLS, HTTP/2), per-shard pools, health
//!   probes.
//! - [`snapshot`]: the compiled form shards serve from; [`compile`] builds it from a
//!   `Config` (tries, integrations, limit tables, TLS), with errors that name the key.
//! - [`shard`]: per-core state: adopted snapshot, pools, leases, metrics, drain.
//! - [`gateway`]: the request phases over a typed `RequestCtx`, the one exit
//!   (`gateway::finish`), the proxy and cache phases, and the connection loops.
//! - [`runtime`]: shard threads, CPU pinning, io_uring/epoll runtimes, accept loops.
//! - [`rt`]: Tollgate's own io_uring runtime (executor, multishot accept and receive into a
//!   provided-buffer ring, timers); standalone, the data path's next driver.
//! - [`control`]: the control plane: reload, keys and usage, the state store, health
//!   checks, drain, and a fleet's run-time objects through Redis (`control::fleet`). [`admin`]: the admin HTTP API over `control`.
//!
//! # Request lifecycle
//! accept (shard's own socket) → TLS handshake on TLS listeners; ALPN `h2` (or the h2c
//! preface) hands the connection to `http::h2`, whose every stream becomes a head the steps
//! below see as any other (`gateway::conn`) → read and parse the head (`http::conn`,
//! `http::h1`) → `gateway::handle`: (`redirect_https` listeners: 308) → check the declared
//! body size → normalise the path → resolve API and stage (host, base path) → match the
//! route (trie) → API key (403) → throttles: key + route, key, route, stage, gateway (429)
//! → quota (429) → [resource policies, validation: later] → cache (`gateway::cached`: hit,
//! or one coalesced fetch that is stored as it streams) → integration: mock answer, or
//! proxy upstream (`gateway::proxy`) with the body streaming both ways → `gateway::finish`:
//! the answer written (or already streamed), counted by status, keep-alive decided. Every
//! request leaves there, head errors and client resets included.

#![deny(unsafe_code)]
// `.clippy.toml` bans locks (the data plane's state is per shard); tests and benches may use them.
#![deny(clippy::disallowed_types)]
// The module docs are written for `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod auth;
mod cache;
mod check_warnings;
mod compile;
mod config;
mod control;
mod driver;
mod error;
mod gateway;
mod http;
mod listener;
mod memory;
mod metrics;
mod observe;
pub mod openapi;
mod route;
pub mod rt;
mod runtime;
mod shard;
mod snapshot;
mod syntax;
mod throttle;
mod tls;
mod upgrade;
mod upstream;

// The public surface: what the binary, the end-to-end tests and the benchmarks use. The
// modules are private and their items `pub(crate)` (the `unreachable_pub` lint keeps it so,
// and dead-code warnings then catch what nothing uses).
pub use compile::{check, check_file};
pub use config::{summary, Config, ConfigError, Driver};
pub use driver::install_hook as install_panic_hook;
pub use runtime::DriverKind;
pub use throttle::{day_string, today};

/// The hot pieces the benchmarks (`bench/`) and the cache memory test drive directly,
/// without a gateway around them. Not a stable interface.
pub mod internals {
    pub use crate::auth::jwt::{verify as verify_jwt, KeySet, Rules, TokenCache, Verified};
    pub use crate::cache::policy::Lifetime;
    pub use crate::cache::{StageCache, Stored, Val};
    pub use crate::config::{
        CacheMode, Invalidation, KeyPart, StageCache as StageCacheConfig, Unauthorized,
    };
    pub use crate::config::{MapOp, ParamMapping};
    pub use crate::gateway::cached::{cache_key, hit_head};
    pub use crate::gateway::ctx::{RequestCtx, RequestId};
    pub use crate::gateway::proxy::request_head;
    pub use crate::http::h1::parse_request;
    pub use crate::observe::access::{Format as LogFormat, Line as LogLine};
    pub use crate::observe::stats::{Refusal, RouteCells, Sample};
    pub use crate::route::trie::{Capture, Lookup, Trie};
    pub use crate::route::StageRef;
    pub use crate::snapshot::{Dest, HttpIntegration};
    pub use crate::syntax::json_doc::{Body as JsonBody, Doc as JsonDoc};
    pub use crate::syntax::path::normalise;
    pub use crate::syntax::route_key::{parse_route_path, MethodSel, Seg};
    pub use crate::syntax::template::{Piece, Template};
    pub use crate::syntax::vtl::{Env as VtlEnv, Template as VtlTemplate};
    pub use crate::syntax::Method;
    pub use crate::throttle::redis::take_command as fleet_take_command;
    /// The upstream head of a request through its integration's parameter mapping (edits
    /// worked out, then the head written with them), as a proxied request is.
    pub fn mapped_request_head(
        peer_ip: &str,
        ctx: &mut crate::gateway::ctx::RequestCtx,
        integ: &crate::snapshot::HttpIntegration,
        params: &[String],
    ) -> Vec<u8> {
        if let Some(m) = &integ.mapping {
            let e = crate::gateway::mapping::request_edits(m, ctx, peer_ip, params);
            ctx.edits = Some(Box::new(e));
        }
        crate::gateway::proxy::request_head(peer_ip, ctx, integ)
    }
    /// A parameter mapping's `request_parameters` entry (`"overwrite:header.x" = "$request..."`).
    pub fn map_op(key: &str, value: &str) -> Result<MapOp, String> {
        let (action, target) = crate::syntax::mapping::parse_key(key, false)?;
        let value = crate::syntax::mapping::parse_value(value, false)?;
        Ok(MapOp {
            action,
            target,
            value,
        })
    }
    /// A model's schema compiled as request validation compiles it.
    pub fn compile_schema(
        schema: &serde_json::Value,
    ) -> Result<jsonschema::Validator<JsonBody>, String> {
        crate::config::compile_schema(schema)
    }
    pub use crate::throttle::bucket::{Bucket, Rate};
    pub use crate::throttle::lease::{Decision, Lease};
}

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

pub use check_warnings::*;
use control::ControlMsg;
use shard::Shared;

/// The CPUs this process may run on (`Cpus_allowed_list` in /proc/self/status); `None` when
/// it cannot be read.
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// Whether the shards can be placed as `[server]` asks (with `--workers` applied): with
/// `pin = true`, one listed CPU per worker, each one this process may run on. `tollgate
/// check` and start-up both run it, so a config that checks is one that starts pinned.
pub fn check_placement(cfg: &Config, workers: Option<usize>) -> Result<(), String> {
    let server = &cfg.server;
    if !server.pin {
        return Ok(());
    }
    let shards = workers.unwrap_or(cfg.shard_count());
    if !server.cpus.is_empty() && shards > server.cpus.len() {
        return Err(format!(
            "server.cpus: lists {} CPUs but {shards} workers will run; list at least one CPU per worker",
            server.cpus.len()
        ));
    }
    let wanted: Vec<usize> = if server.cpus.is_empty() {
        (0..shards).collect()
    } else {
        server.cpus.clone()
    };
    if let Some(allowed) = allowed_cpus() {
        if let Some(bad) = wanted.iter().find(|c| !allowed.contains(c)) {
            let list: Vec<String> = allowed.iter().map(|c| c.to_string()).collect();
            return Err(format!(
                "server.cpus: CPU {bad} is not one this process may run on (allowed: {}); with pin = true every worker's CPU must exist",
                list.join(",")
            ));
        }
    }
    Ok(())
}

/// `tollgate state check`: tests the state file on a copy and says what it holds.
/// `tollgate check`'s look at the state store: a config key with the value or the id of a key
/// made through the admin API is refused (start-up and a reload refuse it: a restart would
/// not start); run-time objects this configuration would not serve as stored are warnings
/// (a start or a reload serves without them, and says so). `base`: the config file's folder.
pub fn check_store(cfg: &Config, base: &std::path::Path) -> Result<Vec<String>, ConfigError> {
    match control::check_stored(cfg, base) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some((keys, said, plan_clashes))) => {
            let mut errors = control::file_key_clashes(cfg, &keys);
            errors.extend(plan_clashes);
            // A fleet node serves the file's key and warns (another node's call made it).
            let fleet = cfg.cluster.is_some();
            if !errors.is_empty() && !fleet {
                return Err(ConfigError { errors });
            }
            Ok(said
                .into_iter()
                .map(|s| format!("a run-time object would not be served as stored: {s}"))
                .chain(errors.into_iter().map(|e| {
                    format!("an API key the fleet holds clashes with this file (the file's key is served): {e}")
                }))
                .collect())
        }
        Err(e) => Ok(vec![format!(
            "the state store could not be read to compare its API keys and run-time APIs with the file ({e})"
        )]),
    }
}

pub fn state_check(cfg: &Config) -> Result<String, String> {
    let dir = &cfg.server.state_dir;
    match control::store::check(dir)? {
        None => Ok(format!(
            "no state file in {} yet: one is created at start-up",
            dir.display()
        )),
        Some(c) => Ok(format!(
            "state file {} is sound: {} API keys, {} usage records, {} access keys, {} run-time objects (APIs, deployments, stages, domain mappings)",
            dir.join(control::store::STATE_FILE).display(),
            c.keys,
            c.counters,
            c.access_keys,
            c.objects
        )),
    }
}

/// `tollgate state recover --out FILE`: writes what a damaged state file still holds into a
/// new one.
pub fn state_recover(cfg: &Config, out: &std::path::Path) -> Result<String, String> {
    let c = control::store::recover(&cfg.server.state_dir, out)?;
    Ok(format!(
        "wrote {}: {} API keys, {} usage records, {} access keys and {} run-time objects (APIs, deployments, stages, domain mappings) recovered; with the gateway stopped, move it to {}",
        out.display(),
        c.keys,
        c.counters,
        c.access_keys,
        c.objects,
        cfg.server.state_dir.join(control::store::STATE_FILE).display()
    ))
}

/// How to start a gateway besides its config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The file to reload from (SIGHUP, `POST /reload`).
    pub config_path: Option<PathBuf>,
    /// `--workers`: overrides `server.workers`, also across reloads.
    pub workers: Option<usize>,
    /// The admin token; `None` reads the variable named by `admin.token_env`.
    pub admin_token: Option<String>,
    /// `--take-over`: start with the listening sockets and state store of the gateway running
    /// on the same `state_dir`, which then drains and exits (zero-downtime upgrade).
    pub take_over: bool,
}

/// A running gateway.
pub struct Gateway {
    /// The take-over thread, and whether it released this process to a successor (it is
    /// then joined before exit, so that the successor hears that the store is free).
    upgrade_thread: Option<(
        upgrade::Serving,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    )>,
    /// What the shards share (read here for the drain's outcome).
    shared: std::sync::Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    ctl: flume::Sender<ControlMsg>,
    control: Option<std::thread::JoinHandle<()>>,
    pub driver: runtime::DriverKind,
    cache_clock: std::sync::Arc<cache::CacheClock>,
}

/// Why a gateway could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Gateway {
    /// Binds every socket, starts the shards and the control plane, and returns once they
    /// are accepting.
    pub fn start(mut cfg: Config, opts: Options) -> Result<Gateway, StartError> {
        if let Some(w) = opts.workers {
            if w > 1024 {
                return Err(StartError(format!(
                    "workers = {w}: expected an integer from 0 to 1024"
                )));
            }
            cfg.server.workers = w;
        }
        let shards = cfg.shard_count();
        check_placement(&cfg, None).map_err(StartError)?;
        let driver = runtime::pick_driver(cfg.server.driver).map_err(StartError)?;
        // --take-over: the running gateway's sockets, once this config is known to compile
        // (a refused config must leave it serving, untouched).
        let mut handover = if opts.take_over {
            compile::check(&cfg).map_err(|e| StartError(e.errors.join("; ")))?;
            Some(upgrade::take_over(&cfg.server.state_dir).map_err(StartError)?)
        } else {
            None
        };
        // Per shard: (listener index, socket).
        let mut per_shard: Vec<Vec<(usize, std::net::TcpListener)>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        // Duplicates of every listening socket, offered to a successor.
        let mut offer = upgrade::Offer {
            listeners: Vec::new(),
            admin: None,
        };
        for (idx, l) in cfg.listeners.iter().enumerate() {
            let cant = |e: std::io::Error| {
                StartError(format!(
                    "listeners[{:?}]: cannot listen on {}: {e}",
                    l.name, l.addr
                ))
            };
            let inherited = handover.as_mut().and_then(|h| h.listener(l.addr));
            let (socks, addr) = match inherited {
                Some(mut socks) => {
                    // More shards than sockets: more sockets join the port's group.
                    while socks.len() < shards {
                        socks.push(listener::bind_with(l.addr, l.defer_accept).map_err(cant)?);
                    }
                    (socks, l.addr)
                }
                None => listener::bind_for_shards(l.addr, shards, l.defer_accept).map_err(cant)?,
            };
            let mut dups = Vec::new();
            for (i, s) in socks.into_iter().enumerate() {
                if let Ok(d) = s.try_clone() {
                    dups.push(std::os::fd::OwnedFd::from(d));
                }
                // Fewer shards than inherited sockets: a shard accepts on several, so that no
                // socket's queue is left behind.
                per_shard[i % shards].push((idx, s));
            }
            offer.listeners.push((addr, dups));
            tracing::info!(listener = %l.name, addr = %addr, "listening");
            listeners.push((l.name.clone(), addr));
        }
        if let Some(w) = admin_warning(&cfg) {
            tracing::warn!("{w}");
        }
        for w in cache_warnings(&cfg) {
            tracing::warn!("{w}");
        }
        let admin = match &cfg.admin {
            None => None,
            Some(a) => {
                let token = opts
                    .admin_token
                    .clone()
                    .or_else(|| std::env::var(&a.token_env).ok())
                    // As a request's token is read: without the white space around it (a
                    // token kept with it could never be sent back).
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                match token {
                    None => {
                        tracing::error!(token_env = %a.token_env, "admin API not started: environment variable {} is not set, or empty (the admin API needs a bearer token)", a.token_env);
                        None
                    }
                    Some(t) => {
                        // RFC 6750's token characters: others (non-ASCII, spaces) cannot be
                        // sent by every client (browsers send header values as Latin-1).
                        if !t
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
                        {
                            tracing::warn!(token_env = %a.token_env, "the admin token holds characters outside RFC 6750's (letters, digits, -._~+/=): some clients, the status page among them, cannot send it");
                        }
                        let inherited = handover
                            .as_mut()
                            .and_then(|h| h.admin.take_if(|(addr, _)| *addr == a.addr))
                            .map(|(_, l)| l);
                        let l = match inherited {
                            Some(l) => l,
                            None => listener::bind_exclusive(a.addr).map_err(|e| {
                                StartError(format!("admin.addr: cannot listen on {}: {e}", a.addr))
                            })?,
                        };
                        if let Ok(d) = l.try_clone() {
                            offer.admin = Some((a.addr, std::os::fd::OwnedFd::from(d)));
                        }
                        let addr = l.local_addr().map_err(|e| StartError(e.to_string()))?;
                        tracing::info!(addr = %addr, "admin API listening");
                        Some((l, t, addr))
                    }
                }
            }
        };
        let admin_addr = admin.as_ref().map(|a| a.2);
        if let Some(h) = &mut handover {
            // Ready: the running gateway stops accepting and closes the store. Connections
            // that arrive meanwhile wait in the accept queues of the sockets we now hold.
            h.release().map_err(StartError)?;
            tracing::info!("took over the listening sockets and the state store");
        }
        let store = control::store::Store::open(&cfg.server.state_dir).map_err(StartError)?;
        let (init, snap) =
            control::ControlInit::prepare(cfg, opts.config_path.clone(), opts.workers, store)
                .map_err(StartError)?;
        let cache_clock = snap.cache_clock.clone();
        let access_log = observe::writer::LogWriter::start()
            .map_err(|e| StartError(format!("cannot start the access-log writer: {e}")))?;
        let traces = observe::export::Exporter::start()
            .map_err(|e| StartError(format!("cannot start the trace exporter: {e}")))?;
        traces.set_endpoint(snap.config.tracing.as_ref().map(|t| t.endpoint()));
        let shared = Shared::new(snap.clone(), shards, access_log, traces);
        let shared_for_gateway = shared.clone();
        init.load_counters(&shared).map_err(StartError)?;
        let server = &snap.config.server;
        let cpus: Vec<usize> = if server.cpus.is_empty() {
            (0..shards).collect()
        } else {
            server.cpus.clone()
        };
        let mut shard_txs = Vec::new();
        let mut handles = Vec::new();
        // Shards accept once the control plane's runtime is built (its sender dropped): a
        // flood of clients at the open-file limit cannot take the descriptors it needs.
        let (control_up_tx, control_up_rx) = flume::bounded::<()>(1);
        for (id, socks) in per_shard.into_iter().enumerate() {
            let (tx, rx) = flume::unbounded();
            shard_txs.push(tx);
            let spec = runtime::ShardSpec {
                control_up: control_up_rx.clone(),
                id,
                cpu: if server.pin {
                    cpus.get(id % cpus.len()).copied()
                } else {
                    None
                },
                driver,
                entries: server.uring_entries,
                uring_flags: server.uring_flags,
                listeners: socks,
                shared: shared.clone(),
                rx,
            };
            handles.push(
                runtime::spawn_shard(spec)
                    .map_err(|e| StartError(format!("cannot start shard thread: {e}")))?,
            );
        }
        let (ctl_tx, ctl_rx) = flume::unbounded();
        // A successor may take over from this process (tollgate --take-over).
        let release_tx = ctl_tx.clone();
        let sock = upgrade::socket_path(&snap.config.server.state_dir);
        // The previous process's usage, counted while it drained, arrives later (once this
        // one serves and says so, below).
        let predecessor = handover.map(|h| {
            let tx = ctl_tx.clone();
            // This process waits for it before it stops (see `ControlMsg::AwaitUsage`).
            let _ = tx.send(ControlMsg::AwaitUsage);
            (h, move |json: String| {
                // Exactly one answer, empty when the line is unreadable.
                let d =
                    serde_json::from_str::<Vec<control::UsageDelta>>(&json).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "usage from the previous process unreadable");
                        Vec::new()
                    });
                let _ = tx.send(ControlMsg::AddUsage(d));
            })
        });
        let (usage_tx, usage_rx) = std::sync::mpsc::channel::<String>();
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let stopping = shared.clone();
        let served = upgrade::serve(
            sock.clone(),
            offer,
            move |step| {
                let gone = |_| "the control plane is gone".to_string();
                match step {
                    // A gateway that is stopping (SIGTERM) hands nothing over: its control
                    // plane reads no more requests, and the successor waited for an answer
                    // that never came, this process with it, for good.
                    upgrade::Step::Release
                        if stopping.draining.load(std::sync::atomic::Ordering::SeqCst) =>
                    {
                        return Err(
                            "this gateway is stopping; start the new one once it has stopped"
                                .into(),
                        );
                    }
                    upgrade::Step::Release => {
                        let (tx, rx) = flume::bounded(1);
                        release_tx.send(ControlMsg::Release(tx)).map_err(gone)?;
                        rx.recv_timeout(upgrade::STEP_TIMEOUT).map_err(|_| {
                            // Given up: if the control plane releases the store later, it
                            // takes it back at once (the Abort comes after the Release).
                            let _ = release_tx.send(ControlMsg::Abort);
                            "the control plane did not answer (stopping?)".to_string()
                        })??;
                    }
                    upgrade::Step::Commit => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        release_tx.send(ControlMsg::Commit).map_err(gone)?;
                    }
                    upgrade::Step::Abort => release_tx.send(ControlMsg::Abort).map_err(gone)?,
                }
                Ok(())
            },
            usage_rx,
        );
        let upgrade_thread = match served {
            Ok(h) => {
                tracing::info!(path = %sock.display(), "a successor may take over (tollgate --take-over)");
                Some((h, released))
            }
            Err(e) => {
                tracing::warn!(path = %sock.display(), error = %e, "take-over socket not available: upgrades will need a restart");
                None
            }
        };
        let entries = server.uring_entries;
        let log_writer = shared.access_log.clone();
        let trace_exporter = shared.traces.clone();
        let control = std::thread::Builder::new()
            .name("tollgate-control".into())
            .spawn(move || {
                let ctl = Rc::new(RefCell::new(init.start(shared)));
                let admin = admin.map(|(l, token, _)| {
                    // Before the shards may accept (control_up, below).
                    let reserve = runtime::Reserve::new();
                    move |ctl| async move {
                        match crate::driver::net::TcpListener::from_std(l) {
                            Ok(l) => admin::serve(l, Rc::from(token.as_str()), ctl, reserve).await,
                            Err(e) => {
                                tracing::error!(error = %e, "admin API cannot use its socket")
                            }
                        }
                    }
                });
                let run = control::run(ctl.clone(), ctl_rx, admin, shard_txs, || {
                    handles.iter().all(|h| h.is_finished())
                });
                if let Err(e) = runtime::block_on(
                    driver,
                    entries,
                    Default::default(),
                    runtime::CONTROL_RECV_BUFS,
                    async {
                        drop(control_up_tx);
                        run.await
                    },
                ) {
                    tracing::error!(error = %e, "control plane runtime failed to start");
                }
                for h in handles {
                    let _ = h.join();
                }
                // The shards flushed their last lines: write them, end the writer.
                log_writer.stop();
                // Counted usage is saved (or handed over) before the trace exporter's last
                // batches wait on their collector.
                if let Some(deltas) = control::final_flush(&mut ctl.borrow_mut()) {
                    // Handed over: the successor adds what this process counted since.
                    let _ = usage_tx.send(serde_json::to_string(&deltas).unwrap_or_default());
                }
                trace_exporter.stop();
                tracing::info!("stopped");
            })
            .map_err(|e| StartError(format!("cannot start control thread: {e}")))?;
        if let Some((mut h, apply)) = predecessor {
            // Serving: the previous process stops accepting and drains. Until now a failure
            // (the `?`s above) closed the session and it took its store back.
            h.commit().map_err(StartError)?;
            h.await_usage(apply);
        }
        Ok(Gateway {
            upgrade_thread,
            shared: shared_for_gateway,
            listeners,
            admin: admin_addr,
            ctl: ctl_tx,
            control: Some(control),
            driver,
            cache_clock,
        })
    }

    /// Moves the response caches' clock forward, as if `d` had passed: entries age and
    /// expire without waiting. For tests and drills; the clock never goes back.
    pub fn advance_cache_clock(&self, d: std::time::Duration) {
        self.cache_clock.advance(d);
    }

    /// The bound address of a listener (its port is real even when the config said 0).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Reloads the config file, as SIGHUP does; returns the new generation or every error.
    pub fn reload(&self) -> Result<u64, Vec<String>> {
        let (tx, rx) = flume::bounded(1);
        self.ctl
            .send(ControlMsg::Reload(Some(tx)))
            .map_err(|_| vec!["gateway is stopped".to_string()])?;
        rx.recv()
            .map_err(|_| vec!["gateway is stopped".to_string()])?
    }

    /// A handle for signal handlers: sends control messages from any thread.
    pub fn controller(&self) -> Controller {
        Controller(self.ctl.clone(), self.shared.access_log.clone())
    }

    /// Reopens the access-log files, as SIGUSR1 does (after logrotate moved them away).
    pub fn reopen_logs(&self) {
        self.shared.access_log.reopen();
    }

    /// Starts a graceful shutdown and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.ctl.send(ControlMsg::Shutdown);
        self.join();
    }

    /// Waits until the gateway has stopped; returns how many connections the drain had to
    /// cut at `server.drain_timeout` (0 for a clean stop).
    pub fn wait(mut self) -> usize {
        self.join();
        self.shared.cut.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn join(&mut self) {
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
        if let Some((serving, released)) = self.upgrade_thread.take() {
            if released.load(std::sync::atomic::Ordering::SeqCst) {
                serving.join();
            } else {
                serving.stop();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.control.is_some() {
            let _ = self.ctl.send(ControlMsg::Shutdown);
            self.join();
        }
    }
}

/// Sends control messages to a gateway from another thread.
#[derive(Clone)]
pub struct Controller(
    flume::Sender<ControlMsg>,
    std::sync::Arc<observe::writer::LogWriter>,
);

impl Controller {
    /// Reopens the access-log files (SIGUSR1).
    pub fn reopen_logs(&self) {
        self.1.reopen();
    }

    pub fn reload(&self) {
        let _ = self.0.send(ControlMsg::Reload(None));
    }

    /// Reloads and waits for the outcome (the new generation, or every error).
    pub fn reload_wait(&self) -> Result<u64, Vec<String>> {
        let (tx, rx) = flume::bounded(1);
        self.0
            .send(ControlMsg::Reload(Some(tx)))
            .map_err(|_| vec!["gateway is stopped".to_string()])?;
        rx.recv()
            .map_err(|_| vec!["gateway is stopped".to_string()])?
    }

    pub fn shutdown(&self) {
        let _ = self.0.send(ControlMsg::Shutdown);
    }
}
