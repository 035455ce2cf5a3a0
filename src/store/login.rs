//! A login as read from a store: the token, the registration that can
//! refresh it, the profile, and what state all of that is in.

use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use super::db::AuthRows;
use super::error::{StoreError, describe_json_error};
use super::flavor::Flavor;
use super::token::{
    BUILDER_ID_START_URL, DeviceRegistration, EXTERNAL_IDP_TOKEN_KEY, ExternalIdpFields, Profile,
    SOCIAL_TOKEN_KEY, StoredToken, same_oauth_flow,
};
use crate::secret::Secret;

/// The kinds of login the CLIs write, each refreshed its own way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LoginKind {
    /// AWS Builder ID through SSO OIDC.
    BuilderId,
    /// IAM Identity Center through SSO OIDC.
    IdentityCenter,
    /// Kiro CLI's Google or GitHub login through the Kiro auth service.
    KiroSocial { provider: Option<String> },
    /// Kiro CLI's login through an organisation's own OpenID provider.
    ExternalIdp,
}

impl LoginKind {
    /// The short name `doctor --json` reports (`login_kind`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::BuilderId => "builder-id",
            Self::IdentityCenter => "identity-center",
            Self::KiroSocial { .. } => "kiro-social",
            Self::ExternalIdp => "external-idp",
        }
    }

    /// A name for people.
    pub fn describe(&self) -> String {
        match self {
            Self::BuilderId => "AWS Builder ID".into(),
            Self::IdentityCenter => "IAM Identity Center".into(),
            Self::KiroSocial { provider } => match provider.as_deref() {
                Some(p) if p.eq_ignore_ascii_case("github") => "Kiro social login (GitHub)".into(),
                Some(p) if p.eq_ignore_ascii_case("google") => "Kiro social login (Google)".into(),
                Some(p) => format!("Kiro social login ({})", crate::http::sanitize_remote(p)),
                None => "Kiro social login".into(),
            },
            Self::ExternalIdp => "external identity provider".into(),
        }
    }
}

/// The token row of a login, with the exact stored text (needed for the
/// compare-and-swap write-back).
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub key: &'static str,
    pub raw: Secret,
    pub token: StoredToken,
}

/// A login read from one store.
#[derive(Debug, Clone)]
pub struct Login {
    pub path: PathBuf,
    pub flavor: Flavor,
    pub token: Option<TokenEntry>,
    pub registration: Option<DeviceRegistration>,
    pub profile: Option<Profile>,
    /// Read from an access-only snapshot ([`SnapshotScope::AccessOnly`]):
    /// the token cannot be refreshed here, a host keeper rewrites the copy.
    ///
    /// [`SnapshotScope::AccessOnly`]: super::snapshot::SnapshotScope::AccessOnly
    pub access_only: bool,
    /// Logins in the store that the CLI would not use, each with why
    /// (`doctor` shows them): a later one in the CLI's order, or one the
    /// CLI treats as no login.
    pub passed_over: Vec<String>,
}

/// A Kiro social token's profile ARN, which the Kiro CLI requires of it.
fn social_profile_arn(token: &StoredToken) -> Option<&str> {
    token
        .extra
        .get("profile_arn")
        .and_then(serde_json::Value::as_str)
        .filter(|arn| !arn.trim().is_empty())
}

/// Why an access-only snapshot's token cannot be refreshed (`doctor`).
pub const ACCESS_ONLY_REASON: &str = "this is an access-only snapshot (no refresh token, no client registration): \
     the host keeper (`qbox snapshot --watch` / `qbox run`) rewrites it before the token expires";

/// How usable a login's token is right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TokenStatus {
    /// Usable as it is.
    Valid {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// Expired by the CLI's rule, but a refresh can be tried.
    Refreshable {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// Expired and not refreshable.
    Unusable {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        reason: String,
    },
    /// No token in the store.
    Missing,
}

impl TokenStatus {
    /// Valid or refreshable.
    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Valid { .. } | Self::Refreshable { .. })
    }

    /// Orders candidate stores: valid beats refreshable beats the rest.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::Valid { .. } => 3,
            Self::Refreshable { .. } => 2,
            Self::Unusable { .. } => 1,
            Self::Missing => 0,
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    key: &str,
    raw: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::BadJson {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: describe_json_error(&e),
    })
}

impl Login {
    /// Interprets the rows of a store as a login of `flavor`.
    pub fn from_rows(path: PathBuf, flavor: Flavor, rows: &AuthRows) -> Result<Self, StoreError> {
        // The CLI's own order: the first of its token keys that holds a
        // login it accepts is the one it uses.
        let mut token = None;
        let mut passed_over = Vec::new();
        for &key in flavor.token_keys() {
            let Some(raw) = rows.auth_value(key) else {
                continue;
            };
            let parsed: StoredToken = parse_json(&path, key, raw)?;
            if key == SOCIAL_TOKEN_KEY && social_profile_arn(&parsed).is_none() {
                passed_over.push(format!(
                    "{key}: a Kiro social login without a profile ARN, which the Kiro CLI treats as no login (it deletes it); log in again with `{}`",
                    flavor.login_command()
                ));
                continue;
            }
            if let Some(entry) = &token {
                let TokenEntry { key: used, .. } = entry;
                passed_over.push(format!(
                    "{key}: another login in the store; the {} uses {used} first",
                    flavor.display_name()
                ));
                continue;
            }
            token = Some(TokenEntry {
                key,
                raw: Secret::containing_parsed(raw),
                token: parsed,
            });
        }
        let registration = rows
            .auth_value(flavor.registration_key())
            .map(|raw| parse_json(&path, flavor.registration_key(), raw))
            .transpose()?;
        let profile_key = "api.codewhisperer.profile";
        let profile = rows
            .state_text(profile_key)
            .map(|raw| parse_json::<Option<Profile>>(&path, profile_key, &raw))
            .transpose()?
            .flatten()
            // Social logins carry their profile in the token as well; the
            // CLI copies it to `state` at login, older stores may lack it.
            .or_else(|| {
                let entry = token.as_ref().filter(|t| t.key == SOCIAL_TOKEN_KEY)?;
                social_profile_arn(&entry.token).map(|arn| Profile {
                    arn: arn.to_owned(),
                    profile_name: None,
                })
            });
        let access_only = rows.is_access_only();
        Ok(Self {
            path,
            flavor,
            token,
            registration,
            profile,
            access_only,
            passed_over,
        })
    }

    /// The flavor of a store at `path` holding `rows`: the one whose keys
    /// the rows hold (of two, the first in [`Flavor::ALL`], the Kiro CLI),
    /// else the one its directory names, else the Kiro CLI.
    pub fn flavor_of(rows: &AuthRows, path: &std::path::Path) -> Flavor {
        Self::detect_flavor(rows)
            .or_else(|| Flavor::from_path(path))
            .unwrap_or(Flavor::ALL[0])
    }

    /// The flavor whose keys `rows` hold, if any; of two, the first in
    /// [`Flavor::ALL`] (the Kiro CLI).
    pub fn detect_flavor(rows: &AuthRows) -> Option<Flavor> {
        Flavor::ALL.into_iter().find(|flavor| {
            flavor
                .auth_keys()
                .iter()
                .any(|key| rows.auth_value(key).is_some())
        })
    }

    /// What kind of login the token is, or `None` without a token.
    pub fn kind(&self) -> Option<LoginKind> {
        let entry = self.token.as_ref()?;
        Some(match entry.key {
            SOCIAL_TOKEN_KEY => LoginKind::KiroSocial {
                provider: entry
                    .token
                    .extra
                    .get("provider")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
            },
            EXTERNAL_IDP_TOKEN_KEY => LoginKind::ExternalIdp,
            _ => match (&self.profile, entry.token.start_url.as_deref()) {
                (None, Some(BUILDER_ID_START_URL) | None) => LoginKind::BuilderId,
                _ => LoginKind::IdentityCenter,
            },
        })
    }

    /// Why this login's token cannot be refreshed, or `None` if it can.
    pub fn refresh_blocker(&self, now: OffsetDateTime) -> Option<String> {
        let Some(entry) = &self.token else {
            return Some("the store holds no token".into());
        };
        if self.access_only {
            return Some(ACCESS_ONLY_REASON.into());
        }
        let token = &entry.token;
        match entry.key {
            SOCIAL_TOKEN_KEY => {
                return token
                    .refresh_token
                    .as_ref()
                    .is_none_or(|t| t.is_empty())
                    .then(|| "the token has no refresh token".into());
            }
            EXTERNAL_IDP_TOKEN_KEY => {
                if token.refresh_token.as_ref().is_none_or(|t| t.is_empty()) {
                    return Some("the token has no refresh token".into());
                }
                return ExternalIdpFields::of(token).err();
            }
            _ => {}
        }
        if token.refresh_token.as_ref().is_none_or(|t| t.is_empty()) {
            return Some("the token has no refresh token".into());
        }
        let Some(registration) = &self.registration else {
            return Some("the store holds no oidc client registration".into());
        };
        if registration.is_expired_at(now) {
            return Some("the oidc client registration has expired".into());
        }
        if !same_oauth_flow(
            token.oauth_flow.as_deref(),
            registration.oauth_flow.as_deref(),
        ) {
            return Some("the oidc client registration belongs to another login flow".into());
        }
        if let Some(region) = &registration.region
            && region != token.region_or_default()
        {
            return Some(format!(
                "the oidc client registration is for region {region}, the token for {}",
                token.region_or_default()
            ));
        }
        None
    }

    /// The error for a token that expired (or expires at `expires_at`) and
    /// cannot be refreshed for `reason`: an access-only snapshot points at
    /// its host keeper, any other store at the CLI's login.
    pub fn unrefreshable(&self, expires_at: OffsetDateTime, reason: String) -> StoreError {
        if self.access_only {
            StoreError::AccessOnlyExpired {
                path: self.path.clone(),
                expires_at,
            }
        } else {
            StoreError::Unrefreshable {
                path: self.path.clone(),
                flavor: self.flavor,
                expires_at,
                reason,
            }
        }
    }

    /// The error that says this login has no usable token at `now`, or
    /// `None` when it has one (valid, or expired but refreshable).
    pub fn unusable(&self, now: OffsetDateTime) -> Option<StoreError> {
        match self.status(now) {
            TokenStatus::Valid { .. } | TokenStatus::Refreshable { .. } => None,
            TokenStatus::Missing => Some(StoreError::NoToken {
                path: self.path.clone(),
                flavor: self.flavor,
            }),
            TokenStatus::Unusable { expires_at, reason } => {
                Some(self.unrefreshable(expires_at, reason))
            }
        }
    }

    /// The state of the token at `now`.
    pub fn status(&self, now: OffsetDateTime) -> TokenStatus {
        let Some(entry) = &self.token else {
            return TokenStatus::Missing;
        };
        let expires_at = entry.token.expires_at;
        if !entry.token.is_expired_at(now) {
            return TokenStatus::Valid { expires_at };
        }
        match self.refresh_blocker(now) {
            None => TokenStatus::Refreshable { expires_at },
            Some(reason) => TokenStatus::Unusable { expires_at, reason },
        }
    }

    /// The token, or the error that says there is none.
    pub fn require_token(&self) -> Result<&TokenEntry, StoreError> {
        self.token.as_ref().ok_or_else(|| StoreError::NoToken {
            path: self.path.clone(),
            flavor: self.flavor,
        })
    }

    /// The API region: the profile ARN's region, else the token's.
    pub fn api_region(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .and_then(Profile::region)
            .or_else(|| self.token.as_ref().and_then(|t| t.token.region.as_deref()))
    }
}
