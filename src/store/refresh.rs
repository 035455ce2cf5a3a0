//! Token refresh through SSO OIDC `CreateToken`, as the CLI does it.
//!
//! `POST {endpoint}/token` with `grantType: refresh_token`. The endpoint is
//! `https://oidc.{region}.amazonaws.com` unless `QBOX_OIDC_ENDPOINT` names
//! another base URL (tests, proxies).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::token::DeviceRegistration;
use crate::secret::Secret;

/// Environment variable that overrides the OIDC base URL.
pub const OIDC_ENDPOINT_ENV: &str = "QBOX_OIDC_ENDPOINT";

/// Why a refresh failed. None of these carry a token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("token refresh rejected by {url} (http {status}, {code}){}", describe(.description))]
    Rejected {
        url: String,
        status: u16,
        code: String,
        description: Option<String>,
    },
    #[error("token refresh failed: {url} answered http {status}")]
    Server { url: String, status: u16 },
    #[error("token refresh failed: cannot reach {url}: {detail}")]
    Network { url: String, detail: String },
    #[error("token refresh failed: unexpected answer from {url}: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("cannot build the https client: {0}")]
    Client(String),
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl RefreshError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Rejected { code, .. } if code == "invalid_grant" || code == "invalid_client" => {
                "the login has ended; log in again with `q login` (or `kiro-cli login`)".into()
            }
            Self::Rejected { .. } => "log in again with `q login` (or `kiro-cli login`)".into(),
            Self::Server { .. } => "the sso oidc service failed; try again in a minute".into(),
            Self::Network { .. } => {
                format!("check the network or proxy; {OIDC_ENDPOINT_ENV} overrides the endpoint")
            }
            Self::BadResponse { .. } | Self::Client(_) => return None,
        })
    }

    /// A rejection means the login itself is no longer usable.
    pub fn is_no_login(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }
}

/// What `CreateToken` returns.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenGrant {
    pub access_token: Secret,
    pub expires_in: i64,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateTokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'static str,
    refresh_token: &'a str,
}

#[derive(Deserialize)]
struct OidcErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// A client for the SSO OIDC token endpoint.
#[derive(Debug, Clone)]
pub struct OidcClient {
    http: reqwest::Client,
    base_override: Option<String>,
}

impl OidcClient {
    /// A client that honours `QBOX_OIDC_ENDPOINT`.
    pub fn from_env() -> Result<Self, RefreshError> {
        Self::new(
            std::env::var(OIDC_ENDPOINT_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
        )
    }

    /// A client for the real endpoints, or for `base_override` when given.
    pub fn new(base_override: Option<String>) -> Result<Self, RefreshError> {
        let http = crate::http::client(Some(Duration::from_secs(30)))
            .map_err(|e| RefreshError::Client(e.to_string()))?;
        Ok(Self {
            http,
            base_override,
        })
    }

    /// The token URL for `region`.
    pub fn token_url(&self, region: &str) -> String {
        match &self.base_override {
            Some(base) => format!("{}/token", base.trim_end_matches('/')),
            None => format!("https://oidc.{region}.amazonaws.com/token"),
        }
    }

    /// Calls `CreateToken` with the refresh token grant.
    pub async fn refresh(
        &self,
        region: &str,
        registration: &DeviceRegistration,
        refresh_token: &Secret,
    ) -> Result<TokenGrant, RefreshError> {
        let url = self.token_url(region);
        let body = CreateTokenRequest {
            client_id: &registration.client_id,
            client_secret: registration.client_secret.expose(),
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose(),
        };
        tracing::debug!(%url, "refreshing token");
        let response =
            self.http
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| RefreshError::Network {
                    url: url.clone(),
                    detail: crate::http::error_chain(&e),
                })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| RefreshError::Network {
            url: url.clone(),
            detail: crate::http::error_chain(&e),
        })?;
        if status.is_success() {
            let grant: TokenGrant =
                serde_json::from_slice(&bytes).map_err(|e| RefreshError::BadResponse {
                    url: url.clone(),
                    detail: super::error::describe_json_error(&e),
                })?;
            if grant.access_token.is_empty() || grant.expires_in <= 0 {
                return Err(RefreshError::BadResponse {
                    url,
                    detail: "no access token or expiry in the answer".into(),
                });
            }
            tracing::debug!(expires_in = grant.expires_in, "token refreshed");
            return Ok(grant);
        }
        if status.is_client_error() {
            let body: Option<OidcErrorBody> = serde_json::from_slice(&bytes).ok();
            let (code, description) = match body {
                Some(b) => (b.error, b.error_description),
                None => (None, None),
            };
            return Err(RefreshError::Rejected {
                url,
                status: status.as_u16(),
                code: code.unwrap_or_else(|| "unknown error".into()),
                description: description.map(|d| d.chars().take(200).collect()),
            });
        }
        Err(RefreshError::Server {
            url,
            status: status.as_u16(),
        })
    }
}
