//! What `qbox export-token` exports: a login's tokens with the region and
//! profile that go with them, refreshed first when due. The command line
//! renders it (`cli::export`); the Python package returns it.

use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use super::{AuthError, Login, StoreError, StoreQuery};
use crate::secret::Secret;
use crate::timefmt::rfc3339;

/// What gets exported.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: String,
    pub region: String,
    pub profile_arn: Option<String>,
    /// The store it came from (for messages; never exported).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Exported {
    /// The export of `login`'s token as it is (no refresh).
    pub fn from_login(login: &Login) -> Result<Self, StoreError> {
        let entry = login.require_token()?;
        let token = &entry.token;
        Ok(Self {
            access_token: token.access_token.clone(),
            refresh_token: token.refresh_token.clone(),
            expires_at: rfc3339(token.expires_at),
            region: login
                .api_region()
                .unwrap_or(token.region_or_default())
                .to_owned(),
            profile_arn: login.profile.as_ref().map(|p| p.arn.clone()),
            path: login.path.clone(),
        })
    }

    /// The export as the JSON object `export-token` prints (with the
    /// tokens: only for a caller that asked for them).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The login `query` designates, refreshed by the one refresh rule when
/// due (the same lock and record as every qbox process), as an export.
pub async fn fresh_export(query: StoreQuery) -> Result<Exported, AuthError> {
    let now = OffsetDateTime::now_utc();
    let resolved = super::off_reactor(move || query.resolve(now)).await?;
    resolved.require_token()?;
    let login = super::ensure_fresh(resolved).await?;
    Ok(Exported::from_login(&login)?)
}
