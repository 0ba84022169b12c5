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

fn run(rx: flume::Receiver<Msg>, ex: &Counts) {
    let mut batch: Vec<otlp::Span> = Vec::new();
    let mut since = Instant::now();
    let mut warned = false;
    loop {
        // Nothing pending: sleep until a span comes; else until the batch is due.
        let next = if batch.is_empty() {
            rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(LINGER.saturating_sub(since.elapsed()))
        };
        let stop = match next {
            Ok(Msg::Span(s)) => {
                if batch.is_empty() {
                    since = Instant::now();
                }
                batch.push(*s);
                false
            }
            Ok(Msg::Stop) | Err(flume::RecvTimeoutError::Disconnected) => true,
            Err(flume::RecvTimeoutError::Timeout) => false,
        };
        // At stop, what is queued gets one export's time in all: a shutdown waits at most
        // that for the collector; what is left is counted as failed.
        let mut stop_by = None;
        if stop {
            for m in rx.drain() {
                if let Msg::Span(s) = m {
                    batch.push(*s);
                }
            }
        }
        while !batch.is_empty() && (stop || batch.len() >= BATCH || since.elapsed() >= LINGER) {
            let n = batch.len().min(BATCH);
            let spans: Vec<otlp::Span> = batch.drain(..n).collect();
            let endpoint = ex
                .endpoint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(mut endpoint) = endpoint else {
                ex.failed.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            };
            if stop {
                let by = *stop_by.get_or_insert_with(|| Instant::now() + endpoint.timeout);
                match by.checked_duration_since(Instant::now()) {
                    Some(d) if !d.is_zero() => endpoint.timeout = endpoint.timeout.min(d),
                    _ => {
                        ex.failed.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            match post(&endpoint, spans) {
                Ok(()) => {
                    ex.exported.fetch_add(n as u64, Ordering::Relaxed);
                    warned = false;
                }
                Err(e) => {
                    ex.failed.fetch_add(n as u64, Ordering::Relaxed);
                    // One line per outage, not per batch.
                    if !warned {
                        tracing::warn!(collector = %format!("{}:{}{}", endpoint.host, endpoint.port, endpoint.path), error = %e, "trace export failed; spans are dropped until the collector answers");
                        warned = true;
                    }
                }
            }
            since = Instant::now();
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
fn post(e: &Endpoint, spans: Vec<otlp::Span>) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let body = encode(&e.service, spans);
    // The timeout bounds the whole export, not each read or write: a collector that takes a
    // byte at a time (or answers one) cannot hold the exporter, or a shutdown, longer.
    let deadline = Instant::now() + e.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_string())
    };
    let addr = (e.host.as_str(), e.port)
        .to_socket_addrs()
        .map_err(|err| err.to_string())?
        .next()
        .ok_or("the collector's name resolves to no address")?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, left()?).map_err(|x| x.to_string())?;
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
    for part in [head.as_bytes(), &body[..]] {
        let mut at = 0;
        while at < part.len() {
            s.set_write_timeout(Some(left()?))
                .map_err(|x| x.to_string())?;
            match s.write(&part[at..]).map_err(io_error)? {
                0 => return Err("the collector closed while reading".into()),
                n => at += n,
            }
        }
    }
    // The status line is enough; the answer (a partial-success message at most) is small.
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        s.set_read_timeout(Some(left()?))
            .map_err(|x| x.to_string())?;
        match s.read(&mut buf[got..]).map_err(io_error)? {
            0 => break,
            n => got += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    match line.split(' ').nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        Some(code) => Err(format!("the collector answered {code}")),
        None => Err("the collector closed without answering".into()),
    }
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
        assert_eq!(post(&e, Vec::new()), Err("timed out".to_string()));
    }
}
