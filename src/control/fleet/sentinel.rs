//! Redis Sentinel (`cluster.sentinels`): which server is the primary now. The control plane
//! asks the Sentinels every second (`SENTINEL GET-MASTER-ADDR-BY-NAME`, in the order the
//! file lists them, until one answers) and notes the answer where every Redis client of the
//! process reads it: the shards' lease pools and the fleet's sync, writes and subscription
//! move to a new primary at their next call.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use super::resp::{RedisConn, Resp};
use super::{Link, POLL};

/// Keeps `link`'s primary current for as long as the control plane runs.
pub(crate) async fn watch(link: Rc<Link>, stop: Rc<Cell<bool>>) {
    let mut silent = false;
    while !stop.get() {
        let mut named = None;
        let mut why = String::new();
        for s in link.sentinels() {
            match ask(*s, &link).await {
                Ok(a) => {
                    named = Some(a);
                    break;
                }
                Err(e) => why = format!("{s}: {e}"),
            }
        }
        // A Sentinel cut off from the others may name a primary since demoted: a new one is
        // taken only once it says it is the primary (`ROLE`).
        if let Some(a) = named.filter(|a| link.addr().ok() != Some(*a)) {
            if let Err(e) = is_primary(a, &link).await {
                tracing::warn!(named = %a, error = %e, "fleet: the Sentinels name a server that is not the primary; the last one is kept");
                named = None;
                silent = true;
            }
        }
        match named {
            Some(a) => {
                silent = false;
                if link.shared.redis_primary.set(a) {
                    tracing::info!(primary = %a, master = %link.cluster.sentinel_master, "fleet: the Sentinels name the Redis primary");
                }
            }
            None if !silent => {
                silent = true;
                tracing::warn!(error = %why, master = %link.cluster.sentinel_master, "fleet: no Sentinel names a primary; the last one named is kept");
            }
            None => {}
        }
        crate::driver::time::sleep(POLL).await;
    }
}

/// Whether the server at `a` says it is a primary.
async fn is_primary(a: SocketAddr, link: &Link) -> Result<(), String> {
    let mut c = RedisConn::connect(a, None, link.timeout).await?;
    let r = c.call(&[b"ROLE"], link.timeout).await?;
    match r.items().first().and_then(Resp::text) {
        Some("master") => Ok(()),
        Some(role) => Err(format!("it is a {role}")),
        None => Err("no answer to ROLE".into()),
    }
}

/// One Sentinel's answer: the primary's address.
async fn ask(sentinel: SocketAddr, link: &Link) -> Result<SocketAddr, String> {
    let mut c = RedisConn::connect(sentinel, None, link.timeout).await?;
    let r = c
        .call(
            &[
                b"SENTINEL",
                b"GET-MASTER-ADDR-BY-NAME",
                link.cluster.sentinel_master.as_bytes(),
            ],
            link.timeout,
        )
        .await?;
    let items = r.items();
    let (Some(ip), Some(port)) = (
        items.first().and_then(Resp::text),
        items.get(1).and_then(Resp::text),
    ) else {
        return Err(format!(
            "it monitors no master named {:?}",
            link.cluster.sentinel_master
        ));
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("it named {ip:?}, not an IP address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("it named port {port:?}"))?;
    Ok(SocketAddr::new(ip, port))
}
