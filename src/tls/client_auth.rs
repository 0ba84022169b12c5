//! Client certificates on mTLS listeners, checked as Amazon API Gateway checks them: the
//! handshake completes whatever the client sends (its possession of the certificate's key is
//! still proven, by rustls), and the connection's requests are answered 403 `Forbidden` when
//! its certificate does not chain to `client_ca`, has expired or is signed with an algorithm
//! not accepted, or, in `required` mode, when it sent none.
//!
//! The verdict is taken per connection from the certificates the session holds, resumed
//! sessions included: rustls does not call the verifier when a session resumes, so a ticket
//! issued to a client it refused carries its certificate, and is checked again here. Verdicts
//! are kept by the chain's SHA-256 for a minute (a full handshake's is the one its own
//! verification left; a resumed session's is usually still there).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

/// How long a verdict is reused: a certificate that expires, or a CA file replaced (a new
/// verifier, with an empty cache), takes effect within this.
const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Verdicts kept per listener: a client churning certificates only pushes others out (each
/// costs it a handshake and a key of its own).
const VERDICTS: usize = 4096;
/// Certificates a client's chain may hold, its own included: Amazon's limit (a chain of four).
/// A longer one is refused unverified: path building over many same-named certificates cost
/// ~80 ms of a shard per handshake.
const MAX_CHAIN: usize = 4;
/// Bytes a client's chain may hold (a chain of four 4096-bit RSA certificates is ~7 KB).
const MAX_CHAIN_BYTES: usize = 16 << 10;

/// Why a chain is refused before it is verified (too long, too big), if it is.
fn too_big(chain_len: usize, bytes: usize) -> Option<Arc<str>> {
    if chain_len > MAX_CHAIN {
        return Some(format!("certificate chain of {chain_len}: at most {MAX_CHAIN} (the client's and three issuers)").into());
    }
    (bytes > MAX_CHAIN_BYTES)
        .then(|| format!("certificate chain of {bytes} bytes: at most {MAX_CHAIN_BYTES}").into())
}

type Verdict = (Result<(), Arc<str>>, SystemTime);

/// A listener's client-certificate check: rustls' WebPKI verifier, asked during full
/// handshakes (its answer recorded, the handshake let through) and for each connection's
/// verdict.
#[derive(Debug)]
pub(crate) struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
    required: bool,
    verdicts: quick_cache::sync::Cache<[u8; 32], Verdict>,
}

impl ClientCerts {
    pub(crate) fn new(
        roots: Arc<rustls::RootCertStore>,
        required: bool,
    ) -> Result<Arc<Self>, String> {
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(ClientCerts {
            inner,
            required,
            verdicts: quick_cache::sync::Cache::new(VERDICTS),
        }))
    }

    /// Why a connection whose session holds `chain` (the client's certificates, its own
    /// first) is refused; `None` when it is served.
    pub(crate) fn refusal(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Arc<str>> {
        let chain = match chain {
            Some(c) if !c.is_empty() => c,
            _ if self.required => return Some("no client certificate".into()),
            _ => return None,
        };
        let now = SystemTime::now();
        let key = chain_key(chain);
        if let Some((verdict, at)) = self.verdicts.get(&key) {
            if now.duration_since(at).is_ok_and(|age| age < VERDICT_TTL) {
                return verdict.err();
            }
        }
        let bytes = chain.iter().map(|c| c.len()).sum();
        let verdict = match too_big(chain.len(), bytes) {
            Some(why) => Err(why),
            None => self.verify(&chain[0], &chain[1..], UnixTime::now()),
        };
        self.verdicts.insert(key, (verdict.clone(), now));
        verdict.err()
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Arc<str>> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .map(|_| ())
            .map_err(|e| reason(&e).into())
    }
}

/// A connection's client certificate, checked again once its verdict is older than
/// [`VERDICT_TTL`], against its listener's check as the current configuration has it: a CA
/// file replaced (access revoked) or a certificate that expired ends an open connection's
/// service too, not only new ones'.
#[derive(Debug)]
pub(crate) struct Recheck {
    chain: Vec<CertificateDer<'static>>,
    at: std::cell::Cell<std::time::Instant>,
    refused: std::cell::RefCell<Option<Arc<str>>>,
}

impl Recheck {
    pub(crate) fn new(chain: &[CertificateDer<'_>], refused: Option<Arc<str>>) -> Recheck {
        Recheck {
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            at: std::cell::Cell::new(crate::driver::time::now()),
            refused: std::cell::RefCell::new(refused),
        }
    }

    /// Why the connection's requests are refused now (`certs`: the listener's check in the
    /// current configuration; `None` when it no longer asks for certificates).
    pub(crate) fn refusal(&self, certs: Option<&ClientCerts>) -> Option<Arc<str>> {
        let now = crate::driver::time::now();
        if now.saturating_duration_since(self.at.get()) >= VERDICT_TTL {
            self.at.set(now);
            *self.refused.borrow_mut() = certs.and_then(|c| c.refusal(Some(&self.chain)));
        }
        self.refused.borrow().clone()
    }
}

/// The chain's identity: SHA-256 over each certificate's length and bytes.
fn chain_key(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for c in chain {
        h.update(&(c.len() as u64).to_be_bytes());
        h.update(c);
    }
    let mut key = [0; 32];
    key.copy_from_slice(h.finish().as_ref());
    key
}

/// Why a certificate was not accepted, in Amazon API Gateway's words where it has them (its
/// execution log's "Access denied. Reason: ...").
fn reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "Could not find issuer for certificate".into()
        }
        rustls::Error::InvalidCertificate(C::UnsupportedSignatureAlgorithmContext { .. }) => {
            "Client cert using an insecure Signature Algorithm".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "certificate has expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate is not yet valid".into()
        }
        e => format!("client certificate not accepted: {e}"),
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Never: a connection without a certificate is answered 403 (in `required` mode), as
    /// Amazon API Gateway answers it, rather than failing its handshake.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    /// Records the verdict and lets the handshake complete; the connection's requests are
    /// refused by [`ClientCerts::refusal`]. A certificate that cannot be parsed still fails
    /// here (the signature check below could not use it anyway).
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bytes = end_entity.len() + intermediates.iter().map(|c| c.len()).sum::<usize>();
        let verified = match too_big(1 + intermediates.len(), bytes) {
            Some(why) => Err(why),
            None => Ok(self
                .inner
                .verify_client_cert(end_entity, intermediates, now)),
        };
        let verdict = match verified {
            Err(why) => Err(why),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))) => {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadEncoding,
                ));
            }
            Ok(Err(e)) => Err(Arc::from(reason(&e))),
        };
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        self.verdicts
            .insert(chain_key(&chain), (verdict, SystemTime::now()));
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The listener's TLS 1.2 session cache (for clients without tickets), bounded in bytes per
/// session: a session holds the client's certificate chain, and since any chain completes a
/// handshake on an mTLS listener, 16,384 sessions of 64 KB chains were ~1 GiB a client could
/// fill. A larger session is not kept (that client resumes by ticket, or not at all).
#[derive(Debug)]
pub(crate) struct BoundedSessions(pub Arc<dyn rustls::server::StoresServerSessions>);

/// The largest session value kept.
const MAX_SESSION_BYTES: usize = 4 << 10;

impl rustls::server::StoresServerSessions for BoundedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        value.len() <= MAX_SESSION_BYTES && self.0.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.take(key)
    }
    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::StoresServerSessions;

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap(), key)
    }

    fn roots(ca: &rcgen::Certificate) -> Arc<rustls::RootCertStore> {
        let mut r = rustls::RootCertStore::empty();
        r.add(ca.der().clone()).unwrap();
        Arc::new(r)
    }

    /// An open connection's certificate is judged again once its verdict is a minute old,
    /// by the listener's check as it is then (a CA replaced): not for the connection's life.
    #[test]
    fn an_aged_verdict_is_taken_again_from_the_current_check() {
        let (old_ca, old_key) = ca();
        let (new_ca, _) = ca();
        let p = rcgen::CertificateParams::new(vec!["c.test".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = p.signed_by(&key, &old_ca, &old_key).unwrap();
        let chain = [leaf.der().clone()];
        let before = ClientCerts::new(roots(&old_ca), true).unwrap();
        let after = ClientCerts::new(roots(&new_ca), true).unwrap();
        let r = Recheck::new(&chain, before.refusal(Some(&chain)));
        assert_eq!(
            r.refusal(Some(&after)),
            None,
            "within the minute: as judged"
        );
        r.at.set(std::time::Instant::now() - VERDICT_TTL);
        assert!(
            r.refusal(Some(&after)).is_some(),
            "refused under the new CA"
        );
        // The listener no longer asks for certificates: served.
        r.at.set(std::time::Instant::now() - VERDICT_TTL);
        assert_eq!(r.refusal(None), None);
    }

    #[test]
    fn sessions_over_the_bound_are_not_kept() {
        let s = BoundedSessions(rustls::server::ServerSessionMemoryCache::new(16));
        assert!(s.put(b"a".to_vec(), vec![0; 1000]));
        assert!(!s.put(b"b".to_vec(), vec![0; MAX_SESSION_BYTES + 1]));
        assert!(s.get(b"a").is_some() && s.get(b"b").is_none());
    }
}
