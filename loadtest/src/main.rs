//! myriad-load: parse, run, print, exit (0 ok, 1 unexpected loss, no
//! connection succeeded or SLO violated, 2 usage or setup error).

use clap::Parser;
use myriad_load::cli::{Cli, Command};
use myriad_load::report::{json, markdown, summary};
use myriad_load::{backend, baseline, run};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match cli.command.clone() {
        Command::BaselineServer(args) => match baseline::serve(args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        Command::Backend(args) => match backend::serve(args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        _ if cli.common.worker_index.is_some() => run::as_worker(cli).await,
        _ => {
            let json_path = cli.common.json.clone();
            let report_dir = cli.common.report.clone();
            match run::coordinate(cli).await {
                Ok(report) => {
                    print!("{}", summary::render(&report));
                    let mut code = report.exit_code();
                    if let Some(path) = json_path {
                        if let Err(e) = json::write(&report, &path) {
                            eprintln!("error: {e:#}");
                            code = 2;
                        }
                    }
                    if let Some(dir) = report_dir {
                        if let Err(e) = markdown::write(&report, &dir) {
                            eprintln!("error: {e:#}");
                            code = 2;
                        }
                    }
                    code
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    2
                }
            }
        }
    };
    std::process::exit(code);
}
