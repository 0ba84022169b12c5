//! Catching up with the fleet on (re)connecting: from the stream when it still reaches back to
//! this node's position, from the objects hash whole otherwise.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::resp::{RedisConn, Resp};
use super::{
    Change, EntryId, Expect, Link, EPOCH, LOCAL_EPOCH, OBJECTS, POSITION, SCAN_COUNT, STREAM,
    TRIMMED,
};
use crate::control::lifecycle::Objects;
use crate::control::Control;

/// A node that never synced, or whose position the stream was trimmed past, reads the objects
/// hash whole. One that never synced first sends the fleet what it made alone (API keys,
/// access keys, run-time APIs: they join the fleet rather than vanish); one that synced
/// before drops what the fleet deleted meanwhile.
pub(super) async fn catch_up(
    ctl: &Rc<RefCell<Control>>,
    link: &Link,
    c: &mut RedisConn,
) -> Result<(), String> {
    let trimmed = c
        .call(&[b"GET", TRIMMED.as_bytes()], link.timeout)
        .await?
        .text()
        .and_then(EntryId::parse);
    let fresh = crate::auth::random_token(16).map_err(|e| e.to_string())?;
    c.call(
        &[b"SET", EPOCH.as_bytes(), fresh.as_bytes(), b"NX"],
        link.timeout,
    )
    .await?;
    let epoch = c
        .call(&[b"GET", EPOCH.as_bytes()], link.timeout)
        .await?
        .text()
        .map(str::to_string)
        .ok_or("the fleet epoch vanished")?;
    let known = link.epoch.borrow().clone();
    if known.as_deref() != Some(epoch.as_str()) {
        if known.is_some() {
            tracing::warn!(redis = %link.name(), "fleet: Redis holds a new epoch (it lost its data): this node sends the fleet what it holds");
        }
        // As if it never synced: send, then take the fleet's whole.
        link.applied.set(None);
        // The old position goes with the old epoch, in one write: a restart half way
        // through still starts as a node that never synced.
        ctl.borrow().store().and_then(|s| {
            s.write_objects(
                &[(LOCAL_EPOCH.to_string(), epoch.clone())],
                &[POSITION.to_string()],
            )
        })?;
        *link.epoch.borrow_mut() = Some(epoch.clone());
        if known.is_some() {
            // After the new epoch is kept: a failure here is not retried (a count is sent
            // at most once).
            if let Err(e) = super::usage::restore_after_loss(ctl, link, c, &epoch).await {
                tracing::warn!(error = %e, "fleet: this node's quota counts and usage could not be sent to the Redis that lost them");
            }
        }
    }
    let applied = link.applied.get();
    // The last entry this node applied, gone from the stream though not trimmed: this Redis
    // never had it (a replica promoted before it arrived). The hash, whole: what the node
    // holds that the fleet lost goes too, so every node ends the same.
    let lost = match applied {
        Some(a) if a != EntryId::default() && trimmed.is_none_or(|t| a > t) => {
            let at = a.to_string();
            let r = c
                .call(
                    &[b"XRANGE", STREAM.as_bytes(), at.as_bytes(), at.as_bytes()],
                    link.timeout,
                )
                .await?;
            r.items().is_empty()
        }
        _ => false,
    };
    if lost {
        tracing::warn!(redis = %link.name(), position = ?applied, "fleet: Redis lacks the last change this node applied (a failover lost it): reading the fleet's objects whole");
    }
    if !lost && applied.is_some() && trimmed.is_none_or(|t| applied.is_some_and(|a| a >= t)) {
        return Ok(());
    }
    if applied.is_none() {
        let local = local_changes(&ctl.borrow())?;
        upload(link, c, local).await?;
    }
    // The newest entry first, then the hash a page at a time (a large fleet does not hold
    // Redis up). The sync then reads every entry after that one, again if a page already
    // showed it: each entry sets an object whole, so applying them in order ends every
    // object as the fleet has it, however the pages fell.
    let last = c
        .call(
            &[b"XREVRANGE", STREAM.as_bytes(), b"+", b"-", b"COUNT", b"1"],
            link.timeout,
        )
        .await?;
    let at = match last.items().first() {
        None => EntryId::default(),
        Some(e) => e
            .items()
            .first()
            .and_then(Resp::text)
            .and_then(EntryId::parse)
            .ok_or("unexpected reply to XREVRANGE")?,
    };
    let mut changes: Vec<Change> = Vec::new();
    let mut writes: BTreeMap<String, Option<String>> = BTreeMap::new();
    // The values the fleet names (`keyhash/` fields).
    let mut named: ahash::AHashSet<String> = Default::default();
    let mut cursor = b"0".to_vec();
    loop {
        let r = c
            .call(
                &[
                    b"HSCAN",
                    OBJECTS.as_bytes(),
                    &cursor,
                    b"COUNT",
                    SCAN_COUNT.as_bytes(),
                ],
                link.timeout,
            )
            .await?;
        cursor = r
            .items()
            .first()
            .and_then(Resp::bytes)
            .ok_or("unexpected reply to HSCAN")?
            .to_vec();
        for kv in r.items().get(1).map_or(&[][..], Resp::items).chunks(2) {
            let (Some(field), Some(json)) = (kv[0].text(), kv.get(1).and_then(Resp::bytes)) else {
                continue;
            };
            if Objects::is_object_key(field) {
                writes.insert(
                    field.to_string(),
                    Some(String::from_utf8_lossy(json).into_owned()),
                );
            } else if let Some(h) = field.strip_prefix(super::KEY_HASH) {
                named.insert(h.to_string());
            } else if let Some(c) = from_object(field, json) {
                changes.push(c);
            }
        }
        if cursor == b"0" {
            break;
        }
    }
    // Keys written by a version before values were named (`keyhash/`): their fields are
    // added (set only where absent), so that a value they hold cannot be made again.
    for ch in &changes {
        if let Change::KeyPut { key } = ch {
            if !named.contains(&key.hash) {
                let field = format!("{}{}", super::KEY_HASH, key.hash);
                c.call(
                    &[
                        b"HSETNX",
                        OBJECTS.as_bytes(),
                        field.as_bytes(),
                        key.id.as_bytes(),
                    ],
                    link.timeout,
                )
                .await?;
            }
        }
    }
    // What this node holds that the fleet does not: deleted while this node was away.
    {
        let ctl = ctl.borrow();
        let fleet: ahash::AHashSet<(bool, &str)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::KeyPut { key } => Some((false, key.id.as_str())),
                Change::AccessKeyPut { key } => Some((true, key.id.as_str())),
                _ => None,
            })
            .collect();
        let keys = ctl
            .stored_keys
            .iter()
            .filter(|k| !fleet.contains(&(false, k.id.as_str())))
            .map(|k| Change::KeyDelete {
                id: k.id.clone(),
                hash: None,
            });
        let access = ctl
            .stored_access
            .iter()
            .filter(|k| !fleet.contains(&(true, k.id.as_str())))
            .map(|k| Change::AccessKeyDelete { id: k.id.clone() });
        let gone: Vec<Change> = keys.chain(access).collect();
        changes.extend(gone);
        for (k, _) in ctl.store()?.objects()? {
            if Objects::is_object_key(&k) && !writes.contains_key(&k) {
                writes.insert(k, None);
            }
        }
    }
    if !writes.is_empty() {
        changes.push(Change::Objects { writes });
    }
    tracing::info!(changes = changes.len(), position = %at, "fleet: local copy replaced by the fleet's");
    let changes: Vec<Change> = changes
        .into_iter()
        .filter_map(|c| link.own.newer(at, c))
        .collect();
    ctl.borrow_mut()
        .apply_changes(&changes, Some(at))
        .map(|_| link.own.reached(at))
        .map_err(|e| e.1)?;
    // A quota reset is a command, not an object: one made while this node was away is not in
    // what it read. What Redis told it spent is asked again (it would refuse the key until
    // the period ended).
    let ctl = ctl.borrow();
    // So is a cache purge: one made before this read (while this node was away, or while it
    // served before its first sync) would be missed, and what it purged served on. This
    // node's stage caches start again.
    let mut flushed = 0;
    for cache in ctl
        .compiled
        .apis
        .iter()
        .flat_map(|a| a.caches.iter().flatten())
    {
        flushed += cache.flush();
    }
    if flushed > 0 {
        tracing::info!(entries = flushed, "fleet: stage caches flushed (a purge made while this node was out of sync would have been missed)");
    }
    let cells = ctl.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
    for cell in cells.values() {
        cell.fleet_spent
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Objects sent per call when a node sends the fleet what it holds.
const UPLOAD_BATCH: usize = 1000;

/// Sends the fleet what it lacks of `local`: an object the fleet holds keeps the fleet's
/// version (a node joining with an API of a name the fleet has does not overwrite it). In
/// calls of [`UPLOAD_BATCH`] objects, each only if none of its objects appeared meanwhile
/// (else the catch-up fails and is tried again a second later).
async fn upload(link: &Link, c: &mut RedisConn, local: Vec<Change>) -> Result<(), String> {
    // One object per change: batches of whole changes.
    let mut one_each: Vec<Change> = Vec::new();
    for ch in local {
        match ch {
            Change::Objects { writes } => {
                one_each.extend(writes.into_iter().map(|(k, v)| Change::Objects {
                    writes: BTreeMap::from([(k, v)]),
                }))
            }
            other => one_each.push(other),
        }
    }
    let mut sent = 0;
    for batch in one_each.chunks(UPLOAD_BATCH) {
        let per: Vec<Vec<(String, String)>> = batch.iter().map(Change::objects).collect();
        let mut args: Vec<&[u8]> = vec![b"HMGET", OBJECTS.as_bytes()];
        args.extend(per.iter().flatten().map(|(f, _)| f.as_bytes()));
        let reply = c.call(&args, link.timeout).await?;
        let mut held = reply.items().iter().map(Resp::bytes);
        let mut missing: Vec<Change> = Vec::new();
        let mut expect = super::Expects::default();
        for (ch, objects) in batch.iter().zip(&per) {
            let theirs: Vec<Option<&[u8]>> = held.by_ref().take(objects.len()).collect();
            // A change is sent when the fleet lacks its object (its first field); a key's
            // value field held for another key (made with the same value elsewhere) keeps
            // it back: one value names one key.
            if theirs.first().is_none_or(Option::is_some) {
                continue;
            }
            let clash = objects
                .iter()
                .zip(&theirs)
                .skip(1)
                .any(|((_, mine), t)| t.is_some_and(|t| t != mine.as_bytes()));
            if clash {
                tracing::warn!(object = %objects[0].0, "fleet: this node's API key has the value of another key the fleet holds: not sent (the fleet's key keeps the value)");
                continue;
            }
            for ((field, mine), t) in objects.iter().zip(&theirs) {
                let e = match t {
                    Some(_) => Expect::Is(mine.clone()),
                    None => Expect::Absent,
                };
                expect.insert(field.clone(), e);
            }
            missing.push(ch.clone());
        }
        if missing.is_empty() {
            continue;
        }
        link.write(&missing, &expect).await?;
        sent += missing.len();
    }
    if sent > 0 {
        tracing::info!(
            objects = sent,
            "fleet: this node's API keys, access keys and run-time APIs the fleet lacked sent to it"
        );
    }
    Ok(())
}

/// What a node that never synced sends the fleet: every API key, access key and run-time
/// object it holds.
fn local_changes(ctl: &Control) -> Result<Vec<Change>, String> {
    let keys = ctl
        .stored_keys
        .iter()
        .map(|k| Change::KeyPut { key: k.clone() });
    let access = ctl
        .stored_access
        .iter()
        .map(|k| Change::AccessKeyPut { key: k.clone() });
    let mut local: Vec<Change> = keys.chain(access).collect();
    let writes: BTreeMap<String, Option<String>> = ctl
        .store()?
        .objects()?
        .into_iter()
        .filter(|(k, _)| Objects::is_object_key(k))
        .map(|(k, v)| (k, Some(v)))
        .collect();
    if !writes.is_empty() {
        local.push(Change::Objects { writes });
    }
    Ok(local)
}

/// The change that makes a key or access key of the hash what it is there.
fn from_object(field: &str, json: &[u8]) -> Option<Change> {
    if field.starts_with("key/") {
        return serde_json::from_slice(json)
            .ok()
            .map(|key| Change::KeyPut { key });
    }
    if field.starts_with("access/") {
        return serde_json::from_slice(json)
            .ok()
            .map(|key| Change::AccessKeyPut { key });
    }
    None
}
