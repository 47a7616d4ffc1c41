//! Who is calling: short-lived bearer tokens for people (issued after an argon2 password check,
//! rate-limited), and A2A callers (API key plus the client certificate of the TLS connection).

use crate::error::ApiError;
use crate::{ApiState, Peer};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{Name, User};
use gatehouse_store::USERS;
use gatehouse_workflow::{A2aPeer, Actor};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<sha2::Sha256>;

const TOKEN_PREFIX: &str = "ght1.";

/// What a token says. Signed with HMAC-SHA256 under a key derived from the master key, so
/// tokens survive a restart and a token from another installation is refused.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user.
    u: String,
    /// Expiry, Unix milliseconds.
    e: u64,
    /// Token id (for the audit trail).
    i: String,
}

/// Issues and checks people's bearer tokens.
pub struct TokenKeys {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).finish()
    }
}

/// An issued token.
pub struct Issued {
    pub token: String,
    pub id: String,
    pub expires: Timestamp,
}

impl TokenKeys {
    pub fn new(key: Zeroizing<[u8; 32]>, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    fn mac(&self) -> Result<HmacSha256, ApiError> {
        HmacSha256::new_from_slice(self.key.as_ref()).map_err(|_| ApiError::internal())
    }

    /// A token for `user`, valid for the configured lifetime or `shorter`, whichever ends first.
    pub fn issue(&self, user: &Name, shorter: Option<Duration>) -> Result<Issued, ApiError> {
        let ttl = shorter.map_or(self.ttl, |s| s.min(self.ttl));
        let expires = Timestamp(Timestamp::now().0 + ttl.as_millis() as u64);
        let id = random_id();
        let claims = Claims {
            u: user.to_string(),
            e: expires.0,
            i: id.clone(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| ApiError::internal())?;
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.mac()?;
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(Issued {
            token: format!("{TOKEN_PREFIX}{payload}.{signature}"),
            id,
            expires,
        })
    }

    /// The CSRF token of portal session `id`: only the holder of the session's answer knows it.
    pub fn csrf(&self, id: &str) -> Result<String, ApiError> {
        let mut mac = self.mac()?;
        mac.update(b"gatehouse-portal-csrf:");
        mac.update(id.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `given` is portal session `id`'s CSRF token (compared in constant time).
    fn csrf_matches(&self, id: &str, given: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(given.trim()) else {
            return false;
        };
        let Ok(mut mac) = self.mac() else {
            return false;
        };
        mac.update(b"gatehouse-portal-csrf:");
        mac.update(id.as_bytes());
        mac.verify_slice(&given).is_ok()
    }

    /// The claims of a valid, unexpired token.
    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = || ApiError::unauthorized("the token is invalid or expired; log in again");
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
        let (payload, signature) = rest.split_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac()?;
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| invalid())?;
        if Timestamp::now().0 >= claims.e {
            return Err(invalid());
        }
        Ok(claims)
    }
}

/// 8 random bytes, hex: a token's id in the audit trail (not a secret).
fn random_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A person, authenticated by a bearer token.
pub struct Person {
    pub actor: Actor,
}

impl FromRequestParts<ApiState> for Person {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let peer = peer_of(parts)?;
        // The portal's cookie, when no bearer token is given.
        let portal = authorization(parts).is_none().then(|| {
            parts
                .headers
                .get(axum::http::header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|c| crate::portal::cookie(c, crate::portal::COOKIE))
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        });
        let (claims, via) = match portal.flatten() {
            Some(token) => (portal_claims(parts, state, &token)?, "portal"),
            None => {
                let header = authorization(parts).ok_or_else(|| {
                    ApiError::unauthorized("missing `Authorization: Bearer <token>`; log in first")
                })?;
                let token = header.strip_prefix("Bearer ").ok_or_else(|| {
                    ApiError::unauthorized("expected `Authorization: Bearer <token>`")
                })?;
                (state.inner.tokens.verify(token.trim())?, "api")
            }
        };
        let user: User = state
            .inner
            .store
            .get(&USERS, &claims.u)
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
        Ok(Person {
            actor: Actor {
                user,
                client: peer.addr,
                via: "api".into(),
                session_id: format!("{via}-{}", claims.i),
                authenticated_with: vec!["password".into()],
            },
        })
    }
}

/// The claims of a portal session's cookie: a valid token of a session this gateway holds, not
/// idle too long, and for a request that changes something, the session's CSRF token.
fn portal_claims(parts: &Parts, state: &ApiState, token: &str) -> Result<Claims, ApiError> {
    let claims = state.inner.tokens.verify(token)?;
    match state.inner.portal.touch(&claims.i) {
        Ok(()) => {}
        Err(crate::portal::Refused::Idle) => {
            return Err(ApiError::unauthorized(
                "the session was idle too long; sign in again",
            ));
        }
        Err(crate::portal::Refused::Unknown) => {
            return Err(ApiError::unauthorized(
                "the session has ended; sign in again",
            ));
        }
        Err(crate::portal::Refused::Store(e)) => return Err(ApiError::store(e)),
    }
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe {
        let given = parts
            .headers
            .get(crate::portal::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !state.inner.tokens.csrf_matches(&claims.i, given) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a request that changes something needs the session's `X-CSRF-Token`",
            ));
        }
    }
    Ok(claims)
}

/// An A2A caller: the API key from `Authorization: A2A <key>` and the TLS peer.
pub struct A2aCaller {
    pub key: Zeroizing<String>,
    pub peer: A2aPeer,
}

impl FromRequestParts<ApiState> for A2aCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &ApiState) -> Result<Self, ApiError> {
        let peer = peer_of(parts)?;
        let key = authorization(parts)
            .and_then(|v| v.strip_prefix("A2A "))
            .map(|k| Zeroizing::new(k.trim().to_string()))
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: A2A <api key>`"))?;
        Ok(A2aCaller {
            key,
            peer: A2aPeer {
                addr: peer.addr,
                cert_sha256: peer.cert_sha256.clone(),
            },
        })
    }
}

/// The `Authorization` header, when there is one in text.
fn authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn peer_of(parts: &Parts) -> Result<Peer, ApiError> {
    parts.extensions.get::<Peer>().cloned().ok_or_else(|| {
        tracing::error!("request without connection info");
        ApiError::internal()
    })
}

/// Failed logins per client address and per user name: after `MAX_FAILURES` within `WINDOW`,
/// further attempts are refused with 429 until the window passes.
#[derive(Default)]
pub struct LoginLimiter {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    by_user: Mutex<HashMap<String, (u32, Instant)>>,
}

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);
const MAX_TRACKED: usize = 10_000;

fn blocked<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, (u32, Instant)>>,
    key: &K,
) -> Option<u64> {
    let map = map.lock().ok()?;
    let (count, since) = map.get(key)?;
    let elapsed = since.elapsed();
    (*count >= MAX_FAILURES && elapsed < WINDOW).then(|| (WINDOW - elapsed).as_secs().max(1))
}

fn note<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, (u32, Instant)>>, key: K) {
    let Ok(mut map) = map.lock() else { return };
    if map.len() >= MAX_TRACKED {
        map.retain(|_, (_, since)| since.elapsed() < WINDOW);
    }
    let entry = map.entry(key).or_insert((0, Instant::now()));
    if entry.1.elapsed() >= WINDOW {
        *entry = (0, Instant::now());
    }
    entry.0 += 1;
}

impl LoginLimiter {
    /// Refuses when the address or the user name had too many failures lately.
    pub fn check(&self, ip: IpAddr, user: &str) -> Result<(), ApiError> {
        if let Some(wait) =
            blocked(&self.by_ip, &ip).or_else(|| blocked(&self.by_user, &user.to_string()))
        {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many failed logins; try again in {wait} s"),
            );
            e.retry_after = Some(wait);
            return Err(e);
        }
        Ok(())
    }

    pub fn failed(&self, ip: IpAddr, user: &str) {
        note(&self.by_ip, ip);
        note(&self.by_user, user.to_string());
    }

    pub fn succeeded(&self, user: &str) {
        if let Ok(mut map) = self.by_user.lock() {
            map.remove(user);
        }
    }
}
