//! Who may do what: bearer JWTs (the convention of Mercure and Centrifugo)
//! whose `switchyard` claim lists the topic patterns a token may publish to
//! and subscribe to, the consumer groups it may consume, and whether it may
//! administer. Verified once per token and cached until it expires.
//!
//! Without a key configured every request is allowed: that is the loopback
//! development mode, and `serve` refuses a non-loopback address in it unless
//! told `--allow-anonymous`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The query parameter that carries a token where headers cannot (EventSource).
pub const QUERY_PARAMETER: &str = "access_token";
/// The cookie that carries a token for browsers.
pub const COOKIE: &str = "switchyard_token";
/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// The shortest HS256 secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;
/// Verified tokens kept; the cache starts over when full.
const CACHE_ENTRIES: usize = 4096;

/// A name pattern: `orders` (exactly), `orders.*` (every name that starts
/// with `orders.`), or `*` (every name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

/// The `switchyard` claim: what a token may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// Topics it may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Pattern>,
    /// Topics it may read: SSE streams and pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<Pattern>,
    /// Consumer groups it may receive, ack and nack in (on topics it may
    /// subscribe to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consume: Vec<Pattern>,
    /// Replay, handler status, group status of any group, metrics.
    #[serde(default)]
    pub admin: bool,
}

/// The claims Switchyard reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default)]
    pub switchyard: Scopes,
}

/// What a request asks to do, as the router declares it per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: health, readiness, webhooks (signed by their sender).
    Open,
    /// Any valid token (what it sees may still be filtered).
    Token,
    /// Publish to the `{topic}` of the path.
    Publish,
    /// Read the `{topic}` of the path.
    Subscribe,
    /// Read `{topic}` in consumer group `{group}`.
    Consume,
    /// Administer.
    Admin,
    /// `/metrics`: admin unless configured open.
    Metrics,
}

/// Who is asking, as established by the authentication step. Two
/// accesses are equal when they allow the same things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No key is configured: everything is allowed.
    Anyone,
    /// A verified token.
    Token(Arc<Scopes>),
}

/// A refusal: what was missing, for a 403 that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The scope: publish, subscribe, consume or admin.
    pub scope: &'static str,
    /// The topic or group it was needed for.
    pub name: Option<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, self.scope) {
            (Some(name), "consume") => write!(f, "this token may not consume in group {name:?}"),
            (Some(name), "publish") => write!(f, "this token may not publish to {name:?}"),
            (Some(name), scope) => write!(f, "this token may not {scope} {name:?}"),
            (None, _) => write!(f, "this needs a token with \"admin\": true"),
        }
    }
}

impl Access {
    fn scopes(&self) -> Option<&Scopes> {
        match self {
            Access::Anyone => None,
            Access::Token(scopes) => Some(scopes),
        }
    }

    fn check(
        &self,
        scope: &'static str,
        list: fn(&Scopes) -> &[Pattern],
        name: &str,
    ) -> Result<(), Missing> {
        match self.scopes() {
            None => Ok(()),
            Some(s) if s.admin || list(s).iter().any(|p| p.matches(name)) => Ok(()),
            Some(_) => Err(Missing {
                scope,
                name: Some(name.to_owned()),
            }),
        }
    }

    pub fn may_publish(&self, topic: &str) -> Result<(), Missing> {
        self.check("publish", |s| &s.publish, topic)
    }

    pub fn may_subscribe(&self, topic: &str) -> Result<(), Missing> {
        self.check("subscribe", |s| &s.subscribe, topic)
    }

    pub fn may_consume(&self, topic: &str, group: &str) -> Result<(), Missing> {
        self.may_subscribe(topic)?;
        self.check("consume", |s| &s.consume, group)
    }

    pub fn may_admin(&self) -> Result<(), Missing> {
        match self.scopes() {
            Some(s) if !s.admin => Err(Missing {
                scope: "admin",
                name: None,
            }),
            _ => Ok(()),
        }
    }

    /// Whether a topic is worth showing to this token at all.
    pub fn sees_topic(&self, topic: &str) -> bool {
        self.may_subscribe(topic).is_ok() || self.may_publish(topic).is_ok()
    }
}

/// Why a presented token was not accepted (401).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

/// The key material that tokens are checked against.
#[derive(Debug, Clone, Default)]
pub struct KeyConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// A PEM public key (RSA, EC or Ed25519) or a JWKS file.
    pub public_key: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
}

impl KeyConfig {
    pub fn is_set(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some()
    }
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

struct Cached {
    scopes: Arc<Scopes>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

impl Verifier {
    /// Loads the keys; `Ok(None)` when none is configured.
    pub fn load(config: &KeyConfig) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "the HS256 secret is shorter than {MIN_SECRET_BYTES} bytes; use a long random one (e.g. `openssl rand -hex 32`)"
                ));
            }
            let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
            keys.push(Key { kid: None, key });
        }
        if let Some(path) = &config.public_key {
            keys.extend(load_public_keys(path)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// The `iss` tokens must carry, when one is configured.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Verifies `token`, from the cache when it was verified before.
    pub fn verify(&self, token: &str) -> Result<Arc<Scopes>, Invalid> {
        let now = now_seconds();
        if let Some(cached) = self.cache.lock().expect("cache lock").get(token) {
            return check_times(cached.exp, cached.nbf, now).map(|()| Arc::clone(&cached.scopes));
        }
        let claims = self.decode(token)?;
        check_times(claims.exp, claims.nbf, now)?;
        let scopes = Arc::new(claims.switchyard);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            token.into(),
            Cached {
                scopes: Arc::clone(&scopes),
                exp: claims.exp,
                nbf: claims.nbf,
            },
        );
        Ok(scopes)
    }

    /// Seconds until a verified token expires (`None`: it does not).
    pub fn expires_in(&self, token: &str) -> Option<u64> {
        let cache = self.cache.lock().expect("cache lock");
        let exp = cache.get(token)?.exp?;
        Some(exp.saturating_sub(now_seconds()))
    }

    fn decode(&self, token: &str) -> Result<Claims, Invalid> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| Invalid(format!("the token is not a JWT: {err}")))?;
        let family = header.alg.family();
        let key = self
            .keys
            .iter()
            .filter(|k| k.key.family() == family)
            .find(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .ok_or_else(|| {
                Invalid(format!(
                    "no configured key verifies {:?} tokens{}",
                    header.alg,
                    header
                        .kid
                        .as_deref()
                        .map(|kid| format!(" with kid {kid:?}"))
                        .unwrap_or_default()
                ))
            })?;
        let mut validation = Validation::new(header.alg);
        // Times are checked by `check_times`, here and on cache hits alike.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|err| Invalid(describe(&err)))
    }
}

fn describe(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidIssuer => "the token's iss is not the configured issuer".into(),
        ErrorKind::InvalidAudience => "the token's aud is not the configured audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim:?} claim"),
        ErrorKind::Json(e) => format!("the token's claims are not valid: {e}"),
        _ => format!("the token is not valid: {err}"),
    }
}

fn check_times(exp: Option<u64>, nbf: Option<u64>, now: u64) -> Result<(), Invalid> {
    if let Some(exp) = exp
        && now > exp + LEEWAY_SECONDS
    {
        return Err(Invalid("the token has expired".into()));
    }
    if let Some(nbf) = nbf
        && now + LEEWAY_SECONDS < nbf
    {
        return Err(Invalid("the token is not valid yet (nbf)".into()));
    }
    Ok(())
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn load_public_keys(path: &Path) -> Result<Vec<Key>, String> {
    let bytes =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_slice(&bytes)
            .map_err(|err| format!("{} is not a JWKS document: {err}", path.display()))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter(|jwk| jwk.is_supported())
            .map(|jwk| {
                DecodingKey::from_jwk(jwk)
                    .map(|key| Key {
                        kid: jwk.common.key_id.clone(),
                        key,
                    })
                    .map_err(|err| format!("{}: a key is not usable: {err}", path.display()))
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err(format!("{} holds no usable key", path.display()));
        }
        return Ok(keys);
    }
    let key = DecodingKey::from_rsa_pem(&bytes)
        .or_else(|_| DecodingKey::from_ec_pem(&bytes))
        .or_else(|_| DecodingKey::from_ed_pem(&bytes))
        .map_err(|_| {
            format!(
                "{} is neither a PEM public key (RSA, EC P-256/P-384, Ed25519) nor a JWKS file",
                path.display()
            )
        })?;
    Ok(vec![Key { kid: None, key }])
}

/// Mints an HS256 token (`switchyard token`).
pub fn mint(secret: &str, claims: &Claims) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).map_err(|e| e.to_string())
}

/// Claims for a token valid from now for `ttl`.
pub fn claims_for(scopes: Scopes, subject: Option<String>, ttl: std::time::Duration) -> Claims {
    let now = now_seconds();
    Claims {
        sub: subject,
        iss: None,
        iat: Some(now),
        nbf: None,
        exp: Some(now + ttl.as_secs()),
        switchyard: scopes,
    }
}

/// The header the console sends with every write it makes with the
/// cookie (see [`token_of`]).
pub const CONSOLE_HEADER: &str = "x-switchyard-console";

/// Finds the token of a request: `Authorization: Bearer`, else (for reads
/// only: GET and HEAD) the cookie, else the `access_token` query parameter.
/// A cookie or a link rides along on requests that other sites make a
/// browser send, so neither may publish, consume or administer: that takes
/// the header, which no other site can set (cross-site request forgery).
/// The one exception is the console's own page (served by this server):
/// its writes carry the cookie with the [`CONSOLE_HEADER`] and an `Origin`
/// naming this very host (see [`console_write`]).
pub fn token_of(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Option<String> {
    use axum::http::{Method, header};
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let read = method == Method::GET || method == Method::HEAD;
    if !read && !console_write(headers) {
        return None;
    }
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned());
    if !read {
        return from_cookie;
    }
    from_cookie.or_else(|| {
        query?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == QUERY_PARAMETER)
            .map(|(_, value)| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    })
}

/// A write sent by a page of this very server (the console): it carries
/// the [`CONSOLE_HEADER`], which a page of another origin cannot send
/// without a CORS preflight, and an `Origin` whose host is the `Host` the
/// request was sent to. The second matters because `SameSite=Lax` still
/// sends the cookie from a page on another port of the same host (same
/// site, other origin), and a listed CORS origin may pass the preflight.
fn console_write(headers: &axum::http::HeaderMap) -> bool {
    use axum::http::header;
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if !headers.contains_key(CONSOLE_HEADER) {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(json: serde_json::Value) -> Access {
        Access::Token(Arc::new(serde_json::from_value(json).unwrap()))
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_everything() {
        assert!(Pattern::new("orders").matches("orders"));
        assert!(!Pattern::new("orders").matches("orders.eu"));
        assert!(Pattern::new("orders.*").matches("orders.eu"));
        assert!(Pattern::new("orders.*").matches("orders.eu.north"));
        assert!(!Pattern::new("orders.*").matches("orders"));
        assert!(!Pattern::new("orders.*").matches("ordersx"));
        assert!(Pattern::new("*").matches("anything"));
    }

    #[test]
    fn scopes_grant_only_what_they_name() {
        let access = scopes(serde_json::json!({
            "publish": ["orders"], "subscribe": ["shop.*"], "consume": ["billing"]
        }));
        assert!(access.may_publish("orders").is_ok());
        assert_eq!(access.may_publish("audit").unwrap_err().scope, "publish");
        assert!(access.may_subscribe("shop.eu").is_ok());
        assert!(access.may_subscribe("orders").is_err());
        assert!(access.may_consume("shop.eu", "billing").is_ok());
        assert_eq!(
            access.may_consume("orders", "billing").unwrap_err().scope,
            "subscribe"
        );
        assert_eq!(
            access.may_consume("shop.eu", "other").unwrap_err().scope,
            "consume"
        );
        assert!(access.may_admin().is_err());
        assert!(Access::Anyone.may_admin().is_ok());
        let admin = scopes(serde_json::json!({"admin": true}));
        assert!(admin.may_publish("x").is_ok());
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let secret = "0123456789abcdef0123456789abcdef";
        let verifier = Verifier::load(&KeyConfig {
            secret: Some(secret.into()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let scopes = Scopes {
            publish: vec![Pattern::new("orders")],
            ..Default::default()
        };
        let good = mint(
            secret,
            &claims_for(scopes.clone(), None, std::time::Duration::from_secs(60)),
        )
        .unwrap();
        assert_eq!(*verifier.verify(&good).unwrap(), scopes);
        // From the cache, too.
        assert_eq!(*verifier.verify(&good).unwrap(), scopes);
        let mut old = claims_for(scopes, None, std::time::Duration::ZERO);
        old.exp = Some(now_seconds() - 3600);
        let expired = mint(secret, &old).unwrap();
        assert!(verifier.verify(&expired).unwrap_err().0.contains("expired"));
        let forged = mint("another secret of enough length", &old).unwrap();
        assert!(
            verifier
                .verify(&forged)
                .unwrap_err()
                .0
                .contains("signature")
        );
    }

    #[test]
    fn tokens_are_found_in_header_cookie_or_query() {
        use axum::http::{HeaderMap, HeaderValue, Method, header};
        let get = &Method::GET;
        let mut headers = HeaderMap::new();
        assert_eq!(
            token_of(get, &headers, Some("access_token=a%2Eb&x=1")).as_deref(),
            Some("a.b")
        );
        // Writes take the header only (no cross-site request forgery).
        assert_eq!(
            token_of(&Method::POST, &headers, Some("access_token=a")),
            None
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; switchyard_token=c.d"),
        );
        assert_eq!(token_of(get, &headers, None).as_deref(), Some("c.d"));
        assert_eq!(token_of(&Method::POST, &headers, None), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer e.f"),
        );
        assert_eq!(
            token_of(&Method::POST, &headers, None).as_deref(),
            Some("e.f")
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(token_of(get, &headers, None), None);
    }

    #[test]
    fn the_console_writes_with_the_cookie_only_from_its_own_origin() {
        use axum::http::{HeaderMap, HeaderValue, Method, header};
        let post = &Method::POST;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("switchyard_token=c.d"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("bus.example:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://bus.example:8080"),
        );
        // Same origin, but no console header (a plain form post): refused.
        assert_eq!(token_of(post, &headers, None), None);
        headers.insert(CONSOLE_HEADER, HeaderValue::from_static("1"));
        assert_eq!(token_of(post, &headers, None).as_deref(), Some("c.d"));
        // Never the query parameter for a write.
        headers.remove(header::COOKIE);
        assert_eq!(token_of(post, &headers, Some("access_token=a")), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("switchyard_token=c.d"),
        );
        // Another port of the same host is the same site, not the same origin.
        for origin in ["http://bus.example:3000", "null", "http://evil.example"] {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
            assert_eq!(token_of(post, &headers, None), None, "{origin}");
        }
        headers.remove(header::ORIGIN);
        assert_eq!(token_of(post, &headers, None), None);
    }
}
