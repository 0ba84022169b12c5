//! SigV4 access keys through the admin API: created (the secret shown once), listed,
//! changed (enabled, policy, name, description) and deleted; kept in the state store with
//! their secrets sealed, and published to the shards as an [`AccessKeyTable`].

use super::fleet::Change;
use super::*;
use crate::auth::access::{new_key_id, AccessKey, AccessKeyTable, SecretsKey};
use crate::auth::external::statements;
use store::StoredAccessKey;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccessKey {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub enabled: Option<bool>,
    /// An IAM-style policy document: `{"Statement": [{"Effect", "Action", "Resource"}]}`.
    pub policy: serde_json::Value,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessKeyUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub policy: Option<serde_json::Value>,
}

/// The secrets key for a configuration: `Err` says why there is none.
pub(super) fn secrets_key(cfg: &Config) -> Result<Arc<SecretsKey>, String> {
    let iam = cfg
        .aws_iam
        .as_ref()
        .ok_or("access keys need an [aws_iam] table in the configuration")?;
    let text = iam.secrets_key_text()?;
    SecretsKey::parse(&text)
        .map(Arc::new)
        .map_err(|e| format!("the secrets key ({}) {e}", iam.secrets_key_env))
}

/// The shards' table: every stored key whose secret opens (the others are logged, once per
/// build, and left out: their callers get 403).
pub(super) fn access_table(
    key: &Result<Arc<SecretsKey>, String>,
    stored: &[StoredAccessKey],
) -> AccessKeyTable {
    let keys = stored.iter().filter_map(|s| {
        let secret = match key {
            Ok(k) => k.open(&s.id, &s.sealed_secret),
            Err(why) => Err(why.clone()),
        };
        let policy = statements(&s.policy).map_err(str::to_string);
        match (secret, policy) {
            (Ok(secret), Ok(policy)) => Some(AccessKey::new(&s.id, &s.name, s.enabled, policy, secret)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(access_key = %s.id, error = %e, "access key not usable: its callers are refused");
                None
            }
        }
    });
    AccessKeyTable::new(keys)
}

fn view(k: &StoredAccessKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id, "name": k.name, "description": k.description, "enabled": k.enabled,
        "policy": k.policy, "createdDate": k.created,
        "userArn": format!("arn:aws:iam::000000000000:user/{}", k.name),
    })
}

fn check_name(name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "name {name:?} is not valid: 1 to 64 of letters, digits and +=,.@_- (an IAM user name)"
        )))
    }
}

fn check_policy(p: &serde_json::Value) -> Result<(), OpError> {
    statements(p)
        .map(|_| ())
        .map_err(|e| bad(format!("policy: {e}: expected {{\"Statement\": [{{\"Effect\": \"Allow\", \"Action\": \"execute-api:Invoke\", \"Resource\": \"arn:aws:execute-api:*:*:API/STAGE/METHOD/PATH\"}}]}}")))
}

impl Control {
    pub(crate) fn list_access_keys(&self) -> serde_json::Value {
        serde_json::json!({"items": self.stored_access.iter().map(view).collect::<Vec<_>>()})
    }

    pub(crate) fn get_access_key(&self, id: &str) -> Result<serde_json::Value, OpError> {
        self.stored_access
            .iter()
            .find(|k| k.id == id)
            .map(view)
            .ok_or_else(|| OpError(404, format!("no access key {id:?}")))
    }

    /// An access key's creation: the change, and the answer (the only time its secret is
    /// shown).
    pub(crate) fn plan_create_access_key(
        &self,
        req: NewAccessKey,
    ) -> Result<(Vec<Change>, serde_json::Value), OpError> {
        let sk = self.secrets_key.clone().map_err(bad)?;
        check_name(&req.name)?;
        check_policy(&req.policy)?;
        super::check_description(&req.description)?;
        if self.stored_access.iter().any(|k| k.name == req.name) {
            return Err(OpError(
                409,
                format!("an access key named {:?} exists", req.name),
            ));
        }
        let id = new_key_id().map_err(|e| OpError(500, e))?;
        let secret = crate::auth::random_token(40).map_err(|e| OpError(500, e))?;
        let stored = StoredAccessKey {
            id: id.clone(),
            name: req.name,
            description: req.description,
            enabled: req.enabled.unwrap_or(true),
            policy: req.policy,
            sealed_secret: sk.seal(&id, &secret).map_err(|e| OpError(500, e))?,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        };
        let mut v = view(&stored);
        v["secretAccessKey"] = serde_json::Value::from(secret);
        Ok((vec![Change::AccessKeyPut { key: stored }], v))
    }

    /// An access key renamed, described, enabled or disabled, or given another policy: the
    /// change, and the key as it will be.
    pub(crate) fn plan_update_access_key(
        &self,
        id: &str,
        u: AccessKeyUpdate,
    ) -> Result<(Vec<Change>, serde_json::Value), OpError> {
        let mut k = self
            .stored_access
            .iter()
            .find(|k| k.id == id)
            .cloned()
            .ok_or_else(|| OpError(404, format!("no access key {id:?}")))?;
        if let Some(n) = u.name {
            check_name(&n)?;
            if self.stored_access.iter().any(|o| o.name == n && o.id != id) {
                return Err(OpError(409, format!("an access key named {n:?} exists")));
            }
            k.name = n;
        }
        if let Some(p) = u.policy {
            check_policy(&p)?;
            k.policy = p;
        }
        if let Some(d) = u.description {
            super::check_description(&d)?;
            k.description = d;
        }
        if let Some(e) = u.enabled {
            k.enabled = e;
        }
        let v = view(&k);
        Ok((vec![Change::AccessKeyPut { key: k }], v))
    }

    /// An access key's deletion.
    pub(crate) fn plan_delete_access_key(&self, id: &str) -> Result<Vec<Change>, OpError> {
        if !self.stored_access.iter().any(|k| k.id == id) {
            return Err(OpError(404, format!("no access key {id:?}")));
        }
        Ok(vec![Change::AccessKeyDelete { id: id.to_string() }])
    }

    /// Rebuilds the shards' access key table and publishes it.
    pub(super) fn refresh_access(&mut self) {
        self.access = Arc::new(access_table(&self.secrets_key, &self.stored_access));
        self.publish();
    }
}
