//! A throwaway nsqd for local development: the crate's in-process test nsqd, standalone.
//!
//! ```text
//! cargo run --example test_nsqd -- --tcp-address 127.0.0.1:4150
//! ```
//!
//! It serves any NSQ client (go-nsq, pynsq, this crate) over TCP, and nsqd's HTTP API
//! (`--http-address`), as nsqd v1.3 would, keeps
//! everything in memory, and runs until Ctrl-C. `RUST_LOG=actix_nsq=debug` shows what
//! clients do.
//!
//! `--tls` serves TLS with the crate's test certificates: clients trust
//! `src/testing/certs/ca.pem` and, with `--tls-client-auth`, present
//! `src/testing/certs/client.pem` with `client.key`. Those keys are public: never use this
//! for anything but local tests.

#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, time::Duration};

use actix_nsq::testing::{TestNsqd, TestNsqdBuilder};
use clap::Parser;

/// Go's `time.ParseDuration` for the units nsqd's flags use: `100ms`, `60s`, `15m`, `1h`,
/// `1m30s`.
fn go_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(total);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let unit = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {text:?}: unknown unit {unit:?}")),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = tail;
    }
    Ok(total)
}

/// An in-memory nsqd (TCP protocol and HTTP API) for local development.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// <addr>:<port> to listen on for TCP clients.
    #[arg(long, default_value = "127.0.0.1:4150")]
    tcp_address: SocketAddr,
    /// <addr>:<port> to listen on for HTTP clients (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:4151")]
    http_address: SocketAddr,
    /// Maximum RDY count for a client.
    #[arg(long, default_value_t = TestNsqdBuilder::DEFAULT_MAX_RDY_COUNT)]
    max_rdy_count: i64,
    /// Maximum size of a single message in bytes.
    #[arg(long, default_value_t = TestNsqdBuilder::DEFAULT_MAX_MSG_SIZE)]
    max_msg_size: usize,
    /// Maximum size of a single command body (MPUB, IDENTIFY, AUTH).
    #[arg(long, default_value_t = TestNsqdBuilder::DEFAULT_MAX_BODY_SIZE)]
    max_body_size: usize,
    /// Default duration to wait before auto-requeuing a message.
    #[arg(long, default_value = "60s", value_parser = go_duration)]
    msg_timeout: Duration,
    /// Maximum duration before a message will timeout.
    #[arg(long, default_value = "15m", value_parser = go_duration)]
    max_msg_timeout: Duration,
    /// Maximum requeuing timeout for a message.
    #[arg(long, default_value = "1h", value_parser = go_duration)]
    max_req_timeout: Duration,
    /// Maximum client-configurable duration of time between client heartbeats.
    #[arg(long, default_value = "60s", value_parser = go_duration)]
    max_heartbeat_interval: Duration,
    /// Drop clients silent for this long before they IDENTIFY (heartbeats every half).
    #[arg(long, default_value = "60s", value_parser = go_duration)]
    client_timeout: Duration,
    /// Maximum number of consumers per channel (0 for no limit).
    #[arg(long, default_value_t = 0)]
    max_channel_consumers: usize,
    /// Require AUTH with this secret before SUB and publishing.
    #[arg(long, env = "TEST_NSQD_AUTH_SECRET")]
    auth_secret: Option<String>,
    /// Record every command clients send (memory grows with traffic).
    #[arg(long)]
    record_commands: bool,
    /// How often timed-out and deferred messages are looked for.
    #[arg(long, default_value = "100ms", value_parser = go_duration)]
    queue_scan_interval: Duration,
    /// Offer TLS to clients that ask, with the test certificate (signed by the test CA).
    #[arg(long)]
    tls: bool,
    /// Refuse every command but IDENTIFY until the client upgraded to TLS (implies --tls).
    #[arg(long)]
    tls_required: bool,
    /// Require a client certificate signed by the test CA (implies --tls-required).
    #[arg(long)]
    tls_client_auth: bool,
    /// Do not grant snappy compression.
    #[arg(long)]
    no_snappy: bool,
    /// Do not grant deflate compression.
    #[arg(long)]
    no_deflate: bool,
    /// Highest deflate level granted (1-9); clients asking for more get this.
    #[arg(long, default_value_t = TestNsqdBuilder::DEFAULT_MAX_DEFLATE_LEVEL)]
    max_deflate_level: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "actix_nsq=info".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = TestNsqd::builder()
        .tcp_address(args.tcp_address)
        .http_address(args.http_address)
        .max_rdy_count(args.max_rdy_count)
        .max_msg_size(args.max_msg_size)
        .max_body_size(args.max_body_size)
        .msg_timeout(args.msg_timeout)
        .max_msg_timeout(args.max_msg_timeout)
        .max_req_timeout(args.max_req_timeout)
        .max_heartbeat_interval(args.max_heartbeat_interval)
        .client_timeout(args.client_timeout)
        .max_channel_consumers(args.max_channel_consumers)
        .queue_scan_interval(args.queue_scan_interval)
        .record_commands(args.record_commands)
        .tls(args.tls || args.tls_required || args.tls_client_auth)
        .tls_required(args.tls_required || args.tls_client_auth)
        .tls_client_auth(args.tls_client_auth)
        .snappy(!args.no_snappy)
        .deflate(!args.no_deflate)
        .max_deflate_level(args.max_deflate_level);
    if let Some(secret) = args.auth_secret {
        builder = builder.auth_secret(secret);
    }
    let nsqd = builder.start()?;
    println!(
        "test nsqd {} listening on {} (TCP) and {} (HTTP)",
        actix_nsq::testing::NSQD_VERSION,
        nsqd.addr(),
        nsqd.http_addr()
    );
    if args.tls || args.tls_required || args.tls_client_auth {
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testing/certs");
        println!("TLS: trust {certs}/ca.pem");
        if args.tls_client_auth {
            println!("TLS: client certificate required: {certs}/client.pem, {certs}/client.key");
        }
    }
    tokio::signal::ctrl_c().await?;
    for topic in nsqd.stats() {
        let channels: Vec<_> = topic
            .channels
            .iter()
            .map(|c| format!("{}(depth {}, in flight {})", c.name, c.depth, c.in_flight))
            .collect();
        println!(
            "topic {} (held {}): {}",
            topic.name,
            topic.depth,
            channels.join(", ")
        );
    }
    drop(nsqd);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("10").is_err());
        assert!(go_duration("5d").is_err());
    }

    #[test]
    fn tls_flags_parse_like_nsqd_switches() {
        let args = Args::parse_from([
            "test_nsqd",
            "--tls-client-auth",
            "--no-snappy",
            "--max-deflate-level",
            "3",
        ]);
        assert!(args.tls_client_auth && !args.tls && !args.tls_required);
        assert!(args.no_snappy && !args.no_deflate);
        assert_eq!(args.max_deflate_level, 3);
        let http = Args::parse_from(["test_nsqd", "--http-address", "127.0.0.1:0"]);
        assert_eq!(http.http_address, SocketAddr::from(([127, 0, 0, 1], 0)));
        let defaults = Args::parse_from(["test_nsqd"]);
        assert_eq!(
            defaults.max_deflate_level,
            TestNsqdBuilder::DEFAULT_MAX_DEFLATE_LEVEL
        );
        assert_eq!(defaults.http_address.port(), 4151);
    }
}
