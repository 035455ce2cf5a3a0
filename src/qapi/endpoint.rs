//! Which Amazon Q host a chat request goes to, by the Kiro CLI's rule
//! (`api_client/endpoints.rs`): the profile ARN's region picks one of the
//! service's endpoints (us-east-1, eu-central-1, and the GovCloud pair
//! us-gov-east-1 / us-gov-west-1), and anything else (no profile, a
//! profile in another region) means us-east-1. The token's sign-in region
//! never picks the host: it is only for SSO OIDC. The CLI's own setting
//! `api.codewhisperer.service` overrides that, and `QBOX_Q_ENDPOINT`
//! overrides both (proxies, tests).

use serde::Serialize;

use crate::store::settings::EndpointSetting;

/// Environment variable overriding the API endpoint (tests, proxies).
pub const Q_ENDPOINT_ENV: &str = "QBOX_Q_ENDPOINT";

/// The default endpoint: no profile, or a profile in a region without one.
pub const US_EAST_1_ENDPOINT: &str = "https://q.us-east-1.amazonaws.com";
/// The endpoint of profiles in eu-central-1.
pub const EU_CENTRAL_1_ENDPOINT: &str = "https://q.eu-central-1.amazonaws.com";

/// The endpoint of profiles in us-gov-east-1 (AWS GovCloud).
pub const US_GOV_EAST_1_ENDPOINT: &str = "https://q.us-gov-east-1.amazonaws.com";
/// The endpoint of profiles in us-gov-west-1 (AWS GovCloud).
pub const US_GOV_WEST_1_ENDPOINT: &str = "https://q.us-gov-west-1.amazonaws.com";

/// The Amazon Q endpoints by region, the only ones the CLI knows.
const ENDPOINTS: [(&str, &str); 4] = [
    ("us-east-1", US_EAST_1_ENDPOINT),
    ("eu-central-1", EU_CENTRAL_1_ENDPOINT),
    ("us-gov-east-1", US_GOV_EAST_1_ENDPOINT),
    ("us-gov-west-1", US_GOV_WEST_1_ENDPOINT),
];

/// Why a chat request goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EndpointReason {
    /// `QBOX_Q_ENDPOINT` names the URL.
    #[serde(rename = "QBOX_Q_ENDPOINT")]
    Override,
    /// The CLI's settings name it (`api.codewhisperer.service`).
    #[serde(rename = "CLI settings")]
    CliSettings,
    /// The profile ARN's region has an Amazon Q endpoint.
    #[serde(rename = "from profile ARN")]
    ProfileArn,
    /// No profile, or its region has no endpoint.
    #[serde(rename = "default")]
    Default,
}

impl EndpointReason {
    /// The words `qbox doctor` shows (and `--json` carries).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Override => "QBOX_Q_ENDPOINT",
            Self::CliSettings => "the CLI's settings, api.codewhisperer.service",
            Self::ProfileArn => "from profile ARN",
            Self::Default => "default",
        }
    }
}

/// Where chat requests go and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatEndpoint {
    /// The base URL, without a trailing slash.
    pub url: String,
    pub reason: EndpointReason,
    /// Why the default was chosen although a profile exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ChatEndpoint {
    /// Applies the rule: `override_url` (from `QBOX_Q_ENDPOINT`) wins; else
    /// the endpoint the CLI's settings name; else the profile ARN's region
    /// if it has an endpoint; else us-east-1.
    pub fn resolve(
        override_url: Option<&str>,
        settings: Option<&EndpointSetting>,
        profile_arn: Option<&str>,
    ) -> Self {
        if let Some(url) = override_url.map(str::trim).filter(|u| !u.is_empty()) {
            return Self {
                url: url.trim_end_matches('/').to_owned(),
                reason: EndpointReason::Override,
                note: None,
            };
        }
        if let Some(setting) = settings {
            return Self {
                url: setting.endpoint.trim_end_matches('/').to_owned(),
                reason: EndpointReason::CliSettings,
                note: None,
            };
        }
        let Some(arn) = profile_arn else {
            return Self::default_endpoint(None);
        };
        let region = arn_region(arn);
        match ENDPOINTS.iter().find(|(r, _)| Some(*r) == region) {
            Some((_, url)) => Self {
                url: (*url).to_owned(),
                reason: EndpointReason::ProfileArn,
                note: None,
            },
            None => Self::default_endpoint(Some(match region {
                Some(region) => {
                    format!("the profile's region {region} has no Amazon Q endpoint")
                }
                None => "the profile ARN names no region".to_owned(),
            })),
        }
    }

    /// Like [`resolve`](Self::resolve), with the override read from `QBOX_Q_ENDPOINT`.
    pub fn from_env(settings: Option<&EndpointSetting>, profile_arn: Option<&str>) -> Self {
        Self::resolve(override_from_env().as_deref(), settings, profile_arn)
    }

    fn default_endpoint(note: Option<String>) -> Self {
        Self {
            url: US_EAST_1_ENDPOINT.to_owned(),
            reason: EndpointReason::Default,
            note,
        }
    }

    /// The URL a request is posted to (`POST /`).
    pub fn request_url(&self) -> String {
        format!("{}/", self.url)
    }

    /// "URL (reason)" as `qbox doctor` prints it.
    pub fn describe(&self) -> String {
        match &self.note {
            Some(note) => format!("{} ({}: {note})", self.url, self.reason.as_str()),
            None => format!("{} ({})", self.url, self.reason.as_str()),
        }
    }
}

/// `QBOX_Q_ENDPOINT`, when set to something.
pub fn override_from_env() -> Option<String> {
    super::env_value(Q_ENDPOINT_ENV)
}

/// The region field of an ARN (`arn:aws:codewhisperer:REGION:ACCOUNT:profile/ID`).
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// Checks that `text` has the shape of an ARN with a region, as
/// `export-token` writes `QBOX_PROFILE_ARN`.
pub fn check_profile_arn(text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    if parts.len() < 6 || parts[0] != "arn" || parts[2].is_empty() || parts[5].is_empty() {
        return Err("is not an ARN (arn:aws:codewhisperer:REGION:ACCOUNT:profile/ID)".into());
    }
    if parts[3].is_empty() {
        return Err("names no region".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of the CLI's rule (`api_client/endpoints.rs`).
    #[test]
    fn endpoint_rule_table() {
        let idc = |region: &str| format!("arn:aws:codewhisperer:{region}:123456789012:profile/P");
        type Case = (
            &'static str,
            Option<&'static str>,
            Option<String>,
            &'static str,
            EndpointReason,
        );
        let cases: [Case; 8] = [
            (
                "builder id: no profile",
                None,
                None,
                US_EAST_1_ENDPOINT,
                EndpointReason::Default,
            ),
            (
                "identity center in us-east-1",
                None,
                Some(idc("us-east-1")),
                US_EAST_1_ENDPOINT,
                EndpointReason::ProfileArn,
            ),
            (
                "identity center in eu-central-1",
                None,
                Some(idc("eu-central-1")),
                EU_CENTRAL_1_ENDPOINT,
                EndpointReason::ProfileArn,
            ),
            (
                "identity center in us-gov-west-1",
                None,
                Some(idc("us-gov-west-1")),
                US_GOV_WEST_1_ENDPOINT,
                EndpointReason::ProfileArn,
            ),
            (
                "identity center in us-gov-east-1",
                None,
                Some(idc("us-gov-east-1")),
                US_GOV_EAST_1_ENDPOINT,
                EndpointReason::ProfileArn,
            ),
            (
                "identity center with a profile in another region",
                None,
                Some(idc("ap-southeast-2")),
                US_EAST_1_ENDPOINT,
                EndpointReason::Default,
            ),
            (
                "a profile ARN without a region",
                None,
                Some("arn:aws:codewhisperer::1:profile/P".into()),
                US_EAST_1_ENDPOINT,
                EndpointReason::Default,
            ),
            (
                "override wins over the profile",
                Some("http://127.0.0.1:9/"),
                Some(idc("eu-central-1")),
                "http://127.0.0.1:9",
                EndpointReason::Override,
            ),
        ];
        for (name, override_url, arn, url, reason) in cases {
            let endpoint = ChatEndpoint::resolve(override_url, None, arn.as_deref());
            assert_eq!(endpoint.url, url, "{name}");
            assert_eq!(endpoint.reason, reason, "{name}");
        }
        let other = ChatEndpoint::resolve(None, None, Some(&idc("eu-west-1")));
        assert_eq!(
            other.describe(),
            "https://q.us-east-1.amazonaws.com (default: the profile's region eu-west-1 has no Amazon Q endpoint)"
        );
        assert_eq!(
            ChatEndpoint::resolve(Some("  "), None, None).reason,
            EndpointReason::Default,
            "a blank override is no override"
        );
        assert_eq!(
            serde_json::to_value(ChatEndpoint::resolve(None, None, Some(&idc("us-east-1"))))
                .unwrap(),
            serde_json::json!({"url": US_EAST_1_ENDPOINT, "reason": "from profile ARN"})
        );
    }

    #[test]
    fn the_clis_settings_win_over_the_profile_and_lose_to_qbox() {
        let setting = EndpointSetting {
            endpoint: "http://127.0.0.1:7/".into(),
            region: "us-east-1".into(),
        };
        let arn = "arn:aws:codewhisperer:eu-central-1:1:profile/P";
        let from_settings = ChatEndpoint::resolve(None, Some(&setting), Some(arn));
        assert_eq!(from_settings.url, "http://127.0.0.1:7");
        assert_eq!(from_settings.reason, EndpointReason::CliSettings);
        let overridden =
            ChatEndpoint::resolve(Some("http://127.0.0.1:8"), Some(&setting), Some(arn));
        assert_eq!(overridden.reason, EndpointReason::Override);
    }

    #[test]
    fn profile_arns_are_checked() {
        assert!(
            check_profile_arn("arn:aws:codewhisperer:us-east-1:123456789012:profile/P").is_ok()
        );
        assert!(check_profile_arn("arn:aws:codewhisperer:eu-central-1:1:profile/a:b").is_ok());
        assert!(check_profile_arn("profile/P").is_err());
        assert!(check_profile_arn("arn:aws:codewhisperer:us-east-1:1").is_err());
        assert_eq!(
            check_profile_arn("arn:aws:codewhisperer::1:profile/P"),
            Err("names no region".into())
        );
    }
}
