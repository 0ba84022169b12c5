//! Fleet-wide limits through Redis: a node's shards lease tokens from Redis exactly as they
//! lease from a local bucket — one `EVAL` round trip per lease, never one per request.
//!
//! The GCRA state lives in one Redis key per limit (the TAT in microseconds, Redis's own
//! clock, so nodes need no clock agreement); quotas are one counter per key, plan and period.
//! Each shard keeps its own small pool of connections (no sharing, no locks). A call that
//! fails or takes longer than `cluster.timeout` is reported to the caller, which falls back
//! as `cluster.on_redis_error` says.
//!
//! Circuit breaker: after one failure (a refused connection, or a Redis that hangs and lets
//! the call time out) the shard stops calling Redis — every later call fails at once, so the
//! caller's fallback decides without waiting — and one background task pings Redis every
//! [`PROBE_INTERVAL`] until it answers; then calls go to Redis again.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::bucket::Rate;
use super::redis_io::RedisStream;

/// GCRA take on Redis: KEYS[1] the TAT (µs, with a fraction); ARGV interval µs (with a
/// fraction: a rate of 1,500,000 a second is 0.667 µs apart, which whole µs made 1), burst,
/// tokens wanted. Counts of intervals are rounded at a millionth (`7 * i / i` may be
/// 6.999999...).
/// Returns {granted, remaining, µs to wait (refused) or until full (granted)}.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = math.max(tat, now)
local used = base - now
local avail = math.floor((tau - used) / interval + 1e-6)
if avail < 0 then avail = 0 end
local g = math.min(want, avail)
if g <= 0 then return {0, 0, used + interval - tau} end
local new = base + g * interval
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.floor((new - now) / 1000) + 1000)
return {g, math.floor((tau - (new - now)) / interval + 1e-6), new - now}
"#;

/// The take script's arguments for `want` tokens of a limit of `rate`: the interval between
/// tokens (µs, with its fraction), the burst, and `want`.
pub(crate) fn take_args(rate: Rate, want: u64) -> [String; 3] {
    let interval_us = 1_000_000.0 / rate.rate.max(1) as f64;
    [
        format!("{interval_us:.9}"),
        rate.burst.to_string(),
        want.to_string(),
    ]
}

/// The fleet-wide take (a Lua script) and its arguments, for a test against a real Redis.
pub fn take_command(rate: u64, burst: u64, want: u64) -> (&'static str, [String; 3]) {
    (TAKE, take_args(Rate { rate, burst }, want))
}

/// Quota chunk: KEYS[1] the period's counter; ARGV limit, wanted, ttl seconds.
/// Returns {granted, remaining}.
const QUOTA: &str = r#"
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local g = math.min(want, limit - used)
if g <= 0 then return {0, 0} end
used = redis.call('INCRBY', KEYS[1], g)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {g, limit - used}
"#;

/// How often an open circuit pings Redis to see whether it answers again (1 s).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Where the fleet's Redis is now with `cluster.sentinels`: the primary the Sentinels last
/// named (kept current by the control plane; none until one of them has answered). Shared
/// by the shards on purpose, as the snapshot is: a shard reads the version (one relaxed load
/// per lease it takes from Redis) and locks only when it moved — at a failover.
#[derive(Default)]
pub(crate) struct Primary {
    /// 0 until a Sentinel has named one; one more at each move.
    version: std::sync::atomic::AtomicU64,
    #[allow(clippy::disallowed_types)]
    addr: std::sync::Mutex<Option<SocketAddr>>,
}

impl Primary {
    /// Where Redis is for `c`: `cluster.redis`, or the primary the Sentinels named.
    pub(crate) fn addr(&self, c: &crate::config::Cluster) -> Option<SocketAddr> {
        if c.sentinels.is_empty() {
            return Some(c.redis);
        }
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times the Sentinels' primary has moved (0: never named).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes the primary the Sentinels name; whether it moved.
    pub(crate) fn set(&self, a: SocketAddr) -> bool {
        let mut g = self.addr.lock().unwrap_or_else(|e| e.into_inner());
        let moved = *g != Some(a);
        if moved {
            *g = Some(a);
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        moved
    }
}

/// What a call says when the Sentinels have named no primary yet.
pub(crate) const NO_PRIMARY: &str = "no Redis primary: no Sentinel has named one yet";

/// How one command's exchange failed.
enum Exchange {
    /// The server closed the connection before answering anything.
    Closed,
    Failed(String),
}

/// A shard's connections to one Redis.
pub(crate) struct RedisPool {
    /// `None` while the Sentinels have named no primary: every call fails at once.
    pub addr: Option<SocketAddr>,
    /// With Sentinels: the `Primary` version `addr` was read at (0 for a fixed server).
    pub version: u64,
    pub timeout: Duration,
    idle: RefCell<Vec<RedisStream>>,
    /// The circuit is open: calls fail at once while the probe waits for Redis to answer.
    open: Cell<bool>,
    /// `AUTH` as each new connection sends it first (`cluster.password_env`).
    pub auth: Option<std::sync::Arc<Vec<u8>>>,
    /// TLS to Redis (`rediss://`).
    pub tls: Option<crate::tls::client::UpTls>,
}

/// Encodes a command as a RESP array of bulk strings.
pub(crate) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let end = buf[from..].windows(2).position(|w| w == b"\r\n")? + from;
    Some((&buf[from..end], end + 2))
}

fn int(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad integer in Redis reply".to_string())
}

/// The most elements a reply of ours holds (the scripts answer three or four numbers): a
/// longer array is no answer of theirs, whatever it claims.
const MAX_ELEMENTS: i64 = 16;
/// The most bytes a reply may take: a server that sends more without ending it is not
/// answering one of these commands.
const MAX_REPLY: usize = 4096;

/// Parses an integer or an array of integers. `Ok(None)`: incomplete.
pub(crate) fn parse_reply(buf: &[u8]) -> Result<Option<Vec<i64>>, String> {
    let Some((first, mut at)) = line(buf, 0) else {
        return Ok(None);
    };
    match first.first() {
        Some(b'-') => Err(format!("Redis: {}", String::from_utf8_lossy(&first[1..]))),
        Some(b':') => Ok(Some(vec![int(&first[1..])?])),
        // A status reply (`+PONG`, `+OK`) carries no number.
        Some(b'+') => Ok(Some(Vec::new())),
        Some(b'*') => {
            let n = int(&first[1..])?;
            if !(0..=MAX_ELEMENTS).contains(&n) {
                return Err(format!("unexpected Redis reply: an array of {n} elements"));
            }
            let mut out = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let Some((l, next)) = line(buf, at) else {
                    return Ok(None);
                };
                at = next;
                match l.first() {
                    Some(b':') => out.push(int(&l[1..])?),
                    _ => return Err("unexpected Redis reply element".into()),
                }
            }
            Ok(Some(out))
        }
        _ => Err("unexpected Redis reply".into()),
    }
}

impl RedisPool {
    pub(crate) fn new(
        addr: Option<SocketAddr>,
        version: u64,
        timeout: Duration,
        auth: Option<std::sync::Arc<Vec<u8>>>,
        tls: Option<crate::tls::client::UpTls>,
    ) -> RedisPool {
        RedisPool {
            addr,
            version,
            timeout,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(false),
            auth,
            tls,
        }
    }

    /// The address, for messages.
    fn at(&self) -> String {
        self.addr
            .map_or_else(|| "(no primary yet)".to_string(), |a| a.to_string())
    }

    /// Opens the circuit and starts the probe that closes it once Redis answers a PING.
    fn trip(self: &Rc<Self>) {
        if self.open.replace(true) {
            return;
        }
        self.idle.borrow_mut().clear();
        let pool = self.clone();
        crate::driver::spawn(async move {
            loop {
                crate::driver::time::sleep(PROBE_INTERVAL).await;
                if Rc::strong_count(&pool) == 1 {
                    return; // the shard replaced this pool (a reload moved Redis)
                }
                let ping = pool.call(command(&[b"PING"]));
                if let Ok(Ok(_)) = crate::driver::time::timeout(pool.timeout, ping).await {
                    pool.open.set(false);
                    return;
                }
            }
        });
    }

    async fn call(&self, cmd: Vec<u8>) -> Result<Vec<i64>, String> {
        // A pooled connection the server closed while it idled (Redis's `timeout`, a proxy's
        // idle limit, a restart) is dropped, and the command sent once more on a new one:
        // that is no outage. One the server closed before answering anything is retried
        // too: Redis closes clients for idling, so it had not run the command. A server that
        // ran it and died before answering would count it twice — a lease or quota chunk
        // taken twice, which only ever refuses more.
        loop {
            let pooled = self.pooled();
            let was_pooled = pooled.is_some();
            let s = match pooled {
                Some(s) => s,
                None => {
                    let addr = self.addr.ok_or(NO_PRIMARY)?;
                    let s = RedisStream::connect(addr, self.tls.as_ref()).await?;
                    if let Some(a) = &self.auth {
                        // Authenticated first; the connection then waits idle for the
                        // command (taken at once, below).
                        match self.exchange(s, a.to_vec()).await {
                            Ok(_) => continue,
                            Err(Exchange::Closed) => {
                                return Err("Redis closed the connection".into())
                            }
                            Err(Exchange::Failed(e)) => {
                                return Err(format!("authenticating to Redis: {e}"))
                            }
                        }
                    }
                    s
                }
            };
            match self.exchange(s, cmd.clone()).await {
                Err(Exchange::Closed) if was_pooled => continue,
                Err(Exchange::Closed) => return Err("Redis closed the connection".into()),
                Err(Exchange::Failed(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// An idle connection that nothing arrived on while it waited (no close, no stray bytes).
    fn pooled(&self) -> Option<RedisStream> {
        let mut idle = self.idle.borrow_mut();
        while let Some(s) = idle.pop() {
            if !s.has_unread() {
                return Some(s);
            }
        }
        None
    }

    async fn exchange(&self, mut s: RedisStream, cmd: Vec<u8>) -> Result<Vec<i64>, Exchange> {
        s.write_all(cmd)
            .await
            .map_err(|e| Exchange::Failed(format!("write to Redis: {e}")))?;
        let mut buf = BytesMut::with_capacity(256);
        loop {
            if let Some(v) = parse_reply(&buf).map_err(Exchange::Failed)? {
                self.idle.borrow_mut().push(s);
                return Ok(v);
            }
            if buf.len() > MAX_REPLY {
                return Err(Exchange::Failed(format!(
                    "unexpected Redis reply: over {MAX_REPLY} bytes"
                )));
            }
            match s.read_into(&mut buf).await {
                Ok(0) if buf.is_empty() => return Err(Exchange::Closed),
                Ok(0) => {
                    return Err(Exchange::Failed(
                        "Redis closed the connection mid-reply".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(Exchange::Closed)
                }
                Err(e) => return Err(Exchange::Failed(format!("read from Redis: {e}"))),
            }
        }
    }

    async fn eval(
        self: &Rc<Self>,
        script: &str,
        key: &str,
        args: &[i64],
    ) -> Result<Vec<i64>, String> {
        let nums: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.eval_args(script, key, &nums).await
    }

    /// [`Self::eval`] with its arguments as written (a number with a fraction).
    async fn eval_args(
        self: &Rc<Self>,
        script: &str,
        key: &str,
        nums: &[String],
    ) -> Result<Vec<i64>, String> {
        if self.open.get() {
            return Err(format!(
                "Redis {} is not answering (checked every {:?})",
                self.at(),
                PROBE_INTERVAL
            ));
        }
        let mut parts: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), b"1", key.as_bytes()];
        parts.extend(nums.iter().map(|n| n.as_bytes()));
        let r = match crate::driver::time::timeout(self.timeout, self.call(command(&parts))).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "Redis {} did not answer within {:?}",
                self.at(),
                self.timeout
            )),
        };
        // A Redis error reply is an answer; no reply at all opens the circuit.
        if let Err(e) = &r {
            if !e.starts_with("Redis: ") {
                self.trip();
            }
        }
        r
    }

    /// Takes up to `want` tokens of the fleet-wide limit `name`: (granted, remaining, ns to
    /// wait when refused or until full when granted).
    pub(crate) async fn take(
        self: &Rc<Self>,
        name: &str,
        rate: Rate,
        want: u64,
    ) -> Result<(u64, u64, u64), String> {
        let args = take_args(rate, want);
        let v = self
            .eval_args(TAKE, &format!("tollgate:{name}"), &args)
            .await?;
        match v.as_slice() {
            [g, rem, us] => Ok((
                (*g).max(0) as u64,
                (*rem).max(0) as u64,
                ((*us).max(0) as u64).saturating_mul(1000),
            )),
            _ => Err("unexpected Redis reply to the lease script".into()),
        }
    }

    /// Takes up to `want` requests of a quota period (`key` from [`quota_name`]): (granted,
    /// remaining).
    pub(crate) async fn quota(
        self: &Rc<Self>,
        key: &str,
        limit: u64,
        want: u64,
        ttl_s: u64,
    ) -> Result<(u64, u64), String> {
        let v = self
            .eval(
                QUOTA,
                &format!("tollgate:quota:{key}"),
                &[limit as i64, want as i64, ttl_s as i64],
            )
            .await?;
        match v.as_slice() {
            [g, rem] => Ok(((*g).max(0) as u64, (*rem).max(0) as u64)),
            _ => Err("unexpected Redis reply to the quota script".into()),
        }
    }
}

/// The fleet-wide id of a key's quota on a plan: the same on every node and shard.
pub(crate) fn quota_id(plan: &str, key: &str) -> u64 {
    ahash::RandomState::with_seeds(11, 22, 33, 44).hash_one((key, plan, None::<usize>))
        ^ 0x9e37_79b9_7f4a_7c15u64.rotate_left(7)
}

/// The name of a quota counter for a period (Redis key `tollgate:quota:{name}`).
pub(crate) fn quota_name(plan: &str, id: u64, period: i64) -> String {
    format!("{plan}:{id}:{period}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn replies_parse_or_wait_for_more() {
        assert_eq!(
            parse_reply(b"*3\r\n:5\r\n:10\r\n:0\r\n"),
            Ok(Some(vec![5, 10, 0]))
        );
        assert_eq!(parse_reply(b"*3\r\n:5\r\n:1"), Ok(None));
        assert_eq!(parse_reply(b"+PONG\r\n"), Ok(Some(vec![])));
        assert_eq!(parse_reply(b":7\r\n"), Ok(Some(vec![7])));
        assert!(parse_reply(b"-ERR nope\r\n").unwrap_err().contains("nope"));
        assert_eq!(parse_reply(b""), Ok(None));
        // Counts no reply of ours has are refused before anything is reserved for them.
        for bad in [
            &b"*576460752303423488\r\n"[..],
            b"*9223372036854775807\r\n",
            b"*-1\r\n",
            b"*17\r\n",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
