//! The CLIs whose login qbox uses, each described in one place: its
//! binaries, where its store lives, the `auth_kv` keys of its logins (in the
//! order it reads them), where its settings live, and the words people see.
//!
//! The Kiro CLI comes first everywhere: it is the CLI people install today.
//! The Amazon Q Developer CLI (`q`) is its legacy predecessor, still read
//! and served. A third CLI would be one more variant here and in
//! [`Flavor::ALL`]; every message and search below is built from these
//! descriptions.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::token::{EXTERNAL_IDP_TOKEN_KEY, SOCIAL_TOKEN_KEY};

/// Which CLI wrote a store. The two use the same schema and different
/// `auth_kv` key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// Kiro CLI (`kiro-cli`), store under `kiro-cli/`.
    Kiro,
    /// Amazon Q Developer CLI (`q`, legacy), store under `amazon-q/`.
    AmazonQ,
}

impl Flavor {
    /// Every flavor, in the order qbox prefers them: searched in this
    /// order, and the first wins a tie.
    pub const ALL: [Flavor; 2] = [Flavor::Kiro, Flavor::AmazonQ];

    /// The name `--cli` and `QBOX_CLI` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kiro => "kiro",
            Self::AmazonQ => "q",
        }
    }

    /// The flavor `--cli` / `QBOX_CLI` names (in any case).
    pub fn from_name(text: &str) -> Option<Flavor> {
        let text = text.trim();
        Flavor::ALL
            .into_iter()
            .find(|f| text.eq_ignore_ascii_case(f.name()))
    }

    /// The value parser of `--cli` / `QBOX_CLI` where only a flavor fits.
    pub fn parse_name(text: &str) -> Result<Flavor, String> {
        Flavor::from_name(text).ok_or_else(|| {
            let names: Vec<&str> = Flavor::ALL.into_iter().map(Flavor::name).collect();
            format!(
                "`{text}` names no CLI; expected one of: {}",
                names.join(", ")
            )
        })
    }

    /// The command people type (`kiro-cli chat`, `q chat`).
    pub fn binary(self) -> &'static str {
        match self {
            Self::Kiro => "kiro-cli",
            Self::AmazonQ => "q",
        }
    }

    /// The executables a release installs that `chat` needs, the one
    /// people type first. The Kiro CLI's `kiro-cli` hands `chat` to
    /// `kiro-cli-chat` beside it; a build from source is one `chat_cli`
    /// binary, installed under either name.
    pub fn release_binaries(self) -> &'static [&'static str] {
        match self {
            Self::Kiro => &["kiro-cli", "kiro-cli-chat"],
            Self::AmazonQ => &["q", "qchat"],
        }
    }

    /// The flavor an executable's file name belongs to
    /// (`/usr/local/bin/kiro-cli-chat` is the Kiro CLI's).
    pub fn from_binary_name(path: &Path) -> Option<Flavor> {
        let name = path.file_name()?.to_str()?;
        Flavor::ALL
            .into_iter()
            .find(|f| f.release_binaries().contains(&name))
    }

    /// Directory under the platform data dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Kiro => "kiro-cli",
            Self::AmazonQ => "amazon-q",
        }
    }

    /// `auth_kv` key of the SSO OIDC token ("odic" is the real spelling).
    pub fn token_key(self) -> &'static str {
        match self {
            Self::Kiro => "kirocli:odic:token",
            Self::AmazonQ => "codewhisperer:odic:token",
        }
    }

    /// `auth_kv` key of the OIDC client registration used for refresh.
    pub fn registration_key(self) -> &'static str {
        match self {
            Self::Kiro => "kirocli:odic:device-registration",
            Self::AmazonQ => "codewhisperer:odic:device-registration",
        }
    }

    /// The token keys of this CLI's logins in the order the CLI tries them
    /// (the first present wins). The Kiro CLI: external identity provider,
    /// then Builder ID / IAM Identity Center, then social (`auth/mod.rs`).
    pub fn token_keys(self) -> &'static [&'static str] {
        match self {
            Self::Kiro => &[
                EXTERNAL_IDP_TOKEN_KEY,
                "kirocli:odic:token",
                SOCIAL_TOKEN_KEY,
            ],
            Self::AmazonQ => &["codewhisperer:odic:token"],
        }
    }

    /// Every `auth_kv` key that belongs to a login of this flavor.
    pub fn auth_keys(self) -> Vec<&'static str> {
        let mut keys = self.token_keys().to_vec();
        keys.push(self.registration_key());
        keys
    }

    /// What a person types to log in again.
    pub fn login_command(self) -> &'static str {
        match self {
            Self::Kiro => "kiro-cli login",
            Self::AmazonQ => "q login",
        }
    }

    /// Name for people.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Kiro => "Kiro CLI",
            Self::AmazonQ => "Amazon Q Developer CLI",
        }
    }

    /// The profile ARN the CLI sends for a Builder ID login, which has no
    /// profile of its own: a fixed one for the Kiro CLI
    /// (`api_client/mod.rs`), none for the Amazon Q CLI. It is sent, never
    /// used to pick the endpoint.
    pub fn builder_id_profile_arn(self) -> Option<&'static str> {
        match self {
            Self::Kiro => Some("arn:aws:codewhisperer:us-east-1:638616132270:profile/AAAACCCCXXXX"),
            Self::AmazonQ => None,
        }
    }

    /// True for a CLI that is no longer maintained.
    pub fn is_legacy(self) -> bool {
        self == Self::AmazonQ
    }

    /// The CLI's settings file, where it reads its endpoint overrides, default
    /// model and opt-outs: the Kiro CLI in `~/.kiro/settings/cli.json`, the
    /// Amazon Q CLI in `settings.json` beside its store.
    pub fn settings_path(self, home: &Path, data_local_dir: &Path) -> PathBuf {
        match self {
            Self::Kiro => home.join(".kiro").join("settings").join("cli.json"),
            Self::AmazonQ => data_local_dir.join(self.dir_name()).join("settings.json"),
        }
    }

    /// The name of the settings a snapshot carries, beside its
    /// `data.sqlite3`: the Amazon Q CLI's own (`settings.json` beside its
    /// store, so a snapshot directory used as `$XDG_DATA_HOME/amazon-q` is
    /// read as it is), the Kiro CLI's file name (`cli.json`) for a Kiro CLI
    /// login, whose consumer puts it under `~/.kiro/settings/`.
    pub fn snapshot_settings_name(self) -> &'static str {
        match self {
            Self::Kiro => "cli.json",
            Self::AmazonQ => "settings.json",
        }
    }

    /// Guesses the flavor from a store path (`.../kiro-cli/data.sqlite3`).
    pub fn from_path(path: &Path) -> Option<Flavor> {
        let parent = path.parent()?.file_name()?.to_str()?;
        Flavor::ALL.into_iter().find(|f| f.dir_name() == parent)
    }

    /// "`kiro-cli login` (Kiro CLI) or `q login` (Amazon Q Developer CLI,
    /// legacy)": how to log in with any CLI, for messages that do not know
    /// which one the user has.
    pub fn any_login_command() -> String {
        Flavor::ALL
            .into_iter()
            .map(|f| {
                let legacy = if f.is_legacy() { ", legacy" } else { "" };
                format!("`{}` ({}{legacy})", f.login_command(), f.display_name())
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kiro_cli_comes_first() {
        assert_eq!(Flavor::ALL[0], Flavor::Kiro);
        assert!(Flavor::any_login_command().starts_with("`kiro-cli login` (Kiro CLI)"));
        assert!(Flavor::any_login_command().ends_with("(Amazon Q Developer CLI, legacy)"));
    }

    #[test]
    fn names_and_binaries_map_back_to_their_flavor() {
        for flavor in Flavor::ALL {
            assert_eq!(Flavor::from_name(flavor.name()), Some(flavor));
            for binary in flavor.release_binaries() {
                let path = Path::new("/usr/local/bin").join(binary);
                assert_eq!(Flavor::from_binary_name(&path), Some(flavor), "{binary}");
            }
        }
        assert_eq!(Flavor::from_name("KIRO"), Some(Flavor::Kiro));
        assert_eq!(Flavor::from_name("claude"), None);
        assert_eq!(
            Flavor::parse_name("claude"),
            Err("`claude` names no CLI; expected one of: kiro, q".into())
        );
        assert_eq!(Flavor::from_binary_name(Path::new("/bin/sh")), None);
    }

    #[test]
    fn flavor_from_path() {
        assert_eq!(
            Flavor::from_path(Path::new("/x/kiro-cli/data.sqlite3")),
            Some(Flavor::Kiro)
        );
        assert_eq!(
            Flavor::from_path(Path::new("/x/amazon-q/data.sqlite3")),
            Some(Flavor::AmazonQ)
        );
        assert_eq!(Flavor::from_path(Path::new("/x/other/data.sqlite3")), None);
    }

    #[test]
    fn keys_use_the_real_spelling_and_the_kiro_cli_order() {
        assert_eq!(Flavor::AmazonQ.token_key(), "codewhisperer:odic:token");
        assert_eq!(
            Flavor::Kiro.registration_key(),
            "kirocli:odic:device-registration"
        );
        assert_eq!(
            Flavor::Kiro.token_keys(),
            [
                "kirocli:external-idp:token",
                "kirocli:odic:token",
                "kirocli:social:token"
            ]
        );
    }

    #[test]
    fn settings_live_where_each_cli_reads_them() {
        let (home, data) = (Path::new("/home/ana"), Path::new("/home/ana/.local/share"));
        assert_eq!(
            Flavor::Kiro.settings_path(home, data),
            Path::new("/home/ana/.kiro/settings/cli.json")
        );
        assert_eq!(
            Flavor::AmazonQ.settings_path(home, data),
            Path::new("/home/ana/.local/share/amazon-q/settings.json")
        );
    }
}
