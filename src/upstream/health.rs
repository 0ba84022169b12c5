//! Active health checks, run by the control plane: `GET <path>` to every target of every
//! upstream that has `health`, every `interval`. A 2xx or 3xx within `timeout` is a success.
//! `unhealthy_after` failures in a row mark the target down, `healthy_after` successes mark it
//! up again. Shards read the flag with one relaxed load; nothing locks. A TLS target is
//! probed over TLS, verified as requests are: a certificate that fails counts as a failure.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use crate::config::Health;
use crate::http::h1;
use crate::tls::client::UpTls;
use crate::upstream::UpStream;

/// One probe: `Ok(status)` or why it failed.
pub(crate) async fn probe(
    addr: SocketAddr,
    tls: Option<UpTls>,
    h2: bool,
    host: &str,
    h: &Health,
) -> Result<u16, String> {
    let work = async {
        let tcp = crate::driver::net::TcpStream::connect_addr(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if h2 {
            return probe_h2(tcp, tls, host, h).await;
        }
        let mut s = match tls {
            None => UpStream::Plain(tcp),
            Some(t) => UpStream::Tls(Box::new(
                crate::http::tls::TlsClient::connect(tcp, t.config, t.name)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            )),
        };
        let req = format!("GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: tollgate-health\r\nconnection: close\r\n\r\n", h.path, host);
        s.write_all(req.into_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match h1::parse_response(&buf, 16 << 10, false) {
                // An interim answer (103 Early Hints, 100 Continue): the final one follows.
                Ok(Some((n, parts))) if (100..200).contains(&parts.status) => {
                    let _ = buf.split_to(n);
                    continue;
                }
                Ok(Some((_, parts))) => return Ok(parts.status),
                Ok(None) => {}
                Err(_) => return Err("malformed answer".to_string()),
            }
            match s.read_into(&mut buf).await {
                Ok(0) => return Err("closed before answering".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    match crate::driver::time::timeout(h.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err("timed out".to_string()),
    }
}

/// A probe over HTTP/2 (`protocol = "h2"` upstreams): one stream on a fresh connection.
async fn probe_h2(
    tcp: crate::driver::net::TcpStream,
    tls: Option<UpTls>,
    host: &str,
    h: &Health,
) -> Result<u16, String> {
    use crate::http::pollio::PollIo;
    let https = tls.is_some();
    let io = match tls {
        None => PollIo::plain(tcp, bytes::Bytes::new()),
        Some(t) => {
            let c = crate::http::tls::TlsClient::connect(tcp, t.config, t.name)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            c.into_poll_io(bytes::Bytes::new())
        }
    };
    let mut sender = crate::upstream::h2::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let uri = format!(
        "{}://{host}{}",
        if https { "https" } else { "http" },
        h.path
    );
    let req = http::Request::get(uri)
        .header("user-agent", "tollgate-health")
        .body(())
        .map_err(|e| e.to_string())?;
    std::future::poll_fn(|cx| sender.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let (resp, _) = sender.send_request(req, true).map_err(|e| e.to_string())?;
    let resp = resp.await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// One target to check: its upstream's name (the probe's Host), address, and how to talk
/// to it.
pub(crate) struct Probe {
    pub upstream: String,
    pub addr: SocketAddr,
    pub tls: Option<UpTls>,
    pub h2: bool,
}

/// Checks one target until `live` says this configuration generation is gone.
pub(crate) async fn run_checks(
    target: Probe,
    h: Health,
    flag: Arc<AtomicBool>,
    generation: u64,
    live: Rc<Cell<u64>>,
) {
    let Probe {
        upstream,
        addr,
        tls,
        h2,
    } = target;
    let key = (upstream.clone(), addr);
    while live.get() == generation {
        let result = probe(addr, tls.clone(), h2, &upstream, &h).await;
        if live.get() != generation {
            return;
        }
        // The runs so far, whichever generation's task counted them: a reload, or a change
        // made through the admin API, starts new tasks, and counts that began afresh each
        // time never reached `unhealthy_after` while changes came faster.
        let (mut ok_run, mut fail_run) =
            RUNS.with(|r| r.borrow().get(&key).copied().unwrap_or_default());
        let up = flag.load(Ordering::Relaxed);
        match result {
            Ok(status) if (200..400).contains(&status) => {
                fail_run = 0;
                ok_run += 1;
                if !up && ok_run >= h.healthy_after {
                    flag.store(true, Ordering::Relaxed);
                    tracing::info!(upstream = %upstream, target_addr = %addr, "target is healthy again");
                }
            }
            other => {
                ok_run = 0;
                fail_run += 1;
                if up && fail_run >= h.unhealthy_after {
                    flag.store(false, Ordering::Relaxed);
                    let why = match other {
                        Ok(s) => format!("status {s}"),
                        Err(e) => e,
                    };
                    tracing::warn!(upstream = %upstream, target_addr = %addr, reason = %why, "target marked unhealthy");
                }
            }
        }
        RUNS.with(|r| r.borrow_mut().insert(key.clone(), (ok_run, fail_run)));
        crate::driver::time::sleep(h.interval).await;
    }
}

thread_local! {
    /// Each checked target's runs of passed and failed probes, on the thread that runs the
    /// checks (the control plane's).
    static RUNS: std::cell::RefCell<ahash::AHashMap<(String, SocketAddr), (u32, u32)>> =
        Default::default();
}

/// Forgets the runs of targets no longer checked.
pub(crate) fn keep_runs(checked: impl Fn(&str, SocketAddr) -> bool) {
    RUNS.with(|r| r.borrow_mut().retain(|(u, a), _| checked(u, *a)));
}
