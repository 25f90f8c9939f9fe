//! The `spectrum` command: run a node or a balancer as its own process, and manage
//! a running cluster through its balancer.
//!
//! ```text
//! spectrum node --config node-1.toml
//! spectrum balancer --config balancer.toml
//! spectrum --endpoint http://127.0.0.1:7100 --token T status
//! spectrum --endpoint http://127.0.0.1:7100 config put settings/greeting hello --ack all
//! spectrum resources create orders.json
//! spectrum resources export --output east.json
//! spectrum resources import east.json --dry-run
//! spectrum node drain node-2
//! spectrum balancer set-strategy consistent_hash --hash-key x-tenant
//! ```
//!
//! `status` through a balancer also shows the balancer's own figures per node (a
//! `BALANCER` table; `"balancer"` in `--json` output), read from the balancer's
//! `spectrum.balancer.v1.Balancer/Stats`, with the same token (the balancer's file
//! `token`), and the strategy in force with where it comes from (the balancer's
//! file, or the database once `spectrum balancer set-strategy` has set one).
//!
//! Tables for people, `--json` for scripts; exit code 0 on success, and on failure a
//! non-zero code with one line `error: …` on standard error.
//!
//! Layout (as cargo's own binary): [`cli`] holds the clap types, [`commands`] one
//! file per command group, each a short `run` over the typed
//! [`AdminClient`](spectrum::client::AdminClient), and [`output`] the one
//! function that prints a result as JSON or text.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

/// mimalloc rather than the system allocator: a balancer or node allocates and
/// frees many small, short-lived buffers per request (headers, frames, tasks)
/// across its runtime's threads, and glibc's malloc spent about 6% of the
/// balancer's CPU time under load (`perf` on `examples/bench_balancer`). Only the
/// binary sets it; the library leaves the choice to embedders (feature `mimalloc`,
/// on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod commands;
mod output;
mod session;

/// The flag (as clap shows it, `--token <TOKEN>`) and environment variable of
/// the value `e` refuses, when that value came from the variable: the flag is
/// not on the command line, and of the variables of the arguments so named
/// (in any subcommand) exactly one is set.
fn refused_from_environment(e: &clap::Error) -> Option<(String, String)> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else { return None };
    let long = shown.strip_prefix("--")?.split([' ', '=']).next()?;
    let (flag, assigned) = (format!("--{long}"), format!("--{long}="));
    let typed = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&assigned)
    });
    if typed {
        return None;
    }
    fn env_vars(command: &clap::Command, long: &str, out: &mut Vec<String>) {
        for arg in command.get_arguments().filter(|a| a.get_long() == Some(long)) {
            if let Some(var) = arg.get_env() {
                out.push(var.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            env_vars(sub, long, out);
        }
    }
    let mut vars = Vec::new();
    env_vars(&cli::Cli::command(), long, &mut vars);
    vars.sort();
    vars.dedup();
    vars.retain(|var| std::env::var_os(var).is_some());
    match vars.as_slice() {
        [var] => Some((shown.clone(), var.clone())),
        _ => None,
    }
}

fn main() {
    let parsed = cli::Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((cli::Cli::from_arg_matches(&matches)?, matches)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            // `SPECTRUM_TOKEN` is what management commands send; a node's
            // bootstrap token comes from its file, `--token` or
            // `SPECTRUM_BOOTSTRAP_TOKEN` (see `NodeArgs::bootstrap_token`).
            cli.token_from_env = matches.value_source("token") == Some(ValueSource::EnvVariable);
            cli
        }
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // A value refused from the environment names the variable, not the
            // flag nobody typed (`SPECTRUM_TOKEN=` set empty, say).
            let first = match refused_from_environment(&e) {
                Some((flag, var)) => first.replacen(&format!("'{flag}'"), &var, 1),
                None => first.to_owned(),
            };
            eprintln!("error: {first} (see spectrum --help)");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(commands::run(cli)) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `a: b: c`. A cause whose text the line
/// already ends with is left out: some errors (`ClientError::Connect`) show their
/// source in their own message and also return it as their source.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace(['\n', '\r'], " ")
}
