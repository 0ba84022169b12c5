//! How far a WebSocket connection's socket receive may run ahead of its reader: the rest of
//! the frame coming in, which the client has announced in the frame's header and the
//! protocol layer buffers whole anyway.
//!
//! The session reads a few KiB at a time (an idle connection holds no more); on Tollgate's own
//! runtime each read's room also bounds what the socket's receive takes before its reader asks
//! again (`rt::net::TcpStream::want`), so a client that floods small messages while one waits
//! on its integration holds little in the gateway. A big frame read that way would arm a
//! receive per chunk; [`Ahead`] follows the frame headers in the bytes read and lets the
//! receive take the rest of the frame at once (a 32 KiB frame: one receive, not eight).

/// Follows RFC 6455 frame boundaries through the bytes read (headers only: the protocol layer
/// checks everything).
pub(super) struct Ahead {
    /// The biggest frame the connection takes (`limits.websocket_frame`): what a header
    /// announces past it is not waited for (the protocol layer refuses the frame).
    max_frame: u64,
    /// Payload bytes of the current frame not yet read.
    payload: u64,
    /// The header read so far (at most 14 bytes: 2, an extended length of 2 or 8, a mask of 4).
    head: [u8; 14],
    have: usize,
}

impl Ahead {
    pub(super) fn new(max_frame: u64) -> Ahead {
        Ahead {
            max_frame,
            payload: 0,
            head: [0; 14],
            have: 0,
        }
    }

    /// Follows `b`, the next bytes read.
    pub(super) fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.payload > 0 {
                let k = (b.len() as u64).min(self.payload);
                self.payload -= k;
                b = &b[k as usize..];
                continue;
            }
            self.head[self.have] = b[0];
            self.have += 1;
            b = &b[1..];
            if self.have >= 2 && self.have == header_len(self.head[1]) {
                self.payload = payload_len(&self.head[..self.have]);
                self.have = 0;
            }
        }
    }

    /// Bytes the client has announced and not sent yet: the rest of the frame coming in (or
    /// of its header), at most a whole frame of the biggest size taken.
    pub(super) fn announced(&self) -> u64 {
        if self.payload > 0 {
            self.payload.min(self.max_frame.saturating_add(14))
        } else if self.have >= 2 {
            (header_len(self.head[1]) - self.have) as u64
        } else {
            0
        }
    }
}

/// A frame header's length from its second byte (mask bit and 7-bit length).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7F {
        126 => u16::from_be_bytes([head[2], head[3]]) as u64,
        127 => u64::from_be_bytes(head[2..10].try_into().unwrap_or([0xFF; 8])),
        n => n as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::Ahead;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(7, len));
        f
    }

    #[test]
    fn a_big_frame_announces_its_rest_until_it_is_read() {
        let f = frame(32 << 10);
        let mut a = Ahead::new(1 << 20);
        a.feed(&f[..4096]);
        assert_eq!(a.announced(), f.len() as u64 - 4096);
        a.feed(&f[4096..f.len() - 1]);
        assert_eq!(a.announced(), 1);
        a.feed(&f[f.len() - 1..]);
        assert_eq!(a.announced(), 0);
    }

    #[test]
    fn frames_split_anywhere_are_followed() {
        let mut bytes = Vec::new();
        for len in [0, 5, 125, 126, 300, 65535, 65536, 70000, 3] {
            bytes.extend(frame(len));
        }
        for step in [1, 2, 3, 7, 13, 4096] {
            let mut a = Ahead::new(1 << 20);
            for c in bytes.chunks(step) {
                a.feed(c);
                assert!(a.announced() <= 70000 + 14);
            }
            assert_eq!(a.announced(), 0, "step {step}");
        }
        // A header cut after its extended length announces the mask still to come.
        let mut a = Ahead::new(1 << 20);
        a.feed(&frame(300)[..4]);
        assert_eq!(a.announced(), 4);
    }

    #[test]
    fn a_huge_announced_length_is_only_a_number() {
        let huge = [
            0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 9,
        ];
        let mut a = Ahead::new(32 << 10);
        a.feed(&huge);
        assert_eq!(
            a.announced(),
            (32 << 10) + 14,
            "at most a frame of the biggest size"
        );
        let mut a = Ahead::new(u64::MAX);
        a.feed(&huge);
        assert_eq!(a.announced(), u64::MAX - 1);
    }
}
