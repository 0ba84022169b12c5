//! OTLP/HTTP export of trace spans, off the request path: shards hand finished spans to one
//! exporter thread over a bounded queue (full: the span is dropped and counted); the thread
//! sends them in batches (up to [`BATCH`] spans, or what it has every second) as
//! `ExportTraceServiceRequest` protobuf, `POST`ed to the configured collector.

// The exporter's join handle and endpoint are set by the control thread (start, reloads).
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;

use super::trace::otlp;

/// Spans per request to the collector at most (the OTel SDK's default batch size).
pub(crate) const BATCH: usize = 512;
/// Spans waiting at most; more are dropped (the OTel SDK's default queue size).
const QUEUE: usize = 2048;
/// A partial batch is sent after this.
const LINGER: Duration = Duration::from_secs(1);

/// Where spans go: the collector's address, `Host` and path, and the service's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub service: String,
    pub timeout: Duration,
}

enum Msg {
    Span(Box<otlp::Span>),
    Stop,
}

/// The exporter thread's handle.
pub(crate) struct Exporter {
    tx: flume::Sender<Msg>,
    pub(crate) counts: Arc<Counts>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the exporter thread shares with its handle (not the sender: the thread ends when
/// the handle goes).
#[derive(Default)]
pub(crate) struct Counts {
    /// Spans accepted by the collector, dropped (queue full), and lost to failed exports.
    pub(crate) exported: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    endpoint: Mutex<Option<Endpoint>>,
}

impl Exporter {
    pub(crate) fn start() -> std::io::Result<Arc<Exporter>> {
        let (tx, rx) = flume::bounded(QUEUE);
        let e = Arc::new(Exporter {
            tx,
            counts: Arc::default(),
            thread: Mutex::new(None),
        });
        let counts = e.counts.clone();
        let h = std::thread::Builder::new()
            .name("tollgate-traces".into())
            .spawn(move || run(rx, &counts))?;
        *e.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        Ok(e)
    }

    /// Follows the config's `[tracing]` (start and reloads).
    pub(crate) fn set_endpoint(&self, e: Option<Endpoint>) {
        *self
            .counts
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Queues a finished span; never blocks.
    pub(crate) fn send(&self, span: otlp::Span) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what is queued and ends the thread (at shutdown).
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let h = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// Tries of one batch at most (the first and its retries), as OpenTelemetry's Java exporter.
const ATTEMPTS: u32 = 5;
/// The wait before the first retry; each later one waits 1.5 times longer, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A collector's `Retry-After` longer than this drops the batch rather than hold the exporter.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A batch sent and refused for a reason OTLP calls transient, waiting for its next try. New
/// spans wait behind it (at most [`QUEUE`] of them; more are dropped and counted).
struct Pending {
    body: Vec<u8>,
    spans: usize,
    tries: u32,
    at: Instant,
}

/// Why an export failed, and whether OTLP/HTTP says to try it again: no connection, a time-out,
/// 429, 502, 503 and 504 are transient; `after` is the collector's `Retry-After`, if it said one.
#[derive(Debug, PartialEq)]
struct Failure {
    why: String,
    transient: bool,
    after: Option<Duration>,
}

impl Failure {
    fn transient(why: impl Into<String>) -> Failure {
        Failure {
            why: why.into(),
            transient: true,
            after: None,
        }
    }
}

/// The wait before try `tries + 1`: the collector's `Retry-After`, else 1 s growing 1.5 times a
/// try up to 5 s, each with up to a fifth taken off at random so that nodes do not retry as one.
fn backoff(tries: u32, after: Option<Duration>) -> Duration {
    if let Some(a) = after {
        return a;
    }
    let mut d = FIRST_BACKOFF;
    for _ in 1..tries {
        d = (d.mul_f64(1.5)).min(MAX_BACKOFF);
    }
    let mut r = [0u8; 2];
    let _ = getrandom::getrandom(&mut r);
    d.mul_f64(1.0 - f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 5.0)
}

fn run(rx: flume::Receiver<Msg>, ex: &Counts) {
    let mut batch: Vec<otlp::Span> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut since = Instant::now();
    let mut warned = false;
    loop {
        // Nothing to send: sleep until a span comes; else until the retry or the batch is due.
        let due = match &pending {
            Some(p) => Some(p.at),
            None if batch.is_empty() => None,
            None if batch.len() >= BATCH => Some(Instant::now()),
            None => Some(since + LINGER),
        };
        let next = match due {
            None => rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
        };
        let stop = match next {
            Ok(Msg::Span(s)) => {
                if batch.is_empty() {
                    since = Instant::now();
                }
                // Behind a batch waiting to be retried the spans are held up to the queue's
                // size, as they would be in the queue.
                if batch.len() < QUEUE {
                    batch.push(*s);
                } else {
                    ex.dropped.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            Ok(Msg::Stop) | Err(flume::RecvTimeoutError::Disconnected) => true,
            Err(flume::RecvTimeoutError::Timeout) => false,
        };
        // At stop, what is queued gets one export's time in all, no retries: a shutdown waits
        // at most that for the collector; what is left is counted as failed.
        let mut stop_by = None;
        if stop {
            for m in rx.drain() {
                if let Msg::Span(s) = m {
                    batch.push(*s);
                }
            }
        }
        loop {
            if pending.is_none() {
                if batch.is_empty() || !(stop || batch.len() >= BATCH || since.elapsed() >= LINGER)
                {
                    break;
                }
                let n = batch.len().min(BATCH);
                let spans: Vec<otlp::Span> = batch.drain(..n).collect();
                let service = ex
                    .endpoint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|e| e.service.clone())
                    .unwrap_or_default();
                pending = Some(Pending {
                    body: encode(&service, spans),
                    spans: n,
                    tries: 0,
                    at: Instant::now(),
                });
                since = Instant::now();
            }
            let Some(p) = pending.as_mut() else { break };
            if !stop && Instant::now() < p.at {
                break;
            }
            let endpoint = ex
                .endpoint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(mut endpoint) = endpoint else {
                ex.failed.fetch_add(p.spans as u64, Ordering::Relaxed);
                pending = None;
                continue;
            };
            if stop {
                let by = *stop_by.get_or_insert_with(|| Instant::now() + endpoint.timeout);
                match by.checked_duration_since(Instant::now()) {
                    Some(d) if !d.is_zero() => endpoint.timeout = endpoint.timeout.min(d),
                    _ => {
                        ex.failed.fetch_add(p.spans as u64, Ordering::Relaxed);
                        pending = None;
                        continue;
                    }
                }
            }
            p.tries += 1;
            match post(&endpoint, &p.body) {
                Ok(()) => {
                    ex.exported.fetch_add(p.spans as u64, Ordering::Relaxed);
                    pending = None;
                    warned = false;
                }
                Err(f) => {
                    let wait = backoff(p.tries, f.after);
                    let retry = f.transient
                        && !stop
                        && p.tries < ATTEMPTS
                        && f.after.is_none_or(|a| a <= MAX_RETRY_AFTER);
                    // One line per outage, not per batch or try.
                    if !warned {
                        tracing::warn!(collector = %format!("{}:{}{}", endpoint.host, endpoint.port, endpoint.path), error = %f.why, retried = retry, "trace export failed; a transient failure is tried again up to 5 times, other spans are dropped until the collector answers");
                        warned = true;
                    }
                    if retry {
                        p.at = Instant::now() + wait;
                    } else {
                        ex.failed.fetch_add(p.spans as u64, Ordering::Relaxed);
                        pending = None;
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// A socket error as the exporter says it (a timeout reads as one, whatever the OS calls it).
fn io_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// The request body for a batch of spans.
pub(crate) fn encode(service: &str, spans: Vec<otlp::Span>) -> Vec<u8> {
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![
                    otlp::s("service.name", service),
                    otlp::s("telemetry.sdk.name", "tollgate"),
                    otlp::s("service.version", env!("CARGO_PKG_VERSION")),
                ],
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "tollgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

/// One `POST` (HTTP/1.1, a fresh connection, bounded by the endpoint's timeout): Ok on 2xx.
fn post(e: &Endpoint, body: &[u8]) -> Result<(), Failure> {
    use std::net::ToSocketAddrs;
    // The timeout bounds the whole export, not each read or write: a collector that takes a
    // byte at a time (or answers one) cannot hold the exporter, or a shutdown, longer.
    let deadline = Instant::now() + e.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Failure::transient("timed out"))
    };
    let io = |x: std::io::Error| Failure::transient(io_error(x));
    let addr = (e.host.as_str(), e.port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| Failure::transient("the collector's name resolves to no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, left()?).map_err(io)?;
    let host = if e.host.contains(':') {
        format!("[{}]:{}", e.host, e.port)
    } else {
        format!("{}:{}", e.host, e.port)
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: tollgate/{}\r\n\r\n",
        e.path,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for part in [head.as_bytes(), body] {
        let mut at = 0;
        while at < part.len() {
            s.set_write_timeout(Some(left()?)).map_err(io)?;
            match s.write(&part[at..]).map_err(io)? {
                0 => return Err(Failure::transient("the collector closed while reading")),
                n => at += n,
            }
        }
    }
    // The answer's head (up to 4 KiB: its status and a `Retry-After`); its body (a
    // partial-success message at most) is not read.
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        s.set_read_timeout(Some(left()?)).map_err(io)?;
        match s.read(&mut buf[got..]).map_err(io)? {
            0 => break,
            n => got += n,
        }
    }
    answer(&buf[..got])
}

/// What an answer's head says of the export.
fn answer(head: &[u8]) -> Result<(), Failure> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let code = lines.next().and_then(|l| l.split(' ').nth(1));
    let Some(code) = code.filter(|c| c.len() == 3) else {
        return Err(Failure::transient("the collector closed without answering"));
    };
    if code.starts_with('2') {
        return Ok(());
    }
    // Retry-After in seconds (an HTTP date is taken as no advice: the backoff's own wait).
    let after = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(Failure {
        why: format!("the collector answered {code}"),
        transient: matches!(code, "429" | "502" | "503" | "504"),
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector that reads the request, then answers `200` one byte at a time, `gap`
    /// apart.
    fn dribbling(gap: Duration) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                if c.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(gap);
            }
        });
        port
    }

    #[test]
    fn the_timeout_bounds_the_whole_export_not_each_read() {
        let e = Endpoint {
            host: "127.0.0.1".into(),
            port: dribbling(Duration::from_millis(300)),
            path: "/v1/traces".into(),
            service: "t".into(),
            timeout: Duration::from_secs(1),
        };
        // Twelve bytes of status line at 300 ms each: each read is within the timeout, the
        // export is not.
        assert_eq!(post(&e, &[]), Err(Failure::transient("timed out")));
    }

    #[test]
    fn transient_answers_are_retried_as_the_collector_advises() {
        let a = |h: &str| answer(h.as_bytes());
        assert_eq!(a("HTTP/1.1 200 OK\r\n\r\n"), Ok(()));
        let f = a("HTTP/1.1 503 Unavailable\r\nserver: x\r\nRetry-After: 7\r\n\r\n").unwrap_err();
        assert!(f.transient);
        assert_eq!(f.after, Some(Duration::from_secs(7)));
        let f = a("HTTP/1.1 429 Too Many\r\nretry-after: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n");
        assert_eq!(f.as_ref().unwrap_err().after, None);
        assert!(f.unwrap_err().transient);
        let f = a("HTTP/1.1 400 Bad Request\r\nretry-after: 1\r\n\r\n").unwrap_err();
        assert_eq!(f.why, "the collector answered 400");
        assert!(!f.transient);
        assert!(a("").unwrap_err().transient);
        // 1 s, then 1.5 times longer up to 5 s, less up to a fifth at random.
        for (tries, most) in [(1, 1.0), (2, 1.5), (3, 2.25), (6, 5.0), (40, 5.0)] {
            let d = backoff(tries, None).as_secs_f64();
            assert!(d <= most && d >= most * 0.8 - 1e-9, "{tries}: {d}");
        }
        assert_eq!(backoff(1, Some(Duration::ZERO)), Duration::ZERO);
    }
}
