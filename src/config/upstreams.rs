//! `[[upstreams]]`: targets, balancing, passive and active health, TLS and HTTP/2 to them.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    ClientIp,
    /// Lower-cased header name.
    Header(String),
}

impl std::fmt::Display for Balance {
    /// The config's own spelling (`round_robin`, `hash by header.x-user`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("round_robin"),
            Balance::LeastRequest => f.write_str("least_request"),
            Balance::Hash(HashKey::ClientIp) => f.write_str("hash by client_ip"),
            Balance::Hash(HashKey::Header(h)) => write!(f, "hash by header.{h}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<SocketAddr>,
    /// Each target's host as written: the name TLS verifies unless `tls.server_name` says.
    pub hosts: Vec<String>,
    /// TLS to the targets (`https://NAME/...` integrations).
    pub tls: Option<UpstreamTls>,
    /// `protocol = "h2"`: one multiplexed HTTP/2 connection per target per shard (over TLS
    /// with ALPN h2, or h2c with prior knowledge).
    pub h2: bool,
    pub balance: Balance,
    pub keepalive: usize,
    #[serde(serialize_with = "ser_duration")]
    pub keepalive_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    pub max_fails: u32,
    #[serde(serialize_with = "ser_duration")]
    pub fail_timeout: Duration,
    pub health: Option<Health>,
}

/// `tls` on an upstream: verify against `ca` (else the system's roots) and `server_name`
/// (else each target's host), present `cert`/`key` when the upstream asks for one.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Where it was written (`upstreams["pets"].tls`), for the compile step's errors.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Shown with the values of secret-named query parameters redacted.
    #[serde(serialize_with = "ser_redacted_uri")]
    pub path: String,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

impl Validator {
    pub(super) fn upstream_tls(
        &mut self,
        key: &str,
        t: file::UpstreamTlsFile,
        base: &Path,
    ) -> Option<UpstreamTls> {
        let ca = t.ca.map(|c| base.join(c));
        let cert = t.cert.map(|c| base.join(c));
        let k = t.key.map(|c| base.join(c));
        if cert.is_some() != k.is_some() {
            self.err(
                key,
                "a client certificate needs both cert and key (PEM files)",
            );
            return None;
        }
        if let Some(n) = &t.server_name {
            if let Err(e) = crate::syntax::server_name(n) {
                self.bad(
                    &format!("{key}.server_name"),
                    n,
                    &format!("a host name ({e})"),
                );
                return None;
            }
        }
        // The client config (roots, client certificate) is built by the compile step.
        Some(UpstreamTls {
            ca,
            server_name: t.server_name,
            cert,
            key: k,
            source: key.to_string(),
        })
    }

    pub(super) fn upstream(&mut self, i: usize, u: file::UpstreamFile, base: &Path) -> Upstream {
        let key = item("upstreams", i, u.name.as_ref());
        let name = self.name(&format!("{key}.name"), u.name);
        let h2 = match u.protocol.as_deref() {
            None | Some("http/1.1") => false,
            Some("h2") => true,
            Some(p) => {
                self.bad(&format!("{key}.protocol"), p, "\"http/1.1\" or \"h2\"");
                false
            }
        };
        let tls = u
            .tls
            .and_then(|t| self.upstream_tls(&format!("{key}.tls"), t, base));
        let mut hosts = Vec::new();
        let mut targets = Vec::new();
        match u.targets {
            None => self.err(
                &format!("{key}.targets"),
                "is required: a list of \"host:port\"",
            ),
            Some(t) if t.is_empty() => self.err(
                &format!("{key}.targets"),
                "is empty: list at least one \"host:port\"",
            ),
            Some(t) => {
                for (j, s) in t.into_iter().enumerate() {
                    match resolve(&s) {
                        Ok(a) => {
                            targets.push(a);
                            let host = s.rsplit_once(':').map_or(s.as_str(), |(h, _)| h);
                            // The name TLS verifies: one it cannot (`127.1`) would have left
                            // the target without TLS.
                            if tls.as_ref().is_some_and(|t| t.server_name.is_none()) {
                                if let Err(e) = crate::syntax::server_name(host) {
                                    self.bad(
                                        &format!("{key}.targets[{j}]"),
                                        &s,
                                        &format!("a host TLS can verify ({e}), or tls.server_name set to the name the target's certificate holds"),
                                    );
                                }
                            }
                            hosts.push(host.to_string());
                        }
                        Err(e) => self.bad(
                            &format!("{key}.targets[{j}]"),
                            s,
                            &format!("\"host:port\" that resolves ({e})"),
                        ),
                    }
                }
            }
        }
        let balance = match u.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_request") => Balance::LeastRequest,
            Some("hash") => match u.hash_key.as_deref() {
                None | Some("client_ip") => Balance::Hash(HashKey::ClientIp),
                Some(h) => match h.strip_prefix("header.") {
                    Some(n) if !n.is_empty() && n.bytes().all(crate::syntax::is_tchar) => {
                        Balance::Hash(HashKey::Header(n.to_ascii_lowercase()))
                    }
                    _ => {
                        self.bad(
                            &format!("{key}.hash_key"),
                            h,
                            "\"client_ip\" or \"header.NAME\" (NAME a header name)",
                        );
                        // Still a hash upstream: its only error is this one.
                        Balance::Hash(HashKey::ClientIp)
                    }
                },
            },
            Some(other) => {
                self.bad(
                    &format!("{key}.balance"),
                    other,
                    "\"round_robin\", \"least_request\" or \"hash\"",
                );
                Balance::RoundRobin
            }
        };
        if u.hash_key.is_some() && !matches!(balance, Balance::Hash(_)) {
            self.err(
                &format!("{key}.hash_key"),
                "is only used with balance = \"hash\"",
            );
        }
        let health = u.health.map(|h| {
            let hk = format!("{key}.health");
            let path = match h.path {
                // It goes into the probe's request line as written: printable, no spaces.
                Some(p) if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => p,
                Some(p) => {
                    self.bad(
                        &format!("{hk}.path"),
                        p,
                        "a path starting with / (with its query, if any), in printable ASCII without spaces (percent-encode the rest)",
                    );
                    "/".into()
                }
                None => {
                    self.err(&format!("{hk}.path"), "is required");
                    "/".into()
                }
            };
            Health {
                path,
                interval: self.duration(
                    &format!("{hk}.interval"),
                    h.interval.as_ref(),
                    DEFAULT_HEALTH_INTERVAL,
                ),
                timeout: self.duration(
                    &format!("{hk}.timeout"),
                    h.timeout.as_ref(),
                    DEFAULT_HEALTH_TIMEOUT,
                ),
                unhealthy_after: self.int_in(
                    &format!("{hk}.unhealthy_after"),
                    h.unhealthy_after,
                    3,
                    1,
                    1000,
                ) as u32,
                healthy_after: self.int_in(
                    &format!("{hk}.healthy_after"),
                    h.healthy_after,
                    2,
                    1,
                    1000,
                ) as u32,
            }
        });
        Upstream {
            name,
            targets,
            hosts,
            tls,
            h2,
            balance,
            keepalive: self.int_in(
                &format!("{key}.keepalive"),
                u.keepalive,
                DEFAULT_KEEPALIVE as i64,
                0,
                100_000,
            ) as usize,
            keepalive_timeout: self.duration(
                &format!("{key}.keepalive_timeout"),
                u.keepalive_timeout.as_ref(),
                DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
            ),
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_fails: self.int_in(
                &format!("{key}.max_fails"),
                u.max_fails,
                DEFAULT_MAX_FAILS as i64,
                0,
                1000,
            ) as u32,
            fail_timeout: self.duration(
                &format!("{key}.fail_timeout"),
                u.fail_timeout.as_ref(),
                DEFAULT_FAIL_TIMEOUT,
            ),
            health,
        }
    }
}
