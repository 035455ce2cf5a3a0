//! Token refresh over the wire, as the CLIs do it.
//!
//! - Builder ID and IAM Identity Center: SSO OIDC `CreateToken`,
//!   `POST {endpoint}/token` with `grantType: refresh_token`. The endpoint is
//!   `https://oidc.{region}.amazonaws.com` unless `QBOX_OIDC_ENDPOINT` names
//!   another base URL (tests, proxies).
//! - Kiro social logins (Google, GitHub): `POST {auth service}/refreshToken`
//!   with `{"refreshToken": ...}`; the auth service is [`KIRO_AUTH_ENDPOINT`]
//!   unless `QBOX_KIRO_AUTH_ENDPOINT` names another.
//! - Kiro external-IdP logins: the OAuth refresh grant, form-encoded, at the
//!   provider's token endpoint that the CLI stored with the token.
//!
//! The endpoint's answer is untrusted until checked, because a refresh
//! writes it into the user's store: a redirect is an error (following it
//! would resend the refresh token and client secret), bodies are read only
//! up to [`crate::http::OIDC_BODY_LIMIT`] / [`crate::http::ERROR_BODY_LIMIT`],
//! a grant must pass [`TokenGrant::check`], and any text the server wrote
//! is redacted and sanitised before it reaches an error message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::token::DeviceRegistration;
use crate::exit::{self, Diagnose};
use crate::http::{BodyError, ERROR_BODY_LIMIT, OIDC_BODY_LIMIT, read_body_limited};
use crate::secret::{Secret, redact_remote};

/// Environment variable that overrides the OIDC base URL.
pub const OIDC_ENDPOINT_ENV: &str = "QBOX_OIDC_ENDPOINT";

/// Longest access or refresh token qbox writes to the store. Real ones are
/// one to two KiB; anything far longer is not a token.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest token lifetime (`expiresIn`, seconds) qbox accepts.
pub const MIN_EXPIRES_IN: i64 = 1;
/// Longest token lifetime qbox accepts: 30 days. Access tokens live an hour;
/// a far later expiry would keep a bad token in the store for good.
pub const MAX_EXPIRES_IN: i64 = 30 * 24 * 60 * 60;

/// Why a refresh failed. None of these carry a token, and every piece of
/// text the server wrote has passed [`redact_remote`].
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
    #[error("token refresh failed: {url} answered http {status}, a redirect to {location}")]
    Redirected {
        url: String,
        status: u16,
        location: String,
        /// The variable that overrides this service's address.
        env: &'static str,
    },
    #[error("token refresh failed: cannot reach {url}: {detail}")]
    Network {
        url: String,
        detail: String,
        env: &'static str,
    },
    #[error("token refresh failed: unexpected answer from {url}: {detail}")]
    BadResponse {
        url: String,
        detail: String,
        env: &'static str,
    },
    #[error("cannot build the https client: {0}")]
    Client(String),
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl Diagnose for RefreshError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Rejected { code, .. } if code == "invalid_grant" || code == "invalid_client" => {
                format!(
                    "the login has ended; log in again with {}",
                    super::Flavor::any_login_command()
                )
            }
            Self::Rejected { .. } => {
                format!("log in again with {}", super::Flavor::any_login_command())
            }
            Self::Server { .. } => "the token service failed; try again in a minute".into(),
            Self::Redirected { env: "", .. } => "qbox never follows a redirect, which would \
                 send the refresh token to another address; log in again so the CLI stores \
                 the provider's current token endpoint"
                .into(),
            Self::Network { env: "", .. } => "check the network or proxy".into(),
            Self::BadResponse { env: "", .. } => {
                "the store was left as it was; the identity provider's answer is not a token".into()
            }
            Self::Redirected { env, .. } => format!(
                "qbox never follows a redirect, which would send the refresh token (and client \
                 secret) to another address; if the new address is right, set {env} to it"
            ),
            Self::Network { env, .. } => {
                format!("check the network or proxy; {env} overrides the endpoint")
            }
            Self::BadResponse { env, .. } => format!(
                "the store was left as it was; if {env} is set, check that it names the token service"
            ),
            Self::Client(_) => return None,
        })
    }

    /// A rejection means the login itself is no longer usable.
    fn exit_code(&self) -> u8 {
        exit::no_login_or_error(matches!(self, Self::Rejected { .. }))
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

impl TokenGrant {
    /// Checks the grant is fit to be written to the user's store: tokens
    /// that look like tokens, a lifetime in a sane range. The answer comes
    /// from the network, and a broken token in the store would end the
    /// login for the CLI as well. The description never quotes a token.
    pub fn check(&self) -> Result<(), String> {
        check_token("accessToken", &self.access_token)?;
        if let Some(refresh_token) = &self.refresh_token {
            check_token("refreshToken", refresh_token)?;
        }
        if !(MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&self.expires_in) {
            return Err(format!(
                "expiresIn {} is outside {MIN_EXPIRES_IN} s to {MAX_EXPIRES_IN} s (30 days)",
                self.expires_in
            ));
        }
        Ok(())
    }
}

/// A token is 1 to [`MAX_TOKEN_BYTES`] bytes of printable ASCII without
/// spaces: it travels in JSON, HTTP headers and `NAME=value` lines.
fn check_token(field: &str, token: &Secret) -> Result<(), String> {
    let value = token.expose();
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "{field} is {} bytes long, more than {MAX_TOKEN_BYTES}",
            value.len()
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field} holds characters no token has (spaces, control or non-ascii characters)"
        ));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateTokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a Secret,
    grant_type: &'static str,
    refresh_token: &'a Secret,
}

/// An error answer: OAuth's `error` / `error_description`, or the
/// `code` / `message` other services write.
#[derive(Deserialize)]
struct OidcErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
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
        Self::new(env_override(OIDC_ENDPOINT_ENV))
    }

    /// A client for the real endpoints, or for `base_override` when given.
    pub fn new(base_override: Option<String>) -> Result<Self, RefreshError> {
        Ok(Self {
            http: refresh_http_client()?,
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
            client_secret: &registration.client_secret,
            grant_type: "refresh_token",
            refresh_token,
        };
        let request = self.http.post(&url).json(&body);
        let bytes = post_for_token(request, &url, OIDC_ENDPOINT_ENV).await?;
        let grant: TokenGrant = parse_answer(&bytes, &url, OIDC_ENDPOINT_ENV)?;
        grant.check().map_err(|detail| RefreshError::BadResponse {
            url: url.clone(),
            detail,
            env: OIDC_ENDPOINT_ENV,
        })?;
        Ok(grant)
    }
}

/// Environment variable that overrides the Kiro auth service's base URL.
pub const KIRO_AUTH_ENDPOINT_ENV: &str = "QBOX_KIRO_AUTH_ENDPOINT";

/// The Kiro auth service that refreshes social (Google, GitHub) logins.
pub const KIRO_AUTH_ENDPOINT: &str = "https://prod.us-east-1.auth.desktop.kiro.dev";

/// Kiro CLI's user agent, which the auth service sees from the CLI.
const KIRO_USER_AGENT: &str = "Kiro-CLI";

/// What a refresh of a Kiro social login returns: a grant (checked like an
/// OIDC one) and the profile ARN the service names, if any.
#[derive(Debug)]
pub struct SocialGrant {
    pub grant: TokenGrant,
    pub profile_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SocialAnswer {
    access_token: Secret,
    expires_in: i64,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    profile_arn: Option<String>,
}

/// The longest profile ARN qbox accepts from a token service.
const MAX_PROFILE_ARN_BYTES: usize = 512;

/// A client for the Kiro auth service (`POST {base}/refreshToken`) and for
/// the token endpoints of external identity providers.
#[derive(Debug, Clone)]
pub struct KiroAuthClient {
    http: reqwest::Client,
    base: String,
}

impl KiroAuthClient {
    /// A client that honours `QBOX_KIRO_AUTH_ENDPOINT`, else the Kiro
    /// CLI's own setting `api.kiroauth.service` (`~/.kiro/settings/cli.json`).
    pub fn from_env() -> Result<Self, RefreshError> {
        Self::new(
            env_override(KIRO_AUTH_ENDPOINT_ENV)
                .or_else(|| super::settings::CliSettings::of(super::Flavor::Kiro).kiro_auth),
        )
    }

    /// A client for the real auth service, or for `base_override`.
    pub fn new(base_override: Option<String>) -> Result<Self, RefreshError> {
        Ok(Self {
            http: refresh_http_client()?,
            base: base_override.unwrap_or_else(|| KIRO_AUTH_ENDPOINT.to_owned()),
        })
    }

    /// The refresh URL of social logins.
    pub fn refresh_url(&self) -> String {
        format!("{}/refreshToken", self.base.trim_end_matches('/'))
    }

    /// Refreshes a social login: `{"refreshToken": ...}` in, `{accessToken,
    /// refreshToken, expiresIn, profileArn}` out.
    pub async fn refresh_social(
        &self,
        refresh_token: &Secret,
    ) -> Result<SocialGrant, RefreshError> {
        let url = self.refresh_url();
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::USER_AGENT, KIRO_USER_AGENT)
            .json(&serde_json::json!({ "refreshToken": refresh_token.expose() }));
        let bytes = post_for_token(request, &url, KIRO_AUTH_ENDPOINT_ENV).await?;
        let answer: SocialAnswer = parse_answer(&bytes, &url, KIRO_AUTH_ENDPOINT_ENV)?;
        let bad = |detail: String| RefreshError::BadResponse {
            url: url.clone(),
            detail,
            env: KIRO_AUTH_ENDPOINT_ENV,
        };
        let profile_arn = answer.profile_arn.filter(|arn| !arn.is_empty());
        if let Some(arn) = &profile_arn
            && (arn.len() > MAX_PROFILE_ARN_BYTES
                || !arn.starts_with("arn:")
                || !arn.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(bad("profileArn is not an arn".into()));
        }
        let grant = TokenGrant {
            access_token: answer.access_token,
            expires_in: answer.expires_in,
            refresh_token: answer.refresh_token,
        };
        grant.check().map_err(bad)?;
        Ok(SocialGrant { grant, profile_arn })
    }

    /// Refreshes an external-IdP login at its provider's token endpoint:
    /// the standard OAuth form `grant_type=refresh_token` for a public
    /// client, as the CLI sends it.
    pub async fn refresh_external(
        &self,
        token_endpoint: &str,
        client_id: &str,
        refresh_token: &Secret,
    ) -> Result<TokenGrant, RefreshError> {
        let body = form_encode(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id),
        ]);
        let request = self
            .http
            .post(token_endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let bytes = post_for_token(request, token_endpoint, "").await?;
        let answer: OAuthAnswer = parse_answer(&bytes, token_endpoint, "")?;
        let expires_in = match answer.expires_in {
            None => 3600,
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(-1),
            Some(serde_json::Value::String(text)) => text.trim().parse().unwrap_or(-1),
            Some(_) => -1,
        };
        let grant = TokenGrant {
            access_token: answer.access_token,
            expires_in,
            refresh_token: answer.refresh_token,
        };
        grant.check().map_err(|detail| RefreshError::BadResponse {
            url: token_endpoint.to_owned(),
            detail,
            env: "",
        })?;
        Ok(grant)
    }
}

/// A standard OAuth token answer (RFC 6749, section 5.1). Some providers
/// send `expires_in` as a string; without one the CLI assumes an hour.
#[derive(Deserialize)]
struct OAuthAnswer {
    access_token: Secret,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A documented override of a service's address, if set and not blank.
fn env_override(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn refresh_http_client() -> Result<reqwest::Client, RefreshError> {
    crate::http::client(Some(Duration::from_secs(30)))
        .map_err(|e| RefreshError::Client(e.to_string()))
}

/// Parses a success answer, with a message that never quotes it.
fn parse_answer<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    url: &str,
    env: &'static str,
) -> Result<T, RefreshError> {
    serde_json::from_slice(bytes).map_err(|e| RefreshError::BadResponse {
        url: url.to_owned(),
        detail: super::error::describe_json_error(&e),
        env,
    })
}

/// Sends a refresh request and returns the body of a success answer. A
/// redirect, a 5xx, a 4xx (with the server's error code and description,
/// redacted) and an over-long body are errors; `env` names the variable
/// that overrides the service's address, for hints.
async fn post_for_token(
    request: reqwest::RequestBuilder,
    url: &str,
    env: &'static str,
) -> Result<Vec<u8>, RefreshError> {
    let url = url.to_owned();
    tracing::debug!(%url, "refreshing token");
    let response = request.send().await.map_err(|e| RefreshError::Network {
        url: url.clone(),
        detail: exit::chain(&e),
        env,
    })?;
    let status = response.status();
    if status.is_redirection() {
        // The client follows no redirect (it would resend the refresh
        // token and client secret); the location is the server's text.
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map_or_else(
                || "no location given".to_owned(),
                |value| redact_remote(&String::from_utf8_lossy(value.as_bytes())),
            );
        return Err(RefreshError::Redirected {
            url,
            status: status.as_u16(),
            location,
            env,
        });
    }
    if !status.is_success() && !status.is_client_error() {
        return Err(RefreshError::Server {
            url,
            status: status.as_u16(),
        });
    }
    let limit = if status.is_success() {
        OIDC_BODY_LIMIT
    } else {
        ERROR_BODY_LIMIT
    };
    let bytes = read_body_limited(response, limit)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge { .. } => RefreshError::BadResponse {
                url: url.clone(),
                detail: err.to_string(),
                env,
            },
            BodyError::Transport(_) => RefreshError::Network {
                url: url.clone(),
                detail: err.to_string(),
                env,
            },
        })?;
    if status.is_client_error() {
        let body: Option<OidcErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, description) = match body {
            Some(b) => (b.error.or(b.code), b.error_description.or(b.message)),
            None => (None, None),
        };
        return Err(RefreshError::Rejected {
            url,
            status: status.as_u16(),
            code: code.map_or_else(|| "unknown error".into(), |c| redact_remote(&c)),
            description: description.map(|d| redact_remote(&d)),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(access: &str, refresh: Option<&str>, expires_in: i64) -> TokenGrant {
        TokenGrant {
            access_token: Secret::new(access),
            expires_in,
            refresh_token: refresh.map(Secret::new),
        }
    }

    #[test]
    fn a_well_formed_grant_passes() {
        assert_eq!(grant("aoa-token", Some("aor-token"), 3600).check(), Ok(()));
        assert_eq!(grant("a", None, MAX_EXPIRES_IN).check(), Ok(()));
    }

    #[test]
    fn malformed_grants_are_refused_without_quoting_the_token() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases = [
            (grant("", None, 3600), "accessToken is empty"),
            (grant("aoa", Some(""), 3600), "refreshToken is empty"),
            (grant(&long, None, 3600), "more than 8192"),
            (grant("aoa secret", None, 3600), "no token has"),
            (grant("aoa\u{1b}[2Jx", None, 3600), "no token has"),
            (grant("aoa", Some("aor\r\nX=1"), 3600), "refreshToken holds"),
            (grant("aoa-ünïcode", None, 3600), "no token has"),
            (grant("aoa", None, 0), "expiresIn 0 is outside"),
            (grant("aoa", None, -5), "expiresIn -5"),
            (grant("aoa", None, MAX_EXPIRES_IN + 1), "30 days"),
            (grant("aoa", None, i64::MAX), "outside"),
        ];
        for (grant, expected) in cases {
            let detail = grant.check().unwrap_err();
            assert!(detail.contains(expected), "{detail:?} lacks {expected:?}");
            assert!(
                !detail.contains("aoa") && !detail.contains("aor"),
                "{detail}"
            );
        }
    }
}
