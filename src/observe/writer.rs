//! Access-log output, off the request path. A shard renders each line into its own buffer
//! for the line's destination ([`Buffers`]) and hands a full buffer (or, every 100 ms, what it
//! has) to the one writer thread over a bounded channel. The writer appends batches to the
//! files (or standard output). When it falls behind and the channel is full, the batch is
//! dropped and its lines counted (`tollgate_access_log_dropped_total`): a slow disk never
//! blocks a shard, and no client can make the gateway hold unbounded log memory. The files
//! are reopened on [`LogWriter::reopen`] (SIGUSR1, logrotate's habit; and on reload).

// The writer's join handle is taken once, at shutdown, by the control thread.
#![allow(clippy::disallowed_types)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ahash::AHashMap;

/// Where lines go: a file (appended to, created if missing) or standard output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Sink {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Stdout => f.write_str("stdout"),
            Sink::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A shard sends what it buffered once it holds this much (nginx's `buffer=64k`).
pub(crate) const BATCH_BYTES: usize = 64 << 10;
/// Batches waiting for the writer at most; more are dropped (and counted).
const QUEUE: usize = 256;

enum Msg {
    Batch {
        sink: Arc<Sink>,
        bytes: Vec<u8>,
        lines: u64,
    },
    Reopen,
    Stop,
}

/// The writer thread's handle, shared by the shards and the control plane.
pub(crate) struct LogWriter {
    tx: flume::Sender<Msg>,
    pub(crate) counts: Arc<Counts>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writer thread shares with its handle (not the sender: the thread ends when the
/// handle goes, even if [`LogWriter::stop`] is never called).
#[derive(Default)]
pub(crate) struct Counts {
    /// Lines written, and lines dropped because the writer fell behind or a write failed.
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Reopen the files before the next batch (set by [`LogWriter::reopen`]; a flag, so that
    /// a busy queue cannot lose the request).
    reopen: AtomicBool,
}

impl LogWriter {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<Arc<LogWriter>> {
        let (tx, rx) = flume::bounded(QUEUE);
        let w = Arc::new(LogWriter {
            tx,
            counts: Arc::default(),
            thread: Mutex::new(None),
        });
        let counts = w.counts.clone();
        let h = std::thread::Builder::new()
            .name("tollgate-accesslog".into())
            .spawn(move || run(rx, &counts))?;
        *w.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        Ok(w)
    }

    /// Hands a batch to the writer; drops (and counts) it if the writer is behind.
    fn send(&self, sink: Arc<Sink>, bytes: Vec<u8>, lines: u64) {
        if self.tx.try_send(Msg::Batch { sink, bytes, lines }).is_err() {
            self.counts.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }

    /// Closes the files; the next lines reopen them (after logrotate moved them away).
    pub(crate) fn reopen(&self) {
        self.counts.reopen.store(true, Ordering::SeqCst);
        // A wake-up; when the queue is full the writer is busy and sees the flag anyway.
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Writes what is queued and ends the thread (at shutdown, after the shards flushed).
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let h = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// Whether the gateway could append to `path` (creating it and its folders where missing),
/// without creating anything: the config check, so that a path the gateway cannot write is
/// refused at load rather than losing every line later.
#[allow(unsafe_code)]
pub(crate) fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if path.exists() {
        if path.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ());
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            d
        };
        if d.exists() {
            if !d.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    d.display()
                )));
            }
            let c = std::ffi::CString::new(d.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
            // SAFETY: access(2) only reads the NUL-terminated path.
            let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
            return if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
        }
        dir = d.parent();
    }
    Ok(())
}

/// Opens a log file for appending, creating it (and its folders) if missing.
pub(crate) fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

fn run(rx: flume::Receiver<Msg>, counts: &Counts) {
    let mut files: AHashMap<Arc<Sink>, std::fs::File> = AHashMap::new();
    // Paths that failed, so that a broken disk logs one warning per reopen, not per batch.
    let mut failed: Vec<Arc<Sink>> = Vec::new();
    while let Ok(msg) = rx.recv() {
        if counts.reopen.swap(false, Ordering::SeqCst) {
            files.clear();
            failed.clear();
        }
        match msg {
            Msg::Batch { sink, bytes, lines } => {
                let ok = match &*sink {
                    Sink::Stdout => std::io::stdout().lock().write_all(&bytes),
                    Sink::File(path) => {
                        let file = match files.get_mut(&sink) {
                            Some(f) => Ok(f),
                            None => open(path).map(|f| files.entry(sink.clone()).or_insert(f)),
                        };
                        file.and_then(|f| f.write_all(&bytes))
                    }
                };
                match ok {
                    Ok(()) => {
                        counts.written.fetch_add(lines, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.dropped.fetch_add(lines, Ordering::Relaxed);
                        files.remove(&sink);
                        if !failed.contains(&sink) {
                            tracing::warn!(path = %sink, error = %e, "access log: cannot write; lines dropped until it works again");
                            failed.push(sink);
                        }
                    }
                }
            }
            Msg::Reopen => {}
            Msg::Stop => break,
        }
    }
    // Stop: what is still queued (shards flushed before it was sent) is written below.
    for msg in rx.drain() {
        if let Msg::Batch { sink, bytes, lines } = msg {
            let r = match &*sink {
                Sink::Stdout => std::io::stdout().lock().write_all(&bytes),
                Sink::File(path) => open(path).and_then(|mut f| f.write_all(&bytes)),
            };
            let n = if r.is_ok() {
                &counts.written
            } else {
                &counts.dropped
            };
            n.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

/// A shard's pending lines, one buffer per destination of the snapshot it serves.
#[derive(Default)]
pub(crate) struct Buffers {
    bufs: Vec<(Arc<Sink>, Vec<u8>, u64)>,
}

impl Buffers {
    /// Renders one line for `sink` (destination `hint` of the snapshot the request was
    /// served with) into its buffer, and sends the buffer when full. A request that outlived
    /// its snapshot finds its destination by name, or sends its line on its own.
    pub(crate) fn write(
        &mut self,
        sink: &Arc<Sink>,
        hint: usize,
        w: &LogWriter,
        render: impl FnOnce(&mut Vec<u8>),
    ) {
        let i = match self.bufs.get(hint) {
            Some((s, _, _)) if Arc::ptr_eq(s, sink) || **s == **sink => Some(hint),
            _ => self.bufs.iter().position(|(s, _, _)| **s == **sink),
        };
        let Some((sink, b, n)) = i.and_then(|i| self.bufs.get_mut(i)) else {
            let mut one = Vec::new();
            render(&mut one);
            w.send(sink.clone(), one, 1);
            return;
        };
        render(b);
        *n += 1;
        if b.len() >= BATCH_BYTES {
            let bytes = std::mem::replace(b, Vec::with_capacity(BATCH_BYTES + 1024));
            w.send(sink.clone(), bytes, std::mem::take(n));
        }
    }

    /// Sends whatever is buffered.
    pub(crate) fn flush(&mut self, w: &LogWriter) {
        for (sink, b, n) in &mut self.bufs {
            if *n > 0 {
                w.send(sink.clone(), std::mem::take(b), std::mem::take(n));
            }
        }
    }

    /// Follows a new snapshot's destinations (after flushing the old ones).
    pub(crate) fn reset(&mut self, sinks: &[Arc<Sink>], w: &LogWriter) {
        self.flush(w);
        self.bufs = sinks.iter().map(|s| (s.clone(), Vec::new(), 0)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_in_order_and_reopen_follows_a_rename() {
        let dir = std::env::temp_dir().join(format!("tollgate-alog-{}", std::process::id()));
        let path = dir.join("sub/access.log");
        let sink = Arc::new(Sink::File(path.clone()));
        let w = LogWriter::start().unwrap();
        let mut b = Buffers::default();
        b.reset(std::slice::from_ref(&sink), &w);
        for i in 0..3 {
            b.write(&sink, 0, &w, |out| {
                out.extend_from_slice(format!("line {i}\n").as_bytes())
            });
        }
        b.flush(&w);
        // Written (the writer is asynchronous), then rotated away and reopened.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while w.counts.written.load(Ordering::Relaxed) < 3 && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::fs::rename(&path, dir.join("sub/access.log.1")).unwrap();
        w.reopen();
        // A line for a destination this shard no longer buffers goes on its own.
        let same = Arc::new(Sink::File(path.clone()));
        b.reset(&[], &w);
        b.write(&same, 0, &w, |out| out.extend_from_slice(b"after\n"));
        b.flush(&w);
        w.stop();
        let old = std::fs::read_to_string(dir.join("sub/access.log.1")).unwrap();
        assert_eq!(old, "line 0\nline 1\nline 2\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(w.counts.written.load(Ordering::Relaxed), 4);
        assert_eq!(w.counts.dropped.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // A writer that never runs: every batch past the queue's room is dropped.
        let (tx, _rx) = flume::bounded(QUEUE);
        let w = LogWriter {
            tx,
            counts: Arc::default(),
            thread: Mutex::new(None),
        };
        let sink = Arc::new(Sink::Stdout);
        for _ in 0..QUEUE + 10 {
            w.send(sink.clone(), b"x\nx\n".to_vec(), 2);
        }
        assert_eq!(w.counts.dropped.load(Ordering::Relaxed), 20);
    }
}
