//! The Lua scripts, each one atomic step on the Node rsmq layout.
//!
//! They run through [`redis::Script`], which sends `EVALSHA` and loads the script again when
//! Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`). Only the data layout has to
//! match Node rsmq, not the script text; the steps that change data are Node's (rsmq
//! `_src/index.ts`, `initScript`), in Node's order. Differences, all on the safe side:
//!
//! * the queue is read and `TIME` taken inside the script, so a receive is one round trip and
//!   its clock and queue check cannot go stale between two calls;
//! * a queue exists only when `vt`, `delay` and `maxsize` are all set (Node's `_getQueue`);
//! * an id in the ZSET without a body (a "phantom", left by a delete that another client did
//!   half) is removed and the next message is taken, instead of returning a nil body;
//! * `vt` from the hash is read like JavaScript's `parseInt` (`"1.5"` is 1).
//!
//! Return codes shared with `messages.rs`: `-1` queue not found, `-2` unreadable stored `vt`.
//! Needs Redis 5 or later (`TIME` before writes relies on effects replication).

use std::sync::LazyLock;

use redis::Script;

/// Reads the queue settings; `-1` if the queue does not exist. Defines `key`, `q` and `cfg`.
const QUEUE_CHECK: &str = r#"
local key = KEYS[1]
local q = key .. ":Q"
local cfg = redis.call("HMGET", q, "vt", "delay", "maxsize")
if not cfg[1] or not cfg[2] or not cfg[3] then return -1 end
"#;

/// Defines `ts`: Redis `TIME` in milliseconds, as Node builds it.
const NOW_MS: &str = r#"
local t = redis.call("TIME")
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Defines `vt`: `ARGV[1]` seconds, or the queue's `vt` read like `parseInt`; `-2` if unusable.
const VT_ARG_OR_QUEUE: &str = r#"
local vt = tonumber(ARGV[1])
if not vt then
  local digits = string.match(cfg[1], "^%s*([-+]?%d+)")
  vt = digits and tonumber(digits)
  if not vt or vt < 0 or vt > 9999999 then return -2 end
end
"#;

/// `receiveMessage`: hide the first visible message for `vt` seconds and count the receive.
/// KEYS[1] = `{ns}:{qname}`; ARGV[1] = vt seconds or "" for the queue's.
const RECEIVE_BODY: &str = r#"
while true do
  local msg = redis.call("ZRANGEBYSCORE", key, "-inf", ts, "LIMIT", "0", "1")
  if #msg == 0 then return {} end
  local id = msg[1]
  local body = redis.call("HGET", q, id)
  if body then
    redis.call("ZADD", key, ts + vt * 1000, id)
    redis.call("HINCRBY", q, "totalrecv", 1)
    local rc = redis.call("HINCRBY", q, id .. ":rc", 1)
    local fr = false
    if rc ~= 1 then fr = redis.call("HGET", q, id .. ":fr") end
    if not fr then
      fr = ts
      redis.call("HSET", q, id .. ":fr", ts)
    end
    return {id, body, rc, fr}
  end
  redis.call("ZREM", key, id)
  redis.call("HDEL", q, id .. ":rc", id .. ":fr")
end
"#;

/// `popMessage`: take the first visible message out of the queue. KEYS[1] = `{ns}:{qname}`.
const POP_BODY: &str = r#"
while true do
  local msg = redis.call("ZRANGEBYSCORE", key, "-inf", ts, "LIMIT", "0", "1")
  if #msg == 0 then return {} end
  local id = msg[1]
  local body = redis.call("HGET", q, id)
  if body then
    redis.call("HINCRBY", q, "totalrecv", 1)
    local rc = redis.call("HINCRBY", q, id .. ":rc", 1)
    local fr = ts
    if rc ~= 1 then fr = redis.call("HGET", q, id .. ":fr") or ts end
    redis.call("ZREM", key, id)
    redis.call("HDEL", q, id, id .. ":rc", id .. ":fr")
    return {id, body, rc, fr}
  end
  redis.call("ZREM", key, id)
  redis.call("HDEL", q, id .. ":rc", id .. ":fr")
end
"#;

/// `changeMessageVisibility`: `1` changed, `0` no such message.
/// KEYS[1] = `{ns}:{qname}`; ARGV = id, vt seconds.
const CHANGE_VISIBILITY_BODY: &str = r#"
if not redis.call("ZSCORE", key, ARGV[1]) then return 0 end
redis.call("ZADD", key, ts + tonumber(ARGV[2]) * 1000, ARGV[1])
return 1
"#;

/// Checked visibility change: `1` changed, `0` no such message, `2` not ours (the receive
/// count moved on, or the message is visible again). ARGV = id, vt seconds, rc.
const CHANGE_VISIBILITY_CHECKED_BODY: &str = r#"
local score = redis.call("ZSCORE", key, ARGV[1])
if not score then return 0 end
local rc = redis.call("HGET", q, ARGV[1] .. ":rc")
if tonumber(rc) ~= tonumber(ARGV[3]) or tonumber(score) <= ts then return 2 end
redis.call("ZADD", key, ts + tonumber(ARGV[2]) * 1000, ARGV[1])
return 1
"#;

/// Checked delete, same codes. Like Node's `deleteMessage` it does not look at the queue
/// settings. KEYS[1] = `{ns}:{qname}`; ARGV = id, rc.
const DELETE_CHECKED: &str = r#"
local key = KEYS[1]
local q = key .. ":Q"
local t = redis.call("TIME")
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call("ZSCORE", key, ARGV[1])
if not score then return 0 end
local rc = redis.call("HGET", q, ARGV[1] .. ":rc")
if tonumber(rc) ~= tonumber(ARGV[2]) or tonumber(score) <= ts then return 2 end
redis.call("ZREM", key, ARGV[1])
redis.call("HDEL", q, ARGV[1], ARGV[1] .. ":rc", ARGV[1] .. ":fr")
return 1
"#;

/// `createQueue`: Node's five HSETNX (all of them run, which also completes a half-written
/// hash), `0` if `vt` was already set, else SADD to the queue set and `1`.
/// KEYS = `{ns}:{qname}:Q`, `{ns}:QUEUES`; ARGV = vt, delay, maxsize, qname.
const CREATE: &str = r#"
local t = redis.call("TIME")
local fresh = redis.call("HSETNX", KEYS[1], "vt", ARGV[1])
redis.call("HSETNX", KEYS[1], "delay", ARGV[2])
redis.call("HSETNX", KEYS[1], "maxsize", ARGV[3])
redis.call("HSETNX", KEYS[1], "created", t[1])
redis.call("HSETNX", KEYS[1], "modified", t[1])
if fresh == 0 then return 0 end
redis.call("SADD", KEYS[2], ARGV[4])
return 1
"#;

/// `getQueueAttributes`: the seven hash fields, ZCARD, and Node's second-granular ZCOUNT of
/// hidden messages. KEYS[1] = `{ns}:{qname}`.
const ATTRIBUTES_BODY: &str = r#"
local a = redis.call("HMGET", q, "vt", "delay", "maxsize", "totalrecv", "totalsent", "created", "modified")
local t = redis.call("TIME")
local msgs = redis.call("ZCARD", key)
local hidden = redis.call("ZCOUNT", key, t[1] .. "000", "+inf")
return {a[1], a[2], a[3], a[4], a[5], a[6], a[7], msgs, hidden}
"#;

/// `setQueueAttributes` after the existence check Node does: `modified` from `TIME`, then the
/// given fields. KEYS[1] = `{ns}:{qname}`; ARGV = field, value, ...
const SET_ATTRIBUTES_BODY: &str = r#"
local t = redis.call("TIME")
redis.call("HSET", q, "modified", t[1])
for i = 1, #ARGV, 2 do
  redis.call("HSET", q, ARGV[i], ARGV[i + 1])
end
return 1
"#;

/// The compiled scripts (their SHA1s are computed once per process).
pub(crate) struct Scripts {
    pub(crate) receive: Script,
    pub(crate) pop: Script,
    pub(crate) change_visibility: Script,
    pub(crate) change_visibility_checked: Script,
    pub(crate) delete_checked: Script,
    pub(crate) create: Script,
    pub(crate) attributes: Script,
    pub(crate) set_attributes: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let join = |parts: &[&str]| Script::new(&parts.concat());
    Scripts {
        receive: join(&[QUEUE_CHECK, VT_ARG_OR_QUEUE, NOW_MS, RECEIVE_BODY]),
        pop: join(&[QUEUE_CHECK, NOW_MS, POP_BODY]),
        change_visibility: join(&[QUEUE_CHECK, NOW_MS, CHANGE_VISIBILITY_BODY]),
        change_visibility_checked: join(&[QUEUE_CHECK, NOW_MS, CHANGE_VISIBILITY_CHECKED_BODY]),
        delete_checked: Script::new(DELETE_CHECKED),
        create: Script::new(CREATE),
        attributes: join(&[QUEUE_CHECK, ATTRIBUTES_BODY]),
        set_attributes: join(&[QUEUE_CHECK, SET_ATTRIBUTES_BODY]),
    }
});
