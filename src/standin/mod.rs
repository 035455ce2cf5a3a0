//! Stand-ins for AWS services on 127.0.0.1, speaking the real protocols:
//! used by the test suite, the benchmarks and `qbox demo`, where the real
//! services cannot be reached.

pub mod kiro;
pub mod oidc;
pub mod q;

/// Serves `app` on an ephemeral 127.0.0.1 port until the task is dropped
/// or aborted.
pub(crate) async fn serve_on_loopback(
    app: axum::Router,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_on(std::net::Ipv4Addr::LOCALHOST.into(), app).await
}

/// Serves `app` on an ephemeral port of `ip` (for containers: the Docker
/// bridge's gateway address, which they can reach and the network cannot).
pub(crate) async fn serve_on(
    ip: std::net::IpAddr,
    app: axum::Router,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}
