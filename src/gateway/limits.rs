//! The throttle and quota phases: token buckets in order (key + route, key, route, stage,
//! gateway), then the usage plan's quota; fleet-wide through Redis with `[cluster]`.

use super::ctx::{ApiKeyUse, RequestCtx, RouteMatch};
use crate::config::{Cluster, OnRedisError};
use crate::error::{Error, Kind, RateInfo};
use crate::shard::{Shard, ShardSnap};
use crate::throttle::lease::{Decision, Lease};

/// A stable id for a per-key bucket: the same on every shard. `route` is the plan's bucket
/// for the route ([`crate::config::RouteThrottle::bucket`]), `None` for the plan's own.
fn key_bucket_id(key: &str, plan: &str, route: Option<u64>) -> u64 {
    ahash::RandomState::with_seeds(11, 22, 33, 44).hash_one((key, plan, route))
}

/// Turns a throttle decision into the tightest `RateLimit-*` view so far, or a 429.
fn record(
    tightest: &mut Option<RateInfo>,
    d: Decision,
    rate: crate::config::Rate,
) -> Result<(), Error> {
    let burst = rate.burst;
    match d {
        Decision::Allowed {
            remaining,
            reset_ns,
        } => {
            if tightest.is_none_or(|t| remaining < t.remaining) {
                *tightest = Some(RateInfo {
                    limit: burst,
                    remaining,
                    reset_s: reset_ns.div_ceil(1_000_000_000),
                    retry_after_s: 0,
                });
            }
            Ok(())
        }
        Decision::Refused { retry_ns } => {
            let retry = retry_ns.div_ceil(1_000_000_000).max(1);
            // Until full again: a refused bucket is `tau - interval + wait` from full (GCRA),
            // whether the wait came from this shard's bucket or from Redis.
            let full_ns = (rate.tau() - rate.interval().min(rate.tau())).saturating_add(retry_ns);
            Err(Error::downstream(
                Kind::Throttled(RateInfo {
                    limit: burst,
                    remaining: 0,
                    reset_s: full_ns.div_ceil(1_000_000_000).max(retry),
                    retry_after_s: retry,
                }),
                "throttled",
            ))
        }
    }
}

/// A fleet-wide limit: the shard's lease when it holds tokens, else one Redis round trip for
/// a new lease; while Redis is out, the node's own share (`local`) or a refusal (`deny`).
async fn fleet_take(
    shard: &Shard,
    (c, tls): (&Cluster, Option<&crate::tls::client::UpTls>),
    lease: &Lease,
    name: impl FnOnce() -> String,
    fallback: impl FnOnce(u64) -> Decision,
) -> Decision {
    let now = crate::throttle::now_ns();
    if let Some(d) = lease.take_local(now) {
        return d;
    }
    if now < lease.refused_until.get() {
        return Decision::Refused {
            retry_ns: lease.refused_until.get() - now,
        };
    }
    match shard
        .redis(c, tls)
        .take(&name(), lease.bucket.rate, lease.size())
        .await
    {
        Ok((0, _, wait_ns)) => {
            shard.redis_ok();
            lease.refused_until.set(crate::throttle::now_ns() + wait_ns);
            Decision::Refused { retry_ns: wait_ns }
        }
        Ok((granted, remaining, reset_ns)) => {
            shard.redis_ok();
            lease.fill(granted, remaining, reset_ns, crate::throttle::now_ns())
        }
        Err(e) => {
            shard.redis_failed(&e, c.on_redis_error);
            match c.on_redis_error {
                OnRedisError::Local => fallback(crate::throttle::now_ns()),
                OnRedisError::Deny => Decision::Refused {
                    retry_ns: 1_000_000_000,
                },
            }
        }
    }
}

/// Salt for the per-key fallback buckets (the node's share while Redis is out).
const FALLBACK_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Applies the limits in order — key + route, key (plan), route, stage, gateway — and refuses
/// with 429 at the first that has no token. Records the tightest for `RateLimit-*` headers.
/// With `[cluster]`, gateway, stage and plan limits are fleet-wide (leased from Redis).
pub(crate) async fn throttle(
    shard: &Shard,
    ss: &ShardSnap,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<(), Error> {
    let RouteMatch { api, stage, route } = m;
    let snap = &ss.snap;
    let r = &snap.apis[api].routes[route];
    let key_limits = ctx
        .principal
        .api_key
        .as_ref()
        .map(|k| (&k.id, &snap.plans[k.plan]));
    let any = key_limits.is_some_and(|(_, p)| p.throttle.is_some() || !p.route_throttle.is_empty())
        || r.limits[stage].is_some()
        || snap.apis[api].stage_limits[stage].is_some()
        || snap.gateway_limit.is_some();
    if !any {
        return Ok(());
    }
    let cluster = snap.config.cluster.as_ref();
    let mut tightest: Option<RateInfo> = None;
    if let Some((k, plan)) = key_limits {
        let route_rate = plan
            .route_throttle
            .iter()
            .find(|t| t.at == (api, stage, route))
            .map(|t| (t.rate, Some(t)));
        for limit in [route_rate, plan.throttle.map(|r| (r, None))] {
            let Some((rate, on_route)) = limit else {
                continue;
            };
            let id = key_bucket_id(k, &plan.name, on_route.map(|t| t.bucket));
            let d = match cluster {
                None => shard.key_lease(id, rate).take(crate::throttle::now_ns()),
                Some(c) => {
                    let lease = shard.key_lease_for(id, rate, c.nodes as usize);
                    // The node's share is only materialised while Redis is out.
                    let fallback = |now| {
                        shard
                            .key_lease(
                                id ^ FALLBACK_SALT,
                                crate::snapshot::share(rate, c.nodes as u64),
                            )
                            .take(now)
                    };
                    let name = || {
                        if let Some(t) = on_route {
                            format!("key:{}:{}:{}", plan.name, k, t.name)
                        } else {
                            format!("key:{}:{}", plan.name, k)
                        }
                    };
                    fleet_take(shard, (c, snap.redis_tls.as_ref()), &lease, name, fallback).await
                }
            };
            record(&mut tightest, d, rate)?;
        }
    }
    for idx in [
        r.limits[stage],
        snap.apis[api].stage_limits[stage],
        snap.gateway_limit,
    ]
    .into_iter()
    .flatten()
    {
        let lease = &ss.leases[idx];
        let d = match (cluster, &snap.fleet[idx]) {
            (Some(c), Some(name)) => {
                fleet_take(
                    shard,
                    (c, snap.redis_tls.as_ref()),
                    lease,
                    || name.clone(),
                    |now| ss.fallback_leases[idx].take(now),
                )
                .await
            }
            _ => lease.take(crate::throttle::now_ns()),
        };
        record(&mut tightest, d, lease.bucket.rate)?;
    }
    ctx.ratelimit = tightest;
    Ok(())
}

/// Refuses a key whose quota is already spent before any rate limit is taken (429 "Limit
/// Exceeded"): a spent key takes nothing from the route, stage and gateway limits that other
/// clients share (Amazon applies a usage plan's limits first). Counting is [`count_quota`]'s.
pub(crate) fn quota_spent(shard: &Shard, ss: &ShardSnap, ctx: &RequestCtx) -> Result<(), Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(ApiKeyUse { id, plan: p }) = &ctx.principal.api_key else {
        return Ok(());
    };
    let plan = &ss.snap.plans[*p];
    let Some(q) = plan.quota else {
        return Ok(());
    };
    let now = unix_now();
    let period = q.period.index((now / 86_400) as i64);
    let cell = shard.quota_cell(&plan.name, id);
    let spent = match ss.snap.config.cluster {
        None => cell.period.load(Relaxed) == period as u64 && cell.used.load(Relaxed) >= q.limit,
        // What Redis said less than a second ago, as `count_quota` trusts it.
        Some(_) => {
            cell.fleet_spent.load(Relaxed) == period as u64 + 1
                && shard.quota_known_spent(
                    crate::throttle::redis::quota_id(&plan.name, id),
                    period,
                    q.limit,
                )
        }
    };
    if spent {
        return Err(quota_refusal(Some(q), now));
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 429 "Limit Exceeded", with the time to the quota's next period.
fn quota_refusal(q: Option<crate::config::Quota>, now: u64) -> Error {
    let retry = q
        .map(|q| q.period.seconds_to_next(now))
        .unwrap_or(60)
        .max(1);
    Error::downstream(
        Kind::QuotaExceeded {
            retry_after_s: retry,
        },
        "quota",
    )
}

/// Counts the request against the key's plan: the quota (429 "Limit Exceeded" once spent)
/// and the daily usage report. With `[cluster]` the quota is fleet-wide: shards lease chunks
/// of it from Redis.
pub(crate) async fn count_quota(
    shard: &Shard,
    ss: &ShardSnap,
    ctx: &RequestCtx,
) -> Result<(), Error> {
    let Some(ApiKeyUse { id, plan: p }) = &ctx.principal.api_key else {
        return Ok(());
    };
    let plan = &ss.snap.plans[*p];
    let cell = shard.quota_cell(&plan.name, id);
    let now = unix_now();
    let day = (now / 86_400) as i64;
    let refuse = |q: Option<crate::config::Quota>| quota_refusal(q, now);
    let (Some(c), Some(q)) = (ss.snap.config.cluster.as_ref(), plan.quota) else {
        return cell
            .take(plan.quota, day)
            .map(|_| ())
            .map_err(|_| refuse(plan.quota));
    };
    let period = q.period.index(day);
    let id = crate::throttle::redis::quota_id(&plan.name, id);
    match shard.quota_take_local(id, period, q.limit) {
        Some(true) => {
            let _ = cell.take(None, day);
            cell.count_fleet(period);
            return Ok(());
        }
        // Redis said the quota is spent less than a second ago, and no admin has set the
        // key's count since (a reset clears `fleet_spent`: Redis is asked again at once).
        Some(false)
            if cell.fleet_spent.load(std::sync::atomic::Ordering::Relaxed) == period as u64 + 1 =>
        {
            return Err(refuse(Some(q)))
        }
        Some(false) | None => {}
    }
    let chunk = (q.limit / (c.nodes as u64 * shard.shared.shards as u64 * 100)).clamp(1, 100);
    let name = crate::throttle::redis::quota_name(&plan.name, id, period);
    let sets = cell.sets.load(std::sync::atomic::Ordering::Relaxed);
    match shard
        .redis(c, ss.snap.redis_tls.as_ref())
        .quota(
            &name,
            q.limit,
            chunk,
            q.period.seconds_to_next(now) + 86_400,
        )
        .await
    {
        Ok((0, _)) => {
            shard.redis_ok();
            // Unless an admin set the count while Redis was asked: that answer is older.
            if cell.sets.load(std::sync::atomic::Ordering::Relaxed) != sets {
                return Err(refuse(Some(q)));
            }
            shard.quota_spent(id, period, q.limit);
            cell.fleet_spent_limit
                .store(q.limit, std::sync::atomic::Ordering::Relaxed);
            cell.fleet_spent
                .store(period as u64 + 1, std::sync::atomic::Ordering::Relaxed);
            Err(refuse(Some(q)))
        }
        // Granted what this node knew spent in this period (Redis lost the counter between
        // the epoch's return and the nodes' counts): nothing more is admitted in the period
        // until an admin sets the count or a reload raises the limit (a whole second quota
        // was granted).
        Ok(_) if spent_here(&cell, period, q.limit) => {
            shard.redis_ok();
            shard.quota_spent(id, period, q.limit);
            Err(refuse(Some(q)))
        }
        Ok((granted, _)) => {
            shard.redis_ok();
            shard.quota_fill(id, period, granted - 1);
            let _ = cell.take(None, day);
            cell.count_fleet(period);
            Ok(())
        }
        Err(e) => {
            shard.redis_failed(&e, c.on_redis_error);
            match c.on_redis_error {
                // The node's own share of the period's quota (what it counts while Redis is
                // out), and nothing once Redis said the fleet's is spent.
                OnRedisError::Local => {
                    let spent = spent_here(&cell, period, q.limit);
                    let share = crate::config::Quota {
                        limit: q.limit.div_ceil(c.nodes as u64),
                        ..q
                    };
                    if spent {
                        return Err(refuse(Some(q)));
                    }
                    cell.take(Some(share), day)
                        .map(|_| ())
                        .map_err(|_| refuse(Some(q)))
                }
                // Redis cannot say: a short refusal, as the fleet's rate limits give, not
                // "Limit Exceeded" until the period ends.
                OnRedisError::Deny => Err(Error::downstream(
                    Kind::Throttled(crate::error::RateInfo {
                        limit: q.limit,
                        remaining: 0,
                        reset_s: 1,
                        retry_after_s: 1,
                    }),
                    "quota: Redis is not answering (cluster.on_redis_error = \"deny\")",
                )),
            }
        }
    }
}

/// Whether Redis told this node the fleet's quota of `limit` is spent in `period` (cleared
/// when an admin sets the key's count; a reload that raises the limit ends it too).
fn spent_here(cell: &crate::throttle::QuotaCell, period: i64, limit: u64) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    cell.fleet_spent.load(Relaxed) == period as u64 + 1
        && limit <= cell.fleet_spent_limit.load(Relaxed)
}
