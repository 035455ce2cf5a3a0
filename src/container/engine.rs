//! Connecting to the Docker Engine and asking whether it answers.
//!
//! The engine is found as the docker CLI finds it: `DOCKER_HOST`, else the
//! current Docker context's endpoint, else the default socket; the API version
//! is negotiated down for older engines. `probe` answers `qbox doctor`. This
//! module also finds the host's address on the default bridge (where a
//! container reaches a service the demo starts) and whether a container still
//! exists.

use std::time::Duration;

use bollard::Docker;
use serde::Serialize;

/// What `qbox doctor` reports about the engine.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    pub available: bool,
    /// Where qbox connects: `DOCKER_HOST`, or the platform's default socket.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where qbox connects: `DOCKER_HOST`, else the endpoint of the current
/// Docker context (`DOCKER_CONTEXT`, else `currentContext` in the docker CLI's
/// `config.json`), else the platform's default socket. The same order as the
/// docker CLI.
pub fn endpoint() -> String {
    if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty()) {
        return host;
    }
    if let Some(host) = context_endpoint() {
        return host;
    }
    if cfg!(windows) {
        "npipe:////./pipe/docker_engine".into()
    } else {
        "unix:///var/run/docker.sock".into()
    }
}

/// The docker CLI's configuration directory (`DOCKER_CONFIG`, else `~/.docker`).
fn docker_config_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => Some(dir.into()),
        None => dirs::home_dir().map(|home| home.join(".docker")),
    }
}

/// The current context's Docker endpoint, when one other than `default` is
/// selected.
fn context_endpoint() -> Option<String> {
    let chosen = std::env::var("DOCKER_CONTEXT")
        .ok()
        .filter(|v| !v.is_empty());
    context_endpoint_in(&docker_config_dir()?, chosen.as_deref())
}

/// The endpoint of the context `chosen` (else `currentContext` in
/// `config_dir/config.json`), read from the context store's `meta.json`
/// files. `None` for the `default` context or anything unreadable: the
/// default socket is then used, as the docker CLI would.
pub fn context_endpoint_in(config_dir: &std::path::Path, chosen: Option<&str>) -> Option<String> {
    let name = match chosen {
        Some(name) => name.to_owned(),
        None => {
            let config = std::fs::read(config_dir.join("config.json")).ok()?;
            let config: serde_json::Value = serde_json::from_slice(&config).ok()?;
            config["currentContext"].as_str()?.to_owned()
        }
    };
    if name.is_empty() || name == "default" {
        return None;
    }
    // Each context lives in a directory named by the digest of its name; its
    // meta.json carries the name too, so a scan finds it without hashing.
    let meta = std::fs::read_dir(config_dir.join("contexts/meta")).ok()?;
    meta.filter_map(Result::ok).find_map(|entry| {
        let text = std::fs::read(entry.path().join("meta.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_slice(&text).ok()?;
        if meta["Name"] != name.as_str() {
            return None;
        }
        meta["Endpoints"]["docker"]["Host"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Connects to [`endpoint`] and agrees on an API version the engine
/// supports (older engines reject newer versions). Every endpoint goes
/// through the bounded transport (`transport.rs`): every answer capped and
/// timed. An endpoint it does not speak (`ssh://`, `https://`) is refused
/// rather than handed to a connector without those bounds.
pub async fn connect() -> Result<Docker, bollard::errors::Error> {
    let endpoint = endpoint();
    let Some(target) = super::transport::Target::parse(&endpoint) else {
        return Err(bollard::errors::Error::UnsupportedURISchemeError { uri: endpoint });
    };
    super::transport::client(target)?.negotiate_version().await
}

/// Asks the engine for its version, giving up after `timeout`.
pub async fn probe(timeout: Duration) -> EngineStatus {
    let endpoint = endpoint();
    let attempt = async {
        let docker = connect().await?;
        docker.version().await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(version)) => EngineStatus {
            available: true,
            endpoint,
            version: version.version,
            api_version: version.api_version,
            error: None,
        },
        Ok(Err(err)) => EngineStatus {
            available: false,
            endpoint,
            version: None,
            api_version: None,
            error: Some(err.to_string()),
        },
        Err(_) => EngineStatus {
            available: false,
            endpoint,
            version: None,
            api_version: None,
            error: Some(format!("no answer within {}s", timeout.as_secs())),
        },
    }
}

/// The host's address on Docker's default `bridge` network: containers
/// reach the host there (a service bound to it is not on the outside
/// network). The engine often lists only the subnet; the host then holds
/// its first address, as Docker assigns it. `None` when the engine has no
/// IPv4 bridge.
pub async fn bridge_gateway(
    docker: &Docker,
) -> Result<Option<std::net::IpAddr>, bollard::errors::Error> {
    let network = docker.inspect_network("bridge", None).await?;
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    let gateway = configs.iter().find_map(|config| {
        let listed = config.gateway.as_deref().and_then(|g| g.parse().ok());
        listed.or_else(|| config.subnet.as_deref().and_then(first_host))
    });
    Ok(gateway.map(std::net::IpAddr::V4))
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` → `172.17.0.1`).
fn first_host(subnet: &str) -> Option<std::net::Ipv4Addr> {
    let (network, prefix) = subnet.split_once('/')?;
    let network: std::net::Ipv4Addr = network.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if prefix >= 31 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some((u32::from(network) & mask).checked_add(1)?.into())
}

/// Whether a container with this name or id exists (running or not).
pub async fn container_exists(docker: &Docker, name: &str) -> Result<bool, bollard::errors::Error> {
    match docker.inspect_container(name, None).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::{context_endpoint_in, first_host};

    fn context_store(current: &str, contexts: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({"auths": {}, "currentContext": current}).to_string(),
        )
        .unwrap();
        for (i, (name, host)) in contexts.iter().enumerate() {
            let meta = dir.path().join(format!("contexts/meta/{i:064x}"));
            std::fs::create_dir_all(&meta).unwrap();
            let json = serde_json::json!({
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}},
            });
            std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn the_current_context_names_the_endpoint() {
        let store = context_store(
            "remote",
            &[
                ("local", "unix:///run/user/1000/docker.sock"),
                ("remote", "tcp://10.0.0.5:2375"),
            ],
        );
        assert_eq!(
            context_endpoint_in(store.path(), None).as_deref(),
            Some("tcp://10.0.0.5:2375")
        );
        // DOCKER_CONTEXT wins over config.json.
        assert_eq!(
            context_endpoint_in(store.path(), Some("local")).as_deref(),
            Some("unix:///run/user/1000/docker.sock")
        );
        assert_eq!(context_endpoint_in(store.path(), Some("default")), None);
        assert_eq!(context_endpoint_in(store.path(), Some("missing")), None);
    }

    #[test]
    fn no_config_or_the_default_context_means_the_default_socket() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(context_endpoint_in(empty.path(), None), None);
        let default = context_store("default", &[("x", "unix:///x.sock")]);
        assert_eq!(context_endpoint_in(default.path(), None), None);
    }

    #[test]
    fn the_gateway_is_the_subnets_first_host() {
        assert_eq!(first_host("172.17.0.0/16"), Some([172, 17, 0, 1].into()));
        assert_eq!(first_host("10.1.2.128/25"), Some([10, 1, 2, 129].into()));
        assert_eq!(first_host("192.168.0.0/0"), Some([0, 0, 0, 1].into()));
        assert_eq!(first_host("10.0.0.0/32"), None);
        assert_eq!(first_host("fd00::/64"), None);
        assert_eq!(first_host("garbage"), None);
    }
}
