//! The token and client registration JSON the CLIs keep in `auth_kv`, and the
//! CLI's own expiry rule.
//!
//! Fields qbox does not know are kept in `extra` and written back untouched,
//! so a refresh never drops data a newer CLI added.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::secret::Secret;

/// The CLI treats a token as expired this long before `expires_at`, so that
/// it cannot expire in transit.
pub const EXPIRY_SKEW: Duration = Duration::minutes(1);

/// Region of Builder ID logins and the CLI's default when none is stored.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Start URL of AWS Builder ID (logins with it send no profile ARN).
pub const BUILDER_ID_START_URL: &str = "https://view.awsapps.com/start";

/// `auth_kv` key of a Kiro social (Google, GitHub) login.
pub const SOCIAL_TOKEN_KEY: &str = "kirocli:social:token";
/// `auth_kv` key of a Kiro login through an external OpenID provider.
pub const EXTERNAL_IDP_TOKEN_KEY: &str = "kirocli:external-idp:token";

/// The value of `<prefix>:odic:token`, and of Kiro's other token keys,
/// whose own fields (`provider`, `profile_arn`; `issuer_url`,
/// `token_endpoint`, `client_id`) are kept in `extra`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: Secret,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub start_url: Option<String>,
    /// `"DeviceCode"`, `"Pkce"` (older CLIs wrote `"PKCE"`); kept verbatim.
    #[serde(default)]
    pub oauth_flow: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StoredToken {
    /// The CLI's rule: expired when `now + 1 minute > expires_at`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now + EXPIRY_SKEW > self.expires_at
    }

    /// The OIDC region for refreshing, as the CLI picks it.
    pub fn region_or_default(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_REGION)
    }

    /// The token a successful refresh produces: new access token and expiry,
    /// a rotated refresh token when the service sent one, everything else
    /// (start URL, flow, scopes, unknown fields) kept as it was.
    pub fn refreshed(
        &self,
        access_token: Secret,
        expires_at: OffsetDateTime,
        refresh_token: Option<Secret>,
    ) -> StoredToken {
        StoredToken {
            access_token,
            expires_at,
            refresh_token: refresh_token.or_else(|| self.refresh_token.clone()),
            region: Some(self.region_or_default().to_owned()),
            ..self.clone()
        }
    }
}

/// What refreshing an external-IdP token needs from its stored JSON: the
/// provider's token endpoint and the public client id the CLI logged in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdpFields {
    /// The provider's token endpoint (`token_endpoint` in the JSON).
    pub endpoint: String,
    pub client_id: String,
}

impl ExternalIdpFields {
    /// Reads and checks the fields. The endpoint will receive the refresh
    /// token, so it must be `https` (plain `http` only on the loopback
    /// interface, where nothing crosses a network).
    pub fn of(token: &StoredToken) -> Result<Self, String> {
        let field = |name: &str| {
            token
                .extra
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("the token has no `{name}`"))
        };
        let token_endpoint = field("token_endpoint")?;
        let client_id = field("client_id")?;
        reqwest::Url::parse(&token_endpoint)
            .map_err(|_| "the token's `token_endpoint` is not a url".to_owned())?;
        if !crate::http::https_or_loopback(&token_endpoint) {
            return Err(
                "the token's `token_endpoint` is not an https url, and qbox sends refresh tokens only over https"
                    .to_owned(),
            );
        }
        Ok(Self {
            endpoint: token_endpoint,
            client_id,
        })
    }
}

/// The value of `<prefix>:odic:device-registration`: the OIDC client used to
/// refresh tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRegistration {
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub client_secret_expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub oauth_flow: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DeviceRegistration {
    /// Same expiry rule as tokens; a registration without an expiry is
    /// treated as unusable, as the CLI does.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        match self.client_secret_expires_at {
            Some(at) => now + EXPIRY_SKEW > at,
            None => true,
        }
    }
}

/// `state['api.codewhisperer.profile']`: the Identity Center profile whose
/// ARN is sent with API calls and whose region picks the API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub arn: String,
    #[serde(default)]
    pub profile_name: Option<String>,
}

impl Profile {
    /// The region part of `arn:aws:codewhisperer:REGION:ACCOUNT:profile/ID`.
    pub fn region(&self) -> Option<&str> {
        let region = self.arn.split(':').nth(3)?;
        (!region.is_empty()).then_some(region)
    }
}

/// Compares OAuth flow names the way the CLI's serde alias does
/// (`"PKCE"` and `"Pkce"` are the same flow).
pub fn same_oauth_flow(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const REAL_SHAPE: &str = r#"{"access_token":"aoaAAA","expires_at":"2026-11-22T10:00:00Z","refresh_token":"aorBBB","region":"us-east-1","start_url":"https://view.awsapps.com/start","oauth_flow":"DeviceCode","scopes":["codewhisperer:completions","codewhisperer:analysis","codewhisperer:conversations"]}"#;

    #[test]
    fn parses_the_real_shape() {
        let token: StoredToken = serde_json::from_str(REAL_SHAPE).unwrap();
        assert_eq!(token.access_token.expose(), "aoaAAA");
        assert_eq!(token.expires_at, datetime!(2026-11-22 10:00:00 UTC));
        assert_eq!(token.refresh_token.unwrap().expose(), "aorBBB");
        assert_eq!(token.oauth_flow.as_deref(), Some("DeviceCode"));
        assert_eq!(token.scopes.unwrap().len(), 3);
    }

    #[test]
    fn expiry_follows_the_cli_rule() {
        let token: StoredToken = serde_json::from_str(REAL_SHAPE).unwrap();
        assert!(!token.is_expired_at(datetime!(2026-11-22 09:58:59 UTC)));
        // Within the last minute the CLI already calls it expired.
        assert!(token.is_expired_at(datetime!(2026-11-22 09:59:01 UTC)));
        assert!(token.is_expired_at(datetime!(2026-11-22 10:30:00 UTC)));
    }

    #[test]
    fn refresh_keeps_unknown_fields_and_rotates() {
        let json = r#"{"access_token":"a","expires_at":"2026-01-01T00:00:00Z","refresh_token":"r","oauth_flow":"PKCE","future_field":{"x":1}}"#;
        let token: StoredToken = serde_json::from_str(json).unwrap();
        let at = datetime!(2026-01-01 01:00:00 UTC);
        let next = token.refreshed(Secret::new("a2"), at, None);
        let written: Value = serde_json::to_value(&next).unwrap();
        assert_eq!(written["access_token"], "a2");
        assert_eq!(written["refresh_token"], "r");
        assert_eq!(written["oauth_flow"], "PKCE");
        assert_eq!(written["region"], "us-east-1");
        assert_eq!(written["future_field"]["x"], 1);
        assert_eq!(written["expires_at"], "2026-01-01T01:00:00Z");

        let rotated = token.refreshed(Secret::new("a3"), at, Some(Secret::new("r2")));
        assert_eq!(rotated.refresh_token.unwrap().expose(), "r2");
    }

    #[test]
    fn registration_without_expiry_is_unusable() {
        let json = r#"{"client_id":"c","client_secret":"s","client_secret_expires_at":null,"region":"us-east-1","oauth_flow":"DeviceCode","scopes":null}"#;
        let registration: DeviceRegistration = serde_json::from_str(json).unwrap();
        assert!(registration.is_expired_at(datetime!(2020-01-01 00:00:00 UTC)));
    }

    #[test]
    fn profile_region_comes_from_the_arn() {
        let profile = Profile {
            arn: "arn:aws:codewhisperer:eu-central-1:123456789012:profile/ABC".into(),
            profile_name: Some("p".into()),
        };
        assert_eq!(profile.region(), Some("eu-central-1"));
        let broken = Profile {
            arn: "nonsense".into(),
            profile_name: None,
        };
        assert_eq!(broken.region(), None);
    }

    #[test]
    fn oauth_flow_aliases() {
        assert!(same_oauth_flow(Some("PKCE"), Some("Pkce")));
        assert!(!same_oauth_flow(Some("DeviceCode"), Some("Pkce")));
        assert!(!same_oauth_flow(None, Some("Pkce")));
    }
}
