//! Connecting to the Docker Engine and asking whether it answers.

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

/// The endpoint qbox uses, for messages.
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            if cfg!(windows) {
                "npipe:////./pipe/docker_engine".into()
            } else {
                "unix:///var/run/docker.sock".into()
            }
        })
}

/// Connects with `DOCKER_HOST` / the default socket and agrees on an API
/// version the engine supports (older engines reject newer versions).
pub async fn connect() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_defaults()?.negotiate_version().await
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
    use super::first_host;

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
