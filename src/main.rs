//! The `runnel` binary: everything happens in the library.

fn main() -> std::process::ExitCode {
    runnel::cli::main()
}
