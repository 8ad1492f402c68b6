//! `verdi`: the AiiDA command line.

fn main() -> std::process::ExitCode {
    aiida::cli::main()
}
