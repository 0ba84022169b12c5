//! TLS from the config's paths: certificates and keys read and checked, each TLS listener's
//! server config (its own certificate as the default, the domains' by SNI, client-certificate
//! verification), and each upstream's client config. Errors name the key the path was
//! written under.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, HostPattern, TlsCert};
use crate::tls::client_auth::ClientCerts;
use crate::tls::{ListenerTls, LoadedCert, SniResolver};

use super::Errors;

/// Every certificate the config names, in a fixed order: listeners', then domains'. The
/// compiled snapshot keeps their stamps in this order, to notice when the files change.
pub(crate) fn cert_files(cfg: &Config) -> Vec<&TlsCert> {
    cfg.listeners
        .iter()
        .filter_map(|l| l.tls.as_ref().map(|t| &t.cert))
        .chain(cfg.domains.iter().filter_map(|d| d.tls.as_ref()))
        .collect()
}

/// The client CA files of mTLS listeners, in listener order (watched as certificates are).
pub(crate) fn ca_files(cfg: &Config) -> Vec<&Path> {
    cfg.listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.mtls.as_ref())
        .map(|m| m.client_ca.as_path())
        .collect()
}

/// The stamp of a client CA file as it is now (0 when it cannot be read).
pub(crate) fn ca_stamp(path: &Path) -> u64 {
    crate::tls::read_pem(path).map_or(0, |pem| crate::tls::stamp(&pem, b""))
}

fn load(c: &TlsCert, errors: &mut Errors) -> Option<LoadedCert> {
    crate::tls::load_cert(&c.cert, &c.key, c.allow_expired)
        .map_err(|e| errors.err(&c.source, e))
        .ok()
}

/// Per listener, its server config (None on plain listeners), and the stamps of
/// [`cert_files`], then of [`ca_files`]. `None` when a certificate could not be loaded (the errors say which).
#[allow(clippy::type_complexity)]
pub(super) fn listeners(
    cfg: &Config,
    errors: &mut Errors,
) -> Option<(Vec<Option<ListenerTls>>, Vec<u64>)> {
    let before = errors.0.len();
    // Stamped before they are loaded: a file that changes between the two is loaded again.
    let ca_stamps: Vec<u64> = ca_files(cfg).into_iter().map(ca_stamp).collect();
    let listener_certs: Vec<Option<LoadedCert>> = cfg
        .listeners
        .iter()
        .map(|l| l.tls.as_ref().and_then(|t| load(&t.cert, errors)))
        .collect();
    let domain_certs: Vec<Option<LoadedCert>> = cfg
        .domains
        .iter()
        .map(|d| d.tls.as_ref().and_then(|t| load(t, errors)))
        .collect();
    // A domain's certificate must name its host: one that does not is served to its clients
    // all the same, and every client that verifies it fails.
    for (d, loaded) in cfg.domains.iter().zip(&domain_certs) {
        let (Some(c), Some(t)) = (loaded, &d.tls) else {
            continue;
        };
        let host = match &d.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(sfx) => format!("*{sfx}"),
            HostPattern::Any => continue,
        };
        if !covers(&c.names, &host) {
            errors.err(
                &t.source,
                format!(
                    "the certificate's names ({}) do not cover the domain's host {host:?}: every client that verifies it would refuse it",
                    if c.names.is_empty() { "none".to_string() } else { c.names.join(", ") }
                ),
            );
        }
    }
    let mut configs = Vec::with_capacity(cfg.listeners.len());
    for (l, loaded) in cfg.listeners.iter().zip(&listener_certs) {
        let (Some(t), Some(default)) = (&l.tls, loaded) else {
            configs.push(None);
            continue;
        };
        let client_auth = match &t.mtls {
            None => None,
            Some(m) => match crate::tls::load_roots(&m.client_ca)
                .and_then(|roots| ClientCerts::new(roots, m.required))
            {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.err(&format!("{}.client_ca", m.source), e);
                    continue;
                }
            },
        };
        let mut r = SniResolver::new(default.key.clone(), t.sni_strict);
        // The names the listener's own certificate covers are known names too (`sni_strict`
        // refused them); a domain's certificate for one of them takes its place below.
        for name in &default.names {
            r.add(name, default.key.clone());
        }
        for (d, loaded) in cfg.domains.iter().zip(&domain_certs) {
            let on = d.listeners.as_ref().is_none_or(|ls| ls.contains(&l.name));
            let (Some(loaded), true) = (loaded, on) else {
                continue;
            };
            match &d.host {
                HostPattern::Exact(h) => r.add(h, loaded.key.clone()),
                HostPattern::Suffix(sfx) => r.add(&format!("*{sfx}"), loaded.key.clone()),
                HostPattern::Any => {}
            }
        }
        match crate::tls::server_config(r, &l.alpn, client_auth.clone()) {
            Ok(config) => configs.push(Some(ListenerTls {
                config,
                clients: client_auth,
            })),
            Err(e) => errors.err(&t.cert.source, e),
        }
    }
    if errors.0.len() > before {
        return None;
    }
    let stamps = listener_certs
        .iter()
        .chain(&domain_certs)
        .flatten()
        .map(|c| c.stamp)
        .chain(ca_stamps)
        .collect();
    Some((configs, stamps))
}

/// Per upstream, the TLS client config it is reached with (None for plain upstreams).
pub(super) fn upstream_clients(
    cfg: &Config,
    errors: &mut Errors,
) -> Vec<Option<Arc<rustls::ClientConfig>>> {
    cfg.upstreams
        .iter()
        .map(|u| {
            let t = u.tls.as_ref()?;
            let client = t.cert.as_deref().zip(t.key.as_deref());
            crate::tls::client::client_config(t.ca.as_deref(), client, u.h2)
                .map_err(|e| errors.err(&t.source, e))
                .ok()
        })
        .collect()
}

/// The fleet's Redis over TLS (`cluster.redis = "rediss://..."`): its client config (no ALPN:
/// Redis speaks none) and the name its certificate must hold, sent as SNI.
pub(super) fn redis_client(cfg: &Config, errors: &mut Errors) -> Option<crate::tls::client::UpTls> {
    let t = cfg.cluster.as_ref()?.tls.as_ref()?;
    let client = t.cert.as_deref().zip(t.key.as_deref());
    let config = crate::tls::client::client_config(t.ca.as_deref(), client, false)
        .map_err(|e| errors.err("cluster.tls", e))
        .ok()?;
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols.clear();
    let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
        .map_err(|e| errors.err("cluster.tls.server_name", e.to_string()))
        .ok()?;
    Some(crate::tls::client::UpTls {
        config: Arc::new(config),
        name,
        trust: crate::tls::client::UpTls::trust_of(
            t.ca.as_deref(),
            t.cert.as_deref().zip(t.key.as_deref()),
        ),
    })
}

/// Whether a certificate's DNS names cover `host` (a name, or `*.suffix` for a wildcard
/// domain): the same name, or a wildcard name one label up (`*.example.com` covers
/// `api.example.com`, not `a.b.example.com`), as clients match them (RFC 6125 6.4.3).
fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        n == host
            || n.strip_prefix("*.").is_some_and(|rest| {
                host.split_once('.')
                    .is_some_and(|(first, up)| !first.is_empty() && first != "*" && up == rest)
            })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn certificate_names_cover_hosts_as_clients_match_them() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(super::covers(
            &names(&["api.example.com"]),
            "API.example.com"
        ));
        assert!(super::covers(&names(&["*.example.com"]), "api.example.com"));
        assert!(super::covers(&names(&["*.example.com"]), "*.example.com"));
        assert!(!super::covers(
            &names(&["*.example.com"]),
            "a.b.example.com"
        ));
        assert!(!super::covers(
            &names(&["api.example.test"]),
            "api.other.test"
        ));
        assert!(!super::covers(&names(&[]), "api.other.test"));
    }
}
