//! The `http` integration: forward one request to an upstream over a pooled HTTP/1.1
//! connection and stream the answer back.
//!
//! Bodies stream both ways: bytes read from one socket are written to the other from the
//! buffer they arrived in (`BytesMut::split_to(..).freeze()`), so nothing is copied and
//! nothing is held beyond one read. A chunked body's framing passes through unchanged while a
//! decoder checks it and counts it against `limits.max_body`.
//!
//! Failures before the answer began become 502/503/504 via the caller; failures after it
//! began can only cut the client connection, which is what the client then sees.
//! A request whose body is already in memory (no body, or a small one that arrived with the
//! head) can be replayed: once on another target when the connection could not be opened,
//! and once on a fresh connection when a pooled one turns out to be closed — for idempotent
//! methods only.

mod exchange;
pub(crate) use exchange::BodyClock;
mod relay;
mod respond;
mod rewrite;

pub(crate) use exchange::*;
pub(crate) use relay::*;
pub(crate) use respond::*;
pub use rewrite::*;

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, Splitable};

use crate::config::Limits;
use crate::error::{Error, Kind};
use crate::gateway::ctx::{BodyState, RequestCtx};
use crate::gateway::target::select;
use crate::gateway::Next;
use crate::http::body::{reframe, ChunkError, ChunkedDecoder};
use crate::http::conn::{write_all, Conn, READ_CHUNK};
use crate::http::h1::{self, Framing, HeadError, ResponseHead};
use crate::http::write::{connection_header, status_line};
use crate::http::{has_token, name_eq};
use crate::shard::{Shard, ShardSnap, TargetLocal};
use crate::snapshot::HttpIntegration;
use crate::syntax::path::encode_segment;
use crate::syntax::template::Escape;
use crate::syntax::Method;
use crate::upstream::{
    checkin, checkout, connect_target, record_failure, record_success, PoolCfg, UpStream,
};

/// Largest upstream response head accepted (then 502).
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Largest single read while streaming a big body: fewer, larger reads and writes.
const MAX_READ: usize = 256 << 10;
/// A body that arrived with its head is copied into the upstream write up to this size, so
/// head and body leave in one write.
const COALESCE_BODY: usize = 64 << 10;

/// Forwards the request and streams the answer. `Err` only before any answer was written.
pub(crate) async fn forward(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
) -> Result<Next, Error> {
    let ex = send(ss, conn, ctx, integ, &Extra::default()).await?;
    answer(shard, conn, ctx, integ, ex, None).await
}
