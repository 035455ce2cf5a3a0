//! `qbox`: the host-side command. All logic lives in the library.

fn main() -> std::process::ExitCode {
    qbox::protect_process();
    std::process::ExitCode::from(qbox::cli::run(std::env::args_os()))
}
