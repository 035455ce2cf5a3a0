//! `qbox export-token`: the login's tokens on stdout, in the form a script
//! or CI system wants, with a warning on stderr every time.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::exit::{self, CommandError};
use crate::store::{self, Login, OidcClient, StoreError, StoreQuery};
use crate::term::Palette;
use crate::timefmt::rfc3339;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox export-token                          # pretty JSON
  qbox export-token --format env > qbox.env  # for docker run --env-file
  eval \"$(qbox export-token --format shell)\"
  qbox export-token --format github >> \"$GITHUB_ENV\"
  curl -H \"Authorization: Bearer $(qbox export-token --field access)\" ...")]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Print only this token, raw, followed by a newline.
    #[arg(long, value_enum, conflicts_with = "format")]
    field: Option<Field>,
    /// Never refresh: fail (exit 4) if the token has expired.
    #[arg(long)]
    no_refresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty JSON: accessToken, refreshToken, expiresAt, region, profileArn.
    Json,
    /// NAME=value lines (docker --env-file, systemd EnvironmentFile).
    Env,
    /// `export NAME='value'` lines for eval in sh, bash and zsh.
    Shell,
    /// `::add-mask::` lines, then NAME=value lines for $GITHUB_ENV.
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Field {
    Access,
    Refresh,
}

/// What gets exported.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: String,
    pub region: String,
    pub profile_arn: Option<String>,
}

impl Exported {
    fn from_login(login: &Login) -> Result<Self, StoreError> {
        let entry = login.require_token()?;
        let token = &entry.token;
        Ok(Self {
            access_token: token.access_token.expose().to_owned(),
            refresh_token: token.refresh_token.as_ref().map(|t| t.expose().to_owned()),
            expires_at: rfc3339(token.expires_at),
            region: login
                .api_region()
                .unwrap_or(token.region_or_default())
                .to_owned(),
            profile_arn: login.profile.as_ref().map(|p| p.arn.clone()),
        })
    }

    /// (name, value, secret) for the line formats, in a stable order.
    fn variables(&self) -> Vec<(&'static str, &str, bool)> {
        let mut vars = vec![("QBOX_ACCESS_TOKEN", self.access_token.as_str(), true)];
        if let Some(refresh) = &self.refresh_token {
            vars.push(("QBOX_REFRESH_TOKEN", refresh, true));
        }
        vars.push(("QBOX_TOKEN_EXPIRES_AT", &self.expires_at, false));
        vars.push(("QBOX_REGION", &self.region, false));
        if let Some(arn) = &self.profile_arn {
            vars.push(("QBOX_PROFILE_ARN", arn, false));
        }
        vars
    }
}

/// Renders the export in `format`.
pub fn render(exported: &Exported, format: Format) -> Result<String, CommandError> {
    let vars = exported.variables();
    // A newline would end a NAME=value line early and let the rest be read
    // as another variable: refuse rather than emit something ambiguous.
    if format != Format::Json
        && format != Format::Shell
        && let Some((name, _, _)) = vars.iter().find(|(_, v, _)| v.contains(['\n', '\r']))
    {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the value of {name} contains a line break and cannot be written as a line"),
        )
        .hint("use --format json or --format shell"));
    }
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(exported).expect("strings always serialize");
            out.push('\n');
        }
        Format::Env => {
            for (name, value, _) in &vars {
                out.push_str(&format!("{name}={value}\n"));
            }
        }
        Format::Shell => {
            for (name, value, _) in &vars {
                out.push_str(&format!("export {name}={}\n", shell_quote(value)));
            }
        }
        Format::Github => {
            for (_, value, secret) in &vars {
                if *secret {
                    out.push_str(&format!("::add-mask::{value}\n"));
                }
            }
            for (name, value, _) in &vars {
                out.push_str(&format!("{name}={value}\n"));
            }
        }
    }
    Ok(out)
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub async fn run(args: ExportArgs, query: StoreQuery, palette: Palette) -> anyhow::Result<u8> {
    eprintln!(
        "{} this token grants access to your AWS account: never share it, log it or commit it",
        palette.warning("warning:")
    );
    let now = OffsetDateTime::now_utc();
    let mut login = query.resolve(now)?;
    let expired = login.require_token()?.token.is_expired_at(now);
    if expired {
        if args.no_refresh {
            let entry = login.require_token()?;
            return Err(CommandError::new(
                exit::NO_LOGIN,
                format!(
                    "the token in {} expired at {}",
                    login.path.display(),
                    rfc3339(entry.token.expires_at)
                ),
            )
            .hint("drop --no-refresh to let qbox refresh it, or log in again")
            .into());
        }
        let oidc = OidcClient::from_env()?;
        login = store::refresh(login, &oidc).await?;
    }
    let exported = Exported::from_login(&login)?;
    let text = match args.field {
        Some(Field::Access) => format!("{}\n", exported.access_token),
        Some(Field::Refresh) => match &exported.refresh_token {
            Some(token) => format!("{token}\n"),
            None => {
                return Err(CommandError::new(
                    exit::ERROR,
                    format!("the login in {} has no refresh token", login.path.display()),
                )
                .hint("device-code and pkce logins have one; log in again to get one")
                .into());
            }
        },
        None => render(&exported, args.format)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Exported {
        Exported {
            access_token: "aoaA".into(),
            refresh_token: Some("aorB".into()),
            expires_at: "2026-11-22T10:00:00Z".into(),
            region: "us-east-1".into(),
            profile_arn: None,
        }
    }

    #[test]
    fn shell_quotes_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn line_formats_refuse_line_breaks() {
        let mut bad = sample();
        bad.access_token = "a\nEVIL=1".into();
        assert!(render(&bad, Format::Env).is_err());
        assert!(render(&bad, Format::Github).is_err());
        assert!(render(&bad, Format::Shell).is_ok());
    }

    #[test]
    fn github_masks_secrets_first() {
        let text = render(&sample(), Format::Github).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "::add-mask::aoaA");
        assert_eq!(lines[1], "::add-mask::aorB");
        assert_eq!(lines[2], "QBOX_ACCESS_TOKEN=aoaA");
    }
}
