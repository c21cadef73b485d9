//! Agents over the Model Context Protocol: `POST /mcp` (Streamable HTTP),
//! served with the official Rust SDK (`rmcp`) for revision 2026-07-28
//! (stateless: each request names its revision in `_meta`) and 2025-11-25
//! (`initialize`, `Mcp-Session-Id`).
//!
//! - [`tools`]: each tool is the HTTP API's operation under another name,
//!   with the same validation, errors and cursors, so an agent can move
//!   between MCP, SSE and pages with one position;
//! - [`resources`]: the topics, one topic (its head), one event, one group;
//! - [`notify`]: `subscriptions/listen` and `resources/subscribe` on a
//!   topic tell when its head moves, coalesced.
//!
//! Access: the guard in front of `/mcp` authenticates the token; then
//! [`authorize`] reads the JSON-RPC body once and checks what it asks for
//! ([`wants`]) against the token's scopes, so a missing scope is an HTTP
//! 403 with its `WWW-Authenticate` challenge, as for every other route.

mod notify;
mod resources;
mod tools;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;

use super::AppState;
use crate::auth::{Access, Missing};
use resources::ResourceUri;

/// What a request body to `/mcp` may hold besides one event at the
/// largest size a publish takes (the JSON-RPC envelope, `_meta`).
const ENVELOPE_BYTES: usize = 64 << 10;

fn body_limit(state: &AppState) -> usize {
    state.max_event_bytes + ENVELOPE_BYTES
}

/// The `/mcp` service. Hosts are not checked (Switchyard answers on any
/// name it is reached by); a request with an `Origin` header must come from
/// one of `--cors-origins` or from this server's own loopback address, so
/// that a web page elsewhere cannot drive a local Switchyard through the
/// browser (DNS rebinding: such a page's origin names the attacker's host,
/// even when that host resolves to 127.0.0.1).
pub(super) fn service(state: &Arc<AppState>) -> StreamableHttpService<Mcp, LocalSessionManager> {
    let mut origins = state.cors_origins.clone();
    origins.extend(
        ["localhost", "127.0.0.1", "[::1]"].map(|host| format!("http://{host}:{}", state.port)),
    );
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_json_response(true)
        .with_max_request_body_bytes(body_limit(state))
        .with_cancellation_token(state.shutdown.child_token());
    let state = Arc::clone(state);
    StreamableHttpService::new(
        move || {
            Ok(Mcp {
                state: Arc::clone(&state),
                subscriptions: Arc::default(),
                owner: Arc::default(),
            })
        },
        Default::default(),
        config,
    )
}

/// One MCP server: per request (2026-07-28) or per session (2025-11-25).
#[derive(Clone)]
pub(super) struct Mcp {
    state: Arc<AppState>,
    /// A legacy session's `resources/subscribe` watches.
    subscriptions: Arc<notify::Subscriptions>,
    /// The access of a legacy session's first request: later requests
    /// must present the same (a session id that leaked to a holder of
    /// another token is no use to them).
    owner: Arc<std::sync::OnceLock<Access>>,
}

/// What one MCP request needs of the caller's token.
#[derive(Debug, PartialEq)]
enum Want {
    Publish(String),
    Subscribe(String),
    Consume(String, String),
    Admin,
}

/// What a JSON-RPC request (`method`, `params`) needs. A request that
/// names no topic needs nothing here: the tool itself refuses it.
fn wants(method: &str, params: &Value) -> Vec<Want> {
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let uri_wants = |uri: Option<&str>| uri.and_then(ResourceUri::parse).and_then(|uri| uri.want());
    match method {
        "tools/call" => {
            let arguments = params.get("arguments").unwrap_or(&Value::Null);
            let topic = text(arguments, "topic");
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let want = match (name, topic) {
                ("publish_event", Some(topic)) => Some(Want::Publish(topic)),
                ("describe_topic" | "read_events" | "get_event", Some(topic)) => {
                    Some(Want::Subscribe(topic))
                }
                ("receive" | "ack" | "nack" | "extend" | "group_status", Some(topic)) => {
                    text(arguments, "group").map(|group| Want::Consume(topic, group))
                }
                ("handler_status" | "replay_dead_letters", _) => Some(Want::Admin),
                _ => None,
            };
            want.into_iter().collect()
        }
        "resources/read" | "resources/subscribe" => {
            uri_wants(params.get("uri").and_then(Value::as_str))
                .into_iter()
                .collect()
        }
        "subscriptions/listen" => params
            .pointer("/notifications/resourceSubscriptions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|uri| uri_wants(uri.as_str()))
            .collect(),
        _ => Vec::new(),
    }
}

fn check(access: &Access, wants: &[Want]) -> Result<(), Missing> {
    wants.iter().try_for_each(|want| match want {
        Want::Publish(topic) => access.may_publish(topic),
        Want::Subscribe(topic) => access.may_subscribe(topic),
        Want::Consume(topic, group) => access.may_consume(topic, group),
        Want::Admin => access.may_admin(),
    })
}

/// Between the guard and the MCP service: reads the body (bounded, a JSON
/// 413 past the limit) and answers 403 when the token lacks a scope that
/// a message in it needs.
pub(super) async fn authorize(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match super::publish::read_body(body, body_limit(&state)).await {
        Ok(bytes) => bytes,
        Err(err) => return err.into_response(),
    };
    if let (Some(access), Ok(message)) = (
        parts.extensions.get::<Access>(),
        serde_json::from_slice::<Value>(&bytes),
    ) {
        // One message per request (rmcp refuses batches).
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = message.get("params").unwrap_or(&Value::Null);
        if let Err(missing) = check(access, &wants(method, params)) {
            return super::guard::forbidden(&missing);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

impl Mcp {
    /// The caller's access, as the guard left it on the HTTP request; in a
    /// legacy session, the same as the session's first request's.
    fn access_of(&self, context: &RequestContext<RoleServer>) -> Result<Access, McpError> {
        let access = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Access>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("the request carries no access", None))?;
        if *self.owner.get_or_init(|| access.clone()) != access {
            return Err(McpError::invalid_request(
                "this session was opened with another token: open a session of your own",
                None,
            ));
        }
        Ok(access)
    }

    /// The caller's access, once it is checked again for `method` and
    /// `params` (as [`authorize`] did: a second look where the work is
    /// done, so that no path past the middleware runs unchecked).
    fn allowed(
        &self,
        context: &RequestContext<RoleServer>,
        method: &str,
        params: &Value,
    ) -> Result<Access, McpError> {
        let access = self.access_of(context)?;
        check(&access, &wants(method, params)).map_err(|missing| {
            McpError::invalid_request(
                missing.to_string(),
                Some(serde_json::json!({ "scope": missing.scope })),
            )
        })?;
        Ok(access)
    }
}

/// How long a resource answer may be reused, and by whom: topic
/// listings and heads change; answers depend on the token.
const RESOURCE_TTL_MS: u64 = 1000;

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Switchyard is an event bus. list_topics shows the topics and their event \
             types; read_events follows a topic from a cursor (keep next_cursor and pass it \
             as `after` next time: every event comes once, across restarts); publish_event \
             stores an event; receive/ack/nack/extend consume a topic as a queue. Subscribe \
             to switchyard://topics/{topic} to hear when new events arrive, then read_events.",
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&[ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25])
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.subscriptions.touch();
        Ok(ListToolsResult::with_all_items(tools::TOOLS.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.subscriptions.touch();
        let arguments = request.arguments.unwrap_or_default();
        let access = self.allowed(
            &context,
            "tools/call",
            &serde_json::json!({ "name": request.name, "arguments": arguments }),
        )?;
        if !tools::TOOLS.iter().any(|tool| tool.name == request.name) {
            let names: Vec<_> = tools::TOOLS.iter().map(|t| t.name.clone()).collect();
            return Err(McpError::invalid_params(
                format!("no tool {:?}", request.name),
                Some(serde_json::json!({ "tools": names })),
            ));
        }
        // rmcp moves the request's `_meta` into the context.
        let traceparent = context
            .meta
            .0
            .0
            .get("traceparent")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let call = tools::Call {
            state: &self.state,
            access: &access,
            arguments,
            traceparent,
        };
        Ok(tools::tool_result(call.run(&request.name).await)
            .await
            .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.subscriptions.touch();
        let access = self.access_of(&context)?;
        Ok(
            ListResourcesResult::with_all_items(resources::list(&self.state, &access))
                .with_ttl_ms(RESOURCE_TTL_MS)
                .with_cache_scope(CacheScope::Private),
        )
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(
            ListResourceTemplatesResult::with_all_items(resources::templates())
                .with_ttl_ms(RESOURCE_TTL_MS)
                .with_cache_scope(CacheScope::Private),
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.subscriptions.touch();
        let access = self.allowed(
            &context,
            "resources/read",
            &serde_json::json!({ "uri": request.uri }),
        )?;
        resources::read(&self.state, &access, &request.uri)
            .await
            .map(ReadResourceResponse::from)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(notify::accepted(&self.state, requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let uris = context.accepted().resource_subscriptions.clone();
        self.allowed(
            context.request_context(),
            "subscriptions/listen",
            &serde_json::json!({ "notifications": { "resourceSubscriptions": uris } }),
        )?;
        notify::listen(&self.state, context).await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.touch();
        self.allowed(
            &context,
            "resources/subscribe",
            &serde_json::json!({ "uri": request.uri }),
        )?;
        self.subscriptions
            .add(&self.state, &request.uri, context.peer.clone())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.touch();
        self.subscriptions.remove(&request.uri);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_name_the_scopes_they_need() {
        let call = |name: &str, arguments: Value| {
            wants(
                "tools/call",
                &json!({ "name": name, "arguments": arguments }),
            )
        };
        assert_eq!(
            call("publish_event", json!({ "topic": "orders" })),
            [Want::Publish("orders".into())]
        );
        assert_eq!(
            call("read_events", json!({ "topic": "orders" })),
            [Want::Subscribe("orders".into())]
        );
        assert_eq!(
            call("ack", json!({ "topic": "orders", "group": "billing" })),
            [Want::Consume("orders".into(), "billing".into())]
        );
        assert_eq!(call("replay_dead_letters", json!({})), [Want::Admin]);
        assert_eq!(call("list_topics", json!({})), []);
        assert_eq!(
            wants(
                "resources/read",
                &json!({ "uri": "switchyard://topics/orders/groups/billing" })
            ),
            [Want::Consume("orders".into(), "billing".into())]
        );
        assert_eq!(
            wants(
                "subscriptions/listen",
                &json!({ "notifications": { "resourceSubscriptions": ["switchyard://topics/a", "switchyard://topics/b"] } })
            ),
            [Want::Subscribe("a".into()), Want::Subscribe("b".into())]
        );
    }
}
