//! Image builds' progress on stderr, for `qbox image build` and `qbox
//! demo`: qbox's own steps dimmed after `qbox:`, the engine builder's lines
//! indented; nothing with `--quiet`.

use crate::app::term::Palette;
use crate::container::image::BuildProgress;
use crate::container::sidecar_image::SidecarProgress;

/// One of qbox's own steps.
pub(crate) fn progress(quiet: bool, palette: Palette, text: &str) {
    if !quiet {
        eprintln!("{} {text}", palette.dim("qbox:"));
    }
}

/// The engine builder's progress.
pub(crate) fn build_progress(quiet: bool, palette: Palette) -> impl FnMut(BuildProgress<'_>) {
    move |event| match event {
        BuildProgress::Sending(bytes) => {
            progress(
                quiet,
                palette,
                &format!("sending the build context ({})", megabytes(bytes as u64)),
            );
        }
        BuildProgress::Line(line) => {
            if !quiet {
                // Continuation lines of the Dockerfile arrive as runs of spaces.
                let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
                eprintln!("  {}", palette.dim(&line));
            }
        }
    }
}

/// A sidecar image build's progress: its steps and the builder's.
pub(crate) fn sidecar_progress(quiet: bool, palette: Palette) -> impl FnMut(SidecarProgress<'_>) {
    let mut builder = build_progress(quiet, palette);
    move |event| match event {
        SidecarProgress::Note(text) => progress(quiet, palette, &text),
        SidecarProgress::Build(event) => builder(event),
    }
}

/// A size as `docker images` shows it.
pub(crate) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
