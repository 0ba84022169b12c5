//! Access-log output, off the request path. A shard renders each line into its own buffer
//! for the line's destination ([`Buffers`]) and hands a full buffer (or, every 100 ms, what it
//! has) to the one writer thread over a bounded channel. The writer appends batches to the
//! files (or standard output). When it falls behind and the channel is full, the batch is
//! dropped and its lines counted (`tollgate_access_log_dropped_total`): a slow disk never
//! blocks a shard, and no client can make the gateway hold unbounded log memory. A write that
//! fails (a full disk) drops and counts the lines that did not reach the file; one that
//! stopped mid-line leaves the rest of that line to be written first next time, so every line
//! in the file is whole ([`Outputs`]). One warning per outage, one line when it ends. The
//! files are reopened on [`LogWriter::reopen`] (SIGUSR1, logrotate's habit; and on reload).

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
    /// The destinations the configuration now names: the others are closed, and a late
    /// batch for one (lines of requests served under the previous configuration) is written
    /// with the file opened and closed again.
    Live(Vec<Arc<Sink>>),
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

    /// Says which destinations the configuration names now (a run-time stage deleted or its
    /// log moved): the writer closes the others, which nothing would close before a reload
    /// (each such change held a descriptor, and a removed file's space). When the writer is
    /// behind, every file is closed instead (the next lines reopen theirs).
    pub(crate) fn live(&self, sinks: Vec<Arc<Sink>>) {
        if self.tx.try_send(Msg::Live(sinks)).is_err() {
            self.reopen();
        }
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
    use std::os::unix::fs::OpenOptionsExt;
    // `x.log/` names a directory (opening it to append fails at every line); `x/.` too.
    let bytes = path.as_os_str().as_bytes();
    if bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes == b"." {
        return Err(std::io::Error::other("names a directory, not a file"));
    }
    if path.exists() {
        if path.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        not_a_pipe(path)?;
        return std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
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

/// A FIFO or a socket is refused: opening a FIFO waits for a reader, and writing to one waits
/// for it to read, which would hold the check, a reload, or the writer thread every other log
/// goes through. (A file, or a device such as `/dev/null`, is taken; for the process's own
/// standard output the path is `"stdout"`.)
fn not_a_pipe(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_socket() => Err(
            std::io::Error::other("is a FIFO or a socket: an access log is a file, or \"stdout\""),
        ),
        _ => Ok(()),
    }
}

/// Opens a log file for appending, creating it (and its folders) if missing. The open never
/// waits (`O_NONBLOCK`: a FIFO put in the file's place after the check fails at once, or takes
/// no more than its reader reads, the rest dropped and counted).
pub(crate) fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    not_a_pipe(path)?;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn run(rx: flume::Receiver<Msg>, counts: &Counts) {
    let mut out = Outputs::new(Box::new(|sink: &Sink| -> std::io::Result<Box<dyn Write>> {
        match sink {
            Sink::Stdout => Ok(Box::new(std::io::stdout())),
            Sink::File(path) => Ok(Box::new(open(path)?)),
        }
    }));
    while let Ok(msg) = rx.recv() {
        if counts.reopen.swap(false, Ordering::SeqCst) {
            out.reopen(counts);
        }
        match msg {
            Msg::Batch { sink, bytes, lines } => out.batch(&sink, &bytes, lines, counts),
            Msg::Reopen => {}
            Msg::Live(sinks) => out.live(sinks, counts),
            Msg::Stop => break,
        }
    }
    // Stop: what is still queued (shards flushed before it was sent) is written below.
    for msg in rx.drain() {
        if let Msg::Batch { sink, bytes, lines } = msg {
            out.batch(&sink, &bytes, lines, counts);
        }
    }
    out.close(counts);
}

/// Opens a destination (a file for appending, or standard output).
type Opener = Box<dyn FnMut(&Sink) -> std::io::Result<Box<dyn Write>>>;

/// The writer thread's destinations. Batches hold whole lines; a disk that fills mid-batch
/// leaves part of a line in the file, and the rest of that line is written before anything
/// else goes there, so lines never merge and each one in the file is whole.
struct Outputs {
    files: AHashMap<Arc<Sink>, Out>,
    /// Destinations in an outage, with the lines it dropped so far: one warning when it
    /// starts, one line when a write works again (cleared then, and on reopen).
    failed: AHashMap<Arc<Sink>, u64>,
    open: Opener,
    /// What the configuration names (`None` until told): a file outside it is not kept open.
    live: Option<ahash::AHashSet<Arc<Sink>>>,
}

/// One open destination.
struct Out {
    file: Box<dyn Write>,
    /// The rest of a line a short write (a full disk) left unfinished in this file, written
    /// first next time. Non-empty keeps the handle open across failures, so that the line is
    /// finished in the file that holds its start.
    torn: Vec<u8>,
}

impl Outputs {
    fn new(open: Opener) -> Outputs {
        Outputs {
            files: AHashMap::new(),
            failed: AHashMap::new(),
            open,
            live: None,
        }
    }

    /// Appends a batch of `lines` whole lines to `sink`, counting what reached it and what
    /// did not.
    fn batch(&mut self, sink: &Arc<Sink>, bytes: &[u8], lines: u64, counts: &Counts) {
        let out = match self.files.entry(sink.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match (self.open)(sink) {
                Ok(file) => v.insert(Out {
                    file,
                    torn: Vec::new(),
                }),
                Err(e) => return self.fail(sink, lines, &e, counts),
            },
        };
        let w = out.write(bytes, lines);
        let done = out.torn.is_empty();
        counts.written.fetch_add(w.whole, Ordering::Relaxed);
        // A destination no longer named is closed again at once; after a failure with
        // nothing to finish, the path is opened afresh next time.
        let unnamed = self.live.as_ref().is_some_and(|l| !l.contains(sink));
        if unnamed && !done {
            // Its torn line is not finished in a file nothing will write to again.
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if unnamed || (done && w.error.is_some()) {
            self.files.remove(sink);
        }
        match w.error {
            None => {
                if let Some(dropped) = self.failed.remove(sink) {
                    tracing::info!(path = %sink, dropped, "access log: writing again");
                }
            }
            Some(e) => self.fail(sink, w.dropped, &e, counts),
        }
    }

    fn fail(&mut self, sink: &Arc<Sink>, dropped: u64, e: &std::io::Error, counts: &Counts) {
        counts.dropped.fetch_add(dropped, Ordering::Relaxed);
        match self.failed.get_mut(sink) {
            Some(n) => *n += dropped,
            None => {
                tracing::warn!(path = %sink, error = %e, "access log: cannot write; lines dropped until it works again");
                self.failed.insert(sink.clone(), dropped);
            }
        }
    }

    /// Closes the files `sinks` does not name (finishing a torn line first, where the disk
    /// takes it), and keeps later batches for them from holding one open.
    fn live(&mut self, sinks: Vec<Arc<Sink>>, counts: &Counts) {
        let live: ahash::AHashSet<Arc<Sink>> = sinks.into_iter().collect();
        let gone: Vec<Arc<Sink>> = self
            .files
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut out) = self.files.remove(&k) {
                out.finish(counts);
            }
            self.failed.remove(&k);
        }
        self.live = Some(live);
    }

    /// Closes every file (after logrotate moved them away), finishing a torn line in the
    /// file it started in first.
    fn reopen(&mut self, counts: &Counts) {
        self.close(counts);
        self.failed.clear();
    }

    /// Finishes what short writes left unfinished, where the disk now takes it, and closes
    /// the files.
    fn close(&mut self, counts: &Counts) {
        for (_, mut out) in self.files.drain() {
            out.finish(counts);
        }
    }
}

/// What one write of a batch did.
struct Written {
    /// Lines that became whole in the file (a torn one finished counts here, once).
    whole: u64,
    /// Lines of the batch of which nothing reached the file.
    dropped: u64,
    error: Option<std::io::Error>,
}

impl Out {
    /// Finishes a torn line, where the disk now takes it, before the file is closed.
    fn finish(&mut self, counts: &Counts) {
        if !self.torn.is_empty() {
            let w = self.write(&[], 0);
            let n = if w.error.is_none() {
                &counts.written
            } else {
                &counts.dropped
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the rest of a torn line, then `bytes` (`lines` whole lines). A short write
    /// keeps the rest of the line it stopped in, so that it is finished before the next.
    fn write(&mut self, bytes: &[u8], lines: u64) -> Written {
        let mut whole = 0;
        if !self.torn.is_empty() {
            let (n, error) = write_some(&mut self.file, &self.torn);
            self.torn.drain(..n);
            if error.is_some() {
                return Written {
                    whole,
                    dropped: lines,
                    error,
                };
            }
            whole += 1;
        }
        let (n, error) = write_some(&mut self.file, bytes);
        if error.is_none() {
            return Written {
                whole: whole + lines,
                dropped: 0,
                error,
            };
        }
        let done = bytes[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        whole += done;
        let mut started = done;
        if n > 0 && bytes[n - 1] != b'\n' {
            let end = bytes[n..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| n + i + 1);
            self.torn = bytes[n..end].to_vec();
            if self.torn.last() != Some(&b'\n') {
                self.torn.push(b'\n');
            }
            started += 1;
        }
        Written {
            whole,
            dropped: lines.saturating_sub(started),
            error,
        }
    }
}

/// Writes as much of `buf` as the destination takes: how many bytes, and the error that
/// stopped it short (`write_all` would lose the count).
fn write_some(w: &mut dyn Write, buf: &[u8]) -> (usize, Option<std::io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match w.write(&buf[n..]) {
            Ok(0) => return (n, Some(std::io::ErrorKind::WriteZero.into())),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    if let Err(e) = w.flush() {
        return (n, Some(e));
    }
    (n, None)
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

    /// A disk with `room` bytes left; what it took lands in `data`.
    #[derive(Clone, Default)]
    struct Disk {
        room: Arc<AtomicU64>,
        data: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(Ordering::Relaxed) as usize;
            if room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = room.min(buf.len());
            self.room.fetch_sub(n as u64, Ordering::Relaxed);
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_keeps_every_line_whole_and_warns_once_per_outage() {
        let disk = Disk::default();
        let log = Captured::default();
        let counts = Counts::default();
        let sink = Arc::new(Sink::File("access.log".into()));
        let d = disk.clone();
        let mut out = Outputs::new(Box::new(
            move |_: &Sink| -> std::io::Result<Box<dyn Write>> { Ok(Box::new(d.clone())) },
        ));
        let l = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || l.clone())
            .finish();
        let room = |n: u64| disk.room.store(n, Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            room(1 << 20);
            out.batch(&sink, b"a1\na2\n", 2, &counts);
            // The disk fills in the middle of the first line of a batch, then is full.
            room(5);
            out.batch(&sink, b"b1xxxx\nb2xxxx\n", 2, &counts);
            out.batch(&sink, b"c1\n", 1, &counts);
            // Space again: the torn line is finished before the next one starts.
            room(1 << 20);
            out.batch(&sink, b"d1\n", 1, &counts);
            // A second outage, and the end of it.
            room(0);
            out.batch(&sink, b"e1\n", 1, &counts);
            room(1 << 20);
            out.batch(&sink, b"f1\n", 1, &counts);
        });
        let file = String::from_utf8(disk.data.lock().unwrap().clone()).unwrap();
        assert_eq!(file, "a1\na2\nb1xxxx\nd1\nf1\n");
        // What is in the file is written; what is not (b2, c1, e1) is dropped.
        assert_eq!(counts.written.load(Ordering::Relaxed), 5);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 3);
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("cannot write")).collect();
        assert_eq!(warnings.len(), 2, "{log}");
        assert!(warnings
            .iter()
            .all(|l| l.contains("WARN") && l.contains("access.log")));
        let again: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("writing again"))
            .collect();
        assert_eq!(again.len(), 2, "{log}");
        assert!(
            again[0].contains("dropped=2") && again[1].contains("dropped=1"),
            "{log}"
        );
    }

    #[test]
    fn files_the_configuration_no_longer_names_are_not_kept_open() {
        let disk = Disk::default();
        disk.room.store(1 << 20, Ordering::Relaxed);
        let counts = Counts::default();
        let (a, b) = (
            Arc::new(Sink::File("a.log".into())),
            Arc::new(Sink::File("b.log".into())),
        );
        let d = disk.clone();
        let mut out = Outputs::new(Box::new(
            move |_: &Sink| -> std::io::Result<Box<dyn Write>> { Ok(Box::new(d.clone())) },
        ));
        out.batch(&a, b"a1\n", 1, &counts);
        out.batch(&b, b"b1\n", 1, &counts);
        assert_eq!(out.files.len(), 2);
        // `b` is named no more: closed; a late batch for it is written, not kept open.
        out.live(vec![a.clone()], &counts);
        assert!(out.files.contains_key(&a) && !out.files.contains_key(&b));
        out.batch(&b, b"b2\n", 1, &counts);
        assert!(!out.files.contains_key(&b));
        out.batch(&a, b"a2\n", 1, &counts);
        assert!(out.files.contains_key(&a));
        assert_eq!(
            String::from_utf8(disk.data.lock().unwrap().clone()).unwrap(),
            "a1\nb1\nb2\na2\n"
        );
        assert_eq!(counts.written.load(Ordering::Relaxed), 4);
        // Named again: kept open again.
        out.live(vec![a.clone(), b.clone()], &counts);
        out.batch(&b, b"b3\n", 1, &counts);
        assert!(out.files.contains_key(&b));
        // A torn line in a file no longer named is not kept open for its end.
        out.live(vec![a.clone()], &counts);
        disk.room.store(2, Ordering::Relaxed);
        out.batch(&b, b"b4xx\n", 1, &counts);
        assert!(!out.files.contains_key(&b));
    }

    #[test]
    fn a_torn_line_is_finished_in_its_own_file_on_reopen() {
        let disk = Disk::default();
        let counts = Counts::default();
        let sink = Arc::new(Sink::Stdout);
        let d = disk.clone();
        let mut out = Outputs::new(Box::new(
            move |_: &Sink| -> std::io::Result<Box<dyn Write>> { Ok(Box::new(d.clone())) },
        ));
        disk.room.store(3, Ordering::Relaxed);
        out.batch(&sink, b"one\n", 1, &counts);
        disk.room.store(100, Ordering::Relaxed);
        out.reopen(&counts);
        assert_eq!(*disk.data.lock().unwrap(), b"one\n");
        assert_eq!(counts.written.load(Ordering::Relaxed), 1);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    }
}
