//! A throwaway `redis-server` for tests: its own process on a free loopback port (or a unix
//! socket), no persistence, killed by PID when dropped.
//!
//! When `redis-server` is not on `PATH`, [`RedisServer::start`] panics: a test that needs
//! Redis is `#[ignore]`d with that reason, so `cargo test` counts it as not run, and when it is
//! asked for (`-- --ignored`, as `.ci/run` does) a missing server is a failure, never a pass.

#![allow(dead_code)]

use std::{
    env, fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: u32 = 5;

/// Where the server listens.
#[derive(Debug, Clone)]
pub(crate) enum Listen {
    Tcp(u16),
    Unix(PathBuf),
}

/// A running `redis-server` child process.
#[derive(Debug)]
pub(crate) struct RedisServer {
    binary: PathBuf,
    child: Child,
    dir: PathBuf,
    listen: Listen,
}

/// Finds an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub(crate) fn start() -> Self {
        let binary = Self::binary();
        let dir = temp_dir();
        for _ in 0..PORT_ATTEMPTS {
            // redis-server has no `--port 0`: take a free port from the OS, release it, and
            // retry with another if someone else grabbed it meanwhile.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = Listen::Tcp(port);
            if let Some(child) = spawn(&binary, &dir, &listen) {
                return Self {
                    binary,
                    child,
                    dir,
                    listen,
                };
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts (see {dir:?})");
    }

    /// Starts a server listening only on a unix socket in a temporary directory.
    pub(crate) fn start_unix() -> Self {
        let binary = Self::binary();
        let dir = temp_dir();
        let listen = Listen::Unix(dir.join("redis.sock"));
        let child = spawn(&binary, &dir, &listen).expect("redis-server on a unix socket");
        Self {
            binary,
            child,
            dir,
            listen,
        }
    }

    fn binary() -> PathBuf {
        which("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found on PATH: install Redis to run the ignored rsmq tests")
        })
    }

    /// The URL of the server for `redis::Client::open`.
    pub(crate) fn url(&self) -> String {
        match &self.listen {
            Listen::Tcp(port) => format!("redis://127.0.0.1:{port}/0"),
            Listen::Unix(path) => format!("redis+unix://{}", path.display()),
        }
    }

    /// The TCP port (panics for a unix-socket server).
    pub(crate) fn port(&self) -> u16 {
        match self.listen {
            Listen::Tcp(port) => port,
            Listen::Unix(_) => panic!("unix-socket server has no port"),
        }
    }

    /// A new client for this server.
    pub(crate) fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// A fresh async connection for raw commands.
    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server and starts a new, empty one on the same address.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.binary, &self.dir, &self.listen).expect("redis-server restart");
    }

    fn kill(&mut self) {
        // Only our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = env::temp_dir().join(format!(
        "actix-nsq-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawns `redis-server` and waits until it answers; `None` if it exited (port taken).
fn spawn(binary: &Path, dir: &Path, listen: &Listen) -> Option<Child> {
    let mut cmd = Command::new(binary);
    cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    match listen {
        Listen::Tcp(port) => cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]),
        Listen::Unix(path) => cmd
            .args(["--port", "0", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(path),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if answers_as(listen, child.id()) {
            return Some(child);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// True when the server at `listen` answers and is the process `pid` (not another test's
/// server that grabbed the same port first).
fn answers_as(listen: &Listen, pid: u32) -> bool {
    fn exchange(mut stream: impl Read + Write, pid: u32) -> bool {
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        let needle = format!("process_id:{pid}\r\n");
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            reply.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&reply);
            if text.contains(&needle) {
                return true;
            }
            if text.contains("process_id:") && text.contains("\r\nrun_id:") {
                return false;
            }
        }
        false
    }
    let timeout = Some(Duration::from_secs(2));
    match listen {
        Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", *port))
            .is_ok_and(|s| s.set_read_timeout(timeout).is_ok() && exchange(s, pid)),
        Listen::Unix(path) => UnixStream::connect(path)
            .is_ok_and(|s| s.set_read_timeout(timeout).is_ok() && exchange(s, pid)),
    }
}
