//! The bearer token of `qbox-sidecar serve --http`, and how clients on the
//! same machine find it.
//!
//! Loopback is no trust boundary: every local user can connect to
//! 127.0.0.1, and the agent tool runs the CLI (with `yolo-mode`, any
//! command) as the sidecar's user. So every bind needs a token. Without one
//! given (`--token-file`, `QBOX_MCP_TOKEN`), `serve` makes a random one and
//! writes it, mode 0600, to `$XDG_RUNTIME_DIR/qbox/sidecar-PORT.token` (or
//! the user's state directory), where a client of the same user finds it by
//! the port of a loopback URL; the file goes when the server stops.
//! `--allow-unauthenticated` is the explicit way out.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;

use crate::exit::{self, CommandError};
use crate::secret::Secret;

/// The variable holding a token, for `serve` and for `call`.
pub const TOKEN_ENV: &str = "QBOX_MCP_TOKEN";

/// Tokens shorter than this are guessable in reach of a patient attacker:
/// warned about on loopback, refused on any other address.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Random bytes in a generated token (256 bits).
const GENERATED_TOKEN_BYTES: usize = 32;

/// A token file larger than this is no token file.
const TOKEN_FILE_MAX_BYTES: u64 = 4096;

/// A token the user gave, and what to warn about it.
#[derive(Debug)]
pub struct GivenToken {
    pub secret: Secret,
    pub warnings: Vec<String>,
}

/// The token from `token_file`, else from `QBOX_MCP_TOKEN` (empty counts as
/// unset). Warns when the file can be read by other users.
pub fn given_token(token_file: Option<&Path>) -> anyhow::Result<Option<GivenToken>> {
    if let Some(path) = token_file {
        let mut text = String::new();
        // Non-blocking: a FIFO would otherwise stop `serve` before it binds.
        let file = crate::regular_file::open(path, false).map_err(|err| {
            if crate::regular_file::is_not_regular(&err) {
                anyhow::Error::from(
                    CommandError::new(
                        exit::USAGE,
                        format!("the token file {} is not a regular file", path.display()),
                    )
                    .hint("write the token to a file (mode 0600) and name that file"),
                )
            } else {
                anyhow::Error::new(err)
                    .context(format!("reading the token file {}", path.display()))
            }
        })?;
        file.take(TOKEN_FILE_MAX_BYTES)
            .read_to_string(&mut text)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CommandError::new(
                exit::USAGE,
                format!("the token file {} is empty", path.display()),
            )
            .into());
        }
        let warnings = file_exposure(path)
            .map(|who| {
                format!(
                    "{who} can read the token file {} (chmod 600 it)",
                    path.display()
                )
            })
            .into_iter()
            .collect();
        return Ok(Some(GivenToken {
            secret: Secret::new(token),
            warnings,
        }));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(|token| GivenToken {
            secret: Secret::new(token),
            warnings: Vec::new(),
        }))
}

/// Who besides the user can read the file at `path`, if anyone.
fn file_exposure(path: &Path) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        let euid = rustix::process::geteuid().as_raw();
        exposure(metadata.mode(), metadata.uid(), euid)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Who besides `euid` can read a file of this mode and owner. A file the
/// user reads through its group (a Kubernetes secret: root's, mode 0440,
/// group `fsGroup`) must be group-readable; only others' access counts then.
pub fn exposure(mode: u32, owner: u32, euid: u32) -> Option<&'static str> {
    if mode & 0o004 != 0 {
        Some("every user")
    } else if mode & 0o040 != 0 && owner == euid {
        Some("the file's group")
    } else {
        None
    }
}

/// Checks a given token's length for a server bound to `addr`: refused
/// when short on a non-loopback address, a warning on loopback.
pub fn check_strength(token: &Secret, addr: SocketAddr) -> Result<Option<String>, CommandError> {
    let length = token.expose().len();
    if length >= MIN_TOKEN_BYTES {
        return Ok(None);
    }
    if !addr.ip().is_loopback() {
        return Err(CommandError::new(
            exit::USAGE,
            format!(
                "refusing to serve {addr} with a bearer token of {length} bytes: anyone who can reach it could guess it"
            ),
        )
        .hint(format!(
            "use at least {MIN_TOKEN_BYTES} random bytes, e.g. QBOX_MCP_TOKEN=$(openssl rand -hex 32)"
        )));
    }
    Ok(Some(format!(
        "the bearer token is only {length} bytes; use at least {MIN_TOKEN_BYTES} random bytes (openssl rand -hex 32)"
    )))
}

/// A new random token: 32 bytes from the system's generator, base64url.
pub fn generate() -> anyhow::Result<Secret> {
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    crate::random::fill(&mut bytes)?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// The directory for generated tokens: `$XDG_RUNTIME_DIR/qbox` (private to
/// the user and emptied at logout) when that directory is the user's own
/// and no one else can write it, else the user's state directory.
pub fn generated_token_dir() -> Option<PathBuf> {
    crate::store::user_dirs::private_runtime_dir()
        .or_else(dirs::state_dir)
        .or_else(dirs::data_local_dir)
        .map(|dir| dir.join("qbox"))
}

/// The file name records the exact address the server listens on: a client
/// sends the token only to that address, never to whatever else answers on
/// the same port (another user can listen on `[::1]:PORT` or `127.0.0.2:PORT`
/// beside a server on `127.0.0.1:PORT`, and `localhost` may resolve to either).
fn generated_token_name(addr: SocketAddr) -> String {
    // `:` is not allowed in file names everywhere; IPv6 loopback is `__1`.
    let ip = addr.ip().to_string().replace(':', "_");
    format!("sidecar-{ip}-{}.token", addr.port())
}

/// Where the server listening on `addr` keeps its generated token.
pub fn generated_token_path(addr: SocketAddr) -> Option<PathBuf> {
    generated_token_dir().map(|dir| dir.join(generated_token_name(addr)))
}

/// A generated token's file; removed when this is dropped (the server
/// stopped).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `token` for the server listening on `addr`: mode 0600, in a directory of
/// mode 0700 that no one else can change, replacing a file a server that
/// did not stop cleanly left behind (the port is ours now, so it is stale).
pub fn store_generated(token: &Secret, addr: SocketAddr) -> Result<TokenFile, CommandError> {
    let no_token_hint =
        "give a token instead: QBOX_MCP_TOKEN=$(openssl rand -hex 32), or --token-file FILE";
    let Some(dir) = generated_token_dir() else {
        return Err(CommandError::new(
            exit::ERROR,
            "no directory for a generated bearer token: neither XDG_RUNTIME_DIR nor a home directory is set",
        )
        .hint(no_token_hint));
    };
    let mut contents = token.expose().to_owned();
    contents.push('\n');
    match crate::store::private_file::write_private_file(
        &dir,
        &generated_token_name(addr),
        contents.as_bytes(),
    ) {
        Ok(path) => Ok(TokenFile { path }),
        Err(err) => Err(CommandError::new(
            exit::ERROR,
            format!("cannot write the generated bearer token: {err}"),
        )
        .hint(no_token_hint)),
    }
}

/// The token a server on this machine generated for itself, when `url`
/// names it through loopback and the file is the user's own, with the URL
/// to send it to: the literal address the server recorded. `localhost` is
/// looked up as 127.0.0.1, then `[::1]`, and replaced by the address whose
/// token was found, so name resolution cannot hand the token to a listener
/// on the other loopback address.
pub fn generated_token_for(url: &str) -> Option<(Secret, reqwest::Url)> {
    let mut url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let candidates: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()?;
        vec![ip]
    };
    candidates
        .into_iter()
        .filter(IpAddr::is_loopback)
        .find_map(|ip| {
            let text = read_own_file(&generated_token_path(SocketAddr::new(ip, port))?)?;
            let token = text.trim();
            (!token.is_empty()).then(|| (Secret::new(token), ip))
        })
        .and_then(|(token, ip)| {
            url.set_ip_host(ip).ok()?;
            Some((token, url))
        })
}

/// The file's text when it is a regular file owned by the user, opened
/// without following a symlink (never another user's planted file).
#[cfg(unix)]
fn read_own_file(path: &Path) -> Option<String> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    if stat.st_uid != rustix::process::geteuid().as_raw()
        || FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
    {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(TOKEN_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(not(unix))]
fn read_own_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_others_can_read_are_named() {
        assert_eq!(exposure(0o100600, 1000, 1000), None);
        assert_eq!(exposure(0o100400, 1000, 1000), None);
        assert_eq!(exposure(0o100644, 1000, 1000), Some("every user"));
        assert_eq!(exposure(0o100640, 1000, 1000), Some("the file's group"));
        // Read through the group, as a Kubernetes secret is: that is needed.
        assert_eq!(exposure(0o100440, 0, 65532), None);
        assert_eq!(exposure(0o100444, 0, 65532), Some("every user"));
    }

    #[test]
    fn short_tokens_are_a_warning_on_loopback_and_refused_elsewhere() {
        let short = Secret::new("s3cret");
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_strength(&short, loopback).unwrap().is_some());
        let refused = check_strength(&short, public).unwrap_err();
        assert_eq!(refused.code, exit::USAGE);
        assert!(!refused.message.contains("s3cret"), "{}", refused.message);
        let long = Secret::new("0123456789abcdef");
        assert_eq!(check_strength(&long, public).unwrap(), None);
    }

    #[test]
    fn generated_tokens_are_long_random_and_url_safe() {
        let first = generate().unwrap();
        let second = generate().unwrap();
        assert_ne!(first, second);
        assert_eq!(first.expose().len(), 43);
        assert!(
            first
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn only_loopback_urls_look_for_a_generated_token() {
        assert!(generated_token_for("http://example.com:8080/mcp").is_none());
        assert!(generated_token_for("http://10.0.0.1:8080/mcp").is_none());
        assert!(generated_token_for("not a url").is_none());
    }

    #[test]
    fn token_files_name_the_exact_address() {
        let v4 = generated_token_name("127.0.0.1:8080".parse().unwrap());
        let other = generated_token_name("127.0.0.2:8080".parse().unwrap());
        let v6 = generated_token_name("[::1]:8080".parse().unwrap());
        assert_eq!(v4, "sidecar-127.0.0.1-8080.token");
        assert_eq!(v6, "sidecar-__1-8080.token");
        assert_ne!(v4, other);
    }
}
