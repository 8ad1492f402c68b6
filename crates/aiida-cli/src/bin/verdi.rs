//! `verdi`: the AiiDA command line.

fn main() -> std::process::ExitCode {
    aiida_cli::main()
}
