//! The serde mirror of `config.toml`: every table and key the file may hold, exactly as
//! written, with no interpretation. `deny_unknown_fields` everywhere, so a typo is an error
//! that names the key rather than a setting silently ignored.
//!
//! Keys that belong to features this build does not have yet are still parsed here (as raw
//! TOML values) so that validation can refuse them by name instead of ignoring them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A size given either as a string with a unit ("10MiB") or a plain number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    pub aws_iam: Option<AwsIamFile>,
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub http2: Http2File,
    pub throttle: Option<RateFile>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    #[serde(default)]
    pub apis: Vec<ApiFile>,
    #[serde(default)]
    pub domains: Vec<DomainFile>,
    #[serde(default)]
    pub usage_plans: Vec<PlanFile>,
    #[serde(default)]
    pub api_keys: Vec<KeyFile>,
    pub cluster: Option<ClusterFile>,
    pub access_log: Option<AccessLogFile>,
    pub tracing: Option<TracingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TracingFile {
    pub otlp_endpoint: Option<String>,
    pub sample: Option<f64>,
    pub service_name: Option<String>,
    pub timeout: Option<String>,
}

/// A stage's `tracing = { sample = 0.5 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageTracingFile {
    pub sample: Option<f64>,
}

/// `access_log = { path = "...", format = "..." }`, or `access_log = "off"`.
#[derive(Debug)]
pub(crate) enum AccessLogFile {
    On(AccessLogTable),
    Off(String),
}

impl<'de> Deserialize<'de> for AccessLogFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By hand rather than untagged, so that a misspelt key is named.
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(AccessLogFile::Off(s)),
            v @ toml::Value::Table(_) => AccessLogTable::deserialize(v)
                .map(AccessLogFile::On)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "invalid type: {}, expected a table {{ path, format }} or \"off\"",
                other.type_str()
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogTable {
    pub path: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub workers: Option<i64>,
    pub pin: Option<bool>,
    pub cpus: Option<Vec<i64>>,
    pub state_dir: Option<String>,
    pub driver: Option<String>,
    pub drain_timeout: Option<String>,
    pub log_summary_interval: Option<String>,
    pub uring_entries: Option<i64>,
    pub uring_flags: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerFile {
    pub name: Option<String>,
    pub addr: Option<String>,
    pub tls: Option<TlsFile>,
    pub mtls: Option<MtlsFile>,
    pub alpn: Option<Vec<String>>,
    pub redirect_https: Option<bool>,
    pub h2c: Option<bool>,
    pub defer_accept: Option<bool>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MtlsFile {
    pub client_ca: Option<String>,
    pub mode: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub allow_expired: Option<bool>,
    pub sni_strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    pub addr: Option<String>,
    pub token_env: Option<String>,
    pub access_log_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub max_body: Option<SizeValue>,
    pub body_memory: Option<SizeValue>,
    pub integration_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_connections: Option<i64>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub body_min_rate: Option<SizeValue>,
    pub request_buffering: Option<SizeValue>,
    pub underscores_in_headers: Option<String>,
    pub upgrade_idle_timeout: Option<String>,
    pub websocket_frame: Option<SizeValue>,
    pub websocket_message: Option<SizeValue>,
    pub websocket_lifetime: Option<String>,
    pub websocket_message_rate: Option<RateFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http2File {
    pub max_concurrent_streams: Option<i64>,
    pub stream_window: Option<SizeValue>,
    pub connection_window: Option<SizeValue>,
    pub max_frame_size: Option<SizeValue>,
    pub control_frames_per_second: Option<i64>,
    pub control_frames_burst: Option<i64>,
    pub resets_per_second: Option<i64>,
    pub resets_burst: Option<i64>,
    pub max_continuation_frames: Option<i64>,
    pub window_updates_per_data_frame: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    pub name: Option<String>,
    pub targets: Option<Vec<String>>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub keepalive: Option<i64>,
    pub keepalive_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<String>,
    pub health: Option<HealthFile>,
    pub tls: Option<UpstreamTlsFile>,
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsFile {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthFile {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub unhealthy_after: Option<i64>,
    pub healthy_after: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiFile {
    pub name: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub stages: Vec<StageFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    pub resource_policy: Option<ResourcePolicyFile>,
    #[serde(default)]
    pub authorizers: Vec<AuthorizerFile>,
    /// The authorizer of routes that name none (and do not say `authorization = "none"`).
    pub default_authorizer: Option<String>,
    pub cors: Option<CorsFile>,
    #[serde(default)]
    pub gateway_responses: BTreeMap<String, GatewayResponseFile>,
    #[serde(default)]
    pub models: Vec<ModelFile>,
    /// WebSocket APIs: where a message's route key is read (`$request.body.action`).
    pub route_selection_expression: Option<String>,
    /// WebSocket APIs: the subprotocols the gateway accepts, in its order of preference.
    pub subprotocols: Option<Vec<String>>,
    /// WebSocket APIs: who may call `@connections` on the API's own domain (`"aws_iam"`, the
    /// default, or `"none"`).
    pub connections_authorization: Option<String>,
    /// Where a route that requires an API key reads it: `"HEADER"` (`x-api-key`, the
    /// default) or `"AUTHORIZER"` (an external authorizer's `usageIdentifierKey`).
    pub api_key_source: Option<String>,
}

/// `cors = { ... }` on an API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsFile {
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<SecondsValue>,
    pub allow_credentials: Option<bool>,
}

/// `[[apis.models]]`: a JSON Schema (as a string of JSON, or a table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFile {
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub schema: Option<serde_json::Value>,
    pub description: Option<String>,
}

/// One of an API's `gateway_responses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayResponseFile {
    pub status: Option<i64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// Seconds as an integer, or a duration ("10m").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SecondsValue {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorizerFile {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    // type = "jwt"
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub jwks_uri: Option<String>,
    pub identity_source: Option<String>,
    pub leeway: Option<String>,
    pub jwks_refresh: Option<String>,
    pub jwks_cooldown: Option<String>,
    pub jwks_timeout: Option<String>,
    // type = "request" | "token"
    pub uri: Option<String>,
    pub identity_sources: Option<Vec<String>>,
    pub ttl: Option<String>,
    pub identity_validation_expression: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcePolicyFile {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageFile {
    pub name: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub throttle: Option<RateFile>,
    pub cache: Option<StageCacheFile>,
    pub access_log: Option<AccessLogFile>,
    pub tracing: Option<StageTracingFile>,
    /// File-managed APIs are deployed by each reload: only `true` is taken.
    pub auto_deploy: Option<bool>,
    pub compression: Option<CompressionFile>,
}

/// A stage's `compression`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionFile {
    pub min_size: Option<SizeValue>,
    pub max_size: Option<SizeValue>,
    pub types: Option<Vec<String>>,
    pub level: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageCacheFile {
    pub enabled: Option<bool>,
    pub ttl: Option<String>,
    pub capacity: Option<SizeValue>,
    pub client_invalidation: Option<String>,
    pub unauthorized_invalidation: Option<String>,
    pub mode: Option<String>,
    pub max_entry: Option<SizeValue>,
    pub stale_if_error: Option<String>,
    pub lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteCacheFile {
    pub enabled: Option<bool>,
    pub ttl: Option<String>,
    pub key: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub route: Option<String>,
    pub integration: Option<IntegrationFile>,
    pub api_key_required: Option<bool>,
    pub throttle: Option<RateFile>,
    pub cache: Option<RouteCacheFile>,
    pub authorizer: Option<String>,
    pub authorization: Option<String>,
    pub authorization_scopes: Option<Vec<String>>,
    pub request_validator: Option<String>,
    #[serde(default)]
    pub request_models: BTreeMap<String, String>,
    pub required_parameters: Option<Vec<String>>,
    #[serde(default)]
    pub request_parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub response_parameters: BTreeMap<String, BTreeMap<String, String>>,
    /// WebSocket routes: the integration's answer goes back to the client (two-way).
    pub route_response: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationFile {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub uri: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub status: Option<i64>,
    pub body: Option<String>,
    /// Mapping templates by content type.
    #[serde(default)]
    pub request_templates: BTreeMap<String, String>,
    pub passthrough_behavior: Option<String>,
    #[serde(default)]
    pub responses: Vec<IntegrationResponseFile>,
}

/// One of an integration's `responses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationResponseFile {
    pub selection_pattern: Option<String>,
    pub status: Option<i64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainFile {
    pub host: Option<String>,
    pub tls: Option<TlsFile>,
    pub listeners: Option<Vec<String>>,
    #[serde(default)]
    pub mappings: Vec<MappingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingFile {
    pub base_path: Option<String>,
    pub api: Option<String>,
    pub stage: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateFile {
    pub rate: Option<i64>,
    pub burst: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaFile {
    pub limit: Option<i64>,
    pub period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanFile {
    pub name: Option<String>,
    pub description: Option<String>,
    /// "api/stage" entries.
    #[serde(default)]
    pub stages: Vec<String>,
    pub throttle: Option<RateFile>,
    /// Per-route overrides: "METHOD /path" -> { rate, burst }.
    #[serde(default)]
    pub route_throttle: BTreeMap<String, RateFile>,
    pub quota: Option<QuotaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub name: Option<String>,
    pub value: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub plan: Option<String>,
    pub plans: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    pub redis: Option<String>,
    pub sentinels: Option<Vec<String>>,
    pub sentinel_master: Option<String>,
    pub nodes: Option<i64>,
    pub on_redis_error: Option<String>,
    pub timeout: Option<String>,
    pub password_env: Option<String>,
    pub username: Option<String>,
    pub tls: Option<UpstreamTlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AwsIamFile {
    pub region: Option<String>,
    pub secrets_key_env: Option<String>,
    pub secrets_key_file: Option<String>,
}
