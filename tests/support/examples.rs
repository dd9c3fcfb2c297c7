//! Running the examples as child processes, for `tests/examples.rs`.
//!
//! Finding the binaries: `cargo test` builds the examples as plain executables, but
//! `cargo test --test examples` does not, and testing a stale executable would go unnoticed.
//! So the first test that needs one runs `cargo build` for these examples, with the profile and
//! features this test was built with, and takes their paths from cargo's JSON messages rather
//! than guessing the target directory's layout. After `cargo test` that build is a no-op
//! (cargo has released its build lock by the time tests run). `env!("CARGO_BIN_EXE_<name>")`
//! would be simpler, but cargo sets it for `[[bin]]` targets only, not for examples.
//!
//! Nothing here waits without a bound: a child still running at its deadline is killed and
//! the test fails with what it printed; a child left behind by a failing test is killed when
//! its handle drops.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    fmt,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use actix_nsq::testing::TestNsqd;

/// The examples these tests run.
const EXAMPLES: [&str; 4] = ["tail", "to_nsq", "actix_web", "service"];
/// Generous: a loaded two-core CI machine may be slow, never this slow.
pub const DEADLINE: Duration = Duration::from_secs(60);
pub const WAIT: Duration = Duration::from_secs(20);

// ---- running examples ---------------------------------------------------------------------

fn executable(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<HashMap<String, PathBuf>, String>> = OnceLock::new();
    match BUILT.get_or_init(build_examples) {
        Ok(paths) => paths
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("cargo built no executable for example {name}")),
        Err(error) => panic!("{error}"),
    }
}

fn build_examples() -> Result<HashMap<String, PathBuf>, String> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--message-format=json-render-diagnostics"]);
    cargo.args([
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
    ]);
    for name in EXAMPLES {
        cargo.args(["--example", name]);
    }
    match profile_dir().as_deref() {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(custom) => {
            cargo.args(["--profile", custom]);
        }
    }
    if cfg!(feature = "rsmq") {
        cargo.args(["--features", "rsmq"]);
    }
    if cfg!(feature = "metrics") {
        cargo.args(["--features", "metrics"]);
    }
    // The variables cargo sets for the crate under test, not for the build: ring's build
    // script watches CARGO_MANIFEST_DIR and CARGO_PKG_*, and seeing them here would rebuild it
    // (and everything above it) on every run, and again in the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&&*key)
        {
            cargo.env_remove(&*key);
        }
    }
    let output = cargo.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut paths = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_example = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "example"));
        if let (true, Some(name), Some(path)) = (
            is_example,
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            paths.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// `debug` or `release` (or a custom profile's name): the directory this test runs from,
/// `target/<profile>/deps/examples-<hash>`.
fn profile_dir() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?.file_name()?;
    Some(profile.to_string_lossy().into_owned())
}

/// A running example. Killed when dropped, so a failed assertion never leaves it behind.
pub struct Running {
    name: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// How an example ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

pub fn start(name: &'static str, args: &[&str]) -> Running {
    start_with(name, args, |_| {})
}

pub fn start_with(name: &'static str, args: &[&str], setup: impl FnOnce(&mut Command)) -> Running {
    let mut command = Command::new(executable(name));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The examples' own defaults, whatever the environment of the test run says.
        .env_remove("RUST_LOG")
        .env_remove("NSQ_AUTH_SECRET");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ACTIX_NSQ_") {
            command.env_remove(key);
        }
    }
    setup(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect(child.stdout.take().map(|s| Box::new(s) as _), &stdout),
        collect(child.stderr.take().map(|s| Box::new(s) as _), &stderr),
    ];
    Running {
        name,
        child,
        stdout,
        stderr,
        readers,
    }
}

/// Drains a pipe on its own thread, so that a chatty child never blocks on a full pipe.
fn collect(
    pipe: Option<Box<dyn Read + Send>>,
    into: &Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    let into = into.clone();
    thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            into.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Running {
    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until stdout satisfies `done`; false at the deadline or if the child exited.
    pub fn wait_for_stdout(&mut self, mut done: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if done(&self.stdout_now()) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return done(&self.stdout_now());
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[cfg(unix)]
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// Waits for the child to exit; kills it and fails the test at the deadline.
    pub fn finish(mut self) -> Finished {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let output = self.output(None);
                panic!(
                    "example {} still running after {DEADLINE:?}\n{output}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.output(Some(status))
    }

    fn output(&mut self, status: Option<ExitStatus>) -> Finished {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let text = |bytes: &Mutex<Vec<u8>>| String::from_utf8_lossy(&bytes.lock().unwrap()).into();
        Finished {
            status: status.unwrap_or_default(),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A fresh path in cargo's scratch directory for integration tests.
pub fn scratch_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("examples-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Every message body nsqd received in PUB and MPUB commands for `topic`, in order.
pub fn published(nsqd: &TestNsqd, topic: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for command in nsqd.commands() {
        let Some(body) = command.body.as_deref() else {
            continue;
        };
        if command.params() != [topic] {
            continue;
        }
        match command.name() {
            "PUB" => bodies.push(String::from_utf8_lossy(body).into_owned()),
            "MPUB" => {
                // [count u32] then [size u32][bytes] per message (nsqd/protocol_v2.go, MPUB).
                let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                let mut at = 4;
                for _ in 0..word(0) {
                    let size = word(at) as usize;
                    bodies.push(String::from_utf8_lossy(&body[at + 4..at + 4 + size]).into());
                    at += 4 + size;
                }
            }
            _ => {}
        }
    }
    bodies
}

/// One HTTP/1.1 request; the status and the body of the answer.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
