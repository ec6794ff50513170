//! The `ferrite` binary: parses the command line and dispatches to one subcommand in `cli/`;
//! errors are reported once, here, with their context.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command, EXIT_STARTUP_FAILED};

fn main() -> ExitCode {
    // The ROS 2 output's DDS stack is chatty at levels meant for its own developers: rustdds
    // logs routine discovery per packet and errors at an orderly shutdown, ros2-client warns that
    // ROS_DISTRO is unset (a board has no ROS) and errors when asked for the readers of a writer
    // none has matched yet, which the sink does each frame. The sink reports its own failures;
    // `RUST_LOG=rustdds=warn,ros2_client=warn` brings theirs back.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,rustdds=off,ros2_client=off"),
    )
    .init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let outcome = match cli.command {
        Command::Classify(args) => cli::classify::classify(args),
        Command::Eval(args) => cli::classify::evaluate(args),
        Command::CalibrateCrop(args) => cli::classify::calibrate_crop(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Run(args) => cli::run::run(*args),
        Command::Check { board, config } => cli::info::check(board.as_deref(), config.as_deref()),
        Command::Models { json } => cli::info::list_models(json),
        Command::Devices { json } => cli::info::list_devices(json),
    };
    match outcome {
        Ok(code) => code,
        // `ferrite classify DIR | head`: the reader has what it wanted; not a failure.
        Err(err) if reader_went_away(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrite: {err:#}");
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

fn reader_went_away(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().map(|e| e.kind());
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io == Some(BrokenPipe) || json == Some(BrokenPipe)
    })
}
