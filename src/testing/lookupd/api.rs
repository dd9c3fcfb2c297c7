//! nsqlookupd's HTTP API (`nsqlookupd/http.go`): the same routes, parameters, status codes and
//! messages, over the registration DB; plus the `/lookup` faults.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use serde_json::json;

use super::{
    db::{Category, PeerInfo, Registration},
    LookupFault, State,
};
use crate::{
    protocol::{Channel, Topic},
    testing::{
        http::{Reply, Request, Response, Service},
        nsqd::NSQD_VERSION,
    },
};

/// The routes and their methods (`httprouter` answers 405 for a known path with another
/// method, 404 for an unknown path).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ping"),
    ("GET", "/info"),
    ("GET", "/lookup"),
    ("GET", "/topics"),
    ("GET", "/channels"),
    ("GET", "/nodes"),
    ("POST", "/topic/create"),
    ("POST", "/topic/delete"),
    ("POST", "/channel/create"),
    ("POST", "/channel/delete"),
    ("POST", "/topic/tombstone"),
];

pub(crate) struct LookupdApi(pub(crate) Arc<State>);

/// `PeerInfo` in `nsqlookupd/registration_db.go` at v1.3.0, field for field (the topology
/// fields of later nsq are not there).
fn peer_json(p: &PeerInfo) -> serde_json::Value {
    json!({
        "remote_address": p.remote_address,
        "hostname": p.hostname,
        "broadcast_address": p.broadcast_address,
        "tcp_port": p.tcp_port,
        "http_port": p.http_port,
        "version": p.version,
    })
}

impl Service for LookupdApi {
    fn handle(&self, request: Request) -> Response {
        self.0.record(request.line());
        let route = (request.method.as_str(), request.path.as_str());
        if route == ("GET", "/ping") {
            return Reply::Text("OK".into()).plain();
        }
        if route == ("GET", "/lookup") {
            if let Some(body) = self.0.lookup_answer() {
                return Response::new(200, body)
                    .header("X-NSQ-Content-Type", "nsq; version=1.0")
                    .header("Content-Type", "application/json; charset=utf-8");
            }
            if let Some(fault) = self.0.lookup_fault() {
                return faulty(fault, self.answer(&request));
            }
        }
        self.answer(&request)
    }
}

/// A broken `/lookup` answer; `Slow` delays the real one.
fn faulty(fault: LookupFault, real: Response) -> Response {
    match fault {
        LookupFault::Status(status) => Reply::err(status, "INTERNAL_ERROR").v1(),
        LookupFault::Garbage => Response::new(200, "<html>not json")
            .header("X-NSQ-Content-Type", "nsq; version=1.0")
            .header("Content-Type", "application/json; charset=utf-8"),
        LookupFault::Slow(delay) => real.delayed(delay),
        LookupFault::HangUp => Response::hang_up(),
    }
}

impl LookupdApi {
    fn answer(&self, request: &Request) -> Response {
        let reply = self.route(request);
        if self.0.legacy.load(Ordering::SeqCst) {
            reply.legacy()
        } else {
            reply.v1()
        }
    }

    fn route(&self, request: &Request) -> Reply {
        let (method, path) = (request.method.as_str(), request.path.as_str());
        if !ROUTES.contains(&(method, path)) {
            return if ROUTES.iter().any(|(_, p)| *p == path) {
                Reply::err(405, "METHOD_NOT_ALLOWED")
            } else {
                Reply::err(404, "NOT_FOUND")
            };
        }
        if path == "/info" {
            return Reply::Json(json!({ "version": NSQD_VERSION }));
        }
        // `http_api.NewReqParams`: a query that does not parse is INVALID_REQUEST.
        let Some(query) = request.query() else {
            return Reply::err(400, "INVALID_REQUEST");
        };
        let topic = query.get("topic");
        let state = &self.0;
        let now = Instant::now();
        let mut db = state.db();
        let need_topic = || topic.ok_or_else(|| Reply::err(400, "MISSING_ARG_TOPIC"));
        // `http_api.GetTopicChannelArgs`.
        let topic_channel = || -> Result<(&str, &str), Reply> {
            let topic = need_topic()?;
            Topic::new(topic).map_err(|_| Reply::err(400, "INVALID_ARG_TOPIC"))?;
            let channel = query
                .get("channel")
                .ok_or_else(|| Reply::err(400, "MISSING_ARG_CHANNEL"))?;
            Channel::new(channel).map_err(|_| Reply::err(400, "INVALID_ARG_CHANNEL"))?;
            Ok((topic, channel))
        };
        let result = match path {
            "/topics" => Ok(Reply::Json(json!({ "topics": db.topics() }))),
            "/channels" => need_topic().map(|t| Reply::Json(json!({ "channels": db.channels(t) }))),
            "/lookup" => need_topic().and_then(|t| match db.lookup(t, state.lifetimes, now) {
                None => Err(Reply::err(404, "TOPIC_NOT_FOUND")),
                Some((channels, producers)) => {
                    let producers: Vec<_> = producers.iter().map(peer_json).collect();
                    Ok(Reply::Json(
                        json!({ "channels": channels, "producers": producers }),
                    ))
                }
            }),
            "/nodes" => {
                let nodes: Vec<_> = db
                    .nodes(state.lifetimes, now)
                    .into_iter()
                    .map(|(peer, topics)| {
                        let mut node = peer_json(&peer);
                        let (names, tombstones): (Vec<_>, Vec<_>) = topics.into_iter().unzip();
                        node["tombstones"] = json!(tombstones);
                        node["topics"] = json!(names);
                        node
                    })
                    .collect();
                Ok(Reply::Json(json!({ "producers": nodes })))
            }
            "/topic/create" => need_topic().and_then(|t| {
                Topic::new(t).map_err(|_| Reply::err(400, "INVALID_ARG_TOPIC"))?;
                db.add_registration(Registration::new(Category::Topic, t, ""));
                Ok(Reply::Empty)
            }),
            "/topic/delete" => need_topic().map(|t| {
                db.delete_topic(t);
                Reply::Empty
            }),
            "/topic/tombstone" => need_topic().and_then(|t| {
                let node = query
                    .get("node")
                    .ok_or_else(|| Reply::err(400, "MISSING_ARG_NODE"))?;
                db.tombstone(t, node, now);
                Ok(Reply::Empty)
            }),
            "/channel/create" => topic_channel().map(|(t, c)| {
                db.add_registration(Registration::new(Category::Channel, t, c));
                db.add_registration(Registration::new(Category::Topic, t, ""));
                Reply::Empty
            }),
            "/channel/delete" => topic_channel().and_then(|(t, c)| {
                let found = db.find_registrations(Category::Channel, t, c);
                if found.is_empty() {
                    return Err(Reply::err(404, "CHANNEL_NOT_FOUND"));
                }
                found.iter().for_each(|k| db.remove_registration(k));
                Ok(Reply::Empty)
            }),
            _ => Err(Reply::err(404, "NOT_FOUND")),
        };
        result.unwrap_or_else(|err| err)
    }
}
