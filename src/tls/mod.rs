//! TLS termination with rustls: certificate loading (checked at config load, so a bad file
//! is refused by `tollgate check` and by a reload while the old certificate keeps serving),
//! SNI selection per listener, and the per-connection stream ([`stream::TlsConn`]).
//!
//! Each listener with `tls` gets one `rustls::ServerConfig`, compiled into the snapshot: a
//! reload (SIGHUP, `POST /reload`, or a certificate file changing on disk) publishes new
//! configs, new handshakes use them, and connections already open keep theirs.

pub(crate) mod client;
pub(crate) mod client_auth;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ahash::AHashMap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its key, loaded and checked.
#[derive(Clone)]
pub(crate) struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Files it came from (watched for changes).
    pub files: [PathBuf; 2],
    /// Subject alternative names (DNS), for `tollgate check` and logs.
    pub names: Vec<String>,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
    /// Hash of the two files' contents as loaded (the control plane compares it with the
    /// files on disk to reload when they change).
    pub stamp: u64,
}

/// The hash [`LoadedCert::stamp`] holds, of a certificate file and a key file.
pub(crate) fn stamp(cert: &[u8], key: &[u8]) -> u64 {
    ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one((cert, key))
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("files", &self.files)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("stamp", &self.stamp)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM chain and a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key; refuses a missing or
/// unreadable file, a file without a certificate or key, a key that does not match the
/// certificate, and an expired certificate unless `allow_expired`.
pub(crate) fn load_cert(
    cert: &Path,
    key: &Path,
    allow_expired: bool,
) -> Result<LoadedCert, String> {
    let cert_pem = read_pem(cert)?;
    let key_pem = read_pem(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        format!(
            "{}: no private key (expected a PEM PKCS#8, RSA or EC private key)",
            key.display()
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain.clone(), signing);
    ck.keys_match().map_err(|_| {
        format!(
            "{} does not match the certificate in {}",
            key.display(),
            cert.display()
        )
    })?;
    let (_, x) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| format!("{}: cannot parse the certificate: {e}", cert.display()))?;
    let not_after = x.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if not_after < now && !allow_expired {
        return Err(format!(
            "{}: the certificate expired on {}; renew it, or set allow_expired = true to serve it anyway",
            cert.display(),
            x.validity().not_after
        ));
    }
    let names = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LoadedCert {
        key: Arc::new(ck),
        files: [cert.to_path_buf(), key.to_path_buf()],
        names,
        not_after,
        stamp: stamp(&cert_pem, &key_pem),
    })
}

/// A PEM file's bytes (a regular file of at most 4 MiB).
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    crate::config::units::read_file(path, crate::config::units::MAX_PEM_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Loads the CA certificates client certificates must chain to.
pub(crate) fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let pem = read_pem(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", path.display()));
    }
    Ok(Arc::new(roots))
}

pub(crate) use crate::syntax::CertField;

/// Every field of a verified client certificate, indexed by `CertField as usize`; computed
/// once per connection.
pub(crate) fn cert_fields(der: &[u8]) -> Vec<String> {
    use sha2::Digest;
    let Ok((_, x)) = x509_parser::parse_x509_certificate(der) else {
        return vec![String::new(); CertField::ALL.len()];
    };
    CertField::ALL
        .iter()
        .map(|f| match f {
            CertField::SubjectDN => dn(x.subject()),
            CertField::IssuerDN => dn(x.issuer()),
            CertField::SerialNumber => x.raw_serial_as_string().replace(':', ""),
            CertField::Fingerprint => crate::auth::hex(&sha2::Sha256::digest(der)),
            CertField::Sans => x
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .map(san)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            CertField::NotBefore => openssl_time(x.validity().not_before.timestamp()),
            CertField::NotAfter => openssl_time(x.validity().not_after.timestamp()),
            CertField::ClientCertPem => {
                let b64 = base64_pem(der);
                b64.bytes()
                    .map(|b| match b {
                        b'\n' => "%0A".to_string(),
                        b'+' => "%2B".to_string(),
                        b'/' => "%2F".to_string(),
                        b'=' => "%3D".to_string(),
                        b' ' => "%20".to_string(),
                        c => (c as char).to_string(),
                    })
                    .collect()
            }
        })
        .map(|v: String| escape_controls(&v))
        .collect()
}

/// Control characters as `\XX` (each byte of their UTF-8, in hex), as OpenSSL's RFC 2253 form
/// writes them (RFC 4514 2.4): a value for a header, never a line break, and never another
/// certificate's value (deleting them made `CN=adm\x07in` reach the upstream as `CN=admin`).
fn escape_controls(v: &str) -> String {
    if !v.chars().any(char::is_control) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        if c.is_control() {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A distinguished name as RFC 4514 writes it (`CN=alice,O=Acme\, Inc.`, what Java's and
/// OpenSSL's `RFC2253` forms give): the most specific RDN first, `,` between RDNs, `+` within
/// one, and `,+"\<>;` (a leading `#` or space, a trailing space) escaped, so that no value can
/// pass for another attribute. A value that is not a string is `#` and its hex.
fn dn(name: &x509_parser::x509::X509Name) -> String {
    let reg = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let t = x509_parser::objects::oid2abbrev(a.attr_type(), reg)
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    let v = match a.as_str() {
                        Ok(s) => escape_dn_value(s),
                        Err(_) => format!("#{}", crate::auth::hex(a.attr_value().data)),
                    };
                    format!("{t}={v}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// An attribute value escaped as RFC 4514 section 2.4 says.
fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A subject alternative name as OpenSSL prints it (`DNS:a.example`, `email:a@example`,
/// `IP Address:192.0.2.1`, `URI:https://...`).
fn san(g: &x509_parser::extensions::GeneralName) -> String {
    use x509_parser::extensions::GeneralName as G;
    match g {
        G::DNSName(s) => format!("DNS:{s}"),
        G::RFC822Name(s) => format!("email:{s}"),
        G::URI(s) => format!("URI:{s}"),
        G::IPAddress(b) => match b.len() {
            4 => format!(
                "IP Address:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
            ),
            16 => format!(
                "IP Address:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
            ),
            _ => format!("IP Address:#{}", crate::auth::hex(b)),
        },
        G::DirectoryName(n) => format!("DirName:{}", dn(n)),
        other => other.to_string(),
    }
}

/// A time as OpenSSL prints a certificate's (`May 28 12:30:02 2019 GMT`, the form of Amazon's
/// `validity.notBefore`).
fn openssl_time(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = crate::syntax::civil::civil_from_days(days);
    format!(
        "{} {d:>2} {:02}:{:02}:{:02} {y} GMT",
        MONTHS[(m as usize).saturating_sub(1).min(11)],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Renders the configured headers from a certificate's fields, once per connection.
/// Values never contain CR or LF.
pub(crate) fn client_cert_headers(values: &[String], fields: &[(String, CertField)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, f) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(values[*f as usize].as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// PEM text of a DER certificate.
fn base64_pem(der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in der.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                b64.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Picks the certificate for a handshake by SNI: an exact host, then a `*.suffix` wildcard
/// (one label, as certificates match), then the listener's own — or no certificate (the
/// handshake fails) for an unknown name when `sni_strict`.
#[derive(Debug)]
pub(crate) struct SniResolver {
    default: Arc<CertifiedKey>,
    strict: bool,
    exact: AHashMap<String, Arc<CertifiedKey>>,
    /// Lower-cased ".example.com" suffixes.
    wildcard: AHashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(crate) fn new(default: Arc<CertifiedKey>, strict: bool) -> SniResolver {
        SniResolver {
            default,
            strict,
            exact: AHashMap::new(),
            wildcard: AHashMap::new(),
        }
    }

    /// `host` is "api.example.com" or "*.example.com".
    pub(crate) fn add(&mut self, host: &str, key: Arc<CertifiedKey>) {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), key),
            None => self.exact.insert(host, key),
        };
    }

    pub(crate) fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            // No SNI (a client dialling an IP address): the listener's certificate.
            return Some(self.default.clone());
        };
        // One trailing dot (a fully qualified name) is no other name, as in Host.
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some(dot) = name.find('.') {
            if let Some(k) = self.wildcard.get(&name[dot..]) {
                return Some(k.clone());
            }
        }
        (!self.strict).then(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The listeners' provider: ring, with AES-128-GCM ahead of AES-256-GCM (BoringSSL's and Go's
/// order). Its TLS 1.3 key schedule runs on SHA-256, which CPUs accelerate, where AES-256's
/// SHA-384 runs in software: that was a tenth of a resumed handshake's CPU.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        _ => 4,
    });
    Arc::new(p)
}

/// A TLS listener's compiled settings: the server config, and on mTLS listeners the check of
/// each connection's client certificate.
#[derive(Clone, Debug)]
pub(crate) struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub clients: Option<Arc<client_auth::ClientCerts>>,
}

/// Builds a listener's server config: TLS 1.2 and 1.3 with rustls' safe defaults, the
/// server's cipher order, SNI, ALPN, session tickets and a session cache for resumption.
pub(crate) fn server_config(
    resolver: SniResolver,
    alpn: &[String],
    clients: Option<Arc<client_auth::ClientCerts>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let b = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let b = match clients {
        None => b.with_no_client_auth(),
        Some(c) => b.with_client_cert_verifier(c),
    };
    let mut cfg = b.with_cert_resolver(Arc::new(resolver));
    cfg.ignore_client_order = true;
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg.session_storage = Arc::new(client_auth::BoundedSessions(
        rustls::server::ServerSessionMemoryCache::new(16 * 1024),
    ));
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let k = PrivateKeyDer::from_pem_slice(c.key_pair.serialize_pem().as_bytes()).unwrap();
        let signing = provider().key_provider.load_private_key(k).unwrap();
        Arc::new(CertifiedKey::new(vec![c.cert.der().clone()], signing))
    }

    #[test]
    fn client_certificate_fields_are_unambiguous_and_in_openssls_forms() {
        let mut p = rcgen::CertificateParams::new(vec!["alice.example".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
        // In the certificate's order: O, then CN (as `-subj "/O=.../CN=..."` makes it).
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        // One CN whose value reads like a second attribute.
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "guest, CN=admin");
        p.not_before = rcgen::date_time_ymd(2019, 5, 8);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let f = cert_fields(cert.der());
        assert_eq!(
            f[CertField::SubjectDN as usize],
            r"CN=guest\, CN=admin,O=Acme\, Inc."
        );
        assert_eq!(
            f[CertField::IssuerDN as usize],
            f[CertField::SubjectDN as usize]
        );
        assert_eq!(f[CertField::NotBefore as usize], "May  8 00:00:00 2019 GMT");
        assert_eq!(
            f[CertField::Sans as usize],
            "DNS:alice.example, email:alice@example.com"
        );
        assert_eq!(escape_dn_value(" #a+b "), r"\ #a\+b\ ");
        // Control characters are escaped, not dropped: `adm\x07in` is not `admin`.
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "adm\u{7}in\u{1b}");
        let cert = p.self_signed(&key).unwrap();
        let f = cert_fields(cert.der());
        assert_eq!(f[CertField::SubjectDN as usize], r"CN=adm\07in\1B");
    }

    #[test]
    fn sni_exact_then_wildcard_then_default_or_strict() {
        let (d, e, w) = (key(), key(), key());
        let mut r = SniResolver::new(d.clone(), false);
        r.add("API.example.com", e.clone());
        r.add("*.example.com", w.clone());
        let same =
            |a: Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>| Arc::ptr_eq(&a.unwrap(), b);
        assert!(same(r.pick(Some("api.EXAMPLE.com")), &e));
        assert!(same(r.pick(Some("www.example.com")), &w));
        // A wildcard covers one label only.
        assert!(same(r.pick(Some("a.b.example.com")), &d));
        assert!(same(r.pick(Some("other.test")), &d));
        assert!(same(r.pick(None), &d));
        let mut strict = SniResolver::new(d.clone(), true);
        strict.add("api.example.com", e.clone());
        assert!(strict.pick(Some("other.test")).is_none());
        assert!(same(strict.pick(Some("api.example.com")), &e));
        assert!(same(strict.pick(None), &d));
        // A fully qualified name (one trailing dot) is the same name, as in Host.
        assert!(same(strict.pick(Some("api.example.com.")), &e));
        assert!(same(r.pick(Some("www.example.com.")), &w));
        assert!(strict.pick(Some("api.example.com..")).is_none());
    }
}
