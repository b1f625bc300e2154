//! The `kiln` binary: see `kiln --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match kiln_runtime::cli::run(std::env::args_os(), &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(kiln_runtime::Error::Usage(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::FAILURE
        }
    }
}
