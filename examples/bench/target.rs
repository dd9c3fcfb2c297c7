//! Where a workload runs: the real nsqd (and nsqlookupd) given on the command line, or
//! in-process test servers started for it, and how the client reaches them (TLS, snappy,
//! deflate).

use actix_nsq::{
    testing::{certs, TestLookupd, TestNsqd},
    ConnectionConfig, TlsConfig,
};

use crate::Args;

/// The servers of one workload and the connection settings every client uses.
pub(crate) struct Target {
    /// nsqd TCP addresses.
    pub(crate) nsqd: Vec<String>,
    /// nsqd HTTP addresses, for deleting the benchmark's topics afterwards (real nsqd only).
    pub(crate) http: Vec<String>,
    /// An nsqlookupd HTTP address.
    pub(crate) lookupd: Option<String>,
    pub(crate) in_process: bool,
    pub(crate) connection: ConnectionConfig,
    _servers: Vec<TestNsqd>,
    _lookupd: Option<TestLookupd>,
}

/// The transport as a short label: `tcp`, `tls`, `tls+snappy`, `tls+deflate6`, `snappy`...
pub(crate) fn transport_label(args: &Args) -> String {
    let mut parts = Vec::new();
    if args.tls {
        parts.push("tls".to_owned());
    }
    if args.snappy {
        parts.push("snappy".to_owned());
    } else if let Some(level) = args.deflate {
        parts.push(format!("deflate{level}"));
    }
    if parts.is_empty() {
        "tcp".to_owned()
    } else {
        parts.join("+")
    }
}

fn connection(args: &Args) -> ConnectionConfig {
    let mut config = ConnectionConfig::new();
    if args.tls {
        let ca = match &args.tls_ca {
            Some(path) => std::fs::read(path).expect("read --tls-ca"),
            None => certs::CA_PEM.to_vec(),
        };
        let tls = TlsConfig::new()
            .built_in_roots(false)
            .add_root_certificate_pem(ca)
            .expect("a PEM CA certificate");
        config = config.tls(tls);
    }
    if args.snappy {
        config = config.snappy(true);
    } else if let Some(level) = args.deflate {
        config = config.deflate(level);
    }
    config
}

/// The servers for `workload`: the real ones from `args`, or `nsqd_count` in-process nsqd
/// (registered with an in-process nsqlookupd when there are several), each allowing RDY up
/// to `max_rdy`.
pub(crate) fn target(args: &Args, nsqd_count: usize, max_rdy: u32) -> Target {
    let connection = connection(args);
    if !args.nsqd_tcp_address.is_empty() {
        // Workloads with one nsqd use the first of those given.
        let count = if nsqd_count > 1 { usize::MAX } else { 1 };
        return Target {
            nsqd: args.nsqd_tcp_address.iter().take(count).cloned().collect(),
            http: args.nsqd_http_address.iter().take(count).cloned().collect(),
            lookupd: args.lookupd_http_address.clone(),
            in_process: false,
            connection,
            _servers: Vec::new(),
            _lookupd: None,
        };
    }
    let lookupd = (nsqd_count > 1).then(|| TestLookupd::start().expect("start a test nsqlookupd"));
    let servers: Vec<TestNsqd> = (0..nsqd_count)
        .map(|_| {
            let mut builder = TestNsqd::builder()
                .record_commands(false)
                .tls(args.tls)
                .max_rdy_count(i64::from(max_rdy.max(2500)));
            if let Some(lookupd) = &lookupd {
                builder = builder.lookupd(lookupd);
            }
            builder.start().expect("start the in-process nsqd")
        })
        .collect();
    Target {
        nsqd: servers.iter().map(|s| s.addr().to_string()).collect(),
        http: Vec::new(),
        lookupd: lookupd.as_ref().map(TestLookupd::url),
        in_process: true,
        connection,
        _servers: servers,
        _lookupd: lookupd,
    }
}
