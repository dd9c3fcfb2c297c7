//! `LookupdDiscoverer`: finds the nsqd that have a topic by polling nsqlookupd.
//!
//! go-nsq's algorithm (`consumer.go:339-521`): one nsqlookupd per poll, round robin; on an
//! error or a non-200 answer the next one is tried, up to 3 tries (go-nsq#97/#209); the
//! periodic loop starts after a random `jitter × interval` (nsq PR #250) so a fleet restarted
//! together does not poll in step. Like go-nsq, the very first query runs at once, so a
//! consumer finds its nsqd at startup rather than after the jitter. `404 TOPIC_NOT_FOUND`
//! means "no producers yet", not a failure. Garbage, timeouts and errors become an event and
//! change nothing: existing connections are kept.
//!
//! Each request goes through [`LookupdHttpClient`] (one client per nsqlookupd, built from the
//! address as go-nsq reads it): this module only schedules, jitters and picks the next one.

use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient,
    Supervised, WrapFuture,
};
use rand::Rng;

pub(crate) use crate::http::lookup_url;
use crate::{
    error::Error,
    http::{redact_credentials, HttpSettings, LookupdHttpClient, ProducerInfo},
    protocol::Topic,
    transport::Secret,
};

/// Tries per poll (go-nsq `queryLookupd`).
const TRIES: usize = 3;

/// The largest `/lookup` answer read: thousands of producers fit in far less.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

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

/// One nsqlookupd as the discoverer asks it.
#[derive(Clone)]
struct Target {
    /// Its address with any credentials redacted: what events and logs call it.
    name: String,
    client: LookupdHttpClient,
    /// Where its lookups go, the topic included.
    path_and_query: String,
    https: bool,
}

pub(crate) struct LookupdDiscoverer {
    targets: Vec<Target>,
    next: usize,
    config: DiscoveryConfig,
    consumer: Recipient<Discovered>,
    querying: bool,
    query_again: bool,
}

impl LookupdDiscoverer {
    pub(crate) fn new(config: DiscoveryConfig, consumer: Recipient<Discovered>) -> Self {
        let settings = HttpSettings {
            timeout: config.poll_timeout,
            max_response_size: MAX_ANSWER,
            ..HttpSettings::default()
        };
        let targets = config
            .lookupd
            .iter()
            .filter_map(|addr| {
                let name = redact_credentials(addr).into_owned();
                // The builder has checked the address; what fails here is logged and skipped.
                match LookupdHttpClient::for_discovery(addr, &config.topic, settings.clone()) {
                    Ok((client, path_and_query)) => Some(Target {
                        https: client.base_url().starts_with("https://"),
                        name,
                        client,
                        path_and_query,
                    }),
                    Err(error) => {
                        tracing::warn!(lookupd = %name, %error, "nsqlookupd address not usable");
                        None
                    }
                }
            })
            .collect();
        Self {
            targets,
            next: 0,
            config,
            consumer,
            querying: false,
            query_again: false,
        }
    }

    fn query(&mut self, ctx: &mut Context<Self>) {
        if self.targets.is_empty() {
            return;
        }
        if self.querying {
            self.query_again = true;
            return;
        }
        self.querying = true;
        let n = self.targets.len();
        let start = self.next;
        self.next = (self.next + TRIES.min(n)) % n;
        let tries: Vec<Target> = (0..TRIES.min(n).max(1))
            .map(|i| self.targets[(start + i) % n].clone())
            .collect();
        let secret = self.config.authorization.as_ref();
        let bearer = secret.map(|s| format!("Bearer {}", String::from_utf8_lossy(s.expose())));
        // The secret goes in clear over plain http: only over https, unless the user opted in
        // (ConsumerBuilder::lookupd_authorization_over_http).
        let plain_http_ok = self.config.authorization_over_http;
        let secret_set = secret.is_some();
        let fut = async move {
            let mut last = None;
            for target in tries {
                let lookupd = target.name;
                let bearer = bearer_for(target.https, bearer.as_deref(), plain_http_ok);
                if bearer.is_none() && secret_set {
                    tracing::debug!(lookupd = %lookupd,
                        "AUTH secret not sent to nsqlookupd over plain http");
                }
                let found = target
                    .client
                    .lookup_at(&target.path_and_query, bearer)
                    .await;
                match found.map(producers) {
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

/// The `Authorization` value for an nsqlookupd: over https, or over plain http only when the
/// user opted in (a bearer token in clear is anyone's on the path).
fn bearer_for(https: bool, bearer: Option<&str>, plain_http_ok: bool) -> Option<&str> {
    bearer.filter(|_| plain_http_ok || https)
}

/// The `host:port` of every nsqd listed, de-duplicated, and the entries skipped as unusable
/// (the first few, and how many).
fn producers(answer: crate::LookupResponse) -> (Vec<String>, Vec<crate::SkippedProducer>, usize) {
    let mut nsqd: Vec<String> = answer
        .producers
        .iter()
        .filter_map(ProducerInfo::tcp_address)
        .collect();
    nsqd.sort();
    nsqd.dedup();
    (nsqd, answer.skipped, answer.skipped_count)
}

impl Actor for LookupdDiscoverer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.targets.is_empty() {
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
        self.targets.clear();
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
        assert_eq!(bearer_for(true, b, false), b);
        assert_eq!(bearer_for(false, b, false), None);
        assert_eq!(bearer_for(false, b, true), b);
        assert_eq!(bearer_for(true, None, true), None);
    }
}
