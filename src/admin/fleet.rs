//! Admin calls whose change a fleet shares: through the fleet's Redis first when there is
//! one (`control::fleet`), on this node alone otherwise.

use std::cell::RefCell;
use std::rc::Rc;

use super::{json, message, query_param, KeyUpdate, QuotaUpdate};
use crate::control::{AccessKeyUpdate, Control, NewAccessKey, NewKey, OpError};

/// Changes a fleet shares — API keys (`POST /apikeys`, `POST /apikeys/import`,
/// `PATCH|DELETE /apikeys/{id}`), access keys, quota adjustments, cache flushes and purges
/// (`DELETE /apis/{api}/stages/{stage}/cache`), run-time APIs, deployments, stages, canaries
/// and domain mappings — through the fleet's Redis first when there is one; `None` for any
/// other call.
pub(super) async fn fleet_write(
    ctl: &Rc<RefCell<Control>>,
    method: &[u8],
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    // A change is planned from this node's copy and applied once the fleet's Redis took
    // it: two at once would both plan from the same copy, and the later would undo the
    // earlier (a key disabled by one call enabled again by another that set its
    // description) or both take one key value. One at a time per node.
    let fleet = ctl.borrow().fleet().is_some();
    let _turn = match method {
        b"GET" => None,
        _ if !fleet => None,
        _ => Some(WriteTurn::wait().await),
    };
    use crate::control::fleet::{self, Change};
    let segs = super::segments(path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    type Planned = Result<(Vec<Change>, Option<serde_json::Value>), OpError>;
    let (status, planned): (u16, Planned) = match (method, segs.as_slice()) {
        (b"POST", ["apikeys"]) => match json::<NewKey>(body) {
            Ok(req) => (
                201,
                ctl.borrow().plan_create_key(req).map(|(c, v)| (c, Some(v))),
            ),
            Err(e) => return Some(e),
        },
        (b"POST", ["apikeys", "import"])
            if query_param(query, "format").is_some_and(|f| !f.eq_ignore_ascii_case("csv")) =>
        {
            return Some(message(
                400,
                "format: only csv is taken (Amazon's ImportApiKeys format); the body was not read",
            ))
        }
        (b"POST", ["apikeys", "import"]) => match std::str::from_utf8(body) {
            Ok(csv) => (
                200,
                ctl.borrow()
                    .plan_import_keys(csv)
                    .map(|(c, v)| (c, Some(v))),
            ),
            Err(_) => return Some(message(400, "the CSV is not UTF-8")),
        },
        (b"PATCH", ["apikeys", id]) if *id != "import" => match json::<KeyUpdate>(body) {
            Ok(u) => (
                200,
                ctl.borrow()
                    .plan_update_key(id, u.enabled, u.plans, u.name, u.description)
                    .map(|c| (c, None)),
            ),
            Err(e) => return Some(e),
        },
        (b"DELETE", ["apikeys", id]) if *id != "import" => (
            200,
            ctl.borrow()
                .plan_delete_key(id)
                .map(|c| (c, Some(serde_json::json!({ "deleted": id })))),
        ),
        (b"POST", ["accesskeys"]) => match json::<NewAccessKey>(body) {
            Ok(req) => (
                201,
                ctl.borrow()
                    .plan_create_access_key(req)
                    .map(|(c, v)| (c, Some(v))),
            ),
            Err(e) => return Some(e),
        },
        (b"PATCH", ["accesskeys", id]) => match json::<AccessKeyUpdate>(body) {
            Ok(u) => (
                200,
                ctl.borrow()
                    .plan_update_access_key(id, u)
                    .map(|(c, v)| (c, Some(v))),
            ),
            Err(e) => return Some(e),
        },
        (b"DELETE", ["accesskeys", id]) => (
            200,
            ctl.borrow()
                .plan_delete_access_key(id)
                .map(|c| (c, Some(serde_json::json!({ "deleted": id })))),
        ),
        (b"GET", ["usageplans", plan, "usage"]) => {
            // With a fleet: the fleet's usage, from Redis.
            let link = ctl.borrow().fleet()?;
            let (Some(start), Some(end)) = (
                query_param(query, "startDate"),
                query_param(query, "endDate"),
            ) else {
                return Some(message(
                    400,
                    "startDate and endDate are required (YYYY-MM-DD)",
                ));
            };
            let key = query_param(query, "keyId");
            let page = match crate::control::usage::Page::parse(
                query_param(query, "limit"),
                query_param(query, "position"),
            ) {
                Ok(p) => p,
                Err(OpError(s, m)) => return Some(message(s, m)),
            };
            let checked = ctl.borrow().usage_days(plan, &start, &end, key.as_deref());
            let p = match checked {
                Ok((p, _)) => p,
                Err(OpError(s, m)) => return Some(message(s, m)),
            };
            let unreachable = |e: String| {
                message(503, format!("the fleet's Redis ({}) cannot be reached ({e}); this node's own counts are not the fleet's", link.name()))
            };
            // From the start of the first day's quota period: a day's `remaining` is what its
            // period had left at its end (every day said the current period's).
            let days = crate::control::usage::report_days(p.quota, &start, &end);
            let mut rows = match link.usage(plan, &days, key.as_deref()).await {
                Ok(r) => r,
                Err(e) => return Some(unreachable(e)),
            };
            // A deleted key's counts stay in the fleet's daily hashes until they expire: its
            // usage went with it, as on a node alone.
            let keys = ctl.borrow().taken_ids();
            rows.retain(|(id, _, _)| keys.contains(id));
            // Today's from the fleet's counter of the current period (an admin's quota set
            // included; chunks the shards leased and have not used yet count as used).
            let mut now: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
            if let Some(q) = p.quota {
                let current = q.period.index(crate::throttle::today());
                for (id, _, _) in &rows {
                    if now.contains_key(id) {
                        continue;
                    }
                    let name = crate::throttle::redis::quota_name(
                        plan,
                        crate::throttle::redis::quota_id(plan, id),
                        current,
                    );
                    match link.quota_used(&name).await {
                        Ok(used) => {
                            now.insert(id.clone(), (current, used));
                        }
                        Err(e) => return Some(unreachable(e)),
                    }
                }
            }
            let entries = crate::control::usage::entries_from(p.quota, rows, &now);
            let v =
                crate::control::usage::usage_answer(plan, (&start, &end), p.quota, entries, &page);
            return Some((200, v.to_string()));
        }
        (b"PUT", ["usageplans", plan, "keys", id, "quota"])
        | (b"POST", ["usageplans", plan, "keys", id, "quota", "reset"]) => {
            let used = if method == b"PUT" {
                match json::<QuotaUpdate>(body) {
                    Ok(q) => q.used,
                    Err(e) => return Some(e),
                }
            } else {
                0
            };
            let planned = ctl.borrow().plan_quota(plan, id, used);
            let (change, answer, (counter, ttl)) = match planned {
                Ok(p) => p,
                Err(OpError(s, m)) => return Some(message(s, m)),
            };
            // The fleet's counter first: it is what admits requests.
            let link = ctl.borrow().fleet();
            if let Some(link) = link {
                if let Err(e) = link.set_quota(&counter, used, ttl).await {
                    return Some(message(
                        503,
                        format!("the fleet's Redis ({}) cannot be reached ({e}): nothing was changed; try again when it is back", link.name()),
                    ));
                }
            }
            return Some(match fleet::commit(ctl, vec![change]).await {
                Ok(_) => (200, answer.to_string()),
                Err(OpError(s, m)) => message(s, m),
            });
        }
        (b"DELETE", ["apis", api, "stages", stage, "cache"]) => {
            if let Err(OpError(s, m)) = ctl.borrow().stage_cache(api, stage) {
                return Some(message(s, m));
            }
            // A flush is destructive: a parameter it does not know (a misspelt `path`, one
            // without a value) is refused rather than read as "flush everything".
            if let Some(p) = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .find(|kv| !matches!(kv.split_once('='), Some(("path" | "prefix", _))))
            {
                return Some(message(
                    400,
                    format!("query parameter {p:?} is not valid: expected path=/... or prefix=/..., or none to flush the whole cache"),
                ));
            }
            // One path or prefix per call: a second would be left out without a word.
            if query.split('&').filter(|kv| !kv.is_empty()).count() > 1 {
                return Some(message(
                    400,
                    "give one path or one prefix per call (or none to flush the whole cache)",
                ));
            }
            let (path, prefix) = match (query_param(query, "path"), query_param(query, "prefix")) {
                (Some(_), Some(_)) => return Some(message(400, "give path or prefix, not both")),
                (Some(p), None) | (None, Some(p)) if !p.starts_with('/') => {
                    return Some(message(
                        400,
                        format!("{p:?} is not a path: it must start with '/'"),
                    ))
                }
                (Some(p), None) => (Some(p), false),
                (None, Some(p)) => (Some(p), true),
                (None, None) => (None, false),
            };
            let change = Change::CacheFlush {
                api: api.to_string(),
                stage: stage.to_string(),
                path: path.clone(),
                prefix,
            };
            return Some(match fleet::commit(ctl, vec![change]).await {
                Ok(n) => {
                    let v = match path {
                        Some(p) if prefix => serde_json::json!({"purged": n, "prefix": p}),
                        Some(p) => serde_json::json!({"purged": n, "path": p}),
                        None => serde_json::json!({ "flushed": n }),
                    };
                    (200, v.to_string())
                }
                Err(OpError(s, m)) => message(s, m),
            });
        }
        (b"POST" | b"PUT" | b"PATCH" | b"DELETE", ["apis" | "domains", ..]) => {
            return planned_objects(ctl, method, path, query, body).await
        }
        _ => return None,
    };
    let (changes, answer) = match planned {
        Ok(p) => p,
        Err(OpError(s, m)) => return Some(message(s, m)),
    };
    // Planned from this node's copy: the keys it changes must still be that copy in the
    // fleet, and a new key's value no other key's (409 otherwise).
    let expect = match fleet::key_expects(ctl, &changes).await {
        Ok(e) => e,
        Err(OpError(s, m)) => return Some(message(s, m)),
    };
    if let Err(OpError(s, m)) = fleet::commit_expecting(ctl, changes, &expect).await {
        return Some(message(s, m));
    }
    // An update answers the key as it now is.
    let answer = answer.or_else(|| {
        let id = segs.get(1)?;
        serde_json::to_value(ctl.borrow().get_key(id)?).ok()
    });
    Some(match answer {
        Some(v) => (status, v.to_string()),
        None => message(404, "no such key"),
    })
}

/// A change of run-time APIs, deployments, stages, canaries or domain mappings with a fleet:
/// the call is planned on this node (checked and compiled as it would be alone, nothing
/// changed), the fleet's Redis takes what it writes, and then every node — this one first —
/// applies it. `None` without a fleet (the call is made here, as it is).
async fn planned_objects(
    ctl: &Rc<RefCell<Control>>,
    method: &[u8],
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    ctl.borrow().fleet()?;
    ctl.borrow_mut().begin_plan();
    let (status, answer) = super::route(method, path, query, body, ctl);
    let change = ctl.borrow_mut().end_plan();
    let Some(change) = change.filter(|_| status < 300) else {
        return Some((status, answer));
    };
    // It was planned on this node's copy: each object it writes must still be, in the
    // fleet, what this node holds (409 otherwise: another node changed it meanwhile).
    let expect = match ctl.borrow().fleet_expects(&change) {
        Ok(e) => e,
        Err(OpError(s, m)) => return Some(message(s, m)),
    };
    if let Err(OpError(s, m)) =
        crate::control::fleet::commit_expecting(ctl, vec![change], &expect).await
    {
        return Some(message(s, m));
    }
    // The answer was planned before the change was served: its generation is the one now.
    let answer = match serde_json::from_str::<serde_json::Value>(&answer) {
        Ok(mut v) if v.get("generation").is_some() => {
            v["generation"] = ctl.borrow().generation().into();
            v.to_string()
        }
        _ => answer,
    };
    Some((status, answer))
}

thread_local! {
    /// The control plane's one turn to write through the fleet: a token in a channel of one.
    static TURN: (flume::Sender<()>, flume::Receiver<()>) = {
        let (tx, rx) = flume::bounded(1);
        let _ = tx.try_send(());
        (tx, rx)
    };
}

/// This node's turn to change what the fleet shares; the next caller's when dropped (also
/// when the call that held it is dropped part way, its client gone).
struct WriteTurn;

impl WriteTurn {
    async fn wait() -> WriteTurn {
        let rx = TURN.with(|t| t.1.clone());
        // The sender lives as long as the thread: the channel never closes.
        let _ = rx.recv_async().await;
        WriteTurn
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        TURN.with(|t| {
            let _ = t.0.try_send(());
        });
    }
}
