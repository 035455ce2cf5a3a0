//! `qbox-sidecar`: the in-container side. All logic lives in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(qbox::sidecar::run(std::env::args_os()))
}
