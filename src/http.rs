//! The HTTPS client qbox uses for AWS services: rustls with the ring
//! provider and Mozilla's root certificates compiled in, so the same binary
//! verifies servers on a desktop and in a `FROM scratch` image that has no
//! CA bundle.

use std::sync::Arc;
use std::time::Duration;

/// Builds the shared HTTP client. `timeout` bounds a whole request
/// (connect, send, response headers and body).
pub fn client(timeout: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("qbox/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build()
}

/// An error and its sources on one line ("error sending request: connection
/// refused"), leaving out sources whose text the outer message already has.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
