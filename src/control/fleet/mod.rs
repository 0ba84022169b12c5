//! A fleet's run-time objects through Redis (`[cluster] redis`): Redis is their source of
//! truth, each node's state store its local copy.
//!
//! Every change is one entry of a Redis stream (`tollgate:fleet:changes`), written by a Lua
//! script that, in the same step, sets or deletes the object in a hash
//! (`tollgate:fleet:objects`) — so the stream orders the changes and the hash is the current
//! state. Why a stream rather than pub/sub or keyspace events: it is both the notification
//! (`XREAD BLOCK` returns as soon as an entry is added) and the log a node catches up from
//! after a restart or a partition (it reads from the last entry it applied, kept in its
//! store), with nothing lost while it was away; pub/sub and keyspace events are fire and forget.
//! The stream keeps the last [`MAX_CHANGES`] entries; a node whose position is older than
//! what was trimmed reads the hash whole instead (as a node that never synced does).
//!
//! Each node applies every entry in stream order, its own included: changes made on two nodes
//! at once end the same everywhere (the later entry wins). An admin write goes to Redis first
//! and answers 503 when Redis is unreachable (no node changes alone); the node then applies it
//! at once (unless its sync already went past it), so the caller reads its own write.
//! While Redis is unreachable nodes serve from their copy, admin reads say they may be stale,
//! and the sync retries every second.

mod apply;
mod catch_up;
mod keys;
pub(crate) mod resp;
pub(crate) mod sentinel;
mod usage;
pub(crate) use usage::push_last_usage;
pub(crate) mod ws;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{StoredAccessKey, StoredKey};
use super::{Control, OpError};
use catch_up::catch_up;
pub(crate) use keys::key_expects;
use resp::{RedisConn, Resp};

const STREAM: &str = "tollgate:fleet:changes";
const OBJECTS: &str = "tollgate:fleet:objects";
/// The id of the newest entry trimmed off the stream.
const TRIMMED: &str = "tollgate:fleet:trimmed";
/// Entries the stream keeps.
pub(crate) const MAX_CHANGES: u64 = 100_000;
/// How long the sync waits for new entries per call, and waits after a failure.
const POLL: Duration = Duration::from_secs(1);
/// Where a node keeps its position in the stream, in its store's run-time objects.
pub(super) const POSITION: &str = "fleet/position";
/// A random name the fleet's Redis holds while it keeps its data: a node that finds another
/// one (Redis restarted empty) sends what it holds, as a node that never synced does.
const EPOCH: &str = "tollgate:fleet:epoch";
/// Where a node keeps the epoch it synced with.
pub(super) const LOCAL_EPOCH: &str = "fleet/epoch";
/// Where a node keeps its name in the fleet's usage hashes.
pub(super) const USAGE_ID: &str = "fleet/usage_id";

/// Writes changes: KEYS stream, objects, trimmed; ARGV max length, then per change: how many
/// objects it writes, (field, object JSON or '' to delete, what it must be before: '' any,
/// 'n' absent, 'v' the next argument, that argument) per object, and the change's JSON (a
/// command writes no object). Nothing is written when one object is not what it must be
/// (`CONFLICT field`). Returns the last entry's id.
const COMMIT: &str = r#"
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    local mode = ARGV[i + 2]
    if mode ~= '' then
      local cur = redis.call('HGET', KEYS[2], ARGV[i])
      if (mode == 'n' and cur) or (mode == 'v' and cur ~= ARGV[i + 3]) then
        return redis.error_reply('CONFLICT ' .. ARGV[i])
      end
    end
    i = i + 4
  end
  i = i + 1
end
local id
i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[2], ARGV[i])
    else redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
    i = i + 4
  end
  id = redis.call('XADD', KEYS[1], '*', 'c', ARGV[i])
  i = i + 1
end
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  redis.call('SET', KEYS[3], gone[#gone][1])
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
end
return id
"#;

/// Objects read per call of a full sync (`HSCAN`): a large fleet does not hold Redis up.
const SCAN_COUNT: &str = "1000";

/// One change to a run-time object, as every node applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    KeyPut {
        key: StoredKey,
    },
    KeyDelete {
        id: String,
        /// The key's value hash: its `keyhash/` field goes with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    /// A SigV4 access key (its secret sealed: every node needs the same secrets key).
    AccessKeyPut {
        key: StoredAccessKey,
    },
    AccessKeyDelete {
        id: String,
    },
    /// A command: every node sets its count of a key's current quota period (the fleet's
    /// counter in Redis is set before).
    QuotaSet {
        plan: String,
        key: String,
        used: u64,
        /// The quota period it was set in: a node applying it later, in another period,
        /// leaves its count alone.
        #[serde(default)]
        period: i64,
    },
    /// A command: every node flushes its copy of a stage's cache, or purges one path (or
    /// every path under a prefix).
    CacheFlush {
        api: String,
        stage: String,
        path: Option<String>,
        #[serde(default)]
        prefix: bool,
    },
    /// Run-time APIs, deployments, stages (with their canaries) and domain mappings: what
    /// one admin call wrote, by stored key (`api/{name}`, `deployment/{api}/{id}`,
    /// `stage/{api}/{name}`, `mapping/{id}`), as JSON or `None` to delete. One entry, so
    /// every node applies the call whole.
    Objects {
        writes: std::collections::BTreeMap<String, Option<String>>,
    },
}

impl Change {
    /// Whether it acts rather than changes an object.
    fn is_command(&self) -> bool {
        matches!(self, Change::CacheFlush { .. } | Change::QuotaSet { .. })
    }

    /// Its fields in the objects hash, each with the object's JSON ('' deletes it).
    fn objects(&self) -> Vec<(String, String)> {
        match self {
            // With the id its value's hash names: two keys of one value (made on two nodes at
            // once) cannot both be written.
            Change::KeyPut { key } => vec![
                (
                    format!("key/{}", key.id),
                    serde_json::to_string(key).unwrap_or_default(),
                ),
                (format!("{KEY_HASH}{}", key.hash), key.id.clone()),
            ],
            Change::KeyDelete { id, hash } => {
                let mut v = vec![(format!("key/{id}"), String::new())];
                if let Some(h) = hash {
                    v.push((format!("{KEY_HASH}{h}"), String::new()));
                }
                v
            }
            Change::AccessKeyPut { key } => vec![(
                format!("access/{}", key.id),
                serde_json::to_string(key).unwrap_or_default(),
            )],
            Change::AccessKeyDelete { id } => vec![(format!("access/{id}"), String::new())],
            Change::Objects { writes } => writes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect(),
            Change::CacheFlush { .. } | Change::QuotaSet { .. } => Vec::new(),
        }
    }
}

/// The objects hash's field naming the key that has a value (by its SHA-256, hex).
pub(crate) const KEY_HASH: &str = "keyhash/";

/// What an object must be in the fleet's hash for a write to go through (fields without one
/// are written whatever they hold).
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    Absent,
    Is(String),
}

/// Expectations by field of the objects hash.
pub(crate) type Expects = ahash::AHashMap<String, Expect>;

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId(u64, u64);

impl EntryId {
    pub(crate) fn parse(s: &str) -> Option<EntryId> {
        let (a, b) = s.split_once('-')?;
        Some(EntryId(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A usage plan's name, a key's id and a day.
pub(crate) type PlanKeyDay = (Arc<str>, Arc<str>, u64);

/// Whether a failed call surely did not run: Redis had closed the connection, or the command
/// could not be written (a timeout may have run it).
fn never_ran(e: &str) -> bool {
    e.contains("closed") || e.contains("write")
}

/// A node's link to the fleet's Redis.
pub(crate) struct Link {
    /// Where Redis is: `shared.redis_primary` for this `cluster`.
    shared: Arc<crate::shard::Shared>,
    cluster: crate::config::Cluster,
    /// TLS to Redis (`rediss://`), as compiled at start (a change needs a restart).
    tls: Option<crate::tls::client::UpTls>,
    timeout: Duration,
    /// Since when Redis has been unreachable (ms since the epoch); 0 while it answers.
    down_since: Cell<u64>,
    /// The last entry this node applied.
    pub applied: Cell<Option<EntryId>>,
    /// A connection for admin writes, kept between them, and where it goes.
    conn: RefCell<Option<(SocketAddr, RedisConn)>>,
    /// The fleet epoch this node last synced with.
    epoch: RefCell<Option<String>>,
    /// Per plan, key and day: the count of it this node has sent the fleet.
    pushed: RefCell<ahash::AHashMap<PlanKeyDay, u64>>,
    /// The day counts this process found in its store at its start, and, once it found its
    /// state directory was another node's copy, those counts as theirs: left out of what it
    /// sends under its new name.
    found: RefCell<Option<ahash::AHashMap<PlanKeyDay, u64>>>,
    copied: RefCell<ahash::AHashMap<PlanKeyDay, u64>>,
    /// This node's name in the fleet's usage hashes, kept in its store (a restarted node
    /// sends its counts under the same name: they replace, not add to, what it sent before).
    usage_id: RefCell<String>,
    /// This process's claim on `usage_id` in Redis (see `usage::claimed`): its random value,
    /// when it was last renewed, since when another holder has refused it, and whether this
    /// process gave its name up (to a successor that took over).
    claim_token: String,
    claimed_at: Cell<Option<std::time::Instant>>,
    refused_since: Cell<Option<std::time::Instant>>,
    usage_given_up: Cell<bool>,
    /// `@connections` calls sent to other nodes, by number, waiting for their answers.
    waiters: RefCell<ahash::AHashMap<u64, flume::Sender<(u16, String)>>>,
    /// Objects (`key/ID`, `stage/API/NAME`...) this node wrote and applied at once, with
    /// the stream entry of its write, until its sync reads past that entry (see
    /// `apply::OwnWrites`).
    own: apply::OwnWrites,
    next_req: Cell<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Link {
    pub(crate) fn new(
        shared: Arc<crate::shard::Shared>,
        cluster: crate::config::Cluster,
        tls: Option<crate::tls::client::UpTls>,
        applied: Option<EntryId>,
        epoch: Option<String>,
        usage_id: String,
        found: ahash::AHashMap<PlanKeyDay, u64>,
    ) -> Link {
        Link {
            shared,
            // Admin writes and full syncs are not on a request's path: room for a busy Redis.
            timeout: cluster.timeout.max(Duration::from_secs(2)),
            cluster,
            tls,
            down_since: Cell::new(0),
            applied: Cell::new(applied),
            conn: RefCell::new(None),
            epoch: RefCell::new(epoch),
            pushed: Default::default(),
            found: RefCell::new(Some(found)),
            copied: Default::default(),
            usage_id: RefCell::new(usage_id),
            claim_token: crate::auth::random_token(16)
                .unwrap_or_else(|_| format!("{:x}", now_ms())),
            claimed_at: Cell::new(None),
            refused_since: Cell::new(None),
            usage_given_up: Cell::new(false),
            waiters: Default::default(),
            own: Default::default(),
            next_req: Cell::new(0),
        }
    }

    /// Where the fleet's Redis is now (with Sentinels: the primary they last named).
    pub(crate) fn addr(&self) -> Result<SocketAddr, String> {
        self.shared
            .redis_primary
            .addr(&self.cluster)
            .ok_or_else(|| crate::throttle::redis::NO_PRIMARY.to_string())
    }

    /// The fleet's Redis, as messages name it.
    pub(crate) fn name(&self) -> String {
        let c = &self.cluster;
        match (c.sentinels.is_empty(), self.addr()) {
            (true, _) => c.redis.to_string(),
            (false, Ok(a)) => format!("{a}, the Sentinels' primary of {:?}", c.sentinel_master),
            (false, Err(_)) => format!(
                "the Sentinels' primary of {:?}, not named yet",
                c.sentinel_master
            ),
        }
    }

    /// The Sentinels that name the primary (none: one fixed server).
    pub(crate) fn sentinels(&self) -> &[SocketAddr] {
        &self.cluster.sentinels
    }

    /// A new connection to where Redis is now.
    pub(crate) async fn connect(&self) -> Result<(SocketAddr, RedisConn), String> {
        let at = self.addr()?;
        let mut c = RedisConn::connect(at, self.tls.as_ref(), self.timeout).await?;
        c.auth(
            self.cluster.auth.as_deref().map(Vec::as_slice),
            self.timeout,
        )
        .await?;
        Ok((at, c))
    }

    /// Whether a connection to `at` no longer goes to the fleet's Redis (the Sentinels named
    /// another primary).
    pub(crate) fn moved(&self, at: SocketAddr) -> bool {
        self.addr().is_ok_and(|now| now != at)
    }

    fn up(&self, ok: bool) {
        if ok {
            if self.down_since.get() != 0 {
                tracing::info!(redis = %self.name(), "fleet: Redis answers again");
            }
            self.down_since.set(0);
        } else if self.down_since.get() == 0 {
            tracing::warn!(redis = %self.name(), "fleet: Redis is unreachable; serving from the local copy, admin writes refused");
            self.down_since.set(now_ms());
        }
    }

    /// A catch-up that failed (a Redis that refuses the node's commands, answers garbage):
    /// said once per outage, as one that does not answer is, not at every retry.
    fn catch_up_failed(&self, e: &str) {
        if self.down_since.get() == 0 {
            tracing::warn!(redis = %self.name(), error = %e, "fleet: catching up failed");
        } else {
            tracing::debug!(redis = %self.name(), error = %e, "fleet: catching up failed");
        }
        self.up(false);
    }

    /// Since when (ms since the epoch) Redis has been unreachable, if it is.
    pub(crate) fn down_since(&self) -> Option<u64> {
        Some(self.down_since.get()).filter(|t| *t != 0)
    }

    /// One command on the connection kept for admin calls (opened when there is none). A
    /// kept connection Redis closed meanwhile (it restarted) gets the command once more,
    /// fresh: only when it surely did not run (a script runs whole or not at all).
    async fn call(&self, args: &[&[u8]]) -> Result<Resp, String> {
        let kept = self.conn.borrow_mut().take();
        let kept = kept.filter(|(at, _)| !self.moved(*at));
        let reused = kept.is_some();
        let (mut at, mut conn) = match kept {
            Some(c) => c,
            None => self.connect().await?,
        };
        let r = match conn.call(args, self.timeout).await {
            Ok(r) => r,
            Err(e) if reused && never_ran(&e) => {
                (at, conn) = self.connect().await?;
                conn.call(args, self.timeout).await?
            }
            Err(e) => return Err(e),
        };
        *self.conn.borrow_mut() = Some((at, conn));
        Ok(r)
    }

    /// Sets a fleet counter (`tollgate:quota:{name}`), living `ttl_s` seconds.
    pub(crate) async fn set_quota(&self, name: &str, used: u64, ttl_s: u64) -> Result<(), String> {
        let (key, used, ttl) = (
            format!("tollgate:quota:{name}"),
            used.to_string(),
            ttl_s.to_string(),
        );
        let args: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            used.as_bytes(),
            b"EX",
            ttl.as_bytes(),
        ];
        match self.call(&args).await? {
            Resp::Status(_) => Ok(()),
            other => Err(format!("unexpected reply to SET: {other:?}")),
        }
    }

    /// Publishes a message on a channel: how many subscribers received it.
    pub(crate) async fn publish(&self, channel: &str, payload: &str) -> Result<i64, String> {
        match self
            .call(&[b"PUBLISH", channel.as_bytes(), payload.as_bytes()])
            .await?
        {
            Resp::Int(n) => Ok(n),
            other => Err(format!("unexpected reply to PUBLISH: {other:?}")),
        }
    }

    /// Writes `changes` to the fleet; the id of the last one. Nothing is written when an
    /// object of `expect` is not what it must be (`Err` "Redis: CONFLICT {field}").
    async fn write(&self, changes: &[Change], expect: &Expects) -> Result<EntryId, String> {
        let max = MAX_CHANGES.to_string();
        let mut args: Vec<Vec<u8>> = vec![
            b"EVAL".to_vec(),
            COMMIT.as_bytes().to_vec(),
            b"3".to_vec(),
            STREAM.into(),
            OBJECTS.into(),
            TRIMMED.into(),
            max.into_bytes(),
        ];
        for c in changes {
            let objects = c.objects();
            args.push(objects.len().to_string().into_bytes());
            for (field, object) in objects {
                let (mode, before) = match expect.get(&field) {
                    None => ("", ""),
                    Some(Expect::Absent) => ("n", ""),
                    Some(Expect::Is(v)) => ("v", v.as_str()),
                };
                let before = before.as_bytes().to_vec();
                args.push(field.into_bytes());
                args.push(object.into_bytes());
                args.push(mode.as_bytes().to_vec());
                args.push(before);
            }
            args.push(serde_json::to_vec(c).map_err(|e| e.to_string())?);
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = self.call(&refs).await?;
        reply
            .text()
            .and_then(EntryId::parse)
            .ok_or_else(|| format!("unexpected reply to the fleet write: {reply:?}"))
    }
}

/// Makes `changes`: through the fleet's Redis first when there is one (503 when it cannot be
/// reached: nothing changes anywhere), then on this node.
/// Returns how many cache entries cache commands removed on this node.
pub(crate) async fn commit(
    ctl: &Rc<RefCell<Control>>,
    changes: Vec<Change>,
) -> Result<u64, OpError> {
    commit_expecting(ctl, changes, &Expects::default()).await
}

/// [`commit`], refused with 409 (and nothing changed) when an object of `expect` is not what
/// it must be in the fleet: another node changed it since this node's copy.
pub(crate) async fn commit_expecting(
    ctl: &Rc<RefCell<Control>>,
    changes: Vec<Change>,
    expect: &Expects,
) -> Result<u64, OpError> {
    let link = ctl.borrow().fleet.clone();
    let Some(link) = link else {
        return ctl.borrow_mut().apply_changes(&changes, None);
    };
    if changes.iter().all(Change::is_command) {
        // A command (a cache flush) is done here first — what it removed is the answer —
        // then told to the others (doing it twice here later removes nothing more).
        let n = ctl.borrow_mut().apply_changes(&changes, None)?;
        return match link.write(&changes, expect).await {
            Ok(_) => {
                link.up(true);
                Ok(n)
            }
            Err(e) => {
                link.up(false);
                Err(OpError(
                    503,
                    format!(
                        "done on this node ({n} cache entries removed), but the fleet's Redis ({}) cannot be reached ({e}): the other nodes were not told; try again when it is back",
                        link.name()
                    ),
                ))
            }
        };
    }
    match link.write(&changes, expect).await {
        Err(e) if e.starts_with("Redis: CONFLICT ") => {
            link.up(true);
            let field = &e["Redis: CONFLICT ".len()..];
            if field.starts_with(KEY_HASH) {
                return Err(OpError(
                    409,
                    "value: another key already has this value (made on another node): nothing was changed".into(),
                ));
            }
            Err(OpError(
                409,
                format!(
                    "{field} was changed on another node since this node's copy (it catches up within a second): nothing was changed; read it again and retry"
                ),
            ))
        }
        Ok(id) => {
            link.up(true);
            // Unless the sync already applied it (and maybe later entries over it).
            if link.applied.get().is_none_or(|a| a < id) {
                let r = ctl.borrow_mut().apply_changes(&changes, None);
                if r.is_ok() {
                    link.own.note(id, &changes);
                }
                return r;
            }
            Ok(0)
        }
        Err(e)
            if never_ran(&e)
                || e.starts_with("connecting")
                || e.starts_with("authenticating")
                || e.starts_with("Redis: ")
                || e == crate::throttle::redis::NO_PRIMARY =>
        {
            link.up(false);
            tracing::warn!(error = %e, "fleet write refused: Redis unreachable");
            Err(OpError(
                503,
                format!(
                    "the fleet's Redis ({}) cannot be reached ({e}): nothing was changed; try again when it is back",
                    link.name()
                ),
            ))
        }
        Err(e) => {
            // Sent, but no answer came: Redis may have made the change (every node then
            // applies it from the stream) or not.
            link.up(false);
            tracing::warn!(error = %e, "fleet write unanswered");
            Err(OpError(
                503,
                format!(
                    "the fleet's Redis ({}) did not answer ({e}): the change may or may not have been made; read it back before trying again",
                    link.name()
                ),
            ))
        }
    }
}

/// Keeps this node's copy in step with the fleet, and adds this node's usage to the fleet's,
/// for as long as the control plane runs.
pub(crate) async fn sync(ctl: Rc<RefCell<Control>>, link: Rc<Link>, stop: Rc<Cell<bool>>) {
    let mut conn: Option<(SocketAddr, RedisConn)> = None;
    while !stop.get() {
        // A connection to a primary the Sentinels no longer name is dropped: the node
        // catches up from the new one (entries the old one had not replicated are gone).
        let (at, mut c) = match conn.take().filter(|(at, _)| !link.moved(*at)) {
            Some(c) => c,
            None => match link.connect().await {
                Ok((at, mut c)) => {
                    // (Re)connected: catch up whole if the stream no longer reaches back to
                    // where this node stopped.
                    if let Err(e) = catch_up(&ctl, &link, &mut c).await {
                        link.catch_up_failed(&e);
                        crate::driver::time::sleep(POLL).await;
                        continue;
                    }
                    (at, c)
                }
                Err(_) => {
                    link.up(false);
                    crate::driver::time::sleep(POLL).await;
                    continue;
                }
            },
        };
        // A position the stream was trimmed past (a burst of changes while this node was
        // slow): the hash, whole. An epoch other than the one this node synced with (none:
        // a FLUSHALL, an eviction, on a connection that never dropped): Redis lost its
        // data, and this node gives it back what it holds, as on reconnecting.
        match c
            .call(
                &[b"MGET", TRIMMED.as_bytes(), EPOCH.as_bytes()],
                link.timeout,
            )
            .await
            .map(|r| {
                let items = r.items();
                let text = |i: usize| items.get(i).and_then(Resp::text).map(str::to_string);
                (text(0).as_deref().and_then(EntryId::parse), text(1))
            }) {
            Ok((t, epoch))
                if t.is_some_and(|t| link.applied.get().is_none_or(|a| a < t))
                    || epoch.is_none()
                    || epoch != *link.epoch.borrow() =>
            {
                if let Err(e) = catch_up(&ctl, &link, &mut c).await {
                    link.catch_up_failed(&e);
                    crate::driver::time::sleep(POLL).await;
                    continue;
                }
            }
            Ok(_) => {}
            Err(_) => {
                link.up(false);
                crate::driver::time::sleep(POLL).await;
                continue;
            }
        }
        let from = link.applied.get().unwrap_or_default().to_string();
        let block = POLL.as_millis().to_string();
        let reply = c
            .call(
                &[
                    b"XREAD",
                    b"COUNT",
                    b"1000",
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    STREAM.as_bytes(),
                    from.as_bytes(),
                ],
                POLL + link.timeout,
            )
            .await;
        match reply {
            Ok(r) => {
                link.up(true);
                let entries = entries(&r);
                if let Some((last, _)) = entries.last() {
                    let last = *last;
                    let changes: Vec<Change> = entries
                        .into_iter()
                        .filter_map(|(id, c)| link.own.newer(id, c?))
                        .collect();
                    let applied = ctl.borrow_mut().apply_changes(&changes, Some(last));
                    if applied.is_ok() {
                        link.own.reached(last);
                    }
                    if let Err(e) = applied {
                        // Not applied: read again from the same place after a pause.
                        tracing::error!(error = %e.1, "fleet: changes not applied");
                        crate::driver::time::sleep(POLL).await;
                    }
                }
                match usage::push_usage(&ctl, &link, &mut c).await {
                    Ok(()) => conn = Some((at, c)),
                    // Counted again next time; Redis answered the read, so it is not down.
                    Err(e) => tracing::debug!(error = %e, "fleet: adding usage failed"),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "fleet: reading changes failed");
                link.up(false);
                // Whatever the failure, not again at once.
                crate::driver::time::sleep(POLL).await;
            }
        }
    }
}

/// `XREAD`'s entries: (id, the change, `None` when this version cannot read it).
fn entries(r: &Resp) -> Vec<(EntryId, Option<Change>)> {
    let mut out = Vec::new();
    for stream in r.items() {
        for e in stream.items().get(1).map_or(&[][..], Resp::items) {
            let Some(id) = e
                .items()
                .first()
                .and_then(Resp::text)
                .and_then(EntryId::parse)
            else {
                continue;
            };
            let fields = e.items().get(1).map_or(&[][..], Resp::items);
            let change = fields
                .chunks(2)
                .find(|kv| kv[0].bytes() == Some(b"c"))
                .and_then(|kv| kv.get(1)?.bytes())
                .and_then(|b| serde_json::from_slice::<Change>(b).ok());
            if change.is_none() {
                tracing::warn!(entry = %id, "fleet: a change this version cannot read is skipped");
            }
            out.push((id, change));
        }
    }
    out
}

impl Control {
    /// The link to the fleet's Redis, if there is a fleet.
    pub(crate) fn fleet(&self) -> Option<Rc<Link>> {
        self.fleet.clone()
    }

    /// Since when (ms since the epoch) the fleet's Redis has been unreachable, if it is.
    pub(crate) fn fleet_down_since(&self) -> Option<u64> {
        self.fleet.as_ref().and_then(|l| l.down_since())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_redis_orders_them() {
        let a = EntryId::parse("1700000000000-9").unwrap();
        let b = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert!(EntryId::parse("5-10").unwrap() > EntryId::parse("5-9").unwrap());
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(EntryId::parse("x"), None);
    }
}
