//! API keys as run-time objects: listed, created, imported (CSV), updated and deleted
//! through the admin API, kept in the state store, and the key table shards look keys up in.

use super::fleet::Change;
use super::*;

/// A key as the admin API shows it (never with its value).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub plans: Vec<String>,
    /// "config" (declared in config.toml) or "api" (created at run time).
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// What a key creation asks for.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    pub name: String,
    pub value: Option<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: Option<bool>,
    pub plan: Option<String>,
    #[serde(default)]
    pub plans: Vec<String>,
}

/// Builds the key table the shards look keys up in, against the compiled plans.
pub(super) fn key_table(cfg: &Config, compiled: &Compiled, stored: &[StoredKey]) -> KeyTable {
    let plan_index = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| compiled.plans.iter().position(|p| &p.name == n))
            .collect()
    };
    let from_config = cfg.api_keys.iter().map(|k| KeyRecord {
        id: Arc::from(k.name.as_str()),
        hash: auth::hash_key(k.value.as_bytes()),
        enabled: k.enabled,
        plans: plan_index(&k.plans),
    });
    // A file key's value or name taken by a stored key (another node's, in a fleet whose
    // files differ): the file's key is this node's; the stored one is not served here.
    let file_hashes: ahash::AHashSet<auth::KeyHash> = cfg
        .api_keys
        .iter()
        .map(|k| auth::hash_key(k.value.as_bytes()))
        .collect();
    let from_store = stored.iter().filter_map(|k| {
        let Some(hash) = auth::unhex(&k.hash) else {
            tracing::warn!(key = %k.id, "a stored API key's hash is not hex: the key is refused; `tollgate state check` tests the state file");
            return None;
        };
        if file_hashes.contains(&hash) || cfg.api_keys.iter().any(|f| f.name == k.id) {
            tracing::warn!(key = %k.id, "an API key made through the admin API (on another node) has the value or id of a key in this node's config file: the file's key is served here, not it");
            return None;
        }
        Some(KeyRecord {
            id: Arc::from(k.id.as_str()),
            hash,
            enabled: k.enabled,
            plans: plan_index(&k.plans),
        })
    });
    KeyTable::new(from_config.chain(from_store))
}

impl Control {
    pub(super) fn views(&self) -> Vec<KeyView> {
        let cfg = &self.compiled.config;
        let mut v: Vec<KeyView> = cfg
            .api_keys
            .iter()
            .map(|k| KeyView {
                id: k.name.clone(),
                name: k.name.clone(),
                description: k.description.clone(),
                enabled: k.enabled,
                plans: k.plans.clone(),
                source: "config",
                created: None,
            })
            .collect();
        v.extend(self.stored_keys.iter().map(|k| KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            enabled: k.enabled,
            plans: k.plans.clone(),
            source: "api",
            created: Some(k.created),
        }));
        v
    }

    pub(crate) fn list_keys(&self) -> Vec<KeyView> {
        self.views()
    }

    pub(crate) fn get_key(&self, id: &str) -> Option<KeyView> {
        self.views().into_iter().find(|k| k.id == id)
    }

    /// Checks that plans exist and that no two of them cover the same stage.
    pub(super) fn check_plans(&self, plans: &[String]) -> Result<(), OpError> {
        plan_clash(&self.compiled, plans)
    }

    /// Hashes of every key value in use (config and store).
    pub(super) fn taken_hashes(&self) -> ahash::AHashSet<String> {
        let cfg = self
            .compiled
            .config
            .api_keys
            .iter()
            .map(|k| auth::hex(&auth::hash_key(k.value.as_bytes())));
        cfg.chain(self.stored_keys.iter().map(|k| k.hash.clone()))
            .collect()
    }

    /// Every key id in use (config and store).
    pub(crate) fn taken_ids(&self) -> ahash::AHashSet<String> {
        self.compiled
            .config
            .api_keys
            .iter()
            .map(|k| k.name.clone())
            .chain(self.stored_keys.iter().map(|k| k.id.clone()))
            .collect()
    }

    /// Validates a new key; returns it and its value (generated if not given).
    /// `hashes` and `ids` are those in use (and, during an import, those of earlier rows).
    pub(super) fn prepare(
        &self,
        req: NewKey,
        hashes: &mut ahash::AHashSet<String>,
        ids: &mut ahash::AHashSet<String>,
    ) -> Result<(StoredKey, String), OpError> {
        let name = req.name.trim().to_string();
        super::check_display_name(&name)?;
        super::check_description(&req.description)?;
        let value = match req.value {
            Some(v) if auth::valid_key_value(&v) => v,
            Some(_) => {
                return Err(bad(
                    "value: at least 20 and at most 128 visible ASCII characters",
                ))
            }
            None => auth::random_token(auth::GENERATED_KEY_LEN).map_err(|e| OpError(500, e))?,
        };
        let hash = auth::hex(&auth::hash_key(value.as_bytes()));
        if hashes.contains(&hash) {
            return Err(OpError(
                409,
                "value: another key already has this value".into(),
            ));
        }
        let mut plans = req.plans;
        if let Some(p) = req.plan {
            plans.insert(0, p);
        }
        self.check_plans(&plans)?;
        let id = loop {
            let id = auth::random_token(10)
                .map_err(|e| OpError(500, e))?
                .to_ascii_lowercase();
            if !ids.contains(&id) {
                break id;
            }
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        hashes.insert(hash.clone());
        ids.insert(id.clone());
        Ok((
            StoredKey {
                id,
                name,
                hash,
                description: req.description,
                enabled: req.enabled.unwrap_or(true),
                plans,
                created,
            },
            value,
        ))
    }

    /// A key's creation: the change, and the answer (the only time its value is shown).
    pub(crate) fn plan_create_key(
        &self,
        req: NewKey,
    ) -> Result<(Vec<Change>, serde_json::Value), OpError> {
        let (key, value) = self.prepare(req, &mut self.taken_hashes(), &mut self.taken_ids())?;
        let view = serde_json::json!({"id": key.id, "name": key.name, "description": key.description, "enabled": key.enabled, "plans": key.plans, "value": value});
        Ok((vec![Change::KeyPut { key }], view))
    }

    /// Keys imported from CSV in Amazon API Gateway's format (`Name,Key,Description,Enabled,
    /// UsagePlanIds`, header row first): all or none. A row whose key value a run-time key
    /// (or an earlier row) already has replaces that key's name, description, state and plans,
    /// keeping its id, as Amazon's import overwrites an identical key; one a config file key
    /// has is refused.
    pub(crate) fn plan_import_keys(
        &self,
        csv: &str,
    ) -> Result<(Vec<Change>, serde_json::Value), OpError> {
        let mut records = csv_records(csv).map_err(bad)?.into_iter();
        let header: Vec<String> = records
            .next()
            .ok_or_else(|| bad("empty CSV"))?
            .1
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let col = |n: &str| header.iter().position(|h| h == n);
        let (Some(ni), Some(ki)) = (col("name"), col("key")) else {
            return Err(bad("the header row must name the columns Name and Key (and optionally Description, Enabled, UsagePlanIds)"));
        };
        let (di, ei, pi) = (col("description"), col("enabled"), col("usageplanids"));
        let mut pending: Vec<StoredKey> = Vec::new();
        let mut errors = Vec::new();
        let (mut hashes, mut ids) = (self.taken_hashes(), self.taken_ids());
        // By hash: the rows already read, and the keys stored (a search of each per row made
        // an import of 100,000 keys take a minute, the control plane held all along).
        let mut pending_at: ahash::AHashMap<String, usize> = ahash::AHashMap::new();
        let stored_at: ahash::AHashMap<String, usize> = self
            .stored_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.hash.clone(), i))
            .collect();
        for (row, f) in records {
            let get = |c: Option<usize>| {
                c.and_then(|c| f.get(c))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let enabled = match get(ei).to_ascii_lowercase().as_str() {
                "" | "true" => true,
                "false" => false,
                other => {
                    errors.push(format!(
                        "row {row}: Enabled = {other:?}: expected true or false"
                    ));
                    continue;
                }
            };
            let plans: Vec<String> = get(pi)
                .split([';', ' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let value = get(Some(ki));
            let hash = auth::hex(&auth::hash_key(value.as_bytes()));
            let earlier = pending_at.get(&hash).copied();
            let same = earlier
                .map(|i| pending[i].clone())
                .or_else(|| stored_at.get(&hash).map(|&i| self.stored_keys[i].clone()));
            if let Some(old) = same {
                let name = get(Some(ni));
                let checked = super::check_display_name(&name)
                    .and_then(|_| super::check_description(&get(di)))
                    .and_then(|_| self.check_plans(&plans));
                if let Err(OpError(_, m)) = checked {
                    errors.push(format!("row {row}: {m}"));
                    continue;
                }
                let key = StoredKey {
                    name,
                    description: get(di),
                    enabled,
                    plans,
                    ..old
                };
                match earlier {
                    Some(i) => pending[i] = key,
                    None => {
                        pending_at.insert(hash, pending.len());
                        pending.push(key);
                    }
                }
                continue;
            }
            let req = NewKey {
                name: get(Some(ni)),
                value: Some(value),
                description: get(di),
                enabled: Some(enabled),
                plan: None,
                plans,
            };
            match self.prepare(req, &mut hashes, &mut ids) {
                Ok((k, _)) => {
                    pending_at.insert(hash, pending.len());
                    pending.push(k);
                }
                Err(OpError(_, m)) => errors.push(format!("row {row}: {m}")),
            }
        }
        if !errors.is_empty() {
            // The first rows' errors, and how many more: a file wrong on every row says so
            // in a bounded answer.
            let more = errors.len().saturating_sub(MAX_IMPORT_ERRORS);
            errors.truncate(MAX_IMPORT_ERRORS);
            if more > 0 {
                errors.push(format!("and {more} more rows"));
            }
            return Err(OpError(400, errors.join("; ")));
        }
        let ids: Vec<String> = pending.iter().map(|k| k.id.clone()).collect();
        let answer = serde_json::json!({"imported": ids.len(), "ids": ids});
        Ok((
            pending
                .into_iter()
                .map(|key| Change::KeyPut { key })
                .collect(),
            answer,
        ))
    }

    /// A key enabled or disabled, renamed, described, or given other plans.
    pub(crate) fn plan_update_key(
        &self,
        id: &str,
        enabled: Option<bool>,
        plans: Option<Vec<String>>,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Vec<Change>, OpError> {
        if let Some(n) = &name {
            super::check_display_name(n.trim())?;
        }
        if let Some(d) = &description {
            super::check_description(d)?;
        }
        if self.compiled.config.api_keys.iter().any(|k| k.name == id) {
            return Err(OpError(
                409,
                "this key is declared in the config file: change it there and reload".into(),
            ));
        }
        let mut k = self
            .stored_keys
            .iter()
            .find(|k| k.id == id)
            .cloned()
            .ok_or_else(|| OpError(404, "no such key".into()))?;
        if let Some(p) = &plans {
            self.check_plans(p)?;
        }
        if let Some(e) = enabled {
            k.enabled = e;
        }
        if let Some(p) = plans {
            k.plans = p;
        }
        if let Some(n) = name {
            k.name = n.trim().to_string();
        }
        if let Some(d) = description {
            k.description = d;
        }
        Ok(vec![Change::KeyPut { key: k }])
    }

    /// A key's deletion (its usage counters go with it).
    pub(crate) fn plan_delete_key(&self, id: &str) -> Result<Vec<Change>, OpError> {
        if self.compiled.config.api_keys.iter().any(|k| k.name == id) {
            return Err(OpError(
                409,
                "this key is declared in the config file: remove it there and reload".into(),
            ));
        }
        let Some(k) = self.stored_keys.iter().find(|k| k.id == id) else {
            return Err(OpError(404, "no such key".into()));
        };
        Ok(vec![Change::KeyDelete {
            id: id.to_string(),
            hash: Some(k.hash.clone()),
        }])
    }
}

/// Splits CSV text into records, each with the line it starts on (RFC 4180: a field may be
/// quoted with double quotes — `"a,b"`, `""` for a quote, line breaks inside — or, as
/// Amazon's key files allow for `UsagePlanIds`, single quotes: `'a,b'`). Blank lines are
/// skipped, and a leading byte-order mark (spreadsheets write one).
pub(super) fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    // The quote a field opened with, while inside it.
    let mut quote: Option<char> = None;
    let mut at_start = true;
    let (mut line, mut first_line) = (1, 1);
    // Single quotes enclose a field only in the UsagePlanIds column (Amazon's files quote a
    // list of plans so); elsewhere (a name like `'90s app`) they are text.
    let mut single_col: Option<usize> = None;
    type Records = Vec<(usize, Vec<String>)>;
    let end = |out: &mut Records, fields: &mut Vec<String>, cur: &mut String, first_line| {
        fields.push(std::mem::take(cur));
        let blank = fields.len() == 1 && fields[0].trim().is_empty();
        let record = std::mem::take(fields);
        if !blank {
            out.push((first_line, record));
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match quote {
            Some(q) if c == q && chars.peek() == Some(&q) => {
                cur.push(q);
                chars.next();
            }
            Some(q) if c == q => quote = None,
            // A CRLF file's line break inside a quoted field is the field's `\n`.
            Some(_) if c == '\r' && chars.peek() == Some(&'\n') => {}
            None if at_start && c == '"' => quote = Some(c),
            None if at_start && c == '\'' && single_col == Some(fields.len()) => quote = Some(c),
            None if c == ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            None if c == '\r' && chars.peek() == Some(&'\n') => {}
            None if c == '\n' => {
                end(&mut out, &mut fields, &mut cur, first_line);
                if single_col.is_none() {
                    single_col = out.first().and_then(|(_, h)| {
                        h.iter()
                            .position(|h| h.trim().eq_ignore_ascii_case("usageplanids"))
                    });
                }
                first_line = line;
                at_start = true;
                continue;
            }
            _ => cur.push(c),
        }
        at_start = false;
    }
    // A quote never closed took every row after it into one field: the file is malformed
    // (RFC 4180 2), not rows to drop.
    if let Some(q) = quote {
        return Err(format!(
            "row {first_line}: a field opened with {q} is never closed (the rest of the file would be read as that one field)"
        ));
    }
    end(&mut out, &mut fields, &mut cur, first_line);
    Ok(out)
}

/// Checks that `plans` exist in `compiled` and that no two of them cover the same stage.
fn plan_clash(compiled: &Compiled, plans: &[String]) -> Result<(), OpError> {
    let mut covered = Vec::new();
    // Run-time stages a plan names, deployed or not yet.
    let mut covered_later = Vec::new();
    for (i, n) in plans.iter().enumerate() {
        if plans[..i].contains(n) {
            return Err(bad(format!("usage plan {n:?} is named twice")));
        }
        let p = compiled
            .plans
            .iter()
            .find(|p| &p.name == n)
            .ok_or_else(|| bad(format!("usage plan {n:?} does not exist")))?;
        let clash = p.stages.iter().any(|s| covered.contains(s))
            || p.pending_stages.iter().any(|s| covered_later.contains(s));
        if clash {
            return Err(OpError(409, format!("plan {n:?} covers a stage another of the key's plans covers; a key belongs to at most one plan per stage")));
        }
        covered.extend(p.stages.iter().copied());
        covered_later.extend(p.pending_stages.iter().cloned());
    }
    Ok(())
}

/// Keys made through the admin API whose plans a new configuration makes cover one stage
/// twice (the key would be served under one of them only, silently): the configuration is
/// refused, naming the key. A plan the configuration no longer has is left to the key table
/// (the key keeps its other plans).
pub(super) fn stored_key_plan_clashes(compiled: &Compiled, stored: &[StoredKey]) -> Vec<String> {
    stored
        .iter()
        .filter(|k| k.plans.len() > 1)
        .filter_map(|k| {
            let known: Vec<String> = k
                .plans
                .iter()
                .filter(|n| compiled.plans.iter().any(|p| &p.name == *n))
                .cloned()
                .collect();
            plan_clash(compiled, &known).err().map(|e| {
                format!(
                    "usage_plans: API key {:?} (made through the admin API) is on plans {:?}: {}; take it off one of them (PATCH /apikeys/{}) or keep the plans' stages apart",
                    k.id, k.plans, e.1, k.id
                )
            })
        })
        .collect()
}

/// What start-up, a reload and `check` do with clashes between the file and the stored keys:
/// refuse, on a node alone (the operator's file made them); with `[cluster]`, where another
/// node's admin call can make a key this node's file clashes with, warn and serve the file's
/// key (a node that could not restart or reload for another node's call is worse).
pub(crate) fn refuse_clashes(cfg: &Config, clashes: Vec<String>) -> Result<(), Vec<String>> {
    if clashes.is_empty() {
        return Ok(());
    }
    if cfg.cluster.is_none() {
        return Err(clashes);
    }
    for c in &clashes {
        tracing::warn!(clash = %c, "an API key the fleet holds clashes with this node's config file: the file's key is served, the stored key under its first plan only");
    }
    Ok(())
}

/// A config key may not take the value, nor (by its name) the id, of a key created through
/// the admin API: both would answer to one id (usage, quota, PATCH and DELETE).
pub(crate) fn file_key_clashes(cfg: &Config, stored: &[StoredKey]) -> Vec<String> {
    let mut errors = Vec::new();
    for k in &cfg.api_keys {
        let h = auth::hex(&auth::hash_key(k.value.as_bytes()));
        if stored.iter().any(|s| s.hash == h) {
            errors.push(format!("api_keys[{:?}].value: the same value belongs to a key created through the admin API", k.name));
        }
        if stored.iter().any(|s| s.id == k.name) {
            errors.push(format!(
                "api_keys[{:?}].name: a key created through the admin API has this id (a config key's name is its id)",
                k.name
            ));
        }
    }
    errors
}

/// Rows whose errors an import's refusal lists.
const MAX_IMPORT_ERRORS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_split_with_quotes() {
        let fields = |t: &str| -> Vec<Vec<String>> {
            csv_records(t)
                .unwrap()
                .into_iter()
                .map(|(_, f)| f)
                .collect()
        };
        assert_eq!(fields("a,b,c"), vec![vec!["a", "b", "c"]]);
        assert_eq!(
            fields("\"x, y\",\"say \"\"hi\"\"\",\r\n"),
            vec![vec!["x, y", "say \"hi\"", ""]]
        );
        // Amazon's key files quote a list of plans with single quotes too (in that column
        // alone: elsewhere it is text); a quote inside a field is text.
        assert_eq!(
            fields("Name,UsagePlanIds,Description\n'90s,'gold,silver',it's"),
            vec![
                vec!["Name", "UsagePlanIds", "Description"],
                vec!["'90s", "gold,silver", "it's"]
            ]
        );
        // A quote never closed is an error naming its row, not the rest of the file read
        // as one field.
        let e = csv_records("Name,Key\na,k1\nb,\"k2\nc,k3\n").unwrap_err();
        assert!(
            e.starts_with("row 3: a field opened with \" is never closed"),
            "{e}"
        );
        // A quoted line break is the field's; blank lines and a byte-order mark are skipped;
        // each record says the line it starts on.
        assert_eq!(
            csv_records("\u{feff}Name,Key\r\n\r\nnl,k1,\"line1\r\nline2\"\r\nb,k2\n").unwrap(),
            vec![
                (1, vec!["Name".to_string(), "Key".to_string()]),
                (
                    3,
                    vec![
                        "nl".to_string(),
                        "k1".to_string(),
                        "line1\nline2".to_string()
                    ]
                ),
                (5, vec!["b".to_string(), "k2".to_string()]),
            ]
        );
    }
}
