//! `pulse`: performance budgets in CI (`pulse budget check`), releases declared from CI (`pulse
//! release new`) and the query API from a terminal (`pulse vitals`, `pulse compare`). Exit codes:
//! 0 all budgets hold (or the release is declared), 1 a budget is blown, 2 an error (a bad file,
//! an unreachable collector, a refused query or declaration).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pulse_cli::{exit_code, parse_window, render, Budgets, Client, Error};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "pulse", version, about = "Pulse from a terminal: performance budgets in CI, percentiles and release comparisons.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Connection {
    /// The collector, e.g. https://rum.example.com
    #[arg(long, env = "PULSE_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// A read key of the collector.
    #[arg(long, env = "PULSE_READ_KEY", hide_env_values = true)]
    key: String,
}

/// The collector and a write key (declarations).
#[derive(Debug, Args)]
struct WriteConnection {
    /// The collector, e.g. https://rum.example.com
    #[arg(long, env = "PULSE_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// A write key of the collector (its `write_keys`; read keys cannot declare).
    #[arg(long, env = "PULSE_WRITE_KEY", hide_env_values = true)]
    key: String,
}

/// The collector, and what to ask it about.
#[derive(Debug, Args)]
struct Question {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    site: String,
    #[arg(long, default_value = "LCP")]
    metric: String,
    /// Filters as NAME=VALUE (url=/checkout, device=mobile …); repeat.
    #[arg(long = "where", value_name = "NAME=VALUE")]
    filters: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Performance budgets.
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
    /// Releases.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Percentiles of a metric (`/v1/vitals`), as a table.
    Vitals {
        #[command(flatten)]
        question: Question,
        /// none, url, device, browser, os, country, release or nav.
        #[arg(long, default_value = "none")]
        group_by: String,
        /// How far back from now, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        window: String,
    },
    /// Compare two releases or ranges (`/v1/compare`).
    Compare {
        #[command(flatten)]
        question: Question,
        /// release:<version> or range:FROM..TO
        #[arg(long)]
        a: String,
        /// release:<version> or range:FROM..TO
        #[arg(long)]
        b: String,
        #[arg(long, default_value = "p75")]
        stat: String,
    },
}

#[derive(Debug, Subcommand)]
enum BudgetCommand {
    /// Check every budget of a file against the last `window` of real-user data.
    Check {
        /// The budget file (TOML).
        file: String,
        #[command(flatten)]
        connection: Connection,
        /// table, json, junit or markdown.
        #[arg(long, default_value = "table", value_parser = ["table", "json", "junit", "markdown"])]
        format: String,
        /// A budget without enough data fails instead of being reported.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Declare a release after deploying it (`POST /v1/releases`): release alert rules compare
    /// declared releases only. Declaring a release again changes nothing.
    New {
        /// The release as the agent reports it (`release` in `init`), e.g. 2.4.1.
        version: String,
        /// The site key.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        connection: WriteConnection,
    },
}

fn filters(pairs: &[String]) -> Result<Vec<(&str, String)>, Error> {
    pairs
        .iter()
        .map(|p| p.split_once('=').map(|(k, v)| (k, v.to_owned())).ok_or_else(|| Error(format!("--where: {p:?} is not NAME=VALUE"))))
        .collect()
}

fn window_ms(text: &str) -> Result<(i64, i64), Error> {
    let seconds = parse_window(text).ok_or_else(|| Error(format!("--window: {text:?} is not a duration like 30m, 24h or 7d")))?;
    let to = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    Ok((to - seconds as i64 * 1000, to))
}

fn cell(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.abs() >= 100.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.3}"),
        None => v.as_str().map_or_else(|| "–".to_owned(), str::to_owned),
    }
}

async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Budget { command: BudgetCommand::Check { file, connection, format, strict } } => {
            let text = std::fs::read_to_string(&file).map_err(|e| Error(format!("{file}: {e}")))?;
            let budgets = Budgets::parse(&text, &file)?;
            let window = budgets.window.as_deref().and_then(parse_window).unwrap_or(7 * 86_400);
            let client = Client::new(&connection.endpoint, &connection.key)?;
            let mut outcomes = Vec::new();
            for budget in &budgets.budgets {
                outcomes.push(client.measure(&budgets.site, budget, window).await?);
            }
            print!("{}", render(&budgets.site, &outcomes, &format, strict));
            Ok(exit_code(&outcomes, strict))
        }
        Command::Release { command: ReleaseCommand::New { version, site, connection } } => {
            let client = Client::new(&connection.endpoint, &connection.key)?;
            let (status, answer) = client.post("/v1/releases", &serde_json::json!({"site": site, "release": version})).await?;
            let at = answer["declared_at"].as_str().unwrap_or("?");
            if status == 201 {
                println!("declared release {version} of site {site} at {at}");
            } else {
                println!("release {version} of site {site} was already declared at {at}; nothing changed");
            }
            Ok(0)
        }
        Command::Vitals { question: Question { connection, site, metric, filters: pairs }, group_by, window } => {
            let client = Client::new(&connection.endpoint, &connection.key)?;
            let (from, to) = window_ms(&window)?;
            let mut query =
                vec![("site", site), ("metric", metric), ("group_by", group_by), ("from", from.to_string()), ("to", to.to_string())];
            query.extend(filters(&pairs)?);
            let answer = client.get("/v1/vitals", &query).await?;
            println!("{:<40} {:>8} {:>10} {:>10} {:>10} {:>10}", "group", "count", "p50", "p75", "p95", "p99");
            for row in answer["rows"].as_array().cloned().unwrap_or_default() {
                let group = row["group"].as_str().filter(|g| !g.is_empty()).unwrap_or("(all)");
                println!(
                    "{group:<40} {:>8} {:>10} {:>10} {:>10} {:>10}",
                    row["count"],
                    cell(&row["p50"]),
                    cell(&row["p75"]),
                    cell(&row["p95"]),
                    cell(&row["p99"])
                );
            }
            println!("source: {}", answer["source"].as_str().unwrap_or("?"));
            Ok(0)
        }
        Command::Compare { question: Question { connection, site, metric, filters: pairs }, a, b, stat } => {
            let client = Client::new(&connection.endpoint, &connection.key)?;
            let mut query = vec![("site", site), ("metric", metric.clone()), ("a", a), ("b", b), ("stat", stat.clone())];
            query.extend(filters(&pairs)?);
            let c = client.get("/v1/compare", &query).await?;
            println!(
                "{metric} {stat}: {} {} ({} samples) → {} {} ({} samples)",
                c["a"]["label"].as_str().unwrap_or(""),
                cell(&c["a"][&stat]),
                c["a"]["count"],
                c["b"]["label"].as_str().unwrap_or(""),
                cell(&c["b"][&stat]),
                c["b"]["count"]
            );
            let pct = |v: &Value| v.as_f64().map_or_else(|| "–".to_owned(), |f| format!("{:+.1} %", f * 100.0));
            // From a baseline of 0 there is no relative change, only the difference.
            let change = match (c["change"].as_f64(), c["difference"].as_f64()) {
                (None, Some(d)) => format!("{d:+} (from 0)"),
                _ => pct(&c["change"]),
            };
            println!(
                "change {} (95 % interval {} to {}): {}",
                change,
                pct(&c["ci95"][0]),
                pct(&c["ci95"][1]),
                c["verdict"].as_str().unwrap_or("")
            );
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulse: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
        Err(err) => {
            eprintln!("pulse: {err}");
            ExitCode::from(2)
        }
    }
}
