//! Stand-ins for AWS services on 127.0.0.1, speaking the real protocols:
//! used by the test suite, the benchmarks and `qbox demo`, where the real
//! services cannot be reached.
//!
//! `oidc` serves `POST /token`: it checks client credentials and the refresh
//! token, rotates refresh tokens, records requests and fails on request. `kiro`
//! is the Kiro auth service's `POST /refreshToken` (and an external `IdP`'s
//! form-encoded token endpoint) with rotation, a refused unknown refresh token
//! and recorded requests. `q` serves `GenerateAssistantResponse` with real
//! framing, checks the target header and bearer token, answers from a script
//! (writes split at any size, pauses, exception frames, HTTP errors, a wrong
//! content type, a cut connection) and counts answers the client hung up on.
//! They bind 127.0.0.1, or for containers the bridge's host address.
//! `tests/standin/serve.rs` (the `standin` example) runs the Q and OIDC
//! stand-ins as a process driven by JSON lines on stdin, and writes stores in
//! the CLI's schema, for suites in other languages (the Python package's).

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
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    // As the real services answer: each write leaves at once. Without it,
    // an event written after the response head on a reused connection
    // waits for the client's delayed ACK (about 40 ms), which would hide
    // every client's time to the first event.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}
