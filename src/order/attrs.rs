//! The attribute names ordertrace writes, in one place. The configuration checks (which attributes a
//! rule may not set) and the redactor's precomputed key rules are derived from these lists, so a new
//! attribute is added once.

/// The order a request or message touched.
pub const ORDER_ID: &str = "order.id";
/// The order's new status: only when the request or message that named it succeeded.
pub const ORDER_STATUS: &str = "order.status";
/// The status a request or message named when it did not succeed.
pub const ORDER_STATUS_ATTEMPTED: &str = "order.status.attempted";
/// The status the order had before this transition.
pub const ORDER_STATUS_PREVIOUS: &str = "order.status.previous";
/// Milliseconds the order spent in the previous status.
pub const ORDER_STAGE_DURATION_MS: &str = "order.stage.duration_ms";
/// The transition is not in the configured lifecycle (or the status is unknown).
pub const ORDER_TRANSITION_UNEXPECTED: &str = "order.transition.unexpected";
/// The span event marking when a status change took effect.
pub const STATUS_CHANGED_EVENT: &str = "order.status_changed";
/// The root span of an order's lifecycle trace.
pub const LIFECYCLE_ROOT_SPAN: &str = "order.lifecycle";
/// On a link: what the linked span is to this one (`request`, `caller`, `producer`).
pub const LINK_ROLE: &str = "ordertrace.link";
pub const ERROR_TYPE: &str = "error.type";
pub const SERVICE_NAME: &str = "service.name";

/// What a status rule sets on the request's or message's own span.
pub const ORDER_ATTRIBUTES: [&str; 3] = [ORDER_ID, ORDER_STATUS, ORDER_STATUS_ATTEMPTED];

/// What the transition judgement adds (see [`super::Judgement`]).
pub const LIFECYCLE_ATTRIBUTES: [&str; 3] = [
    ORDER_STATUS_PREVIOUS,
    ORDER_STAGE_DURATION_MS,
    ORDER_TRANSITION_UNEXPECTED,
];

/// The HTTP server attributes of the edge's spans.
pub const HTTP_ATTRIBUTES: [&str; 7] = [
    "http.request.method",
    "url.path",
    "url.query",
    "server.address",
    "server.port",
    "http.response.status_code",
    "http.route",
];

/// The edge's own attributes besides the HTTP and order ones.
pub const EDGE_ATTRIBUTES: [&str; 4] =
    [ERROR_TYPE, "envoy.response_flags", SERVICE_NAME, LINK_ROLE];

/// The string attributes of the AMQP filter's spans (a message's two spans carry about a dozen).
pub const MESSAGING_ATTRIBUTES: [&str; 16] = [
    "messaging.system",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.destination.name",
    "messaging.destination_publish.name",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.message.id",
    "messaging.message.conversation_id",
    "messaging.rabbitmq.vhost",
    "messaging.rabbitmq.confirm",
    "messaging.rabbitmq.outcome",
    "messaging.rabbitmq.delivery_latency_source",
    "messaging.rabbitmq.tx",
    "messaging.rabbitmq.blocked.reason",
    "messaging.rabbitmq.reply_text",
    "messaging.rabbitmq.consumer_tag",
];

/// Every key ordertrace itself emits, most frequent first.
pub fn emitted() -> impl Iterator<Item = &'static str> {
    HTTP_ATTRIBUTES
        .into_iter()
        .chain(ORDER_ATTRIBUTES)
        .chain(LIFECYCLE_ATTRIBUTES)
        .chain(EDGE_ATTRIBUTES)
        .chain(MESSAGING_ATTRIBUTES)
}

/// Attributes the HTTP filter sets itself; a route may not configure them (nor may a collector enrich
/// rule: the plugin sets the same ones).
pub fn reserved_by_edge(name: &str) -> bool {
    ORDER_ATTRIBUTES.contains(&name)
        || HTTP_ATTRIBUTES.contains(&name)
        || LIFECYCLE_ATTRIBUTES.contains(&name)
        || name == ERROR_TYPE
}

/// Attributes the AMQP filter sets itself; a message rule may not configure them.
pub fn reserved_by_amqp(name: &str) -> bool {
    ORDER_ATTRIBUTES.contains(&name) || name == ERROR_TYPE || name.starts_with("messaging.")
}
