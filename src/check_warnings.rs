//! `tollgate check`'s warnings: settings that load but will not work as written on this
//! machine (open files, the state folder) or do nothing (route caches without a stage cache),
//! and an admin API beyond loopback.

use crate::config::Config;

/// A warning when `limits.max_connections` cannot fit in `open_file_limit` descriptors: each
/// proxied client connection may hold an upstream one too, plus the listeners, the state
/// store and the pools' spare connections.
pub fn fd_warning(cfg: &Config, open_file_limit: u64) -> Option<String> {
    let max = cfg.limits.max_connections as u64;
    let needed = max.saturating_mul(2).saturating_add(256);
    (needed > open_file_limit).then(|| {
        format!(
            "limits.max_connections = {max} may need up to {needed} open files (a client and an upstream connection each, plus overhead), but the open-file limit is {open_file_limit}: raise it (systemd LimitNOFILE=, ulimit -n) or lower limits.max_connections; at the limit new connections are refused (closed at once)"
        )
    })
}

/// A warning when the admin API listens beyond loopback: it speaks plain HTTP (its bearer
/// token crosses the network in the clear).
pub fn admin_warning(cfg: &Config) -> Option<String> {
    let a = cfg.admin.as_ref()?;
    (!a.addr.ip().is_loopback()).then(|| {
        format!(
            "admin.addr = {} is not a loopback address: the admin API has no TLS, so its bearer token crosses the network in the clear; keep it on 127.0.0.1 (reach it through SSH or a TLS proxy)",
            a.addr
        )
    })
}

/// A warning when `server.state_dir` cannot be made or written by the user running `check`:
/// the gateway would refuse to start (keys, usage and run-time APIs live there). Tried by
/// making (and removing) a folder in it, or in the nearest existing folder it would be made
/// in: permission bits do not tell for root, read-only mounts or /proc.
pub fn state_dir_warning(cfg: &Config) -> Option<String> {
    let dir = &cfg.server.state_dir;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let probe = existing.join(format!(".tollgate-check-{}", std::process::id()));
    let e = match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            return None;
        }
        Err(e) => e,
    };
    let what = if existing == dir.as_path() {
        format!("cannot be written: {e}")
    } else {
        format!("cannot be made in {}: {e}", existing.display())
    };
    Some(format!(
        "server.state_dir = {:?} {what}; the gateway will not start as this user (API keys, usage and run-time APIs are stored there)",
        dir.display().to_string()
    ))
}

/// Warnings for route cache settings that do nothing: on an API none of whose stages has a
/// cache (Amazon's method caching needs the stage's cache too).
pub fn cache_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for api in &cfg.apis {
        let staged = api.stages.iter().any(|s| s.cache.is_some());
        for r in api.routes.iter().filter(|r| r.cache.is_some()) {
            let key = format!("apis[{:?}].routes[{:?}].cache", api.name, r.key);
            if !staged {
                out.push(format!(
                    "{key}: no stage of API {:?} has a cache, so this route's cache settings do nothing (set a stage's cache = {{ ttl = ..., capacity = ... }})",
                    api.name
                ));
                continue;
            }
            if r.cache.as_ref().is_some_and(|c| !c.enabled) {
                continue;
            }
            // What `compile::apis::cache_policy` never caches.
            let why = if !matches!(
                r.method,
                crate::syntax::route_key::MethodSel::Any
                    | crate::syntax::route_key::MethodSel::One(crate::syntax::Method::Get)
            ) {
                Some("only GET routes (and ANY's GETs) are cached")
            } else if !matches!(r.integration, crate::config::Integration::Http { .. }) {
                Some("only http integrations' answers are cached")
            } else if r
                .transform
                .as_ref()
                .is_some_and(|t| !t.responses.is_empty())
            {
                Some("integration responses render each answer, so none is cached")
            } else {
                None
            };
            if let Some(why) = why {
                out.push(format!("{key}: {why}; these cache settings do nothing"));
            }
        }
        // The default that takes SigV4 callers, with nothing to check their signatures by.
        if cfg.aws_iam.is_none() && api.websocket.as_ref().is_some_and(|w| w.connections_iam) {
            out.push(format!(
                "apis[{:?}].connections_authorization: \"aws_iam\" (the default) without an [aws_iam] table: @connections on the API's own domain refuses every caller (403); add [aws_iam], or set connections_authorization = \"none\" (the admin listener's @connections works either way)",
                api.name
            ));
        }
    }
    // A domain's certificate that no TLS listener serving the domain could offer.
    for d in cfg.domains.iter().filter(|d| d.tls.is_some()) {
        let tls_listener = cfg
            .listeners
            .iter()
            .any(|l| l.tls.is_some() && d.listeners.as_ref().is_none_or(|ls| ls.contains(&l.name)));
        if !tls_listener {
            out.push(format!(
                "domains[{:?}].tls: no TLS listener serves this domain, so its certificate is never offered",
                crate::config::host_text(&d.host)
            ));
        }
    }
    out
}
