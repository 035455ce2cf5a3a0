//! `qbox-sidecar`: the in-container side. All logic lives in the library.

fn main() -> std::process::ExitCode {
    qbox::protect_process();
    std::process::ExitCode::from(qbox::sidecar::run(std::env::args_os()))
}
