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
        let verdict = self.verify(&chain[0], &chain[1..], UnixTime::now());
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
        let verdict = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(_) => Ok(()),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)) => {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadEncoding,
                ));
            }
            Err(e) => Err(Arc::from(reason(&e))),
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
