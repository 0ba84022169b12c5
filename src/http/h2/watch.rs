//! The flood watch under an HTTP/2 connection: every byte the client sends passes
//! [`FrameWatch`], which reads frame headers only and counts the frames that floods are made
//! of (PING, SETTINGS, PRIORITY, empty DATA, RST_STREAM, CONTINUATION, WINDOW_UPDATE); the
//! bytes the gateway sends pass it too, for the DATA frames that WINDOW_UPDATEs answer. Past a
//! limit the transport ([`crate::http::pollio::PollIo`]) stops handing bytes to h2 and raises
//! the flag that makes the connection loop send GOAWAY ENHANCE_YOUR_CALM.

use std::cell::Cell;
use std::task::Waker;
use std::time::Instant;

use crate::config::Http2;

/// A flood the watch caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flood {
    /// PING, SETTINGS, PRIORITY or empty DATA frames past the bucket.
    Control,
    /// RST_STREAM frames past the bucket (rapid reset).
    Reset,
    /// Too many CONTINUATION frames in one header block.
    Continuation,
    /// More WINDOW_UPDATE frames than the DATA frames sent can call for.
    WindowUpdate,
    /// A limit of the h2 library's own the watch does not follow (streams reset before they
    /// were accepted, small DATA frames past its overhead budget): it sent the GOAWAY.
    Library,
}

/// State the I/O shares with the connection loop: the flood flag and the loop's waker.
#[derive(Default)]
pub(crate) struct Signal {
    pub flood: Cell<Option<Flood>>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    pub(crate) fn register(&self, w: &Waker) {
        self.waker.set(Some(w.clone()));
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// A token bucket counted in frames.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            let now = Instant::now();
            let dt = now.duration_since(self.at).as_secs_f64();
            self.at = now;
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Frame boundaries in a byte stream that arrives in pieces: each frame's 9-byte head, whole.
#[derive(Default)]
struct Frames {
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload: usize,
}

impl Frames {
    /// Calls `frame` with each frame head completed in `b`; stops at its first error.
    fn walk<E>(
        &mut self,
        mut b: &[u8],
        mut frame: impl FnMut(&[u8; 9]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !b.is_empty() {
            if self.payload > 0 {
                let k = self.payload.min(b.len());
                self.payload -= k;
                b = &b[k..];
            } else {
                let k = (9 - self.head_len).min(b.len());
                self.head[self.head_len..self.head_len + k].copy_from_slice(&b[..k]);
                self.head_len += k;
                b = &b[k..];
                if self.head_len == 9 {
                    self.head_len = 0;
                    let h = self.head;
                    self.payload = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                    frame(&h)?;
                }
            }
        }
        Ok(())
    }
}

/// WINDOW_UPDATE frames a client may send before any DATA frame came its way (its first
/// window growth, a few streams' worth).
const WINDOW_UPDATES_BASE: u64 = 100;

/// Empty DATA frames (not ending a stream) the h2 library takes in a connection's life
/// (`MAX_RECV_EMPTY_DATA_FRAMES`); the watch counts them too, to name the flood.
const MAX_EMPTY_DATA: u32 = 100;

/// CONTINUATION frames the h2 library takes in one header block: enough for the header list
/// in frames of the size taken, plus a quarter, and at least 5 (its
/// `calc_max_continuation_frames`).
fn library_continuations(max_header_list: usize, max_frame: usize) -> u32 {
    let frames = (max_header_list / max_frame.max(1)).max(1);
    let n = frames.saturating_add(frames >> 2).max(5);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Follows the client's frame boundaries and counts what floods are made of.
pub(crate) struct FrameWatch {
    /// Client preface bytes still to skip.
    preface: usize,
    read: Frames,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATIONs).
    continuations: Option<u32>,
    max_continuations: u32,
    control: Bucket,
    /// Empty DATA frames that end no stream, in the connection's life (the h2 library takes
    /// [`MAX_EMPTY_DATA`]).
    empty_data: u32,
    resets: Bucket,
    /// The gateway's own frames, for the DATA frames among them.
    written: Frames,
    data_sent: u64,
    window_updates: u64,
    window_updates_per_data: u64,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

impl FrameWatch {
    /// `max_header_list`: the SETTINGS_MAX_HEADER_LIST_SIZE the gateway sends. The
    /// CONTINUATION limit is the config's, or the h2 library's where that is lower.
    pub(crate) fn new(cfg: &Http2, max_header_list: usize) -> FrameWatch {
        FrameWatch {
            preface: crate::http::h2::PREFACE.len(),
            read: Frames::default(),
            continuations: None,
            max_continuations: cfg.max_continuation_frames.min(library_continuations(
                max_header_list,
                cfg.max_frame_size as usize,
            )),
            control: Bucket::new(cfg.control_frames_per_second, cfg.control_frames_burst),
            empty_data: 0,
            resets: Bucket::new(cfg.resets_per_second, cfg.resets_burst),
            written: Frames::default(),
            data_sent: 0,
            window_updates: 0,
            window_updates_per_data: cfg.window_updates_per_data_frame.into(),
        }
    }

    /// Scans bytes as they arrive; a flood stops the scan.
    pub(crate) fn scan(&mut self, mut b: &[u8]) -> Result<(), Flood> {
        if self.preface > 0 {
            let k = self.preface.min(b.len());
            self.preface -= k;
            b = &b[k..];
        }
        let mut read = std::mem::take(&mut self.read);
        let r = read.walk(b, |h| self.frame(h));
        self.read = read;
        r
    }

    /// Counts the DATA frames in bytes the gateway sends (as they are handed to the socket).
    pub(crate) fn sent(&mut self, b: &[u8]) {
        let data = &mut self.data_sent;
        let _ = self.written.walk(b, |h| {
            if h[3] == DATA {
                *data += 1;
            }
            Ok::<(), ()>(())
        });
    }

    fn frame(&mut self, h: &[u8; 9]) -> Result<(), Flood> {
        let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let (kind, flags) = (h[3], h[4]);
        let control = match kind {
            // A PING ACK counts too: the gateway sends no PINGs, so every ACK a client sends
            // is unsolicited (and the h2 crate would log each one).
            PING => true,
            SETTINGS => flags & ACK == 0,
            PRIORITY => true,
            DATA => len == 0 && flags & END_STREAM == 0,
            _ => false,
        };
        if control && !self.control.take() {
            return Err(Flood::Control);
        }
        if kind == DATA && len == 0 && flags & END_STREAM == 0 {
            self.empty_data += 1;
            if self.empty_data > MAX_EMPTY_DATA {
                return Err(Flood::Control);
            }
        }
        if kind == RST_STREAM && !self.resets.take() {
            return Err(Flood::Reset);
        }
        if kind == WINDOW_UPDATE {
            // A client gives window back for the DATA it was sent (a stream's and the
            // connection's, each frame or less often): more than the DATA frames sent can call
            // for is a flood (as Envoy's max_inbound_window_update_frames_per_data_frame_sent).
            self.window_updates += 1;
            let allowed = WINDOW_UPDATES_BASE
                .saturating_add(self.data_sent.saturating_mul(self.window_updates_per_data));
            if self.window_updates > allowed {
                return Err(Flood::WindowUpdate);
            }
        }
        match kind {
            HEADERS | PUSH_PROMISE => {
                self.continuations = (flags & END_HEADERS == 0).then_some(0);
            }
            CONTINUATION => {
                if let Some(n) = self.continuations.as_mut() {
                    *n += 1;
                    if *n > self.max_continuations {
                        return Err(Flood::Continuation);
                    }
                }
                if flags & END_HEADERS != 0 {
                    self.continuations = None;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
