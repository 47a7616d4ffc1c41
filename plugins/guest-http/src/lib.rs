//! A small blocking HTTP client over `wasi:http/outgoing-handler`, shared by the reference
//! plugins. The gateway lets requests through only to hosts the plugin was granted; anything
//! else fails with `HttpRequestDenied`.

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

pub use wasi::http::types::Method as HttpMethod;

/// Largest response body read, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpFailure {
    /// The URL is not `http://host[:port]/path` or `https://...`.
    BadUrl(String),
    /// The gateway or the network refused: the `wasi:http` error code, as its name.
    Refused(String),
    /// The response body was larger than [`MAX_BODY`].
    TooLarge,
    /// Anything else in the exchange.
    Broken(String),
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpFailure::BadUrl(url) => write!(f, "bad url `{url}`"),
            HttpFailure::Refused(code) => write!(f, "request refused: {code}"),
            HttpFailure::TooLarge => write!(f, "response larger than {MAX_BODY} bytes"),
            HttpFailure::Broken(what) => write!(f, "http exchange failed: {what}"),
        }
    }
}

fn code_name(code: &ErrorCode) -> String {
    // `HttpRequestDenied`, `ConnectionRefused`, ...: the variant name without payload.
    let text = format!("{code:?}");
    let text = text.strip_prefix("ErrorCode::").unwrap_or(&text);
    text.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn broken(what: &str) -> HttpFailure {
    HttpFailure::Broken(what.to_owned())
}

/// Sends one request and reads the whole response.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpFailure> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(HttpFailure::BadUrl(url.to_owned()));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|_| broken("invalid header"))?;
    }
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|_| broken("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| broken("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| HttpFailure::BadUrl(url.to_owned()))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| HttpFailure::BadUrl(url.to_owned()))?;
    let outgoing_body = request.body().map_err(|_| broken("request body"))?;
    let future = outgoing_handler::handle(request, None)
        .map_err(|code| HttpFailure::Refused(code_name(&code)))?;
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|_| broken("request body stream"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| broken("writing the request body"))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None)
        .map_err(|code| HttpFailure::Refused(code_name(&code)))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| broken("response taken twice"))?
        .map_err(|code| HttpFailure::Refused(code_name(&code)))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| broken("response body"))?;
    let stream = incoming
        .stream()
        .map_err(|()| broken("response body stream"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(HttpFailure::TooLarge);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => {
                return Err(broken("reading the response body"));
            }
        }
    }
    Ok(Response { status, body })
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpFailure> {
    request(Method::Get, url, headers, None)
}

/// `POST url` with a JSON body.
pub fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    json: &[u8],
) -> Result<Response, HttpFailure> {
    let mut all = headers.to_vec();
    all.push(("content-type", "application/json"));
    request(Method::Post, url, &all, Some(json))
}

/// Percent-encodes one URL path segment.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
