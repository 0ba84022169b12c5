//! Gateway configs for tests: [`Cfg`] renders the TOML of a minimal gateway, and a test states
//! only what differs from it.
//!
//! The default is one worker; listener "http" on 127.0.0.1:0; the admin API on 127.0.0.1:0; an
//! empty `[limits]`; API "api" with stage "prod" (`variables = { who = "prod" }`) and no
//! routes; domain `*` mapping base path "" to api/prod:
//!
//! ```ignore
//! let toml = Cfg::new()
//!     .limits("max_body = \"1KiB\"")
//!     .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]", up.addr))
//!     .route("ANY /{proxy+}", "integration = { type = \"http\", uri = \"http://up/{proxy}\" }")
//!     .toml();
//! ```

/// A gateway config, built from the default by stating what differs; [`Cfg::toml`] renders it.
#[derive(Debug, Clone)]
pub struct Cfg {
    workers: usize,
    server: String,
    listeners: Option<String>,
    listener: String,
    admin: Option<String>,
    limits: Vec<String>,
    upstreams: Vec<String>,
    api: String,
    stage_extra: String,
    api_extra: String,
    stages: Vec<(String, String)>,
    routes: String,
    extra: String,
}

impl Default for Cfg {
    fn default() -> Cfg {
        Cfg {
            workers: 1,
            server: String::new(),
            listeners: None,
            listener: String::new(),
            admin: Some(String::new()),
            limits: Vec::new(),
            upstreams: Vec::new(),
            api: "api".into(),
            stage_extra: String::new(),
            api_extra: String::new(),
            stages: Vec::new(),
            routes: String::new(),
            extra: String::new(),
        }
    }
}

/// Appends the lines of `text` to `to`, each indented by two spaces (keys of an API's table).
fn indent(to: &mut String, text: &str) {
    for line in text.trim_matches('\n').lines() {
        to.push_str("  ");
        to.push_str(line);
        to.push('\n');
    }
}

/// Appends `text` to `to` as whole lines.
fn push_lines(to: &mut String, text: &str) {
    let text = text.trim_matches('\n');
    if !text.is_empty() {
        to.push_str(text);
        to.push('\n');
    }
}

impl Cfg {
    pub fn new() -> Cfg {
        Cfg::default()
    }

    /// `[server] workers` (default 1).
    pub fn workers(mut self, n: usize) -> Cfg {
        self.workers = n;
        self
    }

    /// More keys for `[server]`.
    pub fn server(mut self, keys: impl AsRef<str>) -> Cfg {
        push_lines(&mut self.server, keys.as_ref());
        self
    }

    /// More keys for the listener "http" (`h2c = true`, `defer_accept = true`...).
    pub fn listener(mut self, keys: impl AsRef<str>) -> Cfg {
        push_lines(&mut self.listener, keys.as_ref());
        self
    }

    /// Raw `[[listeners]]` tables in place of the default listener (a TLS listener, two
    /// listeners...). [`Cfg::listener`] keys are then ignored.
    pub fn listeners(mut self, tables: impl AsRef<str>) -> Cfg {
        push_lines(
            self.listeners.get_or_insert_with(String::new),
            tables.as_ref(),
        );
        self
    }

    /// More keys for `[admin]` (`token_env = "..."`).
    pub fn admin(mut self, keys: impl AsRef<str>) -> Cfg {
        push_lines(self.admin.get_or_insert_with(String::new), keys.as_ref());
        self
    }

    /// No `[admin]` table: the gateway runs without its admin API.
    pub fn no_admin(mut self) -> Cfg {
        self.admin = None;
        self
    }

    /// Keys for `[limits]`.
    pub fn limits(mut self, keys: impl AsRef<str>) -> Cfg {
        self.limits.push(keys.as_ref().into());
        self
    }

    /// Raw `[[upstreams]]` tables (or any top-level table), placed before the API.
    pub fn upstream(mut self, tables: impl AsRef<str>) -> Cfg {
        self.upstreams.push(tables.as_ref().into());
        self
    }

    /// The API's name (default "api"), also used by the domain's mappings.
    pub fn api(mut self, name: &str) -> Cfg {
        self.api = name.into();
        self
    }

    /// More keys for the `[[apis]]` table (`resource_policy = { ... }`).
    pub fn api_extra(mut self, keys: impl AsRef<str>) -> Cfg {
        push_lines(&mut self.api_extra, keys.as_ref());
        self
    }

    /// More keys for stage "prod" (`cache = { ... }`, `throttle = { ... }`).
    pub fn stage_extra(mut self, keys: impl AsRef<str>) -> Cfg {
        push_lines(&mut self.stage_extra, keys.as_ref());
        self
    }

    /// Another stage `name` with `keys`, mapped at base path `name` on domain `*`.
    pub fn stage(mut self, name: &str, keys: impl AsRef<str>) -> Cfg {
        self.stages.push((name.into(), keys.as_ref().into()));
        self
    }

    /// A route of the API: `route = "<route>"` followed by `keys` (its `integration = {...}`
    /// and anything else), one key a line.
    pub fn route(mut self, route: &str, keys: impl AsRef<str>) -> Cfg {
        if !self.routes.is_empty() {
            self.routes.push('\n');
        }
        self.routes
            .push_str(&format!("  [[apis.routes]]\n  route = \"{route}\"\n"));
        indent(&mut self.routes, keys.as_ref());
        self
    }

    /// Raw text inside the API, after its stages: `[[apis.routes]]` tables (or more
    /// `[[apis.stages]]`, mapped by nothing unless [`Cfg::extra`] adds a domain).
    pub fn routes(mut self, raw: impl AsRef<str>) -> Cfg {
        self.routes.push_str(raw.as_ref());
        self
    }

    /// Raw TOML appended at the end of the file (`[throttle]`, `[[usage_plans]]`, `[[api_keys]]`,
    /// `[http2]`, more `[[domains]]`...).
    pub fn extra(mut self, raw: impl AsRef<str>) -> Cfg {
        push_lines(&mut self.extra, raw.as_ref());
        self
    }

    /// The config file's text.
    pub fn toml(&self) -> String {
        let mut server = format!("workers = {}\n", self.workers);
        server.push_str(&self.server);
        let listeners = match &self.listeners {
            Some(raw) => raw.clone(),
            None => format!(
                "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:0\"\n{}",
                self.listener
            ),
        };
        let admin = match &self.admin {
            Some(keys) => format!("[admin]\naddr = \"127.0.0.1:0\"\n{keys}\n"),
            None => String::new(),
        };
        let api = &self.api;
        let mut stages = String::from(
            "  [[apis.stages]]\n  name = \"prod\"\n  variables = { who = \"prod\" }\n",
        );
        indent(&mut stages, &self.stage_extra);
        let mut mappings = format!("{{ base_path = \"\", api = \"{api}\", stage = \"prod\" }}");
        if !self.stages.is_empty() {
            mappings = format!("[\n  {mappings},\n");
            for (name, keys) in &self.stages {
                stages.push_str(&format!("\n  [[apis.stages]]\n  name = \"{name}\"\n"));
                indent(&mut stages, keys);
                mappings.push_str(&format!(
                    "  {{ base_path = \"{name}\", api = \"{api}\", stage = \"{name}\" }},\n"
                ));
            }
            mappings.push(']');
        } else {
            mappings = format!("[{mappings}]");
        }
        let extra = if self.extra.is_empty() {
            String::new()
        } else {
            format!("\n{}", self.extra)
        };
        format!(
            r#"
[server]
{server}
{listeners}
{admin}[limits]
{limits}

{upstreams}

[[apis]]
name = "{api}"
{api_extra}

{stages}
{routes}

[[domains]]
host = "*"
mappings = {mappings}
{extra}"#,
            limits = self.limits.join("\n"),
            api_extra = self.api_extra,
            upstreams = self.upstreams.join("\n"),
            routes = self.routes,
        )
    }
}

/// The default config with `limits` (keys), `upstreams` (raw tables) and `routes` (raw text
/// inside the API): `Cfg::new().limits(limits).upstream(upstreams).routes(routes)`.
pub fn config(limits: &str, upstreams: &str, routes: &str) -> String {
    Cfg::new()
        .limits(limits)
        .upstream(upstreams)
        .routes(routes)
        .toml()
}
