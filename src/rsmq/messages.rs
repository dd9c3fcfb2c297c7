//! The message commands: send, receive, pop, delete, change visibility, and the checked
//! (receipt-carrying) delete and visibility change.

use std::time::Duration;

use redis::Value;

use super::{
    client::Rsmq,
    id::{self, RedisTime},
    reply,
    scripts::SCRIPTS,
    types::{DeleteOutcome, MaxSize, RsmqMessage, VisibilityOutcome},
    validate,
};
use crate::error::{BodyError, Error, Result};

/// Script return codes of the visibility and checked scripts.
const DONE: i64 = 1;
const NOT_FOUND: i64 = 0;
const NOT_OWNED: i64 = 2;

impl Rsmq {
    /// Sends a message (`sendMessage`) and returns its id. `delay` overrides the queue's
    /// default delay.
    ///
    /// The size limit counts **bytes** of UTF-8 (Node counts UTF-16 units). Node's steps, in
    /// two round trips: `MULTI HMGET vt delay maxsize; TIME`, then `MULTI ZADD; HSET;
    /// HINCRBY totalsent [; ZCARD]`, then in realtime mode `PUBLISH {ns}:rt:{qname} <ZCARD>`.
    /// A failed `PUBLISH` is logged, not returned: the message is stored by then.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Config`] (`delay` not whole seconds or above
    /// 9 999 999 s), [`Error::InvalidBody`] with [`BodyError::TooLarge`] (Node's
    /// `messageTooLong`), [`Error::Rsmq`] `queueNotFound`, [`Error::Redis`], and
    /// [`Error::Timeout`], after which the message may or may not have been stored.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo(rsmq: actix_nsq::rsmq::Rsmq) -> actix_nsq::Result<()> {
    /// use std::time::Duration;
    ///
    /// let now = rsmq.send_message("jobs", "run now", None).await?;
    /// let later = rsmq.send_message("jobs", "in a minute", Some(Duration::from_secs(60))).await?;
    /// assert_eq!((now.len(), later.len()), (32, 32));
    /// # Ok(()) }
    /// ```
    pub async fn send_message(
        &self,
        qname: &str,
        message: &str,
        delay: Option<Duration>,
    ) -> Result<String> {
        validate::queue_name(qname)?;
        let delay = delay
            .map(|d| validate::whole_seconds("delay", d))
            .transpose()?;
        let mut conn = self.conn.clone();
        let (config, (sec, usec)): ([Option<String>; 3], (u64, u64)) = redis::pipe()
            .atomic()
            .hmget(self.hash_key(qname), &["vt", "delay", "maxsize"])
            .cmd("TIME")
            .query_async(&mut conn)
            .await?;
        let [Some(_vt), Some(stored_delay), Some(maxsize)] = config else {
            return Err(reply::queue_not_found(qname));
        };
        let delay = match delay {
            Some(delay) => delay,
            None => validate::stored_seconds("delay", &stored_delay)?,
        };
        if let MaxSize::Bytes(max) = validate::stored_maxsize(&maxsize) {
            if message.len() > max as usize {
                return Err(BodyError::TooLarge {
                    size: message.len(),
                    max: max as usize,
                }
                .into());
            }
        }
        let time = RedisTime { sec, usec };
        let id = id::new_message_id(time);
        let key = self.queue_key(qname);
        let hash = self.hash_key(qname);
        let score = time.millis() + delay * 1000;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&key, &id, score)
            .ignore()
            .hset(&hash, &id, message)
            .ignore()
            .hincr(&hash, "totalsent", 1)
            .ignore();
        if !self.realtime {
            pipe.query_async::<()>(&mut conn).await?;
        } else {
            let (msgs,): (u64,) = pipe.zcard(&key).query_async(&mut conn).await?;
            let channel = format!("{}rt:{qname}", self.prefix);
            let published: Result<u64, _> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(msgs)
                .query_async(&mut conn)
                .await;
            if let Err(error) = published {
                tracing::warn!(queue = qname, %error, "rsmq realtime publish failed");
            }
        }
        tracing::trace!(queue = qname, id, delay, "rsmq message sent");
        Ok(id)
    }

    /// Receives the next visible message and hides it for `vt` (default: the queue's `vt`)
    /// (`receiveMessage`). `None` when no message is visible.
    ///
    /// Delivery is at least once: delete the message (preferably with
    /// [`delete_message_checked`](Self::delete_message_checked) and the returned `rc`) before
    /// `vt` runs out, or it is delivered again with `rc + 1`. A body that is not UTF-8 (written
    /// by another client) is an [`Error::InvalidBody`]; that message comes back after `vt`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Config`] (`vt`), [`Error::Rsmq`] `queueNotFound` or
    /// `invalidValue` (unreadable stored `vt`), [`Error::InvalidBody`], [`Error::Redis`].
    pub async fn receive_message(
        &self,
        qname: &str,
        vt: Option<Duration>,
    ) -> Result<Option<RsmqMessage>> {
        validate::queue_name(qname)?;
        let vt = vt.map(|d| validate::whole_seconds("vt", d)).transpose()?;
        let value: Value = SCRIPTS
            .receive
            .key(self.queue_key(qname))
            .arg(vt.map(|vt| vt.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        reply::message(qname, value)
    }

    /// Receives the next visible message and deletes it in the same step (`popMessage`):
    /// at most once, a crash after this call loses the message.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Rsmq`] `queueNotFound`, [`Error::InvalidBody`] (the
    /// message is gone all the same), [`Error::Redis`].
    pub async fn pop_message(&self, qname: &str) -> Result<Option<RsmqMessage>> {
        validate::queue_name(qname)?;
        let value: Value = SCRIPTS
            .pop
            .key(self.queue_key(qname))
            .invoke_async(&mut self.conn.clone())
            .await?;
        reply::message(qname, value)
    }

    /// Deletes a message whoever holds it (Node's `deleteMessage`): `true` if it was there.
    ///
    /// **No ownership check**, as in Node and PyRSMQ: if this worker's `vt` ran out and
    /// another worker received the message, this deletes it from under that worker. Use
    /// [`delete_message_checked`](Self::delete_message_checked) in consumers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad queue name or an id that is not 32 characters of
    /// `[A-Za-z0-9:]`, [`Error::Redis`].
    pub async fn delete_message(&self, qname: &str, id: &str) -> Result<bool> {
        validate::queue_name(qname)?;
        validate::message_id(id)?;
        let hash = self.hash_key(qname);
        let (removed, fields): (u64, u64) = redis::pipe()
            .atomic()
            .zrem(self.queue_key(qname), id)
            .hdel(
                &hash,
                &[id.to_owned(), format!("{id}:rc"), format!("{id}:fr")],
            )
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed == 1 && fields > 0)
    }

    /// Deletes a message only if this receipt still owns it: the stored receive count equals
    /// `rc` (nobody received it since) **and** it is still hidden (its `vt` has not run out).
    /// One Lua script, so no other client can act between the check and the delete.
    ///
    /// [`DeleteOutcome::NotOwned`] means the work was done too late: the message was, or may
    /// at any moment be, delivered to another worker, who will see `rc + 1`.
    ///
    /// # Errors
    ///
    /// As [`delete_message`](Self::delete_message).
    pub async fn delete_message_checked(
        &self,
        qname: &str,
        id: &str,
        rc: u64,
    ) -> Result<DeleteOutcome> {
        validate::queue_name(qname)?;
        validate::message_id(id)?;
        let code: i64 = SCRIPTS
            .delete_checked
            .key(self.queue_key(qname))
            .arg(id)
            .arg(rc)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match code {
            DONE => Ok(DeleteOutcome::Deleted),
            NOT_OWNED => Ok(DeleteOutcome::NotOwned),
            NOT_FOUND => Ok(DeleteOutcome::NotFound),
            _ => Err(Error::redis(format!(
                "unexpected reply {code} from the delete script"
            ))),
        }
    }

    /// Hides a message for `vt` from now (Node's `changeMessageVisibility`): `true` if the
    /// message exists. `Duration::ZERO` makes it visible at once. No ownership check (see
    /// [`change_message_visibility_checked`](Self::change_message_visibility_checked)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Config`] (`vt`), [`Error::Rsmq`] `queueNotFound`,
    /// [`Error::Redis`].
    pub async fn change_message_visibility(
        &self,
        qname: &str,
        id: &str,
        vt: Duration,
    ) -> Result<bool> {
        validate::queue_name(qname)?;
        validate::message_id(id)?;
        let vt = validate::whole_seconds("vt", vt)?;
        let code: i64 = SCRIPTS
            .change_visibility
            .key(self.queue_key(qname))
            .arg(id)
            .arg(vt)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(reply::check_code(qname, code)? == DONE)
    }

    /// Extends (or ends, with `Duration::ZERO`) this receipt's hold on a message: acts only if
    /// the stored receive count equals `rc` and the message is still hidden, like
    /// [`delete_message_checked`](Self::delete_message_checked). A consumer's heartbeat.
    ///
    /// # Errors
    ///
    /// As [`change_message_visibility`](Self::change_message_visibility).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo(rsmq: actix_nsq::rsmq::Rsmq) -> actix_nsq::Result<()> {
    /// use std::time::Duration;
    /// use actix_nsq::rsmq::VisibilityOutcome;
    ///
    /// let vt = Duration::from_secs(30);
    /// if let Some(msg) = rsmq.receive_message("jobs", Some(vt)).await? {
    ///     // Long work: extend the hold every vt/2 while it runs.
    ///     match rsmq.change_message_visibility_checked("jobs", &msg.id, msg.rc, vt).await? {
    ///         VisibilityOutcome::Changed => { /* keep working */ }
    ///         _ => { /* lost it: stop, someone else will (or did) process it */ }
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn change_message_visibility_checked(
        &self,
        qname: &str,
        id: &str,
        rc: u64,
        vt: Duration,
    ) -> Result<VisibilityOutcome> {
        validate::queue_name(qname)?;
        validate::message_id(id)?;
        let vt = validate::whole_seconds("vt", vt)?;
        let code: i64 = SCRIPTS
            .change_visibility_checked
            .key(self.queue_key(qname))
            .arg(id)
            .arg(vt)
            .arg(rc)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply::check_code(qname, code)? {
            DONE => Ok(VisibilityOutcome::Changed),
            NOT_OWNED => Ok(VisibilityOutcome::NotOwned),
            NOT_FOUND => Ok(VisibilityOutcome::NotFound),
            _ => Err(Error::redis(format!(
                "unexpected reply {code} from the visibility script"
            ))),
        }
    }
}
