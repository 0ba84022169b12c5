//! Sending DATA under HTTP/2 flow control, written once for both sides: the client-facing
//! streams ([`super::stream`]) and the streams to `protocol = "h2"` upstreams.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use bytes::Bytes;
use h2::SendStream;

/// Where DATA goes: an HTTP/2 stream's sending side, which may be shared (a client-facing
/// stream's is also watched for the client's RST_STREAM) or gone.
pub(crate) trait DataSink {
    /// Runs `f` on the stream; `None` when it is gone (reset, or already ended).
    fn with<R>(&mut self, f: impl FnOnce(&mut SendStream<Bytes>) -> R) -> Option<R>;
    /// Called once the stream's last frame is sent.
    fn ended(&mut self) {}
}

impl DataSink for SendStream<Bytes> {
    fn with<R>(&mut self, f: impl FnOnce(&mut SendStream<Bytes>) -> R) -> Option<R> {
        Some(f(self))
    }
}

/// Sends `data` as the peer's window allows (waiting for capacity, taking what is already
/// granted first), ending the stream with the last frame when `end` — with an empty frame
/// when `data` is empty. `err` maps h2's errors to what the caller reports.
pub(crate) async fn send_data(
    sink: &mut impl DataSink,
    mut data: Bytes,
    end: bool,
    err: fn(h2::Error) -> io::Error,
) -> io::Result<()> {
    let gone = || io::Error::from(io::ErrorKind::BrokenPipe);
    loop {
        if data.is_empty() {
            if end {
                if let Some(r) = sink.with(|s| s.send_data(Bytes::new(), true)) {
                    r.map_err(err)?;
                }
                sink.ended();
            }
            return Ok(());
        }
        let want = data.len();
        let cap = poll_fn(|cx| {
            let polled = sink.with(|s| {
                if s.capacity() >= want.min(16 << 10) {
                    return Poll::Ready(Some(Ok(s.capacity())));
                }
                s.reserve_capacity(want);
                s.poll_capacity(cx)
            });
            match polled {
                None | Some(Poll::Ready(None)) => Poll::Ready(Err(gone())),
                Some(Poll::Ready(Some(Ok(n)))) => Poll::Ready(Ok(n)),
                Some(Poll::Ready(Some(Err(e)))) => Poll::Ready(Err(err(e))),
                Some(Poll::Pending) => Poll::Pending,
            }
        })
        .await?;
        if cap == 0 {
            continue;
        }
        let part = data.split_to(cap.min(data.len()));
        let last = end && data.is_empty();
        sink.with(|s| s.send_data(part, last))
            .ok_or_else(gone)?
            .map_err(err)?;
        if last {
            sink.ended();
            return Ok(());
        }
    }
}
