//! `advsweep`: see `advsweep --help` and the README.
fn main() -> std::process::ExitCode {
    advsweep_cli::main()
}
