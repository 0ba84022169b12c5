//! `[[listeners]]`: addresses, TLS certificates (paths; the compile step loads them), SNI,
//! client certificates (mTLS), h2c and redirects.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// TLS termination: the listener's default certificate and handshake settings.
    pub tls: Option<ListenerTls>,
    /// Protocols offered by ALPN on a TLS listener.
    pub alpn: Vec<String>,
    /// A plain listener also takes HTTP/2 with prior knowledge (RFC 9113 3.3).
    pub h2c: bool,
    /// A plain listener that answers every request with 308 to `https://` (same host, path).
    pub redirect_https: bool,
    /// TCP_DEFER_ACCEPT (nginx's `deferred`, HAProxy's `defer-accept`): a connection is
    /// handed to a shard once its first bytes have arrived, not at the handshake.
    pub defer_accept: bool,
    /// Connections start with a PROXY protocol header (v1 or v2), believed only from
    /// `server.trusted_proxies`.
    pub proxy_protocol: bool,
}

/// A certificate and key, checked at load.
#[derive(Debug, Clone, Serialize)]
pub struct TlsCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub allow_expired: bool,
    /// Where it was written (`listeners["web"].tls`), for the compile step's errors.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerTls {
    #[serde(flatten)]
    pub cert: TlsCert,
    /// Refuse handshakes for names no certificate covers (instead of the default one).
    pub sni_strict: bool,
    pub mtls: Option<Mtls>,
}

/// Client certificates: verified against `client_ca`; `required` refuses handshakes without
/// one. `headers` forwards fields of the verified certificate to the upstream.
#[derive(Debug, Clone, Serialize)]
pub struct Mtls {
    pub client_ca: PathBuf,
    pub required: bool,
    /// (lower-cased header name, field)
    pub headers: Vec<(String, crate::syntax::CertField)>,
    /// Where it was written (`listeners["web"].mtls`), for the compile step's errors.
    #[serde(skip)]
    pub source: String,
}

impl Validator {
    /// Loads and checks a certificate and key (paths relative to the config file).
    pub(super) fn tls_cert(&mut self, key: &str, t: file::TlsFile, base: &Path) -> Option<TlsCert> {
        let (Some(cert), Some(k)) = (t.cert, t.key) else {
            self.err(
                key,
                "needs cert and key: { cert = \"server.pem\", key = \"server.key\" } (PEM files)",
            );
            return None;
        };
        let (cert, k) = (base.join(cert), base.join(k));
        let allow_expired = t.allow_expired.unwrap_or(false);
        // Read and checked by the compile step (`crate::compile`), which names this key.
        Some(TlsCert {
            cert,
            key: k,
            allow_expired,
            source: key.to_string(),
        })
    }

    pub(super) fn mtls(&mut self, key: &str, m: file::MtlsFile, base: &Path) -> Option<Mtls> {
        let required = match m.mode.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.bad(
                    &format!("{key}.mode"),
                    other,
                    "\"required\" or \"optional\"",
                );
                true
            }
        };
        let mut headers = Vec::new();
        for (name, field) in m.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                self.bad(&format!("{key}.headers"), &name, "a header name");
                continue;
            }
            // A certificate field (chosen by the client) in the request's framing or the
            // gateway's own fields would be a second Host, a stray Transfer-Encoding.
            if self.request_framing_header(&format!("{key}.headers"), &name) {
                continue;
            }
            match crate::syntax::CertField::parse(&field) {
                Some(f) => headers.push((name.to_ascii_lowercase(), f)),
                None => self.bad(
                    &format!("{key}.headers.{name}"),
                    &field,
                    crate::syntax::CertField::HELP,
                ),
            }
        }
        let Some(ca) = m.client_ca else {
            self.err(
                &format!("{key}.client_ca"),
                "is required: a PEM file of the CA certificates client certificates must chain to",
            );
            return None;
        };
        let client_ca = base.join(ca);
        Some(Mtls {
            client_ca,
            required,
            headers,
            source: key.to_string(),
        })
    }

    pub(super) fn listeners(&mut self, raw: Vec<file::ListenerFile>, base: &Path) -> Vec<Listener> {
        if raw.is_empty() {
            self.err("listeners", "at least one [[listeners]] entry is required");
        }
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let key = item("listeners", i, l.name.as_ref());
            let name = self.name(&format!("{key}.name"), l.name);
            if l.mtls.is_some() && l.tls.is_none() {
                self.err(&format!("{key}.mtls"), "needs tls on the same listener");
            }
            let has_tls = l.tls.is_some();
            let mtls = l
                .mtls
                .and_then(|m| self.mtls(&format!("{key}.mtls"), m, base));
            let tls = l.tls.and_then(|t| {
                let strict = t.sni_strict.unwrap_or(false);
                self.tls_cert(&format!("{key}.tls"), t, base)
                    .map(|cert| ListenerTls {
                        cert,
                        sni_strict: strict,
                        mtls,
                    })
            });
            let h2c = l.h2c.unwrap_or(false);
            if h2c && has_tls {
                self.err(
                    &format!("{key}.h2c"),
                    "belongs on a plain listener: a TLS listener offers HTTP/2 by ALPN (alpn)",
                );
            }
            if l.alpn.is_some() && !has_tls {
                self.err(
                    &format!("{key}.alpn"),
                    "belongs on a TLS listener (ALPN is a TLS extension): a plain listener serves HTTP/1.1, and HTTP/2 with prior knowledge with h2c = true",
                );
            }
            let alpn = l
                .alpn
                .unwrap_or_else(|| vec!["h2".to_string(), "http/1.1".to_string()]);
            if alpn.is_empty() {
                self.bad(
                    &format!("{key}.alpn"),
                    "[]",
                    "a list of \"h2\" and/or \"http/1.1\"",
                );
            }
            for (j, p) in alpn.iter().enumerate() {
                match p.as_str() {
                    "http/1.1" | "h2" if alpn[..j].contains(p) => {
                        self.bad(&format!("{key}.alpn"), p, "each protocol once")
                    }
                    "http/1.1" | "h2" => {}
                    other => self.bad(&format!("{key}.alpn"), other, "\"h2\" or \"http/1.1\""),
                }
            }
            let defer_accept = l.defer_accept.unwrap_or(false);
            let proxy_protocol = l.proxy_protocol.unwrap_or(false);
            let redirect_https = l.redirect_https.unwrap_or(false);
            if redirect_https && tls.is_some() {
                self.err(
                    &format!("{key}.redirect_https"),
                    "belongs on a plain listener: this one already serves HTTPS",
                );
            }
            let Some(addr) = self.socket_addr(&format!("{key}.addr"), l.addr) else {
                continue;
            };
            if out.iter().any(|o| o.name == name && !name.is_empty()) {
                self.err(
                    &format!("{key}.name"),
                    "is used by two listeners; names must be unique",
                );
            }
            if let Some(o) = out.iter().find(|o| super::sockets_clash(o.addr, addr)) {
                self.err(
                    &format!("{key}.addr"),
                    if o.addr == addr {
                        format!("{addr} is used by two listeners")
                    } else if o.addr.ip().to_canonical() == addr.ip().to_canonical() {
                        format!(
                            "{addr} is the socket of listener {:?} ({}): an IPv4-mapped address is its IPv4 address",
                            o.name, o.addr
                        )
                    } else {
                        format!(
                            "{addr} takes the socket of listener {:?} ({}): the same port, and one of the two listens on every address",
                            o.name, o.addr
                        )
                    },
                );
            }
            out.push(Listener {
                name,
                addr,
                tls,
                alpn,
                h2c,
                redirect_https,
                defer_accept,
                proxy_protocol,
            });
        }
        out
    }
}
