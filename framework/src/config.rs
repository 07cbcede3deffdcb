//! Engine settings (`settings.yml`) and per-organization config (`config/organizations/*.yml`).
//! Every struct rejects unknown fields so a typo is an error naming the file and line, never a
//! silently ignored option.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::input_error;

/// Reads a YAML file into `T`; parse errors name the file, line and column.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    parse_yaml(path, &read_config(path)?)
}

/// A config file's text; an error names the file.
fn read_config(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| input_error!("{}: cannot read: {e}", path.display()))
}

/// Parses YAML text that came from `path` (used in messages only).
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    // The error quotes the file's lines: no password or secret may be among them.
    serde_saphyr::from_str(text).map_err(|e| {
        let shown = crate::store::redact_text(&hide_secret_values(&e.to_string()));
        input_error!("{}: {}", path.display(), shown)
    })
}

/// Quoted lines of the file (`12 |   client_secret: …`) whose key names a secret, with a
/// plain value hidden: a secret pasted into a file by mistake must not be repeated in the
/// error that refuses it. (`{ env: … }` references are shown; they hold no secret.)
fn hide_secret_values(text: &str) -> String {
    const SECRET_WORDS: [&str; 4] = ["secret", "token", "password", "apikey"];
    let hide = |line: &str| -> Option<String> {
        let (gutter, quoted) = line.split_once(" | ")?;
        let number = gutter.trim();
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (key, value) = quoted.split_once(':')?;
        let key_lower = key.to_lowercase();
        let secretish = SECRET_WORDS.iter().any(|w| key_lower.contains(w))
            && !key_lower.trim_end().ends_with("_url");
        let plain = !value.trim().is_empty() && !value.trim_start().starts_with('{');
        (secretish && plain).then(|| format!("{gutter} | {key}: ***"))
    };
    text.lines()
        .map(|line| hide(line).unwrap_or_else(|| line.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `settings.yml`: how this Ferry installation runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub secrets: SecretSettings,
    #[serde(default)]
    pub sync: SyncSettings,
    #[serde(default)]
    pub paths: PathSettings,
    #[serde(default, deserialize_with = "ranged::runtime")]
    pub runtime: RuntimeSettings,
    /// Directory of the settings file; relative paths in it are resolved against this.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A file path (SQLite, the embedded default) or a `postgres://` URL.
    #[serde(deserialize_with = "ranged::database_url")]
    pub url: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: ".ferry/ferry.db".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// Environment variable holding the base64 key that encrypts credentials at rest.
    #[serde(deserialize_with = "ranged::key_env")]
    pub key_env: String,
    /// Used when `key_env` is unset: a key file created on first use with mode 0600.
    #[serde(deserialize_with = "ranged::key_file")]
    pub key_file: String,
}

impl Default for SecretSettings {
    fn default() -> Self {
        Self {
            key_env: "FERRY_SECRET_KEY".into(),
            key_file: ".ferry/secret.key".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// Records per page on incremental runs (1–10000).
    #[serde(deserialize_with = "ranged::page_size")]
    pub page_size: usize,
    /// Records per page on an entity's first sync, external side first (1–10000).
    #[serde(deserialize_with = "ranged::first_sync_batch_size")]
    pub first_sync_batch_size: usize,
    /// External changes are read since `watermark - lookback` to survive clock skew
    /// (0–604800 s, a week).
    #[serde(deserialize_with = "ranged::lookback_seconds")]
    pub lookback_seconds: i64,
    /// How long a connection lease lasts without renewal; a run renews it every third of
    /// this, so a killed run frees its connection after at most this (1–3600 s).
    #[serde(deserialize_with = "ranged::lease_seconds")]
    pub lease_seconds: i64,
    /// Per-request HTTP timeout (1–600 s).
    #[serde(deserialize_with = "ranged::http_timeout_seconds")]
    pub http_timeout_seconds: u64,
    /// Retries of transient and rate-limited API calls before the record fails (0–20).
    #[serde(deserialize_with = "ranged::max_retries")]
    pub max_retries: u32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            page_size: 200,
            first_sync_batch_size: 100,
            lookback_seconds: 300,
            lease_seconds: 60,
            http_timeout_seconds: 30,
            max_retries: 3,
        }
    }
}

/// `ferry serve` and `ferry worker`: the HTTP server, the job queue and the scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Where `ferry serve` listens: `host:port`.
    #[serde(deserialize_with = "ranged::listen")]
    pub listen: String,
    /// How often each organization syncs, unless its config says otherwise (1 s–30 days).
    #[serde(deserialize_with = "ranged::sync_interval_seconds")]
    pub sync_interval_seconds: u64,
    /// Up to this share of the interval is added at random per connection, so many
    /// organizations do not sync at the same second (0–1).
    #[serde(deserialize_with = "ranged::jitter_ratio")]
    pub jitter_ratio: f64,
    /// A job's lease; a worker renews it while it works, so only a dead worker's job
    /// passes to another after this (1–3600 s).
    #[serde(deserialize_with = "ranged::job_lease_seconds")]
    pub job_lease_seconds: i64,
    /// Attempts before a job is dead (1–100).
    #[serde(deserialize_with = "ranged::max_attempts")]
    pub max_attempts: i32,
    /// Backoff after a failed attempt: `retry_base_seconds * 2^(attempt-1)`, capped
    /// (each 1 s–1 day).
    #[serde(deserialize_with = "ranged::retry_base_seconds")]
    pub retry_base_seconds: i64,
    #[serde(deserialize_with = "ranged::retry_cap_seconds")]
    pub retry_cap_seconds: i64,
    /// How often an idle worker looks for work, and the scheduler for due syncs
    /// (10–60000 ms).
    #[serde(deserialize_with = "ranged::poll_millis")]
    pub poll_millis: u64,
    /// Webhook events for one connection arriving within this window run as one sync
    /// (0–3600 s).
    #[serde(deserialize_with = "ranged::webhook_coalesce_seconds")]
    pub webhook_coalesce_seconds: i64,
    /// `ferry status` groups runs of a connection this close together (1–1440 min).
    #[serde(deserialize_with = "ranged::run_cluster_minutes")]
    pub run_cluster_minutes: i64,
    /// On SIGTERM, how long a running job may go on before it is stopped at its next safe
    /// point and recorded as interrupted (1–600 s).
    #[serde(deserialize_with = "ranged::shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// `ferry serve`: most connections open at once; more wait to be accepted (1–100000).
    #[serde(deserialize_with = "ranged::max_connections")]
    pub max_connections: usize,
    /// `ferry serve`: a request's headers, then its whole body, must arrive within this; an
    /// idle connection, and one whose client stops reading its answers, is closed after it
    /// (1–600 s).
    #[serde(deserialize_with = "ranged::request_timeout_seconds")]
    pub request_timeout_seconds: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            sync_interval_seconds: 900,
            jitter_ratio: 0.1,
            job_lease_seconds: 30,
            max_attempts: 5,
            retry_base_seconds: 30,
            retry_cap_seconds: 3600,
            poll_millis: 1000,
            webhook_coalesce_seconds: 2,
            run_cluster_minutes: 15,
            shutdown_grace_seconds: 20,
            max_connections: 1024,
            request_timeout_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathSettings {
    pub hub_model: String,
    pub organizations: String,
    pub mappers: String,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            hub_model: "config/hub.yml".into(),
            organizations: "config/organizations".into(),
            mappers: "mappers".into(),
        }
    }
}

impl Settings {
    /// Loads `settings.yml`; a missing file is an error because paths are relative to it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_config(path)?;
        if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            // Likely truncated: every default would apply silently, database included.
            return Err(input_error!(
                "{}: the settings file is empty; write at least `database: {{ url: ... }}`",
                path.display()
            ));
        }
        let mut s: Settings = parse_yaml(path, &text)?;
        s.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(s)
    }

    /// Settings for code that has no file (tests, the demo): defaults rooted at `base_dir`.
    pub fn with_base(base_dir: &Path, database_url: &str) -> Self {
        Settings {
            database: DatabaseSettings {
                url: database_url.into(),
            },
            secrets: SecretSettings::default(),
            sync: SyncSettings::default(),
            paths: PathSettings::default(),
            runtime: RuntimeSettings::default(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// Resolves a path from the settings against the settings file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The database URL with a relative SQLite path resolved.
    pub fn database_url(&self) -> String {
        let url = &self.database.url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") || url == ":memory:" {
            url.clone()
        } else {
            self.resolve(url.trim_start_matches("sqlite://"))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// Loads every organization file, sorted by file name.
    pub fn organizations(&self) -> Result<Vec<OrgConfig>> {
        let dir = self.resolve(&self.paths.organizations);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| input_error!("{}: cannot read directory: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
            .collect();
        files.sort();
        let mut orgs = Vec::new();
        for f in files {
            let text = read_config(&f)?;
            let mut org: OrgConfig = parse_yaml(&f, &text)?;
            let lines: ConnectionLines = parse_yaml(&f, &text)?;
            for (c, at) in org.connections.iter_mut().zip(lines.connections) {
                c.line = Some(at.referenced.line());
            }
            org.source = f.clone();
            org.check()?;
            if orgs.iter().any(|o: &OrgConfig| o.slug == org.slug) {
                return Err(input_error!(
                    "{}: organization slug {:?} is defined twice",
                    f.display(),
                    org.slug
                ));
            }
            orgs.push(org);
        }
        Ok(orgs)
    }
}

/// One organization (tenant): its connections and which entities each syncs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    #[serde(deserialize_with = "ranged::slug")]
    pub slug: String,
    pub name: String,
    #[serde(default = "yes")]
    pub sync_enabled: bool,
    /// Records last changed before this are never synced (Maestrano's "no historical data");
    /// not in the future (nothing would ever sync).
    #[serde(default, deserialize_with = "ranged::date_filtering_limit")]
    pub date_filtering_limit: Option<DateTime<Utc>>,
    /// How often the scheduler syncs this organization (else settings' default).
    #[serde(default, deserialize_with = "ranged::optional_interval")]
    pub sync_interval_seconds: Option<u64>,
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(skip)]
    pub source: PathBuf,
}

fn yes() -> bool {
    true
}

impl OrgConfig {
    fn check(&self) -> Result<()> {
        let file = self.source.display();
        if self.slug.trim().is_empty() {
            return Err(input_error!("{file}: field `slug` must not be empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.connections {
            if !seen.insert(&c.name) {
                return Err(input_error!(
                    "{}: connection {:?}: name is used twice",
                    c.place(&self.source),
                    c.name
                ));
            }
        }
        Ok(())
    }

    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }
}

/// Where each connection of an organization file starts, for messages about its values
/// that only the connector can check (they carry `file:line`).
#[derive(Deserialize)]
struct ConnectionLines {
    #[serde(default)]
    connections: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
}

/// One account in one external application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub name: String,
    pub connector: String,
    /// Connector settings (base URLs, tenant ids...); the connector validates them.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Secrets by name, each read from the environment variable it names.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Per-connection mapping parameters (e.g. which user-defined field holds a value).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Entities to sync, by the connector's entity name.
    #[serde(default)]
    pub entities: BTreeMap<String, EntitySelection>,
    /// Overrides of the connector's default call limits for this account.
    #[serde(default)]
    pub rate_limit: Option<crate::http::rate::RateLimits>,
    /// Records per page for this connection's listings and pushes, first sync and
    /// incremental alike (1–10000); unset: the size the connector recommends (its
    /// application's documented best practice), else the `sync` settings'.
    #[serde(default, deserialize_with = "ranged::connection_page_size")]
    pub page_size: Option<usize>,
    /// Webhooks the application sends to `ferry serve` for this connection.
    #[serde(default)]
    pub webhooks: Option<WebhookConfig>,
    /// The line of its file where this connection starts (set when loaded from a file).
    #[serde(skip)]
    pub line: Option<u64>,
}

impl ConnectionConfig {
    /// `file:line` of this connection in `file`, or the file alone.
    pub fn place(&self, file: &Path) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", file.display()),
            None => file.display().to_string(),
        }
    }
}

/// How webhooks of a connection are verified and which changes matter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shared secret of the application's signature (HMAC), when it signs.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// Else a shared token the sender puts in `Authorization: Bearer` or `?token=`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Per entity, the changed fields (as the application names them) that are worth a
    /// sync; other changes are recorded as skipped. An entity not listed: every change.
    #[serde(default)]
    pub relevant: BTreeMap<String, Vec<String>>,
}

/// Where a secret comes from. Only environment variables: secrets never live in files.
/// Anything but `{ env: VARIABLE }` is refused without repeating the value (it may be the
/// secret itself, pasted in by mistake).
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub env: String,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Env {
            env: String,
        }
        let v = serde_json::Value::deserialize(d)?;
        let wrong = || {
            serde::de::Error::custom(
                "a secret must be `{ env: VARIABLE }`: secrets are read from the environment, never from files (the value given is not shown)",
            )
        };
        if !v.is_object() {
            return Err(wrong());
        }
        let Env { env } = serde_json::from_value(v).map_err(|_| wrong())?;
        Ok(SecretRef { env })
    }
}

/// Direction and conflict policy of one synced entity.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EntitySelection {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub conflict: ConflictPolicy,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Both,
    ToHub,
    ToExternal,
}

impl Direction {
    pub fn to_hub(self) -> bool {
        matches!(self, Direction::Both | Direction::ToHub)
    }
    pub fn to_external(self) -> bool {
        matches!(self, Direction::Both | Direction::ToExternal)
    }
}

/// How a record changed on both sides since the last sync is settled.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The side with the newer update time wins; a tie goes to the external side.
    #[default]
    Newest,
    /// The hub always wins (Maestrano's `connec_preemption: true`).
    Hub,
    /// The external application always wins.
    External,
}

impl ConnectionConfig {
    /// Reads every secret from its environment variable; a missing one names the variable.
    pub fn resolve_secrets(&self, file: &Path) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (name, r) in &self.secrets {
            let v = std::env::var(&r.env).with_context(|| {
                format!(
                    "{}: connection {:?}: secret `{name}` needs environment variable {}",
                    self.place(file),
                    self.name,
                    r.env
                )
            });
            let v = v.map_err(|e| input_error!("{e:#}"))?;
            out.insert(name.clone(), v);
        }
        Ok(out)
    }
}

/// Range-checked settings: a value out of range is refused while the file is read, so the
/// error names the file, line, column and field (a negative lookback silently missed edits,
/// a zero rate or timeout hung, a huge lookback panicked).
mod ranged {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use std::fmt::Display;
    use std::ops::RangeInclusive;

    fn check<'de, D, T>(
        d: D,
        field: &str,
        range: RangeInclusive<T>,
        unit: &str,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialOrd + Display,
    {
        let v = T::deserialize(d)?;
        if range.contains(&v) {
            return Ok(v);
        }
        Err(D::Error::custom(format!(
            "field `{field}` must be from {} to {}{unit}, not {v}",
            range.start(),
            range.end()
        )))
    }

    macro_rules! ranged {
        ($($name:ident: $t:ty = $lo:expr, $hi:expr, $unit:expr;)*) => {$(
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                check(d, stringify!($name), $lo..=$hi, $unit)
            }
        )*};
    }

    ranged! {
        page_size: usize = 1, 10_000, "";
        first_sync_batch_size: usize = 1, 10_000, "";
        lookback_seconds: i64 = 0, 604_800, " s";
        lease_seconds: i64 = 1, 3600, " s";
        http_timeout_seconds: u64 = 1, 600, " s";
        max_retries: u32 = 0, 20, "";
        sync_interval_seconds: u64 = 1, 2_592_000, " s";
        jitter_ratio: f64 = 0.0, 1.0, "";
        job_lease_seconds: i64 = 1, 3600, " s";
        max_attempts: i32 = 1, 100, "";
        retry_base_seconds: i64 = 1, 86_400, " s";
        retry_cap_seconds: i64 = 1, 86_400, " s";
        poll_millis: u64 = 10, 60_000, " ms";
        webhook_coalesce_seconds: i64 = 0, 3600, " s";
        run_cluster_minutes: i64 = 1, 1440, " min";
        shutdown_grace_seconds: u64 = 1, 600, " s";
        max_connections: usize = 1, 100_000, "";
        request_timeout_seconds: u64 = 1, 600, " s";
    }

    /// An optional page size, in the range of `page_size`.
    pub fn connection_page_size<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<usize>, D::Error> {
        check(d, "page_size", 1..=10_000, "").map(Some)
    }

    /// An organization slug: it names files, URLs and log lines, so lowercase letters,
    /// digits, `-` and `_`, starting with a letter or digit, at most 63 characters.
    pub fn slug<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = String::deserialize(d)?;
        let ok = v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            return Ok(v);
        }
        Err(D::Error::custom(format!(
            "field `slug` must be lowercase letters, digits, `-` and `_` (at most 63, starting with a letter or digit), not {v:?}"
        )))
    }

    fn non_empty<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<String, D::Error> {
        let v = String::deserialize(d)?;
        if v.trim().is_empty() {
            return Err(D::Error::custom(format!(
                "field `{field}` must not be empty"
            )));
        }
        Ok(v)
    }

    pub fn key_env<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        non_empty(d, "key_env")
    }

    pub fn key_file<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        non_empty(d, "key_file")
    }

    /// A SQLite file path or a `postgres://` URL; any other `scheme://` is a mistake (a
    /// `mysql://` URL would otherwise become a directory named `mysql:`).
    pub fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = non_empty(d, "url")?;
        let scheme = v.split_once("://").map(|(s, _)| s);
        match scheme {
            None | Some("postgres" | "postgresql" | "sqlite") => Ok(v),
            Some(other) => Err(D::Error::custom(format!(
                "field `url` must be a SQLite file path or a postgres:// URL, not a {other}:// URL"
            ))),
        }
    }

    /// `host:port`, the port a number up to 65535.
    pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = String::deserialize(d)?;
        let ok = v
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if ok {
            return Ok(v);
        }
        Err(D::Error::custom(format!(
            "field `listen` must be host:port (such as 127.0.0.1:8080), not {v:?}"
        )))
    }

    pub fn date_filtering_limit<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
        let v = Option::<chrono::DateTime<chrono::Utc>>::deserialize(d)?;
        match v {
            Some(t) if t > chrono::Utc::now() => Err(D::Error::custom(format!(
                "field `date_filtering_limit` must not be in the future ({t}): nothing would ever sync"
            ))),
            v => Ok(v),
        }
    }

    /// The `runtime` section, whose retry cap must not be below its base (checked here, so
    /// the error has the section's line).
    pub fn runtime<'de, D: Deserializer<'de>>(d: D) -> Result<super::RuntimeSettings, D::Error> {
        let r = super::RuntimeSettings::deserialize(d)?;
        if r.retry_cap_seconds < r.retry_base_seconds {
            return Err(D::Error::custom(format!(
                "field `retry_cap_seconds` ({}) must not be below `retry_base_seconds` ({})",
                r.retry_cap_seconds, r.retry_base_seconds
            )));
        }
        Ok(r)
    }

    /// `sync_interval_seconds` of an organization, when given.
    pub fn optional_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        sync_interval_seconds(d).map(Some)
    }
}

/// Checks that a connector setting is an absolute http(s) URL with a host; the error names
/// the field. Connectors call this for every URL they are given.
pub fn check_http_url(field: &str, value: &str) -> Result<()> {
    let ok = reqwest::Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    match ok {
        Some(_) => Ok(()),
        None => Err(input_error!(
            "settings: field `{field}` must be an http(s) URL, not {:?}",
            crate::store::redact_text(value)
        )),
    }
}
