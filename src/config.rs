//! Server configuration: a TOML file whose every field has a default, plus
//! environment overrides for secrets.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use vpr_control::ApiKey;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub media: MediaSection,
    pub store: StoreConfig,
    pub rooms: RoomsConfig,
    pub auth: AuthConfig,
    pub shutdown: ShutdownConfig,
    pub snapshots: SnapshotsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotsConfig {
    pub dir: std::path::PathBuf,
    pub max_bytes: usize,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self { dir: "snapshots".into(), max_bytes: 4 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            cors_allowed_origins: vec!["*".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the listener serves TLS.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 50051)), tls_cert: None, tls_key: None }
    }
}

impl GrpcConfig {
    /// TLS files when both are set.
    pub fn tls_files(&self) -> Option<vpr_control::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert_path), Some(key_path)) => Some(vpr_control::TlsFiles {
                cert_path: cert_path.clone(),
                key_path: key_path.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    pub udp_listen: SocketAddr,
    pub announced_ips: Vec<IpAddr>,
    pub keyframe_request_interval_ms: u64,
    pub connect_timeout_s: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 50000)),
            announced_ips: Vec::new(),
            keyframe_request_interval_ms: 500,
            connect_timeout_s: 30,
        }
    }
}

impl MediaSection {
    /// Converts this section to the media plane's settings.
    pub fn to_media_config(&self) -> vpr_sfu::MediaConfig {
        vpr_sfu::MediaConfig {
            udp_listen: self.udp_listen,
            announced_ips: self.announced_ips.clone(),
            keyframe_request_interval: Duration::from_millis(self.keyframe_request_interval_ms),
            connect_timeout: Duration::from_secs(self.connect_timeout_s),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: "sqlite://vpr.db".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub default_max_participants: u32,
    pub default_token_ttl_s: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_max_participants: 8, default_token_ttl_s: 3600 }
    }
}

/// Development secrets shipped in the default config; the server warns when
/// they are in use.
pub const DEV_JOIN_TOKEN_SECRET: &str = "dev-join-secret-change-me";
pub const DEV_API_SECRET: &str = "dev-secret-change-me";

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub join_token_secret: String,
    pub api_keys: Vec<ApiKey>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("join_token_secret", &"<redacted>")
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            join_token_secret: DEV_JOIN_TOKEN_SECRET.into(),
            api_keys: vec![ApiKey::new("dev", DEV_API_SECRET)],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    pub drain_timeout_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_timeout_s: 5 }
    }
}

impl Config {
    /// Reads the file at `path`, then applies the environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies VPR_JOIN_TOKEN_SECRET, VPR_API_KEYS ("id:secret,...") and
    /// VPR_STORE_URL.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(url) = var("VPR_STORE_URL") {
            self.store.url = url;
        }
        if let Some(secret) = var("VPR_JOIN_TOKEN_SECRET") {
            self.auth.join_token_secret = secret;
        }
        if let Some(keys) = var("VPR_API_KEYS") {
            let mut parsed = Vec::new();
            for entry in keys.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let Some((key_id, secret)) = entry.split_once(':') else {
                    bail!("VPR_API_KEYS entry without ':' (expected id:secret)");
                };
                // Keys from the environment get the default scopes (read and write).
                parsed.push(ApiKey::new(key_id, secret));
            }
            self.auth.api_keys = parsed;
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.auth.join_token_secret.len() < 16 {
            bail!("auth.join_token_secret must be at least 16 bytes");
        }
        if self.auth.api_keys.is_empty() {
            bail!("auth.api_keys is empty: the control plane would accept no caller");
        }
        if self.grpc.tls_cert.is_some() != self.grpc.tls_key.is_some() {
            bail!("grpc.tls_cert and grpc.tls_key must be set together");
        }
        if self.http.max_body_bytes == 0 {
            bail!("http.max_body_bytes must be positive");
        }
        Ok(())
    }

    /// True when a development secret from the default config is in use.
    pub fn uses_dev_secrets(&self) -> bool {
        self.auth.join_token_secret == DEV_JOIN_TOKEN_SECRET
            || self.auth.api_keys.iter().any(|k| k.secret == DEV_API_SECRET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_matches_defaults() {
        let text = include_str!("../config/default.toml");
        let config: Config = toml::from_str(text).expect("default.toml parses");
        let defaults = Config::default();
        assert_eq!(config.http.listen, defaults.http.listen);
        assert_eq!(config.media.udp_listen, defaults.media.udp_listen);
        assert_eq!(config.store.url, defaults.store.url);
        assert_eq!(config.auth.api_keys.len(), 1);
        assert_eq!(config.shutdown.drain_timeout_s, defaults.shutdown.drain_timeout_s);
    }

    #[test]
    fn env_overrides_secrets() {
        let mut config = Config::default();
        config
            .apply_env(|name| match name {
                "VPR_JOIN_TOKEN_SECRET" => Some("a-much-longer-secret-value".into()),
                "VPR_API_KEYS" => Some("cad:s1, report:s2".into()),
                _ => None,
            })
            .expect("valid overrides");
        assert_eq!(config.auth.join_token_secret, "a-much-longer-secret-value");
        assert_eq!(config.auth.api_keys.len(), 2);
        assert_eq!(config.auth.api_keys[1].key_id, "report");
        assert!(!config.uses_dev_secrets());
    }

    #[test]
    fn malformed_api_keys_are_rejected() {
        let mut config = Config::default();
        let err = config
            .apply_env(|name| (name == "VPR_API_KEYS").then(|| "no-colon".into()))
            .unwrap_err();
        assert!(err.to_string().contains("id:secret"), "{err}");
    }
}
