//! Building the sidecar image through the Engine API, from a build context
//! assembled in memory: `images/sidecar/Dockerfile` (compiled in) and the
//! static `qbox-sidecar`, or a dynamically linked one with its loader and
//! libraries (`bundle`). Nothing is pulled: the image is `FROM scratch`.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use serde::Serialize;

use super::engine;
use super::run::{RunError, engine_error};
use crate::container::bundle::ImageFile;
use crate::container::static_binary::SIDECAR;

/// The Dockerfile of the sidecar image.
pub const SIDECAR_DOCKERFILE: &str = include_str!("../../images/sidecar/Dockerfile");

/// The tag `qbox image build` gives by default.
pub const DEFAULT_TAG: &str = "qbox-sidecar:latest";

/// One thing the build reports, for the progress display.
#[derive(Debug)]
pub enum BuildProgress<'a> {
    /// The context is on its way to the engine (size in bytes).
    Sending(usize),
    /// A step of the build (`Step 2/9 : COPY ...`).
    Line(&'a str),
}

/// The image that was built.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltImage {
    pub tag: String,
    pub id: String,
    /// Bytes, as the engine counts them.
    pub size: u64,
}

/// The line of the Dockerfile that copies the binary in.
const COPY_BINARY: &str = "COPY qbox-sidecar /usr/local/bin/qbox-sidecar";

/// Where the build context keeps the libraries, laid out as in the image.
const LIBRARIES_DIR: &str = "libraries";

/// The Dockerfile for a binary with `libraries` beside it: the sidecar's,
/// plus one step that copies them to their paths when there are any.
pub fn dockerfile(libraries: &[ImageFile]) -> String {
    if libraries.is_empty() {
        return SIDECAR_DOCKERFILE.to_owned();
    }
    SIDECAR_DOCKERFILE.replacen(
        COPY_BINARY,
        &format!(
            "{COPY_BINARY}\n# The loader and C library of a dynamically linked binary.\nCOPY {LIBRARIES_DIR}/ /"
        ),
        1,
    )
}

/// The build context: a tar archive with the Dockerfile, the binary and
/// its libraries, if it has any.
pub fn context(binary: &[u8], libraries: &[ImageFile]) -> std::io::Result<Vec<u8>> {
    let size = binary.len() + libraries.iter().map(|f| f.bytes.len()).sum::<usize>();
    let mut archive = tar::Builder::new(Vec::with_capacity(size + 8192));
    let mut append = |name: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        archive.append_data(&mut header, name, data)
    };
    append("Dockerfile", 0o644, dockerfile(libraries).as_bytes())?;
    append(SIDECAR, 0o755, binary)?;
    for file in libraries {
        let inside = file.path.trim_start_matches('/');
        append(&format!("{LIBRARIES_DIR}/{inside}"), file.mode, &file.bytes)?;
    }
    archive.into_inner()
}

/// The engine's CPU in Docker's spelling (`amd64`, `arm64`).
pub async fn engine_arch(docker: &Docker) -> Result<Option<String>, RunError> {
    let version = docker.version().await.map_err(engine_error)?;
    Ok(version.arch)
}

/// Connects to the engine (for callers that check the binary against its CPU
/// before building).
pub async fn connect() -> Result<Docker, RunError> {
    engine::connect().await.map_err(engine_error)
}

/// Builds the sidecar image from `binary` (with `libraries`, if it is
/// dynamically linked) and tags it `tag`.
pub async fn build_sidecar(
    docker: &Docker,
    binary: &[u8],
    libraries: &[ImageFile],
    tag: &str,
    on_progress: impl FnMut(BuildProgress<'_>),
) -> Result<BuiltImage, RunError> {
    let context = context(binary, libraries).map_err(|e| RunError::Failed(e.to_string()))?;
    let args = HashMap::from([("QBOX_VERSION", env!("CARGO_PKG_VERSION"))]);
    build_context(docker, context, tag, &args, on_progress).await
}

/// Sends a build context (a tar archive with a Dockerfile) to the engine's
/// builder with `args` and tags the result `tag`; the builder's steps are
/// the progress. Intermediate containers are removed even when it fails.
pub(crate) async fn build_context(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    args: &HashMap<&str, &str>,
    mut on_progress: impl FnMut(BuildProgress<'_>),
) -> Result<BuiltImage, RunError> {
    on_progress(BuildProgress::Sending(context.len()));
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .buildargs(args)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(info) = stream.next().await {
        let info = info.map_err(engine_error)?;
        if let Some(detail) = info.error_detail {
            let message = detail.message.unwrap_or_else(|| "unknown error".into());
            return Err(RunError::Failed(format!(
                "the image build failed: {message}"
            )));
        }
        // The builder's steps are the progress; its per-step chatter
        // (intermediate containers, layer ids) is not.
        for line in info.stream.iter().flat_map(|text| text.lines()) {
            if line.starts_with("Step ") {
                on_progress(BuildProgress::Line(line));
            }
        }
    }
    let image = docker.inspect_image(tag).await.map_err(engine_error)?;
    Ok(BuiltImage {
        tag: tag.to_owned(),
        id: image.id.unwrap_or_default(),
        size: image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_holds_the_dockerfile_and_an_executable_binary() {
        let tar = context(b"\x7fELF fake", &[]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("Dockerfile".into(), 0o644, SIDECAR_DOCKERFILE.len() as u64),
                ("qbox-sidecar".into(), 0o755, 9),
            ]
        );
    }

    #[test]
    fn libraries_go_to_their_paths_through_one_more_step() {
        let libc = ImageFile {
            path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
            mode: 0o644,
            bytes: b"libc".to_vec(),
        };
        let loader = ImageFile {
            path: "/lib64/ld-linux-x86-64.so.2".into(),
            mode: 0o755,
            bytes: b"ld".to_vec(),
        };
        let tar = context(b"qbox", &[libc, loader]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut text = String::new();
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == "Dockerfile" {
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            }
            entries.push((path, entry.header().mode().unwrap()));
        }
        assert_eq!(
            entries[1..],
            [
                ("qbox-sidecar".to_owned(), 0o755),
                ("libraries/lib/x86_64-linux-gnu/libc.so.6".to_owned(), 0o644),
                ("libraries/lib64/ld-linux-x86-64.so.2".to_owned(), 0o755),
            ]
        );
        let copy = text.find(COPY_BINARY).unwrap();
        let libraries = text.find("COPY libraries/ /").unwrap();
        assert!(copy < libraries && libraries < text.find("USER ").unwrap());
        assert_eq!(dockerfile(&[]), SIDECAR_DOCKERFILE);
    }

    #[test]
    fn the_dockerfile_is_scratch_non_root_with_a_healthcheck() {
        let lines: Vec<&str> = SIDECAR_DOCKERFILE
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(lines.contains(&"FROM scratch"));
        assert!(lines.contains(&"USER 65532:65532"));
        assert!(lines.contains(&"ENTRYPOINT [\"qbox-sidecar\"]"));
        assert!(lines.contains(&"CMD [\"serve\"]"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("CMD [\"qbox-sidecar\", \"health\"]"))
        );
    }
}
