//! `LookupdDiscoverer`: finds the nsqd that have a topic by polling nsqlookupd.
//!
//! go-nsq's algorithm (`consumer.go:339-521`): one nsqlookupd per poll, round robin; on an
//! error or a non-200 answer the next one is tried, up to 3 tries (go-nsq#97/#209); the
//! periodic loop starts after a random `jitter × interval` (nsq PR #250) so a fleet restarted
//! together does not poll in step. Like go-nsq, the very first query runs at once, so a
//! consumer finds its nsqd at startup rather than after the jitter. `404 TOPIC_NOT_FOUND`
//! means "no producers yet", not a failure. Garbage, timeouts and errors become an event and
//! change nothing: existing connections are kept.

mod response;

use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient,
    Supervised, WrapFuture,
};
use rand::Rng;

pub(crate) use response::{decode, decode_empty, error_message, null_as_default};
pub use response::{LookupResponse, NodeInfo, ProducerInfo, SkippedProducer};

use crate::{error::Error, protocol::Topic, transport::Secret};

/// The media type nsqlookupd ≥ 1.0 answers in without the legacy wrapper.
pub(crate) const ACCEPT_V1: &str = "application/vnd.nsq; version=1.0";
/// The header that says the answer is not wrapped.
pub(crate) const CONTENT_TYPE_V1: &str = "nsq; version=1.0";

/// Tries per poll (go-nsq `queryLookupd`).
const TRIES: usize = 3;

/// Builds the lookup URL for an nsqlookupd address as go-nsq's `buildLookupAddr` does
/// (`consumer.go:1210-1233`): `http://` is added when there is no scheme, a port is required,
/// an empty path becomes `/lookup`, and `topic=` is added to the query.
pub(crate) fn lookup_url(addr: &str, topic: &Topic) -> Result<String, String> {
    let (scheme, rest) = addr.split_once("://").unwrap_or(("http", addr));
    if scheme != "http" && scheme != "https" {
        return Err(format!("{addr:?}: scheme must be http or https"));
    }
    let (authority, path_and_query) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        // Only the host and port: the credentials must not reach errors or logs.
        let shown = crate::http::redact_credentials(addr);
        crate::conn::validate_addr(authority.rsplit('@').next().unwrap_or_default())
            .map_err(|_| format!("nsqlookupd address {shown:?} is not [scheme://]host:port"))?;
    } else {
        crate::conn::validate_addr(authority).map_err(|e| format!("nsqlookupd address {e}"))?;
    }
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = if path.is_empty() || path == "/" {
        "/lookup"
    } else {
        path
    };
    // Topic names are [.a-zA-Z0-9_-] plus an optional #ephemeral; only '#' needs escaping.
    let topic = topic.as_str().replace('#', "%23");
    let sep = if query.is_empty() { "" } else { "&" };
    Ok(format!(
        "{scheme}://{authority}{path}?{query}{sep}topic={topic}"
    ))
}

/// What the discoverer needs.
#[derive(Clone)]
pub(crate) struct DiscoveryConfig {
    pub(crate) lookupd: Vec<String>,
    pub(crate) topic: Topic,
    pub(crate) poll_interval: Duration,
    pub(crate) poll_jitter: f64,
    pub(crate) poll_timeout: Duration,
    /// Sent as `Authorization: Bearer <secret>` (go-nsq `consumer.go:489-491`).
    pub(crate) authorization: Option<Secret>,
    /// The secret may go over plain http too (an explicit opt-in; https only by default).
    pub(crate) authorization_over_http: bool,
}

/// What the discoverer found.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) enum Discovered {
    Producers { lookupd: String, nsqd: Vec<String> },
    Failed { lookupd: String, error: Error },
}

/// Query now (a connection was lost; go-nsq `lookupdRecheckChan`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Requery;

/// Stop for good (the consumer is stopping): without it, the poll timer would keep the
/// discoverer alive and querying after its consumer is gone.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct StopDiscovery;

pub(crate) struct LookupdDiscoverer {
    urls: Vec<(String, String)>,
    next: usize,
    config: DiscoveryConfig,
    consumer: Recipient<Discovered>,
    client: Option<awc::Client>,
    querying: bool,
    query_again: bool,
}

impl LookupdDiscoverer {
    pub(crate) fn new(config: DiscoveryConfig, consumer: Recipient<Discovered>) -> Self {
        let urls = config
            .lookupd
            .iter()
            .filter_map(|addr| {
                // Named by its redacted address in events and logs.
                let name = crate::http::redact_credentials(addr).into_owned();
                lookup_url(addr, &config.topic).ok().map(|url| (name, url))
            })
            .collect();
        Self {
            urls,
            next: 0,
            config,
            consumer,
            client: None,
            querying: false,
            query_again: false,
        }
    }

    fn query(&mut self, ctx: &mut Context<Self>) {
        if self.urls.is_empty() {
            return;
        }
        if self.querying {
            self.query_again = true;
            return;
        }
        self.querying = true;
        let client = self
            .client
            .get_or_insert_with(|| {
                let https = self.urls.iter().any(|(_, url)| url.starts_with("https://"));
                http_client(self.config.poll_timeout, https)
            })
            .clone();
        let start = self.next;
        self.next = (self.next + TRIES.min(self.urls.len())) % self.urls.len();
        let tries: Vec<(String, String)> = (0..TRIES.min(self.urls.len()).max(1))
            .map(|i| self.urls[(start + i) % self.urls.len()].clone())
            .collect();
        let secret = self.config.authorization.as_ref();
        let bearer = secret.map(|s| format!("Bearer {}", String::from_utf8_lossy(s.expose())));
        // The secret goes in clear over plain http: only over https, unless the user opted in
        // (ConsumerBuilder::lookupd_authorization_over_http).
        let plain_http_ok = self.config.authorization_over_http;
        let timeout = self.config.poll_timeout;
        let secret_set = secret.is_some();
        let fut = async move {
            let mut last = None;
            for (lookupd, url) in tries {
                let bearer = bearer_for(&url, bearer.as_deref(), plain_http_ok);
                if bearer.is_none() && secret_set {
                    tracing::debug!(lookupd = %lookupd,
                        "AUTH secret not sent to nsqlookupd over plain http");
                }
                match lookup(&client, &url, bearer, timeout).await {
                    Ok((nsqd, _, 0)) => return vec![Discovered::Producers { lookupd, nsqd }],
                    Ok((nsqd, skipped, count)) => {
                        // The good entries are used; the bad ones are reported, not fatal.
                        if let Some(first) = skipped.first() {
                            tracing::warn!(lookupd = %lookupd, skipped = count, %first,
                                "skipping unusable nsqlookupd entries");
                        }
                        let error = Error::SkippedProducers { skipped, count };
                        return vec![
                            Discovered::Producers {
                                lookupd: lookupd.clone(),
                                nsqd,
                            },
                            Discovered::Failed { lookupd, error },
                        ];
                    }
                    Err(error) => {
                        tracing::warn!(lookupd = %lookupd, %error, "nsqlookupd query failed");
                        last = Some(Discovered::Failed { lookupd, error });
                    }
                }
            }
            vec![last.unwrap_or(Discovered::Failed {
                lookupd: String::new(),
                error: Error::NotConnected,
            })]
        };
        ctx.spawn(fut.into_actor(self).map(|found, act, ctx| {
            act.querying = false;
            for found in found {
                act.consumer.do_send(found);
            }
            if std::mem::take(&mut act.query_again) {
                act.query(ctx);
            }
        }));
    }
}

/// The `Authorization` value for `url`: over https, or over plain http only when the user
/// opted in (a bearer token in clear is anyone's on the path).
fn bearer_for<'a>(url: &str, bearer: Option<&'a str>, plain_http_ok: bool) -> Option<&'a str> {
    bearer.filter(|_| plain_http_ok || url.starts_with("https://"))
}

/// One lookup: the `host:port` of every nsqd listed, de-duplicated, and the entries skipped
/// as unusable (the first few, and how many); nothing for `404 TOPIC_NOT_FOUND`.
async fn lookup(
    client: &awc::Client,
    url: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<(Vec<String>, Vec<SkippedProducer>, usize), Error> {
    let mut request = client
        .get(url)
        .insert_header(("Accept", ACCEPT_V1))
        .timeout(timeout);
    if let Some(bearer) = bearer {
        request = request.insert_header(("Authorization", bearer));
    }
    let mut response = request.send().await.map_err(|e| Error::Http {
        status: 0,
        message: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let v1 = response
        .headers()
        .get("X-NSQ-Content-Type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == CONTENT_TYPE_V1);
    let body = response
        .body()
        .limit(4 * 1024 * 1024)
        .await
        .map_err(|e| Error::Http {
            status,
            message: e.to_string(),
        })?;
    if status == 404 && error_message(&body) == "TOPIC_NOT_FOUND" {
        return Ok(Default::default());
    }
    if status != 200 {
        return Err(Error::Http {
            status,
            message: error_message(&body),
        });
    }
    let answer: LookupResponse = match decode(&body, v1) {
        Ok(answer) => answer,
        Err((404, text)) if text == "TOPIC_NOT_FOUND" => return Ok(Default::default()),
        Err((status, message)) => return Err(Error::Http { status, message }),
    };
    let mut nsqd: Vec<String> = answer
        .producers
        .iter()
        .filter_map(ProducerInfo::tcp_address)
        .collect();
    nsqd.sort();
    nsqd.dedup();
    Ok((nsqd, answer.skipped, answer.skipped_count))
}

/// An HTTP client for nsq's APIs: HTTP/1.1, the given timeout, and (only when some address is
/// `https://`, as the root store costs a few hundred KB) rustls with the webpki roots.
pub(crate) fn http_client(timeout: Duration, https: bool) -> awc::Client {
    let mut connector = awc::Connector::new().timeout(timeout);
    if https {
        if let Ok(tls) = crate::transport::default_http_tls() {
            connector = connector.rustls_0_23(tls);
        }
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .finish()
}

impl Actor for LookupdDiscoverer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.urls.is_empty() {
            return; // stopped for good (or nothing to query)
        }
        self.query(ctx);
        let interval = self.config.poll_interval;
        let jitter = interval.mul_f64(self.config.poll_jitter * rand::rng().random::<f64>());
        // The ticker starts after the jitter, not before (go-nsq#114: jitter had no effect).
        ctx.run_later(jitter, move |act, ctx| {
            act.query(ctx);
            ctx.run_interval(interval, |act, ctx| act.query(ctx));
        });
    }
}

/// Supervised by its consumer's `Supervisor::start`: a restart loses the context's poll
/// timer and any query in progress; `started()` queries at once and re-arms the timer.
impl Supervised for LookupdDiscoverer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.querying = false;
        self.query_again = false;
    }
}

impl Handler<StopDiscovery> for LookupdDiscoverer {
    type Result = ();

    fn handle(&mut self, _: StopDiscovery, ctx: &mut Context<Self>) {
        self.urls.clear();
        ctx.stop();
    }
}

impl Handler<Requery> for LookupdDiscoverer {
    type Result = ();

    fn handle(&mut self, _: Requery, ctx: &mut Context<Self>) {
        self.query(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_goes_over_https_or_by_opt_in() {
        let b = Some("Bearer s");
        assert_eq!(bearer_for("https://h:1/lookup", b, false), b);
        assert_eq!(bearer_for("http://h:1/lookup", b, false), None);
        assert_eq!(bearer_for("http://h:1/lookup", b, true), b);
        assert_eq!(bearer_for("https://h:1/lookup", None, true), None);
    }

    #[test]
    fn credentials_in_an_address_stay_out_of_errors() {
        let t = Topic::new("events").unwrap();
        let err = lookup_url("http://user:hunter2@h:99999", &t).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            lookup_url("http://user:hunter2@h:1", &t).unwrap(),
            "http://user:hunter2@h:1/lookup?topic=events"
        );
    }

    #[test]
    fn builds_urls_like_go_nsq() {
        let t = Topic::new("events").unwrap();
        let cases = [
            (
                "127.0.0.1:4161",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "http://127.0.0.1:4161",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "http://127.0.0.1:4161/",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "https://lookupd:4161/custom",
                "https://lookupd:4161/custom?topic=events",
            ),
            (
                "http://h:1/lookup?x=1",
                "http://h:1/lookup?x=1&topic=events",
            ),
        ];
        for (addr, url) in cases {
            assert_eq!(lookup_url(addr, &t).unwrap(), url);
        }
        let eph = Topic::new("t#ephemeral").unwrap();
        assert_eq!(
            lookup_url("h:1", &eph).unwrap(),
            "http://h:1/lookup?topic=t%23ephemeral"
        );
        for bad in ["ftp://h:1", "http://h", "h", "http://:1", ""] {
            assert!(lookup_url(bad, &t).is_err(), "{bad}");
        }
    }
}
