//! The client handle, its builder, and the queue commands.

use std::{fmt, sync::Arc, time::Duration};

use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, Value};

use super::{
    reply,
    scripts::SCRIPTS,
    types::{QueueAttributes, QueueChanges, QueueOptions},
    validate,
};
use crate::error::{Error, Result};

/// Builds an [`Rsmq`]: where Redis is, the namespace, realtime notifications and timeouts.
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct RsmqBuilder {
    client: redis::Client,
    namespace: String,
    realtime: bool,
    response_timeout: Duration,
    connection_timeout: Duration,
}

impl RsmqBuilder {
    /// Node rsmq's namespace: keys are `rsmq:QUEUES`, `rsmq:{qname}:Q`, `rsmq:{qname}`.
    pub const DEFAULT_NAMESPACE: &'static str = "rsmq";
    /// How long a command may wait for its reply. A send that times out may still have been
    /// stored ([`Error::outcome_unknown`]).
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long connecting may take.
    pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

    /// A builder for an existing `redis` client, with the defaults.
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            namespace: Self::DEFAULT_NAMESPACE.to_owned(),
            realtime: false,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            connection_timeout: Self::DEFAULT_CONNECTION_TIMEOUT,
        }
    }

    /// A builder for a Redis URL such as `redis://127.0.0.1:6379/0` or
    /// `redis+unix:///run/redis.sock`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`url`) when the URL cannot be parsed.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> actix_nsq::Result<()> {
    /// use actix_nsq::rsmq::RsmqBuilder;
    ///
    /// let rsmq = RsmqBuilder::from_url("redis://127.0.0.1:6379/0")?
    ///     .namespace("jobs")
    ///     .realtime(true)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::config("url", e.to_string()))?;
        Ok(Self::new(client))
    }

    /// The key prefix; keys are `{namespace}:...`. Must be the same in every client of a queue.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Publish `{ns}:rt:{qname}` after every send, as Node rsmq does with `realtime: true`.
    pub fn realtime(mut self, realtime: bool) -> Self {
        self.realtime = realtime;
        self
    }

    /// How long a command may wait for its reply.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long [`build`](Self::build) may take to connect, retries included (default 5 s).
    /// Later reconnections bound each attempt by it.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Connects. The connection reconnects by itself afterwards; a command that fails while
    /// it is down returns [`Error::Redis`] and the next one uses the new connection.
    ///
    /// Runs on any tokio runtime, including an actix `System`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`namespace`) for an empty namespace; [`Error::Redis`] when Redis
    /// cannot be reached; [`Error::Timeout`] when no connection was made within
    /// `connection_timeout` (a Redis that accepts and never answers, e.g. a stopped process).
    pub async fn build(self) -> Result<Rsmq> {
        let Self {
            client,
            namespace,
            realtime,
            response_timeout,
            connection_timeout,
        } = self;
        if namespace.is_empty() {
            return Err(Error::config("namespace", "must not be empty"));
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(connection_timeout));
        // The manager retries a failed attempt 6 times with growing delays, each attempt
        // bounded by connection_timeout: 44.5 s against a Redis that accepts and never
        // answers. The documented bound is for the whole connect.
        let connect = client.get_connection_manager_with_config(config);
        let conn = tokio::time::timeout(connection_timeout, connect)
            .await
            .map_err(|_| {
                tracing::warn!(redis = %client.get_connection_info().addr(), ?connection_timeout,
                    "no Redis connection within connection_timeout");
                Error::Timeout("connecting to Redis (connection_timeout)")
            })??;
        tracing::debug!(redis = %client.get_connection_info().addr(), namespace, "rsmq connected");
        Ok(Rsmq {
            conn,
            client,
            prefix: Arc::from(format!("{namespace}:")),
            realtime,
            connection_timeout,
        })
    }
}

impl fmt::Debug for RsmqBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand, so a password in the connection info is never printed.
        let Self {
            client,
            namespace,
            realtime,
            response_timeout,
            connection_timeout,
        } = self;
        f.debug_struct("RsmqBuilder")
            .field("redis", &client.get_connection_info().addr().to_string())
            .field("namespace", namespace)
            .field("realtime", realtime)
            .field("response_timeout", response_timeout)
            .field("connection_timeout", connection_timeout)
            .finish()
    }
}

/// An RSMQ client on one multiplexed, self-reconnecting Redis connection.
///
/// Cheap to clone; clones share the connection. See the [module docs](super) for the data
/// layout, the errors, and what each delete guarantees.
#[derive(Clone)]
pub struct Rsmq {
    pub(crate) conn: ConnectionManager,
    pub(crate) client: redis::Client,
    /// `{namespace}:`
    pub(crate) prefix: Arc<str>,
    pub(crate) realtime: bool,
    /// Bounds the realtime subscription's own connections too.
    pub(crate) connection_timeout: Duration,
}

impl fmt::Debug for Rsmq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rsmq")
            .field(
                "redis",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("namespace", &self.namespace())
            .field("realtime", &self.realtime)
            .finish_non_exhaustive()
    }
}

impl Rsmq {
    /// Connects to `url` with the defaults (namespace `rsmq`, no realtime).
    ///
    /// # Errors
    ///
    /// As [`RsmqBuilder::from_url`] and [`RsmqBuilder::build`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> actix_nsq::Result<()> {
    /// use std::time::Duration;
    /// use actix_nsq::rsmq::{QueueOptions, Rsmq};
    ///
    /// let rsmq = Rsmq::connect("redis://127.0.0.1:6379/0").await?;
    /// rsmq.create_queue("jobs", QueueOptions::new().vt(Duration::from_secs(60))).await?;
    /// let id = rsmq.send_message("jobs", "hello", None).await?;
    /// if let Some(msg) = rsmq.receive_message("jobs", None).await? {
    ///     assert_eq!(msg.id, id);
    ///     rsmq.delete_message_checked("jobs", &msg.id, msg.rc).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        RsmqBuilder::from_url(url)?.build().await
    }

    /// The namespace, without the trailing `:`.
    pub fn namespace(&self) -> &str {
        self.prefix.strip_suffix(':').unwrap_or(&self.prefix)
    }

    /// Whether sends publish realtime notifications.
    pub fn is_realtime(&self) -> bool {
        self.realtime
    }

    /// `{ns}:{qname}`, the ZSET of message ids.
    pub(crate) fn queue_key(&self, qname: &str) -> String {
        format!("{}{qname}", self.prefix)
    }

    /// `{ns}:{qname}:Q`, the hash of settings, counters and bodies.
    pub(crate) fn hash_key(&self, qname: &str) -> String {
        format!("{}{qname}:Q", self.prefix)
    }

    fn queues_key(&self) -> String {
        format!("{}QUEUES", self.prefix)
    }

    /// Creates a queue (`createQueue`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad name, [`Error::Config`] for an option out of range,
    /// [`Error::Rsmq`] `queueExists`, [`Error::Redis`].
    pub async fn create_queue(&self, qname: &str, options: QueueOptions) -> Result<()> {
        validate::queue_name(qname)?;
        let vt = validate::whole_seconds("vt", options.vt)?;
        let delay = validate::whole_seconds("delay", options.delay)?;
        let maxsize = validate::maxsize(options.maxsize)?;
        let created: i64 = SCRIPTS
            .create
            .key(self.hash_key(qname))
            .key(self.queues_key())
            .arg(vt)
            .arg(delay)
            .arg(maxsize)
            .arg(qname)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if created == 0 {
            return Err(reply::queue_exists(qname));
        }
        tracing::debug!(queue = qname, vt, delay, maxsize, "rsmq queue created");
        Ok(())
    }

    /// Deletes a queue and every message in it (`deleteQueue`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Rsmq`] `queueNotFound`, [`Error::Redis`].
    pub async fn delete_queue(&self, qname: &str) -> Result<()> {
        validate::queue_name(qname)?;
        let (deleted, _removed): (u64, u64) = redis::pipe()
            .atomic()
            .del(&[self.hash_key(qname), self.queue_key(qname)])
            .srem(self.queues_key(), qname)
            .query_async(&mut self.conn.clone())
            .await?;
        if deleted == 0 {
            return Err(reply::queue_not_found(qname));
        }
        tracing::debug!(queue = qname, "rsmq queue deleted");
        Ok(())
    }

    /// The names of all queues in the namespace (`listQueues`), sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    pub async fn list_queues(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.queues_key())
            .query_async(&mut self.conn.clone())
            .await?;
        names.sort_unstable();
        Ok(names)
    }

    /// A queue's settings and counters (`getQueueAttributes`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Rsmq`] `queueNotFound` (also when `vt`, `delay` or
    /// `maxsize` is missing from the hash), [`Error::Rsmq`] `invalidValue` when the stored `vt`
    /// or `delay` is not a number, [`Error::Redis`].
    pub async fn get_queue_attributes(&self, qname: &str) -> Result<QueueAttributes> {
        validate::queue_name(qname)?;
        let value: Value = SCRIPTS
            .attributes
            .key(self.queue_key(qname))
            .invoke_async(&mut self.conn.clone())
            .await?;
        reply::attributes(qname, value)
    }

    /// Changes a queue's settings and returns them (`setQueueAttributes`). Unlike PyRSMQ it
    /// never writes to a queue that does not exist (check and write are one script).
    ///
    /// # Errors
    ///
    /// [`Error::Rsmq`] `noAttributeSupplied` for empty `changes`, [`Error::InvalidName`],
    /// [`Error::Config`] for a value out of range, [`Error::Rsmq`] `queueNotFound`,
    /// [`Error::Redis`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo(rsmq: actix_nsq::rsmq::Rsmq) -> actix_nsq::Result<()> {
    /// use std::time::Duration;
    /// use actix_nsq::rsmq::{MaxSize, QueueChanges};
    ///
    /// let changes = QueueChanges::new().vt(Duration::from_secs(120)).maxsize(MaxSize::Unlimited);
    /// let attrs = rsmq.set_queue_attributes("jobs", changes).await?;
    /// assert_eq!(attrs.vt, Duration::from_secs(120));
    /// # Ok(()) }
    /// ```
    pub async fn set_queue_attributes(
        &self,
        qname: &str,
        changes: QueueChanges,
    ) -> Result<QueueAttributes> {
        if changes.is_empty() {
            return Err(reply::no_attribute_supplied());
        }
        validate::queue_name(qname)?;
        let mut invocation = SCRIPTS.set_attributes.key(self.queue_key(qname));
        // Node's order: vt, maxsize, delay.
        if let Some(vt) = changes.vt {
            invocation.arg("vt").arg(validate::whole_seconds("vt", vt)?);
        }
        if let Some(maxsize) = changes.maxsize {
            invocation.arg("maxsize").arg(validate::maxsize(maxsize)?);
        }
        if let Some(delay) = changes.delay {
            invocation
                .arg("delay")
                .arg(validate::whole_seconds("delay", delay)?);
        }
        let done: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        if done == reply::QUEUE_NOT_FOUND {
            return Err(reply::queue_not_found(qname));
        }
        tracing::debug!(queue = qname, ?changes, "rsmq queue attributes set");
        self.get_queue_attributes(qname).await
    }

    /// Closes this handle (Node's `quit`). The connection closes when the last clone of this
    /// `Rsmq` (and of its [`Notifications`](super::Notifications)) is dropped.
    pub fn quit(self) {
        drop(self);
    }
}
