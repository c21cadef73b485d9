//! The CloudEvents 1.0.2 envelope: parsing the JSON event format and the HTTP
//! binary mode leniently, serializing strictly. Knows nothing of brokers,
//! HTTP servers or tokio.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why an event was refused. `attribute` names the offending attribute (or
/// JSON path within a batch) so the caller can point the user at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {reason}")]
pub struct EventError {
    pub attribute: String,
    pub reason: String,
}

impl EventError {
    fn new(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the attribute with the position in a batch, e.g. `/2/type`.
    fn at_index(self, index: usize) -> Self {
        Self {
            attribute: format!("/{index}/{}", self.attribute),
            reason: self.reason,
        }
    }
}

/// The payload of an event: JSON (`data`) or opaque bytes (`data_base64`).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Json(Value),
    Binary(Vec<u8>),
}

/// A validated CloudEvent. Required attributes are always present and
/// extension names always follow the spec's naming rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub time: Option<String>,
    pub subject: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub data: Option<Data>,
    /// Extension attributes: values are strings, integers or booleans.
    pub extensions: BTreeMap<String, Value>,
}

const SPEC_VERSION: &str = "1.0";

/// CloudEvents 1.0.2 §3.1.1: attribute names consist of lower-case ASCII
/// letters and digits only.
pub fn is_valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// True when a media type carries JSON (`application/json`, `*/*+json`, `text/json`).
/// A media type without its parameters, lower-cased: `application/json`.
pub fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

impl CloudEvent {
    /// A new event with a fresh UUIDv7 id and the current time; used when the
    /// bus wraps plain data into an event.
    pub fn wrap(source: String, ty: String, data: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            source,
            ty,
            time: Some(now_rfc3339()),
            subject: None,
            datacontenttype: Some("application/json".to_owned()),
            dataschema: None,
            data: Some(Data::Json(data)),
            extensions: BTreeMap::new(),
        }
    }

    /// Parses one event in the JSON event format (structured mode).
    pub fn from_json(value: Value) -> Result<Self, EventError> {
        let Value::Object(object) = value else {
            return Err(EventError::new("", "a CloudEvent must be a JSON object"));
        };
        Self::from_object(object)
    }

    /// Parses a JSON batch (`application/cloudevents-batch+json`). The batch
    /// is all or nothing: the first bad event fails it, named by its index.
    pub fn batch_from_json(value: Value) -> Result<Vec<Self>, EventError> {
        let Value::Array(items) = value else {
            return Err(EventError::new(
                "",
                "a batch must be a JSON array of CloudEvents",
            ));
        };
        if items.is_empty() {
            return Err(EventError::new("", "a batch must hold at least one event"));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| Self::from_json(item).map_err(|e| e.at_index(index)))
            .collect()
    }

    fn from_object(mut object: Map<String, Value>) -> Result<Self, EventError> {
        match object.remove("specversion") {
            Some(Value::String(v)) if v == SPEC_VERSION => {}
            Some(Value::String(v)) => {
                return Err(EventError::new(
                    "specversion",
                    format!("unsupported specversion {v:?}, expected \"1.0\""),
                ));
            }
            Some(_) => return Err(EventError::new("specversion", "must be the string \"1.0\"")),
            None => {
                return Err(EventError::new(
                    "specversion",
                    "required attribute is missing",
                ));
            }
        }
        let id = required_string(&mut object, "id")?;
        let source = required_string(&mut object, "source")?;
        let ty = required_string(&mut object, "type")?;
        let time = optional_string(&mut object, "time")?;
        if let Some(time) = &time {
            check_time(time)?;
        }
        let subject = optional_string(&mut object, "subject")?;
        let datacontenttype = optional_string(&mut object, "datacontenttype")?;
        let dataschema = optional_string(&mut object, "dataschema")?;
        let data = match (object.remove("data"), object.remove("data_base64")) {
            (Some(_), Some(Value::String(_))) => {
                return Err(EventError::new(
                    "data_base64",
                    "an event carries either data or data_base64, not both",
                ));
            }
            (Some(Value::Null) | None, None | Some(Value::Null)) => None,
            (Some(value), None | Some(Value::Null)) => Some(Data::Json(value)),
            (None, Some(Value::String(encoded))) => Some(Data::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| {
                        EventError::new("data_base64", format!("not valid base64: {e}"))
                    })?,
            )),
            (_, Some(_)) => return Err(EventError::new("data_base64", "must be a base64 string")),
        };
        let mut extensions = BTreeMap::new();
        for (name, value) in object {
            if !is_valid_attribute_name(&name) {
                return Err(EventError::new(
                    name,
                    "extension attribute names must be lower-case letters a-z and digits 0-9",
                ));
            }
            match value {
                Value::Null => {}
                Value::String(_) | Value::Bool(_) => {
                    extensions.insert(name, value);
                }
                Value::Number(ref n) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
                    extensions.insert(name, value);
                }
                _ => {
                    return Err(EventError::new(
                        name,
                        "extension values must be strings, booleans or 32-bit integers",
                    ));
                }
            }
        }
        Ok(Self {
            id,
            source,
            ty,
            time,
            subject,
            datacontenttype,
            dataschema,
            data,
            extensions,
        })
    }

    /// Parses the HTTP binary content mode: attributes from `ce-` headers
    /// (percent-encoded or raw UTF-8), the body as data. `headers` yields
    /// (lower-case name, value) pairs.
    pub fn from_binary<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, EventError> {
        let mut object = Map::new();
        for (name, raw) in headers {
            let Some(attribute) = name.strip_prefix("ce-") else {
                continue;
            };
            if matches!(attribute, "data" | "data_base64") {
                return Err(EventError::new(
                    name,
                    "the body carries the data in binary mode",
                ));
            }
            let decoded = percent_encoding::percent_decode(raw)
                .decode_utf8()
                .map_err(|_| {
                    EventError::new(name, "header value is not UTF-8 after percent-decoding")
                })?;
            object.insert(attribute.to_owned(), Value::String(decoded.into_owned()));
        }
        if let Some(content_type) = content_type {
            object.insert(
                "datacontenttype".to_owned(),
                Value::String(content_type.to_owned()),
            );
        }
        let mut event = Self::from_object(object)?;
        if !body.is_empty() {
            event.data = Some(match content_type {
                Some(ct) if is_json_media_type(ct) => {
                    Data::Json(serde_json::from_slice(body).map_err(|e| {
                        EventError::new("data", format!("body is not valid JSON: {e}"))
                    })?)
                }
                Some(ct) if ct.trim_start().to_ascii_lowercase().starts_with("text/") => {
                    match std::str::from_utf8(body) {
                        Ok(text) => Data::Json(Value::String(text.to_owned())),
                        Err(_) => Data::Binary(body.to_vec()),
                    }
                }
                // No Content-Type (the Python SDK's `to_binary` sends none
                // for JSON data): JSON if the body is JSON.
                None => match serde_json::from_slice(body) {
                    Ok(json) => Data::Json(json),
                    Err(_) => Data::Binary(body.to_vec()),
                },
                _ => Data::Binary(body.to_vec()),
            });
        }
        Ok(event)
    }

    /// Checks what every way in must respect, so that the stored form is one
    /// every reader accepts: no control characters in attributes (they would
    /// break headers, logs and SSE frames), and JSON data nested no deeper
    /// than [`MAX_DATA_DEPTH`] (the envelope adds a level, and JSON readers
    /// stop at 128).
    pub fn check_stored_form(&self) -> Result<(), EventError> {
        let attributes = [
            ("id", Some(&self.id)),
            ("source", Some(&self.source)),
            ("type", Some(&self.ty)),
            ("subject", self.subject.as_ref()),
        ];
        let extensions = self
            .extensions
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.as_str()?)));
        for (name, value) in attributes
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?.as_str())))
            .chain(extensions)
        {
            if value.chars().any(char::is_control) {
                return Err(EventError::new(name, "must not contain control characters"));
            }
        }
        if let Some(Data::Json(data)) = &self.data
            && depth(data) > MAX_DATA_DEPTH
        {
            return Err(EventError::new(
                "data",
                format!("is nested deeper than {MAX_DATA_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// The JSON data, when the event carries JSON (or none, as `null`).
    pub fn json_data(&self) -> Option<&Value> {
        match &self.data {
            Some(Data::Json(value)) => Some(value),
            Some(Data::Binary(_)) => None,
            None => Some(&Value::Null),
        }
    }

    /// Serializes in the JSON event format, attributes in a stable order.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("specversion".into(), SPEC_VERSION.into());
        object.insert("id".into(), self.id.clone().into());
        object.insert("source".into(), self.source.clone().into());
        object.insert("type".into(), self.ty.clone().into());
        let optional = [
            ("time", &self.time),
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                object.insert(name.into(), value.clone().into());
            }
        }
        for (name, value) in &self.extensions {
            object.insert(name.clone(), value.clone());
        }
        match &self.data {
            Some(Data::Json(value)) => {
                object.insert("data".into(), value.clone());
            }
            Some(Data::Binary(bytes)) => {
                object.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into(),
                );
            }
            None => {}
        }
        Value::Object(object)
    }

    /// The compact JSON encoding stored in the log and sent to subscribers.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("a JSON value always serializes")
    }
}

/// The parts of a stored event that routing and filtering need, read without
/// building the whole JSON tree.
#[derive(Debug, serde::Deserialize)]
pub struct EventHead {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub subject: Option<String>,
}

impl EventHead {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What a handler reads of an event besides its data: who it is, where it
/// routes, and the correlation and trace its outcomes carry on.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    pub correlationid: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Attributes {
    /// Of a stored event, each attribute on its own: one that is missing or
    /// not a string (extensions may be booleans or integers) reads as
    /// absent, and leaves the others as they are.
    pub fn of(event: &Value) -> Self {
        let text = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
        Self {
            id: text("id").unwrap_or_default(),
            source: text("source").unwrap_or_default(),
            ty: text("type").unwrap_or_default(),
            subject: text("subject"),
            correlationid: text("correlationid"),
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
        }
    }

    /// `{id, type, source, subject}`: what names the event in an outcome.
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": self.ty,
            "source": self.source,
            "subject": self.subject,
        })
    }

    /// An event this one caused (a handler's result or dead letter, a
    /// group's dead letter): it carries this one's subject, its id as
    /// `causationid`, its correlation and its trace.
    pub fn cause(&self, source: String, ty: &str, data: Value) -> CloudEvent {
        let mut event = CloudEvent::wrap(source, ty.to_owned(), data);
        event.subject = self.subject.clone();
        if !self.id.is_empty() {
            event
                .extensions
                .insert("causationid".into(), Value::from(self.id.as_str()));
            let correlation = self.correlationid.as_deref().unwrap_or(&self.id);
            event
                .extensions
                .insert("correlationid".into(), Value::from(correlation));
        }
        for (name, value) in [
            ("traceparent", &self.traceparent),
            ("tracestate", &self.tracestate),
        ] {
            if let Some(value) = value {
                event
                    .extensions
                    .insert(name.into(), Value::from(value.as_str()));
            }
        }
        event
    }

    /// Makes an event this one caused storable when it was too large:
    /// its copy of this event (`data.event`) becomes the summary, a
    /// target's answer (`data.body`) goes, and `data.truncated` says why.
    pub fn shrink(&self, caused: &mut CloudEvent, why: &str) {
        if let Some(Data::Json(Value::Object(data))) = &mut caused.data {
            if data.contains_key("event") {
                data.insert("event".into(), self.summary());
            }
            if data.contains_key("body") {
                data.insert("body".into(), Value::Null);
            }
            data.insert("truncated".into(), serde_json::json!({ "reason": why }));
        }
    }
}

/// An event in binary content mode, whatever the transport (HTTP `ce-*`
/// headers, Kafka `ce_*` headers): the context attributes as text, the
/// content type, and the data as the bytes of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryEvent {
    /// Every attribute but `data`, `data_base64` and `datacontenttype`, as
    /// text (strings as they are, other values as JSON).
    pub attributes: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// `data_base64` decoded; a string under a non-JSON content type as its
    /// text; any other data as JSON; `None` without data.
    pub data: Option<Vec<u8>>,
}

/// The binary content mode of a structured event (as stored): the one
/// encoder, beside [`CloudEvent::from_binary`], for every binding.
pub fn to_binary(event: &Value) -> BinaryEvent {
    let Some(attributes) = event.as_object() else {
        return BinaryEvent {
            attributes: Vec::new(),
            content_type: None,
            data: Some(event.to_string().into_bytes()),
        };
    };
    let content_type = attributes
        .get("datacontenttype")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let data = match (attributes.get("data"), attributes.get("data_base64")) {
        (_, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok(),
        (Some(Value::String(text)), _)
            if content_type
                .as_deref()
                .is_some_and(|ct| !is_json_media_type(ct)) =>
        {
            Some(text.clone().into_bytes())
        }
        (Some(data), _) => Some(data.to_string().into_bytes()),
        (None, _) => None,
    };
    let attributes = attributes
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "data" | "data_base64" | "datacontenttype"))
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect();
    BinaryEvent {
        attributes,
        content_type,
        data,
    }
}

/// Deepest nesting of arrays and objects accepted in an event's data.
pub const MAX_DATA_DEPTH: usize = 100;

/// Levels of arrays and objects in `value` (a scalar is 0), without
/// recursion, so that no input can exhaust the stack.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("the current time always formats as RFC 3339")
}

fn check_time(time: &str) -> Result<(), EventError> {
    OffsetDateTime::parse(time, &Rfc3339)
        .map(|_| ())
        .map_err(|_| EventError::new("time", format!("{time:?} is not an RFC 3339 timestamp")))
}

fn required_string(object: &mut Map<String, Value>, name: &str) -> Result<String, EventError> {
    match object.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(EventError::new(name, "must not be empty")),
        Some(_) => Err(EventError::new(name, "must be a string")),
        None => Err(EventError::new(name, "required attribute is missing")),
    }
}

fn optional_string(
    object: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<String>, EventError> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(EventError::new(name, "must not be empty when present")),
        Some(_) => Err(EventError::new(name, "must be a string")),
    }
}

/// Which events a reader takes (an SSE subscriber, a page, a handler): by
/// type, subject prefix and a CEL expression.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub types: Option<HashSet<String>>,
    pub subject_prefix: Option<String>,
    pub expr: Option<Expr>,
}

impl Filter {
    /// Whether an event of type `ty` with `subject` passes the type and
    /// subject parts (the expression needs the event: see
    /// [`Expr::passes_prepared`]).
    pub fn matches(&self, ty: &str, subject: Option<&str>) -> bool {
        self.types.as_ref().is_none_or(|types| types.contains(ty))
            && self
                .subject_prefix
                .as_deref()
                .is_none_or(|prefix| subject.is_some_and(|s| s.starts_with(prefix)))
    }

    /// Whether an event (as JSON) passes.
    pub fn matches_event(&self, event: &Value) -> bool {
        self.matches_head(&Attributes::of(event), event)
    }

    /// [`Filter::matches_event`] for a caller that has read the event's
    /// attributes already.
    pub fn matches_head(&self, head: &Attributes, event: &Value) -> bool {
        self.matches(&head.ty, head.subject.as_deref())
            && self.expr.as_ref().is_none_or(|expr| expr.passes(event))
    }
}

/// The standard CEL environment, built once (it registers every function).
static CEL: std::sync::LazyLock<std::sync::Arc<cel::Env>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(cel::Env::stdlib()));

/// A CEL expression over an event, compiled once: its attributes are
/// variables (`type`, `subject`, `source`, `time`, extensions, and `data`,
/// the payload: `data.amount > 100 && data.currency == "EUR"`), and so is
/// the whole, as `event`. An event passes when the expression is `true`;
/// one it cannot be evaluated on (a field the event lacks) does not pass.
#[derive(Clone)]
pub struct Expr {
    source: std::sync::Arc<str>,
    program: std::sync::Arc<cel::Program>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// Two expressions are the same when their text is (a consumer group's
/// filter is compared this way).
impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why an expression does not compile, and where (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter is not a valid CEL expression: at line {line}, column {column}: {message}")]
pub struct ExprError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Expr {
    /// The expression's text, shared: equal texts give equal verdicts on
    /// one event.
    pub fn shared_source(&self) -> &std::sync::Arc<str> {
        &self.source
    }

    pub fn compile(source: &str) -> Result<Self, ExprError> {
        if source.trim().is_empty() {
            return Err(ExprError {
                line: 1,
                column: 1,
                message: "the expression is empty".into(),
            });
        }
        let program = cel::Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExprError {
                line: first.map_or(1, |e| e.pos.0.max(1) as u64),
                column: first.map_or(1, |e| e.pos.1.max(1) as u64),
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
            }
        })?;
        Ok(Self {
            source: source.into(),
            program: std::sync::Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn passes(&self, event: &Value) -> bool {
        self.passes_prepared(&CelEvent::of(event))
    }

    /// Whether an event already converted for CEL passes (one conversion
    /// serves every expression evaluated on it: SSE subscribers share it).
    /// The expression reads its variables from the event in place.
    pub fn passes_prepared(&self, event: &CelEvent) -> bool {
        let mut context = cel::Context::with_env(std::sync::Arc::clone(&CEL));
        context.set_variable_resolver(event);
        matches!(self.program.execute(&context), Ok(cel::Value::Bool(true)))
    }
}

type CelVal = Box<dyn cel::common::value::Val>;

/// An event as CEL values, converted once: each attribute (and `data`) as
/// a variable, and the whole event as `event`.
#[derive(Debug)]
pub struct CelEvent {
    attributes: Vec<(String, CelVal)>,
    whole: CelVal,
}

impl CelEvent {
    pub fn of(event: &Value) -> Self {
        let values: Vec<(String, cel::Value)> = event
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| Some((name.clone(), cel::to_value(value).ok()?)))
            .collect();
        let whole = cel::Value::Map(cel::objects::Map {
            map: std::sync::Arc::new(
                values
                    .iter()
                    .map(|(name, value)| {
                        (
                            cel::objects::Key::String(std::sync::Arc::new(name.clone())),
                            value.clone(),
                        )
                    })
                    .collect(),
            ),
        });
        let attributes = values
            .into_iter()
            .filter_map(|(name, value)| Some((name, CelVal::try_from(value).ok()?)))
            .collect();
        Self {
            attributes,
            whole: CelVal::try_from(whole)
                .unwrap_or_else(|_| CelVal::try_from(cel::Value::Null).expect("null converts")),
        }
    }

    /// The stored event (CloudEvent JSON) as CEL values; `None` when it is
    /// not JSON.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Value>(payload)
            .ok()
            .map(|event| Self::of(&event))
    }
}

impl cel::context::VariableResolver for CelEvent {
    fn resolve<'b>(&'b self, variable: &str) -> Option<cel::common::value::CowVal<'b, 'b>> {
        let value = match variable {
            "event" => &self.whole,
            name => &self.attributes.iter().find(|(n, _)| n == name)?.1,
        };
        Some(cel::common::value::CowVal::Borrowed(value.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_read_each_attribute_on_its_own() {
        let event = serde_json::json!({
            "id": "e1", "source": "/s", "type": "t", "subject": "sub",
            "correlationid": 42, "traceparent": true,
        });
        let head = Attributes::of(&event);
        assert_eq!((head.id.as_str(), head.source.as_str()), ("e1", "/s"));
        assert_eq!(
            (head.ty.as_str(), head.subject.as_deref()),
            ("t", Some("sub"))
        );
        assert_eq!((head.correlationid, head.traceparent), (None, None));
    }

    #[test]
    fn binary_mode_carries_the_data_bytes_whatever_form_they_were_stored_in() {
        let base64 = serde_json::json!({
            "specversion": "1.0", "id": "b", "source": "/s", "type": "t",
            "datacontenttype": "application/octet-stream", "data_base64": "AAEC/w==",
        });
        let binary = to_binary(&base64);
        assert_eq!(binary.data, Some(vec![0, 1, 2, 255]));
        assert_eq!(
            binary.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert!(binary.attributes.contains(&("id".into(), "b".into())));
        assert!(!binary.attributes.iter().any(|(n, _)| n.starts_with("data")));
        let text = serde_json::json!({
            "specversion": "1.0", "id": "t", "source": "/s", "type": "t",
            "datacontenttype": "text/plain", "data": "hello", "count": 3,
        });
        let binary = to_binary(&text);
        assert_eq!(binary.data.as_deref(), Some(&b"hello"[..]));
        assert!(binary.attributes.contains(&("count".into(), "3".into())));
        let json = serde_json::json!({
            "specversion": "1.0", "id": "j", "source": "/s", "type": "t", "data": "quoted",
        });
        assert_eq!(to_binary(&json).data.as_deref(), Some(&b"\"quoted\""[..]));
    }
    use serde_json::json;

    fn minimal() -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
    }

    #[test]
    fn parses_and_round_trips_structured() {
        let mut value = minimal();
        value["data"] = json!({"a": 1});
        value["partitionkey"] = json!("k");
        value["time"] = json!("2026-01-02T03:04:05Z");
        let event = CloudEvent::from_json(value.clone()).unwrap();
        assert_eq!(event.extensions["partitionkey"], json!("k"));
        assert_eq!(event.to_json(), value);
    }

    #[test]
    fn names_the_missing_or_bad_attribute() {
        for (attribute, patch) in [
            ("specversion", json!({"specversion": "0.3"})),
            ("id", json!({"id": ""})),
            ("source", json!({"source": 5})),
            ("time", json!({"time": "yesterday"})),
            ("Bad_Name", json!({"Bad_Name": "x"})),
            ("nested", json!({"nested": {"a": 1}})),
        ] {
            let mut value = minimal();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            let err = CloudEvent::from_json(value).unwrap_err();
            assert_eq!(err.attribute, attribute, "{err}");
        }
        let mut value = minimal();
        value.as_object_mut().unwrap().remove("type");
        assert_eq!(CloudEvent::from_json(value).unwrap_err().attribute, "type");
    }

    #[test]
    fn batch_errors_name_the_index() {
        let err =
            CloudEvent::batch_from_json(json!([minimal(), {"specversion": "1.0"}])).unwrap_err();
        assert_eq!(err.attribute, "/1/id");
    }

    #[test]
    fn binary_mode_decodes_percent_encoding_and_json_body() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("ce-specversion", b"1.0"),
            ("ce-id", b"abc"),
            ("ce-source", b"/caf%C3%A9"),
            ("ce-type", b"order.created"),
            ("ce-traceparent", b"00-x"),
            ("content-length", b"9"),
        ];
        let event =
            CloudEvent::from_binary(headers, Some("application/json"), br#"{"n": 1}"#).unwrap();
        assert_eq!(event.source, "/café");
        assert_eq!(event.data, Some(Data::Json(json!({"n": 1}))));
        assert_eq!(event.extensions["traceparent"], json!("00-x"));
    }

    #[test]
    fn binary_data_round_trips_as_base64() {
        let mut value = minimal();
        value["data_base64"] = json!("AAEC");
        let event = CloudEvent::from_json(value.clone()).unwrap();
        assert_eq!(event.data, Some(Data::Binary(vec![0, 1, 2])));
        assert_eq!(event.to_json(), value);
    }

    #[test]
    fn cel_filters_over_events() {
        let event = serde_json::json!({
            "id": "e1", "source": "/s", "type": "order.created", "subject": "o/1",
            "data": {"amount": 150, "currency": "EUR"},
        });
        for (text, expected) in [
            ("type == 'order.created'", true),
            ("data.amount > 100 && data.currency == 'EUR'", true),
            ("data.amount > 200", false),
            ("subject.startsWith('o/')", true),
            ("event.id == 'e1'", true),
            // A field the event lacks: it does not pass (no error).
            ("data.missing > 1", false),
            // Not a boolean: it does not pass.
            ("data.amount", false),
        ] {
            let expr = Expr::compile(text).unwrap();
            assert_eq!(expr.passes(&event), expected, "{text}");
        }
        let err = Expr::compile("data.amount >").unwrap_err();
        assert_eq!((err.line, err.column), (1, 14), "{err}");
        assert!(Expr::compile("  ").is_err());
    }
}
