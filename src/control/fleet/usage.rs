//! Usage reports across the fleet: each node sends its absolute count of each key's day to a
//! daily hash in Redis (`tollgate:usage:{plan}:{day}`, field `{key}|{node}`: sent twice,
//! counted once); GetUsage sums the nodes' fields and reads the fleet's quota counters.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::resp::{RedisConn, Resp};
use super::{Control, Link};

/// Sets counts: ARGV seconds to keep, then (hash, field, the node's count of the day) per
/// count. A node's count is absolute: sending it twice counts it once.
const USAGE: &str = r#"
for i = 2, #ARGV, 3 do
  redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  redis.call('EXPIRE', ARGV[i], ARGV[1])
end
return 1
"#;

/// How long the fleet keeps daily usage (GetUsage reaches back a year).
const USAGE_KEPT_S: u64 = 400 * 86_400;

/// The hash of a plan's usage on a day: `{key id}|{node}` -> that node's requests (summed
/// over the nodes when read).
fn usage_hash(plan: &str, day: &str) -> String {
    format!("tollgate:usage:{plan}:{day}")
}

/// A node's count of a key's day that changed since it was last sent: plan, key, day, count.
type UsageDelta = (Arc<str>, Arc<str>, u64, u64);

/// This node's counts that changed since they were last sent — today's, and the day before's
/// (its last requests, counted after the last send of that day): (plan, key, day, the day's
/// count); marks them sent.
fn usage_deltas(ctl: &Rc<RefCell<Control>>, link: &Link) -> Vec<UsageDelta> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = ctl.borrow();
    let cells = c.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
    let mut pushed = link.pushed.borrow_mut();
    // Keys deleted meanwhile, and days before the day before: forgotten here too.
    pushed.retain(|(plan, key, day), _| {
        cells
            .get(&(plan.clone(), key.clone()))
            .is_some_and(|c| c.day.load(Relaxed) == *day || c.prev_day().0 == *day)
    });
    let copied = link.copied.borrow();
    let mut out = Vec::new();
    for ((plan, key), cell) in cells.iter() {
        for (day, used) in [
            cell.prev_day(),
            (cell.day.load(Relaxed), cell.day_used.load(Relaxed)),
        ] {
            let k = (plan.clone(), key.clone(), day);
            // What the node this state directory was copied from counted: its to send.
            let used = used.saturating_sub(copied.get(&k).copied().unwrap_or(0));
            if used > 0 && pushed.get(&k) != Some(&used) {
                out.push((plan.clone(), key.clone(), day, used));
                pushed.insert(k, used);
            }
        }
    }
    out
}

/// How long a node's claim on its usage name lives unrenewed (the sync renews it every
/// second).
const CLAIM_TTL: Duration = Duration::from_secs(5);

/// Claims or renews a usage name (KEYS[1]) for this process (ARGV[1], for ARGV[2] ms): 1 when
/// it is this process's, 0 when another holds it.
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Gives a claim up, if it is still this process's.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

fn claim_key(usage_id: &str) -> String {
    format!("tollgate:usage-node:{usage_id}")
}

/// Whether this process may send counts under its usage name: it holds the name's claim in
/// Redis (renewed at most once a second). A name whose claim another process keeps renewing
/// for twice the claim's life is another node's (a state directory copied from this one's, or
/// this one's from it: their counts would overwrite each other's): this node takes a new name,
/// keeps it in its store and says so. A claim left by this node's own previous run (stopped
/// without giving it up) lapses within the claim's life, and one a predecessor gives up at a
/// take-over sooner: their counts are this process's to send.
async fn claimed(
    ctl: &Rc<RefCell<Control>>,
    link: &Link,
    c: &mut RedisConn,
) -> Result<bool, String> {
    let now = Instant::now();
    if link
        .claimed_at
        .get()
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
    {
        return Ok(true);
    }

    let key = claim_key(&link.usage_id.borrow());
    let ttl = CLAIM_TTL.as_millis().to_string();
    let r = c
        .call(
            &[
                b"EVAL",
                CLAIM.as_bytes(),
                b"1",
                key.as_bytes(),
                link.claim_token.as_bytes(),
                ttl.as_bytes(),
            ],
            link.timeout,
        )
        .await?;
    if r == Resp::Int(1) {
        link.claimed_at.set(Some(now));
        link.refused_since.set(None);
        return Ok(true);
    }
    link.claimed_at.set(None);
    let since = link.refused_since.get().unwrap_or(now);
    link.refused_since.set(Some(since));
    if now.duration_since(since) > 2 * CLAIM_TTL {
        let old = link.usage_id.borrow().clone();
        let new = crate::auth::random_token(12).map_err(|e| e.to_string())?;
        ctl.borrow()
            .store()?
            .write_objects(&[(super::USAGE_ID.to_string(), new.clone())], &[])?;
        tracing::warn!(old = %old, new = %new, "fleet: another node sends usage under this node's name (one state directory was copied from the other?): this node takes a new name");
        *link.usage_id.borrow_mut() = new;
        link.refused_since.set(None);
        link.pushed.borrow_mut().clear();
        // The counts found at the start came with the copy: the other node sends them.
        *link.copied.borrow_mut() = link.found.borrow_mut().take().unwrap_or_default();
    }
    Ok(false)
}

/// Gives this process's usage name up (a successor took the store over and sends the counts
/// from now on).
async fn release_claim(link: &Link, c: &mut RedisConn) -> Result<(), String> {
    if link.claimed_at.take().is_none() {
        return Ok(());
    }
    let key = claim_key(&link.usage_id.borrow());
    c.call(
        &[
            b"EVAL",
            RELEASE.as_bytes(),
            b"1",
            key.as_bytes(),
            link.claim_token.as_bytes(),
        ],
        link.timeout,
    )
    .await
    .map(|_| ())
}

/// At shutdown, once the shards have counted their last requests: those counts reach the
/// fleet's usage reports (skipped while Redis is unreachable: it does not hold the exit up),
/// and the usage name's claim is given up.
pub(crate) async fn push_last_usage(ctl: &Rc<RefCell<Control>>, link: &Link) {
    if link.down_since().is_some() {
        return;
    }
    let sent = async {
        let (_, mut c) = link.connect().await?;
        push_usage(ctl, link, &mut c).await?;
        release_claim(link, &mut c).await
    };
    if let Err(e) = sent.await {
        tracing::warn!(error = %e, "fleet: the last usage counts were not sent");
    }
}

/// Sends this node's changed counts to the fleet's daily hashes (a count that could not be
/// sent is sent again next time).
pub(super) async fn push_usage(
    ctl: &Rc<RefCell<Control>>,
    link: &Link,
    c: &mut RedisConn,
) -> Result<(), String> {
    if link.usage_given_up.get() {
        return release_claim(link, c).await;
    }
    if !claimed(ctl, link, c).await? {
        return Ok(());
    }
    let deltas = usage_deltas(ctl, link);
    if deltas.is_empty() {
        return Ok(());
    }
    let mut args: Vec<Vec<u8>> = vec![
        b"EVAL".to_vec(),
        USAGE.as_bytes().to_vec(),
        b"0".to_vec(),
        USAGE_KEPT_S.to_string().into_bytes(),
    ];
    for (plan, key, day, used) in &deltas {
        let day = crate::throttle::day_string(*day as i64);
        args.push(usage_hash(plan, &day).into_bytes());
        args.push(format!("{key}|{}", link.usage_id.borrow()).into_bytes());
        args.push(used.to_string().into_bytes());
    }
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    if let Err(e) = c.call(&refs, link.timeout).await {
        // Maybe not sent: sent again next time (a count sent twice counts once).
        let mut pushed = link.pushed.borrow_mut();
        for (plan, key, day, _) in deltas {
            pushed.remove(&(plan, key, day));
        }
        return Err(e);
    }
    Ok(())
}

/// Adds counts back to fleet quota counters: per counter ARGV (counter, marker, the count an
/// admin set, this node's requests since, seconds to keep). The first node to restore a
/// counter (it sets the marker) adds the admin's count, every node its own.
const RESTORE_QUOTA: &str = r#"
for i = 1, #ARGV, 5 do
  if redis.call('SET', ARGV[i + 1], '1', 'NX', 'EX', ARGV[i + 4]) then
    redis.call('INCRBY', ARGV[i], ARGV[i + 2])
  end
  redis.call('INCRBY', ARGV[i], ARGV[i + 3])
  redis.call('EXPIRE', ARGV[i], ARGV[i + 4])
end
return 1
"#;

/// Counters and usage rows sent per call when a node restores what Redis lost.
const RESTORE_BATCH: usize = 1000;

/// Redis came back without its data (a new `epoch`): this node adds its part of each fleet
/// quota's current period back to the counter (what it admitted since the period began or an
/// admin set the count; the first node also the admin's count), and sends its daily usage of
/// the last 400 days again. Run once per epoch: a failure part way leaves the rest unsent
/// (counted low, as before this ran), never counted twice.
pub(super) async fn restore_after_loss(
    ctl: &Rc<RefCell<Control>>,
    link: &Link,
    c: &mut RedisConn,
    epoch: &str,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    link.pushed.borrow_mut().clear();
    let today = crate::throttle::today();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (counters, rows) = {
        let ctl = ctl.borrow();
        let mut counters: Vec<[String; 5]> = Vec::new();
        {
            let cells = ctl.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            for ((plan, key), cell) in cells.iter() {
                let Some(q) = ctl
                    .compiled
                    .plans
                    .iter()
                    .find(|p| *p.name == **plan)
                    .and_then(|p| p.quota)
                else {
                    continue;
                };
                let period = q.period.index(today);
                let own = cell.fleet_count(period);
                let set = if cell.period.load(Relaxed) == period as u64 {
                    cell.used.load(Relaxed)
                } else {
                    0
                };
                if own == 0 && set == 0 {
                    continue;
                }
                let name = crate::throttle::redis::quota_name(
                    plan,
                    crate::throttle::redis::quota_id(plan, key),
                    period,
                );
                counters.push([
                    format!("tollgate:quota:{name}"),
                    format!("tollgate:quota-restored:{epoch}:{name}"),
                    set.to_string(),
                    own.to_string(),
                    (q.period.seconds_to_next(now) + 86_400).to_string(),
                ]);
            }
        }
        ctl.flush()?;
        let from = crate::throttle::day_string(today - 399);
        let to = crate::throttle::day_string(today);
        let mut rows = Vec::new();
        for p in &ctl.compiled.plans {
            for (key, day, n) in ctl.store()?.usage(&p.name, &from, &to, None)? {
                rows.push((
                    usage_hash(&p.name, &day),
                    format!("{key}|{}", link.usage_id.borrow()),
                    n,
                ));
            }
        }
        (counters, rows)
    };
    for batch in counters.chunks(RESTORE_BATCH) {
        let mut args: Vec<&[u8]> = vec![b"EVAL", RESTORE_QUOTA.as_bytes(), b"0"];
        args.extend(batch.iter().flatten().map(|a| a.as_bytes()));
        c.call(&args, link.timeout).await?;
    }
    let kept = USAGE_KEPT_S.to_string();
    // Under a name this process holds only (else the next push sends today's and
    // yesterday's once it does).
    let rows = if !link.usage_given_up.get() && claimed(ctl, link, c).await? {
        rows
    } else {
        Vec::new()
    };
    for batch in rows.chunks(RESTORE_BATCH) {
        let counts: Vec<String> = batch.iter().map(|r| r.2.to_string()).collect();
        let mut args: Vec<&[u8]> = vec![b"EVAL", USAGE.as_bytes(), b"0", kept.as_bytes()];
        for ((hash, field, _), n) in batch.iter().zip(&counts) {
            args.extend([hash.as_bytes(), field.as_bytes(), n.as_bytes()]);
        }
        c.call(&args, link.timeout).await?;
    }
    tracing::info!(
        quotas = counters.len(),
        usage_days = rows.len(),
        "fleet: this node's quota counts and usage sent to the Redis that lost them"
    );
    Ok(())
}

impl Link {
    /// A successor took this process's store over: it sends the counts from now on, under
    /// the same name.
    pub(crate) fn give_up_usage(&self) {
        self.usage_given_up.set(true);
    }

    /// The successor did not take over: this process sends the counts again.
    pub(crate) fn take_usage_back(&self) {
        self.usage_given_up.set(false);
    }

    /// A plan's usage over the fleet, per key and day (`days` as YYYY-MM-DD, `key` one key or
    /// all): (key, day, requests); and each key's count of its current quota period.
    pub(crate) async fn usage(
        &self,
        plan: &str,
        days: &[String],
        key: Option<&str>,
    ) -> Result<Vec<(String, String, u64)>, String> {
        let (_, mut c) = self.connect().await?;
        let mut out = Vec::new();
        for day in days {
            let hash = usage_hash(plan, day);
            let r = c.call(&[b"HGETALL", hash.as_bytes()], self.timeout).await?;
            let mut sums: std::collections::BTreeMap<&str, u64> = Default::default();
            for kv in r.items().chunks(2) {
                let (Some(field), Some(n)) = (kv[0].text(), kv.get(1).and_then(Resp::text)) else {
                    continue;
                };
                // `{key}|{node}`: each node's count of the key, summed.
                let k = field.rsplit_once('|').map_or(field, |(k, _)| k);
                if key.is_none_or(|want| want == k) {
                    *sums.entry(k).or_default() += n.parse::<u64>().unwrap_or(0);
                }
            }
            out.extend(
                sums.into_iter()
                    .map(|(k, n)| (k.to_string(), day.clone(), n)),
            );
        }
        Ok(out)
    }

    /// The fleet's count of a quota counter (`tollgate:quota:{name}`), 0 when there is none.
    pub(crate) async fn quota_used(&self, name: &str) -> Result<u64, String> {
        let (_, mut c) = self.connect().await?;
        let key = format!("tollgate:quota:{name}");
        let r = c.call(&[b"GET", key.as_bytes()], self.timeout).await?;
        Ok(r.text().and_then(|t| t.parse().ok()).unwrap_or(0))
    }
}
