//! One request to an integration outside the proxy path (an external authorizer's event, a
//! WebSocket route's message): written whole, the answer read whole, over a pooled
//! connection (a fresh one when the pooled one turns out closed).

use std::net::SocketAddr;
use std::time::Instant;

use super::ctx::RequestCtx;
use super::target;
use crate::error::{Error, Kind};
use crate::shard::ShardSnap;
use crate::snapshot::Dest;
use crate::upstream::fetch::Fetched;
use crate::upstream::{checkin, checkout, connect_target, PoolCfg};

/// Sends `req` (head and body) to a target of `dest` and reads the answer: its status and
/// body (at most `max` bytes). `ctx` chooses the target where the upstream balances by
/// header.
pub(crate) async fn exchange(
    ss: &ShardSnap,
    dest: &Dest,
    ctx: &RequestCtx,
    peer: SocketAddr,
    req: Vec<u8>,
    max: usize,
) -> Result<(u16, Vec<u8>), String> {
    exchange_whole(ss, dest, ctx, peer, req, max)
        .await
        .map(|f| (f.status, f.body))
        .map_err(|e| e.context.into_owned())
}

/// [`exchange`], keeping the answer's head. A failure is a 502 (`BadGateway`) but a connect
/// that timed out, a 504 (`GatewayTimeout`), as on the proxy path.
pub(crate) async fn exchange_whole(
    ss: &ShardSnap,
    dest: &Dest,
    ctx: &RequestCtx,
    peer: SocketAddr,
    req: Vec<u8>,
    max: usize,
) -> Result<Fetched, Error> {
    let failed = |why: String| Error::upstream(Kind::BadGateway, why);
    // No target to take is a failed call (502), as any other.
    let t = target::select(ss, dest, ctx, peer, None)
        .map_err(|e| failed(e.context.into()))?
        .target;
    let cfg = PoolCfg::for_dest(ss, dest);
    let pooled = checkout(&t, &cfg, Instant::now());
    let was_pooled = pooled.is_some();
    let mut s = match pooled {
        Some(s) => s,
        None => connect_target(&t, cfg.connect_timeout).await?,
    };
    let first = async {
        s.write_all(req.clone())
            .await
            .map_err(|e| format!("write: {e}"))?;
        crate::upstream::fetch::read_answer(&mut s, max).await
    }
    .await;
    let answer = match first {
        Ok(a) => a,
        // Only a pooled connection that failed before any answer (closed by the other end
        // while idle) is retried: an answer that went wrong may mean the request was handled.
        Err(e) if was_pooled && (e.starts_with("write:") || e == "closed before answering") => {
            // The pooled connection had been closed by the other end: once more, fresh.
            s = connect_target(&t, cfg.connect_timeout).await?;
            s.write_all(req)
                .await
                .map_err(|e| failed(format!("write: {e}")))?;
            crate::upstream::fetch::read_answer(&mut s, max)
                .await
                .map_err(failed)?
        }
        Err(e) => return Err(failed(e)),
    };
    if answer.reusable {
        checkin(&t, &cfg, s);
    }
    Ok(Fetched {
        from: Some(t.addr),
        ..answer
    })
}
