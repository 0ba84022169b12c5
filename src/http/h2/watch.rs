//! The flood watch under an HTTP/2 connection: every byte the client sends passes
//! [`FrameWatch`], which reads frame headers only and counts the frames that floods are made
//! of (PING, SETTINGS, PRIORITY, empty DATA, RST_STREAM, CONTINUATION). Past a limit the
//! transport ([`crate::http::pollio::PollIo`]) stops handing bytes to h2 and raises the flag
//! that makes the connection loop send GOAWAY ENHANCE_YOUR_CALM.

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

/// Follows the client's frame boundaries and counts what floods are made of.
pub(crate) struct FrameWatch {
    /// Client preface bytes still to skip.
    preface: usize,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload: usize,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATIONs).
    continuations: Option<u32>,
    max_continuations: u32,
    control: Bucket,
    resets: Bucket,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

impl FrameWatch {
    pub(crate) fn new(cfg: &Http2) -> FrameWatch {
        FrameWatch {
            preface: crate::http::h2::PREFACE.len(),
            head: [0; 9],
            head_len: 0,
            payload: 0,
            continuations: None,
            max_continuations: cfg.max_continuation_frames,
            control: Bucket::new(cfg.control_frames_per_second, cfg.control_frames_burst),
            resets: Bucket::new(cfg.resets_per_second, cfg.resets_burst),
        }
    }

    /// Scans bytes as they arrive; a flood stops the scan.
    pub(crate) fn scan(&mut self, mut b: &[u8]) -> Result<(), Flood> {
        while !b.is_empty() {
            if self.preface > 0 {
                let k = self.preface.min(b.len());
                self.preface -= k;
                b = &b[k..];
            } else if self.payload > 0 {
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
                    self.frame()?;
                }
            }
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<(), Flood> {
        let h = self.head;
        let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let (kind, flags) = (h[3], h[4]);
        self.payload = len;
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
        if kind == RST_STREAM && !self.resets.take() {
            return Err(Flood::Reset);
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
