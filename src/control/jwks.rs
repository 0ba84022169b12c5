//! JWT signing keys, fetched by the control plane and never on a shard's request path.
//!
//! One refresher task per key source (an issuer's OpenID discovery document, or a
//! `jwks_uri`) of the live configuration fetches the keys at start, then every
//! `jwks_refresh`; a failure is retried sooner (1 s, doubling, at most the refresh interval)
//! and keeps the last good keys serving. A shard that meets a token whose `kid` it does not
//! know asks for the keys again ([`KeyRequest`]); such fetches happen at most once per
//! `jwks_cooldown` per source (once a second while there are no keys at all), and asks that
//! arrive while a fetch is in flight (the first one included) wait for it, so a flood of
//! tokens with made-up kids costs the provider one fetch per cool-down. Keys reach the shards
//! in a new snapshot, only when the document changed.

use std::time::Instant;

use super::*;
use crate::auth::jwt::{KeyRequest, KeySet};
use crate::config::FetchUrl;
use crate::snapshot::JwksSource;

/// Most shard requests that may wait on one fetch; later ones are answered at once.
const MAX_WAITERS: usize = 4096;

/// What the control plane knows of one key source.
#[derive(Default)]
pub(crate) struct JwksState {
    keys: Option<Arc<KeySet>>,
    /// When a token's unknown key last made the keys be fetched.
    last_asked: Option<Instant>,
    /// Shards waiting for a fetch in flight (`Some` while one is).
    waiters: Option<Vec<flume::Sender<Option<Arc<KeySet>>>>>,
    /// The last fetch failed (logged once per outage).
    failing: bool,
}

/// A fetch's result, for the task that stores keys.
pub(crate) struct Fetched {
    source: Arc<str>,
    result: Result<KeySet, String>,
}

/// The channels between key fetches, shards and the control plane.
pub(crate) struct JwksChannels {
    pub(super) results: (flume::Sender<Fetched>, flume::Receiver<Fetched>),
}

impl Default for JwksChannels {
    fn default() -> Self {
        JwksChannels {
            results: flume::unbounded(),
        }
    }
}

impl Control {
    /// The snapshot's key sets, in `jwks_sources` order.
    pub(super) fn jwks_vector(&self) -> Arc<Vec<Option<Arc<KeySet>>>> {
        Arc::new(
            self.compiled
                .jwks_sources
                .iter()
                .map(|s| self.jwks.get(&s.key).and_then(|st| st.keys.clone()))
                .collect(),
        )
    }

    /// Starts one refresher per key source of the live configuration; forgets sources it
    /// no longer has.
    pub(super) fn start_jwks(&mut self) {
        let sources: Vec<Arc<str>> = self
            .compiled
            .jwks_sources
            .iter()
            .map(|s| s.key.clone())
            .collect();
        self.jwks.retain(|k, _| sources.contains(k));
        let generation = self.live.get();
        for s in &self.compiled.jwks_sources {
            // Shards that ask before the first fetch ends wait for it rather than start
            // another.
            let st = self.jwks.entry(s.key.clone()).or_default();
            st.waiters.get_or_insert_with(Vec::new);
            crate::driver::spawn(refresher(
                s.clone(),
                self.channels.results.0.clone(),
                generation,
                self.live.clone(),
            ));
        }
    }

    /// Stores a fetch's result and answers the shards waiting for it.
    fn on_fetched(&mut self, f: Fetched) {
        let st = self.jwks.entry(f.source.clone()).or_default();
        let changed = match f.result {
            Ok(set) => {
                if st.failing {
                    tracing::info!(source = %f.source, "JWT signing keys can be fetched again");
                }
                st.failing = false;
                let same = st.keys.as_ref().is_some_and(|k| k.source == set.source);
                if !same {
                    let kids: Vec<&str> =
                        set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                    if set.keys.is_empty() {
                        tracing::warn!(source = %f.source, "the JWKS document has no usable signing key: every token is refused until it has one");
                    } else {
                        tracing::info!(source = %f.source, keys = set.keys.len(), kids = ?kids, "JWT signing keys loaded");
                    }
                    st.keys = Some(Arc::new(set));
                }
                !same
            }
            Err(e) => {
                if !st.failing {
                    let kept = if st.keys.is_some() {
                        "the last keys fetched keep serving"
                    } else {
                        "tokens cannot be verified until a fetch works"
                    };
                    tracing::warn!(source = %f.source, error = %e, "JWT signing keys could not be fetched; {kept}");
                }
                st.failing = true;
                false
            }
        };
        let keys = st.keys.clone();
        for w in st.waiters.take().unwrap_or_default() {
            let _ = w.send(keys.clone());
        }
        if changed && self.compiled.jwks_sources.iter().any(|s| s.key == f.source) {
            self.publish();
        }
    }

    /// A shard met a key it does not know: fetch again unless the source was asked within
    /// its cool-down, and answer with the keys there are then.
    fn on_key_request(&mut self, req: KeyRequest) {
        let Some(src) = self
            .compiled
            .jwks_sources
            .iter()
            .find(|s| s.key == req.source)
        else {
            let _ = req.reply.send(None);
            return;
        };
        let src = src.clone();
        let st = self.jwks.entry(src.key.clone()).or_default();
        // The shard's snapshot is behind: it gets the keys there are, and nothing is fetched.
        let newer = match (&st.keys, &req.had) {
            (Some(k), Some(had)) => !Arc::ptr_eq(k, had),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if newer {
            let _ = req.reply.send(st.keys.clone());
            return;
        }
        if let Some(w) = &mut st.waiters {
            if w.len() < MAX_WAITERS {
                w.push(req.reply);
            } else {
                let _ = req.reply.send(st.keys.clone());
            }
            return;
        }
        // Without any keys yet (the provider was out, or publishes none), at most one fetch
        // a second.
        let gap = if st.keys.as_ref().is_some_and(|k| !k.keys.is_empty()) {
            src.cooldown
        } else {
            src.cooldown.min(Duration::from_secs(1))
        };
        if st.last_asked.is_some_and(|t| t.elapsed() < gap) {
            let _ = req.reply.send(st.keys.clone());
            return;
        }
        st.last_asked = Some(Instant::now());
        st.waiters = Some(vec![req.reply]);
        let tx = self.channels.results.0.clone();
        crate::driver::spawn(async move {
            let result = fetch_keys(&src).await;
            let _ = tx.send(Fetched {
                source: src.key.clone(),
                result,
            });
        });
    }
}

/// The control thread's key tasks: store what fetches bring, serve the shards' asks.
pub(super) fn serve(ctl: &Rc<RefCell<Control>>, asks: flume::Receiver<KeyRequest>) {
    let results = ctl.borrow().channels.results.1.clone();
    let c = ctl.clone();
    crate::driver::spawn(async move {
        while let Ok(f) = results.recv_async().await {
            c.borrow_mut().on_fetched(f);
        }
    });
    let c = ctl.clone();
    crate::driver::spawn(async move {
        while let Ok(req) = asks.recv_async().await {
            c.borrow_mut().on_key_request(req);
        }
    });
}

/// Fetches one source's keys until its configuration generation is gone.
async fn refresher(
    src: JwksSource,
    tx: flume::Sender<Fetched>,
    generation: u64,
    live: Rc<Cell<u64>>,
) {
    let mut failures = 0u32;
    while live.get() == generation {
        let result = fetch_keys(&src).await;
        if live.get() != generation {
            return;
        }
        let wait = if result.is_ok() {
            failures = 0;
            src.refresh
        } else {
            failures = (failures + 1).min(16);
            Duration::from_secs(1u64 << (failures - 1).min(10)).min(src.refresh)
        };
        if tx
            .send(Fetched {
                source: src.key.clone(),
                result,
            })
            .is_err()
        {
            return;
        }
        crate::driver::time::sleep(wait).await;
    }
}

/// Discovery (when no `jwks_uri` was given), then the key set.
pub(crate) async fn fetch_keys(src: &JwksSource) -> Result<KeySet, String> {
    let uri = match (&src.jwks_uri, &src.discovery) {
        (Some(u), _) => u.clone(),
        (None, Some(d)) => {
            let text = crate::upstream::fetch::get(d, src.timeout).await?;
            jwks_uri_of(&text, &src.issuer).map_err(|e| format!("{}: {e}", d.text))?
        }
        (None, None) => return Err("no jwks_uri and no issuer to discover it from".into()),
    };
    let text = crate::upstream::fetch::get(&uri, src.timeout).await?;
    let (set, skipped) = KeySet::parse(&text).map_err(|e| format!("{}: {e}", uri.text))?;
    if !skipped.is_empty() {
        tracing::debug!(source = %src.key, skipped = ?skipped, "JWKS keys not usable here were skipped");
    }
    Ok(set)
}

/// The `jwks_uri` of an OpenID discovery document, whose `issuer` must be the one configured
/// (OpenID Connect Discovery 1.0, section 4.3).
fn jwks_uri_of(doc: &str, issuer: &str) -> Result<FetchUrl, String> {
    let v: serde_json::Value =
        serde_json::from_str(doc).map_err(|e| format!("not an OpenID discovery document: {e}"))?;
    let said = v.get("issuer").and_then(|i| i.as_str()).unwrap_or("");
    if said != issuer {
        return Err(format!(
            "the discovery document names issuer {said:?}, not the configured {issuer:?}"
        ));
    }
    let uri = v
        .get("jwks_uri")
        .and_then(|u| u.as_str())
        .ok_or("the discovery document has no jwks_uri")?;
    let url =
        FetchUrl::parse(uri).map_err(|e| format!("its jwks_uri {uri:?} is not usable: {e}"))?;
    // Keys fetched in the clear could be anyone's: an issuer reached over TLS names its keys
    // over TLS too (RFC 8414 and OpenID Connect Discovery require https throughout).
    if issuer.starts_with("https://") && !url.tls {
        return Err(format!(
            "its jwks_uri {uri:?} is not https, though the issuer is: the signing keys would be fetched in the clear"
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents_must_name_the_issuer() {
        let doc = r#"{"issuer":"https://idp.test","jwks_uri":"https://idp.test/keys"}"#;
        assert_eq!(jwks_uri_of(doc, "https://idp.test").unwrap().path, "/keys");
        assert!(jwks_uri_of(doc, "https://other.test")
            .unwrap_err()
            .contains("not the configured"));
        assert!(jwks_uri_of(r#"{"issuer":"https://idp.test"}"#, "https://idp.test").is_err());
        assert!(jwks_uri_of("<html>", "https://idp.test").is_err());
        let bad = r#"{"issuer":"https://idp.test","jwks_uri":"ftp://x"}"#;
        assert!(jwks_uri_of(bad, "https://idp.test").is_err());
        // An https issuer's keys are not taken in the clear; an http issuer's (a test
        // provider's) may be.
        let plain = r#"{"issuer":"https://idp.test","jwks_uri":"http://idp.test/keys"}"#;
        assert!(jwks_uri_of(plain, "https://idp.test")
            .unwrap_err()
            .contains("not https"));
        let local = r#"{"issuer":"http://127.0.0.1:9","jwks_uri":"http://127.0.0.1:9/keys"}"#;
        assert!(jwks_uri_of(local, "http://127.0.0.1:9").is_ok());
    }
}
