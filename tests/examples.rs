//! The examples as a user runs them: each one a child process against an in-process
//! [`TestNsqd`], judged by its exit code, its output and what nsqd received. How the
//! examples are built and run without ever hanging: `support/examples.rs`.

#[path = "support/examples.rs"]
mod support;

use std::{
    io::Write,
    thread,
    time::{Duration, Instant},
};

use actix_nsq::testing::TestNsqd;
use support::{closed_port, http, published, scratch_file, start, start_with, WAIT};

#[test]
fn every_example_explains_its_flags() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "tail",
            &[
                "--topic",
                "--channel",
                "-n",
                "--lookupd-http-address",
                "--tls-root-ca-file",
            ],
        ),
        (
            "to_nsq",
            &[
                "--batch-size",
                "--linger",
                "--rate",
                "--retries",
                "--failed-file",
                "--deflate",
            ],
        ),
        ("actix_web", &["--bind", "--nsqd-tcp-address", "--topic"]),
        ("service", &["--config", "ACTIX_NSQ_CONFIG"]),
    ];
    for (name, flags) in cases {
        let out = start(name, &["--help"]).finish();
        assert!(out.status.success(), "{name} --help: {out}");
        for flag in flags {
            assert!(
                out.stdout.contains(flag),
                "{name} --help lacks {flag}: {out}"
            );
        }
    }
}

#[test]
fn to_nsq_publishes_every_line_in_order() {
    let nsqd = TestNsqd::start().unwrap();
    let lines: Vec<String> = (0..250).map(|i| format!("line {i}")).collect();
    let addr = nsqd.addr().to_string();
    let mut to_nsq = start(
        "to_nsq",
        &[
            "--topic",
            "lines",
            "--nsqd-tcp-address",
            &addr,
            "--batch-size",
            "100",
        ],
    );
    let mut stdin = to_nsq.stdin();
    writeln!(stdin, "{}\n", lines.join("\n")).unwrap(); // an empty line at the end
    drop(stdin);
    let out = to_nsq.finish();

    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("published 250, failed 0, skipped 1 empty"),
        "{out}"
    );
    assert_eq!(nsqd.topic_depth("lines"), 250);
    assert_eq!(published(&nsqd, "lines"), lines);
    let publishes: Vec<String> = nsqd
        .commands()
        .into_iter()
        .filter(|c| c.name().ends_with("PUB"))
        .map(|c| c.name().to_owned())
        .collect();
    assert!(
        publishes.len() >= 3 && publishes.iter().all(|name| name == "MPUB"),
        "batches of at most 100 lines: {publishes:?}"
    );
}

#[test]
fn tail_prints_exactly_n_bodies_and_leaves_the_rest() {
    let nsqd = TestNsqd::start().unwrap();
    let bodies = ["first", "héllo wörld", "  spaced  ", "fourth", "fifth"];
    for body in bodies {
        nsqd.publish("events", body).unwrap();
    }
    let addr = nsqd.addr().to_string();
    let args = [
        "--topic",
        "events",
        "--channel",
        "tailed",
        "--nsqd-tcp-address",
        &addr,
    ];
    let out = start("tail", &[&args[..], &["-n", "3"]].concat()).finish();

    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout, "first\nhéllo wörld\n  spaced  \n", "{out}");
    // The FINs were written before tail exited; nsqd may still be reading them. Messages
    // delivered past the third went back unprinted: two remain for the channel.
    assert!(
        nsqd.wait_until(WAIT, |n| {
            n.finished_count("events", "tailed") == 3 && n.depth("events", "tailed") == 2
        }),
        "{:?}",
        nsqd.channel_stats("events", "tailed")
    );
}

#[test]
fn tail_says_why_when_nothing_is_reachable() {
    let addr = closed_port();
    let out = start("tail", &["--topic", "events", "--nsqd-tcp-address", &addr]).finish();

    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("cannot reach any nsqd"), "{out}");
    assert!(out.stderr.contains(&addr), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn to_nsq_keeps_the_lines_it_could_not_publish() {
    let addr = closed_port();
    let failed = scratch_file("failed.txt");
    let failed_arg = failed.to_string_lossy().into_owned();
    let mut to_nsq = start(
        "to_nsq",
        &[
            "--topic",
            "events",
            "--nsqd-tcp-address",
            &addr,
            "--publish-timeout",
            "200",
            "--retries",
            "1",
            "--failed-file",
            &failed_arg,
        ],
    );
    to_nsq.stdin().write_all(b"one\ntwo\nthree").unwrap();
    let out = to_nsq.finish();

    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("giving up on nsqd"), "{out}");
    assert!(out.stderr.contains(&addr), "the cause names nsqd: {out}");
    assert!(out.stderr.contains("published 0, failed 3"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap(),
        "one\ntwo\nthree\n"
    );
    let _ = std::fs::remove_file(failed);
}

#[cfg(unix)]
#[test]
fn service_finishes_in_flight_work_on_sigterm() {
    let nsqd = TestNsqd::start().unwrap();
    for i in 0..5 {
        nsqd.publish("jobs", format!("job {i}")).unwrap();
    }
    let config = scratch_file("service.toml");
    std::fs::write(
        &config,
        format!(
            "topic = \"jobs\"\nchannel = \"workers\"\nnsqd = [\"{}\"]\nmax_in_flight = 10\n\
             work_ms = 1500\nstop_timeout_secs = 30\n",
            nsqd.addr()
        ),
    )
    .unwrap();
    let service = start("service", &["--config", &config.to_string_lossy()]);
    // Every message delivered; most (if not all) still being worked on.
    assert!(nsqd.wait_until(WAIT, |n| {
        n.in_flight("jobs", "workers") + n.finished_count("jobs", "workers") as usize == 5
    }));
    service.signal("-TERM");
    let out = service.finish();

    assert_eq!(out.status.code(), Some(0), "{out}");
    assert!(
        nsqd.wait_until(WAIT, |n| n.finished_count("jobs", "workers") == 5),
        "{out}"
    );
    assert_eq!(nsqd.requeued_count("jobs", "workers"), 0, "{out}");
    assert_eq!(nsqd.timed_out_count("jobs", "workers"), 0, "{out}");
    assert!(out.stderr.contains("signal=\"SIGTERM\""), "{out}");
    assert!(out.stderr.contains("finished=5"), "{out}");
    let _ = std::fs::remove_file(config);
}

#[test]
fn service_refuses_a_bad_configuration() {
    let config = scratch_file("bad.toml");
    std::fs::write(&config, "topic = \"jobs\"\nmax_inflight = 3\n").unwrap();
    let out = start("service", &["--config", &config.to_string_lossy()]).finish();
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("unknown field `max_inflight`"), "{out}");

    let out = start_with("service", &[], |c| {
        c.env("ACTIX_NSQ_TOPIC", "jobs")
            .env("ACTIX_NSQ_MAX_IN_FLIGHT", "many");
    })
    .finish();
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("ACTIX_NSQ_MAX_IN_FLIGHT"), "{out}");
    let _ = std::fs::remove_file(config);
}

#[cfg(unix)]
/// Built with the `metrics` feature, the example serves the crate's metrics on `/metrics`.
fn assert_prometheus_metrics(url: &str, nsqd: &str) {
    let one_line = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains("topic=\"web\"")
                    && l.contains(&format!("nsqd=\"{nsqd}\""))
            })
            .map(str::to_owned)
    };
    // The consumer's counts reach the recorder once a second.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (status, body) = http(url, "GET", "/metrics", "");
        assert_eq!(status, 200, "{body}");
        let finished = one_line(&body, "nsq_messages_finished_total{");
        if finished.is_some_and(|l| l.ends_with(" 1")) || Instant::now() > deadline {
            break body;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let finished = one_line(&text, "nsq_messages_finished_total{");
    assert!(
        finished
            .as_deref()
            .is_some_and(|l| l.contains("channel=\"actix_web\"") && l.ends_with(" 1")),
        "{text}"
    );
    // One publish reached nsqd (the invalid ones were refused before writing).
    let published = one_line(&text, "nsq_publish_seconds_count{");
    assert!(published.is_some_and(|l| l.ends_with(" 1")), "{text}");
    assert!(text.contains("# HELP nsq_handler_seconds "), "{text}");
}

#[test]
fn actix_web_publishes_over_http_and_counts_what_it_consumes() {
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    let mut web = start(
        "actix_web",
        &[
            "--bind",
            "127.0.0.1:0",
            "--nsqd-tcp-address",
            &addr,
            "--topic",
            "web",
        ],
    );
    assert!(
        web.wait_for_stdout(|out| out.contains('\n')),
        "no address printed: {}",
        web.stdout_now()
    );
    let stdout = web.stdout_now();
    let url = stdout
        .lines()
        .find_map(|line| line.strip_prefix("listening on http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {stdout:?}"))
        .to_owned();

    let (status, body) = http(&url, "POST", "/publish/web", "hello");
    assert_eq!(status, 202, "{body}");
    assert_eq!(published(&nsqd, "web"), ["hello"]);
    let (status, body) = http(&url, "POST", "/publish/bad%20topic", "x");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\":\"invalid topic"), "{body}");
    let (status, body) = http(&url, "POST", "/publish/web", "");
    assert_eq!(status, 400, "{body}");

    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let (status, body) = http(&url, "GET", "/stats", "");
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        if stats["handled"]["messages"] == 1 || Instant::now() > deadline {
            break stats;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats["handled"]["messages"], 1, "{stats}");
    assert_eq!(stats["handled"]["bytes"], 5, "{stats}");
    assert_eq!(stats["consumer"]["finished"], 1, "{stats}");
    if cfg!(feature = "metrics") {
        assert_prometheus_metrics(&url, &addr);
    }

    web.signal("-TERM");
    let out = web.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
}
