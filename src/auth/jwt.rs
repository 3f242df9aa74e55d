//! jwt_auth's check (the `jwt` feature).
//!
//! At startup the issuer's OpenID discovery document names the issuer and its key set (JWKS),
//! both fetched over HTTP with time limits and retried for a bounded time; a watchdog that
//! cannot get them does not start. A call then passes when its token is signed by one of those
//! keys (`keys`), names the issuer as `iss` and in `aud`, is within `exp`/`nbf` (one second of
//! leeway), and its `function` claim grants this function (`token`). A token naming a key the
//! set lacks refetches the set, at most once per `REFRESH_EVERY`, on the calling thread, with
//! nobody else waiting for it: that is how a rotated key is learnt.

use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::denial::Denial;
use super::fetch;
use super::keys::KeySet;
use super::token::{self, Rejected, Token};
use super::verified::{self, Verified};
use crate::config::JwtAuth;
use crate::deadlines::Deadlines;

/// The discovery documents the Go watchdog reads: the gateway's, or a port-forwarded one
/// (`jwt_auth_local`).
const GATEWAY_DISCOVERY: &str = "http://gateway.openfaas:8080/.well-known/openid-configuration";
const LOCAL_DISCOVERY: &str = "http://127.0.0.1:8000/.well-known/openid-configuration";
/// Where Kubernetes tells a pod its namespace.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long startup keeps trying to reach the issuer, and each attempt's limits.
const STARTUP_BUDGET: Duration = Duration::from_secs(10);
const ATTEMPT: fetch::Limits =
    fetch::Limits { connect: Duration::from_secs(3), total: Duration::from_secs(5) };
/// A key set is fetched again (for a token naming a key it lacks) at most this often.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(30);
const REFRESH: fetch::Limits =
    fetch::Limits { connect: Duration::from_secs(2), total: Duration::from_secs(3) };

pub(crate) struct Authenticator {
    issuer: String,
    jwks_uri: String,
    /// `namespace:name`, what the token's `function` claim must grant.
    reference: String,
    debug: bool,
    keys: RwLock<Arc<KeySet>>,
    /// When the key set was last fetched; held while a refetch runs.
    fetched: Mutex<Instant>,
    /// Tokens this key set verified already (only their signature check is skipped).
    verified: Verified,
    deadlines: Arc<Deadlines>,
}

/// Why startup could not get the issuer's documents; `Retry` may pass on another attempt.
enum StartError {
    Retry(String),
    Fatal(String),
}

impl Authenticator {
    /// Reads the function's identity, then the issuer's documents. The error is the cause for
    /// `error creating JWTAuthMiddleware: ...`.
    pub(crate) fn start(cfg: &JwtAuth, deadlines: Arc<Deadlines>) -> Result<Authenticator, String> {
        let namespace = match &cfg.namespace {
            Some(ns) => ns.clone(),
            None => std::fs::read_to_string(NAMESPACE_FILE)
                .map(|ns| ns.trim().to_string())
                .map_err(|e| format!("failed to get function namespace: open {NAMESPACE_FILE}: {e}"))?,
        };
        let name =
            cfg.name.clone().ok_or("failed to get function name: env variable 'OPENFAAS_NAME' not set")?;
        let discovery = match (&cfg.discovery_url, cfg.local) {
            (Some(url), _) => url.as_str(),
            (None, true) => LOCAL_DISCOVERY,
            (None, false) => GATEWAY_DISCOVERY,
        };
        let give_up = Instant::now() + STARTUP_BUDGET;
        let mut pause = Duration::from_millis(250);
        for attempt in 1.. {
            let limits = fetch::Limits {
                connect: ATTEMPT
                    .connect
                    .min(give_up.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(100)),
                total: ATTEMPT
                    .total
                    .min(give_up.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(100)),
            };
            match Self::fetch_all(discovery, &deadlines, limits, cfg.debug) {
                Ok((issuer, jwks_uri, set)) => {
                    return Ok(Authenticator {
                        issuer,
                        jwks_uri,
                        reference: format!("{namespace}:{name}"),
                        debug: cfg.debug,
                        keys: RwLock::new(Arc::new(set)),
                        fetched: Mutex::new(Instant::now()),
                        verified: Verified::new(),
                        deadlines,
                    });
                }
                Err(StartError::Fatal(why)) => return Err(why),
                Err(StartError::Retry(why)) => {
                    if Instant::now() + pause >= give_up {
                        return Err(format!(
                            "{why} (gave up after {attempt} attempts in {STARTUP_BUDGET:?})"
                        ));
                    }
                    log::warn!("JWT auth: {why}; trying again in {pause:?}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// The discovery document, then the key set it names.
    fn fetch_all(
        discovery: &str,
        deadlines: &Arc<Deadlines>,
        limits: fetch::Limits,
        debug: bool,
    ) -> Result<(String, String, KeySet), StartError> {
        let doc = fetch::get(discovery, deadlines, limits).map_err(StartError::Retry)?;
        let doc: Value = serde_json::from_slice(&doc)
            .map_err(|e| StartError::Fatal(format!("{discovery}: invalid JSON: {e}")))?;
        let field = |name: &str| {
            doc.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string).ok_or_else(
                || StartError::Fatal(format!("{discovery}: no \"{name}\" in the discovery document")),
            )
        };
        let (issuer, jwks_uri) = (field("issuer")?, field("jwks_uri")?);
        if debug {
            log::info!("[JWT Auth] Issuer: {issuer}\tJWKS URI: {jwks_uri}");
        }
        fetch::Url::parse(&jwks_uri).map_err(StartError::Fatal)?;
        let set = Self::fetch_keys(&jwks_uri, deadlines, limits).map_err(StartError::Retry)?;
        let set = set.map_err(StartError::Fatal)?;
        for skipped in &set.skipped {
            log::warn!("JWT auth: {jwks_uri}: left out {skipped}");
        }
        if set.keys.is_empty() {
            return Err(StartError::Fatal(format!("{jwks_uri}: the key set has no usable signing key")));
        }
        log::info!("JWT auth: issuer {issuer}, keys {:?}", set.kids());
        if debug {
            for kid in set.kids() {
                log::info!("[JWT Auth] Key: {kid}");
            }
        }
        Ok((issuer, jwks_uri, set))
    }

    /// Outer error: the GET failed; inner: the document is not a key set.
    fn fetch_keys(
        uri: &str,
        deadlines: &Arc<Deadlines>,
        limits: fetch::Limits,
    ) -> Result<Result<KeySet, String>, String> {
        let body = fetch::get(uri, deadlines, limits)?;
        Ok(KeySet::parse(&body).map_err(|e| format!("{uri}: {e}")))
    }

    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the call with this `Authorization` header may go on.
    pub(crate) fn check(&self, authorization: Option<&str>) -> Result<(), Denial> {
        let Some(compact) = authorization.and_then(bearer) else {
            return Err(Denial::unauthorized("Bearer must be present in Authorization header".into()));
        };
        let invalid = |why: String| Denial::unauthorized(format!("failed to parse JWT token: {why}"));
        let token = Token::parse(compact).map_err(|r| invalid(reason(r)))?;
        if self.debug {
            log::info!("[JWT Auth] Token: {}", token.describe());
        }
        let fingerprint = verified::fingerprint(compact);
        if let Some(generation) = self.verified.unverified(&fingerprint) {
            match token.verify(&self.keys()) {
                Ok(()) => self.verified.insert(fingerprint, generation),
                Err(Rejected::UnknownKid(kid)) => {
                    if !self.refresh() {
                        return Err(invalid(reason(Rejected::UnknownKid(kid))));
                    }
                    token.verify(&self.keys()).map_err(|r| invalid(reason(r)))?;
                }
                Err(r) => return Err(invalid(reason(r))),
            }
        }
        token.validate(&self.issuer, now()).map_err(|r| invalid(reason(r)))?;
        let (permissions, audience) = token.function_claim().map_err(|r| invalid(reason(r)))?;
        if !token::permits(&permissions, &audience, &self.reference) {
            return Err(Denial::forbidden());
        }
        Ok(())
    }

    /// Fetches the key set again unless that was done less than `REFRESH_EVERY` ago or is being
    /// done now; whether a new set came.
    fn refresh(&self) -> bool {
        let mut fetched = match self.fetched.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        if fetched.elapsed() < REFRESH_EVERY {
            return false;
        }
        *fetched = Instant::now();
        match Self::fetch_keys(&self.jwks_uri, &self.deadlines, REFRESH) {
            Ok(Ok(set)) if !set.keys.is_empty() => {
                log::info!("JWT auth: key set fetched again: keys {:?}", set.kids());
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                self.verified.renew();
                true
            }
            Ok(Ok(_)) => {
                log::warn!(
                    "JWT auth: {}: the key set has no usable signing key; keeping the old one",
                    self.jwks_uri
                );
                false
            }
            Ok(Err(why)) | Err(why) => {
                log::warn!("JWT auth: fetching the key set again failed: {why}; keeping the old one");
                false
            }
        }
    }
}

fn reason(r: Rejected) -> String {
    match r {
        Rejected::Invalid(why) => why,
        Rejected::UnknownKid(kid) => {
            format!("token is unverifiable: error while executing keyfunc: invalid kid: {kid}")
        }
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_required_in_any_case() {
        let table: &[(&str, Option<&str>)] = &[
            ("Bearer abc.def.ghi", Some("abc.def.ghi")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Bearer\tabc", Some("abc")),
            ("abc.def.ghi", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearerabc", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(bearer(value), *want, "{value:?}");
        }
    }
}
