//! TLS to upstreams: one rustls client config per TLS upstream (its CA or the system's roots,
//! an optional client certificate, ALPN `http/1.1` or `h2` as the upstream's `protocol` says,
//! an in-memory session cache so pooled reconnects resume), and the name each target is
//! verified against and sent as SNI.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;

/// What connecting to one target over TLS needs.
#[derive(Clone)]
pub(crate) struct UpTls {
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and the name the certificate must carry.
    pub name: ServerName<'static>,
    /// What the connection is verified against and presents (the CA file or the system's
    /// roots, the client certificate): upstreams naming one address and name share its pool
    /// only when these are the same too.
    pub trust: Arc<str>,
}

impl std::fmt::Debug for UpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpTls({})", self.name.to_str())
    }
}

impl UpTls {
    /// The name as text.
    pub(crate) fn name_text(&self) -> String {
        self.name.to_str().into_owned()
    }

    /// What a pool is keyed by besides the address: the name, and the trust and identity
    /// the connections were made with (a connection verified against one upstream's CA, or
    /// presenting its client certificate, never serves another's requests).
    pub(crate) fn pool_key(&self) -> String {
        format!("{}|{}", self.name.to_str(), self.trust)
    }

    /// [`UpTls::trust`] for a CA file (`None`: the system's roots) and a client certificate:
    /// each file by its path and a digest of what it holds now, so that a reload after a
    /// file changed puts the target in a new pool (connections verified under the old trust
    /// or presenting the old certificate take no new request).
    pub(crate) fn trust_of(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Arc<str> {
        fn file(p: &Path) -> String {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(p).unwrap_or_default().hash(&mut h);
            format!("{}#{:016x}", p.display(), h.finish())
        }
        let ca = ca.map_or_else(|| "system roots".to_string(), file);
        match client {
            None => format!("ca={ca}").into(),
            Some((c, k)) => format!("ca={ca};cert={};key={}", file(c), file(k)).into(),
        }
    }
}

/// The system's trust store (`/etc/ssl/certs` and friends), read once.
pub(crate) fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no CA certificates in the system's trust store ({} errors); give ca = \"...\"",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// A client config: `ca` (PEM) or the system's roots; `client` a certificate and key to
/// present to upstreams that ask for one.
pub(crate) fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
    h2: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(p) => super::load_roots(p)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let loaded = super::load_cert(cert, key, false)?;
            b.with_client_cert_resolver(Arc::new(ClientCert(loaded.key)))
        }
    };
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

/// Presents the one configured client certificate to every upstream that asks.
#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

pub(crate) use crate::syntax::server_name;
