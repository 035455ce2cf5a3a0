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
/// network). `None` when the engine has no IPv4 bridge.
pub async fn bridge_gateway(
    docker: &Docker,
) -> Result<Option<std::net::IpAddr>, bollard::errors::Error> {
    let network = docker.inspect_network("bridge", None).await?;
    let gateway = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|config| config.gateway)
        .find_map(|gateway| gateway.parse::<std::net::Ipv4Addr>().ok());
    Ok(gateway.map(std::net::IpAddr::from))
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
