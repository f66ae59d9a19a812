//! The browser front door on the gRPC port: gRPC-Web (tonic-web, over HTTP/1.1 and HTTP/2) for
//! CalendarService, WaitingRoomService and BookingService, CORS for the origins in
//! `web.allowed_origins`, and the reference pages (`web.enabled`, [`pages`]).
//!
//! [`WebLayer`] is the outermost layer of the server, so a gRPC-Web call is translated to a
//! native gRPC call *before* `api::middleware` (span, rate limits, metrics) and the services
//! see it: the limits, the peer identity they count (the TCP peer, `x-client-id` only from a
//! trusted proxy), the admission token (`x-admission-token`) and the deadline (`grpc-timeout`,
//! read by tonic outside every layer) apply exactly as over native gRPC.
//!
//! What it decides by itself, before any service runs:
//! - a gRPC-Web call to any other service (AdminService, health, reflection) is answered
//!   UNIMPLEMENTED / `NOT_SERVED_OVER_GRPC_WEB`: operators and probes use native gRPC only;
//! - a call or preflight carrying an `Origin` that is neither the page's own (same host) nor in
//!   the allow-list gets HTTP 403 and no CORS headers, and changes nothing;
//! - a preflight (`OPTIONS`) from an allowed origin is answered 204 with the CORS headers;
//! - `GET`/`HEAD` of a page path serves the embedded page when pages are on.
//!
//! With `web.grpc_web` off (the default) every request passes through untouched, as before.

pub mod pages;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::api::error::ApiError;

/// The services a browser may call through gRPC-Web (`/package.Service/` path prefixes).
pub const EXPOSED_SERVICES: &[&str] = &[
    "slotd.v1.CalendarService",
    "slotd.v1.WaitingRoomService",
    "slotd.v1.BookingService",
];

/// Request headers a cross-origin page may send (answered in `access-control-allow-headers`).
/// `x-client-id` is not among them: only a trusted proxy names clients.
pub const ALLOWED_HEADERS: &str =
    "content-type, x-grpc-web, x-user-agent, grpc-timeout, x-admission-token, traceparent, tracestate";

/// Response headers a cross-origin page may read: the status and its details (BadRequest
/// field violations, ErrorInfo, RetryInfo) of a trailers-only answer.
pub const EXPOSED_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// How long a browser may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The front door's settings (from `web.*`, validated by `crate::config`).
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    /// Accept gRPC-Web (and HTTP/1.1 on the port).
    pub grpc_web: bool,
    /// Origins (`https://book.example.cn`) whose pages may call slotd cross-origin, lower case.
    pub allowed_origins: Vec<String>,
    /// Serve the reference pages (needs `grpc_web`).
    pub pages: bool,
}

impl WebOptions {
    /// Whether the port must speak HTTP/1.1 too.
    pub fn http1(&self) -> bool {
        self.grpc_web
    }
}

/// Why an origin in `web.allowed_origins` is not one.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("`{origin}` must start with https:// or http://"))?;
    if rest.is_empty() {
        return Err(format!("`{origin}` has no host"));
    }
    if origin.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`{origin}` must be lower case (browsers send it so)"
        ));
    }
    if rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return Err(format!(
            "`{origin}` must be scheme://host[:port] only: no path, trailing slash, query, user or wildcard"
        ));
    }
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let valid = if let Some(v6) = rest.strip_prefix('[') {
        // [::1]:8080
        match v6.split_once(']') {
            Some((addr, port)) => {
                addr.parse::<std::net::Ipv6Addr>().is_ok()
                    && (port.is_empty()
                        || port
                            .strip_prefix(':')
                            .is_some_and(|p| p.parse::<u16>().is_ok()))
            }
            None => false,
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => host_ok(host) && port.parse::<u16>().is_ok(),
            None => host_ok(rest),
        }
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not scheme://host[:port] (host: letters, digits, '-', '.'; port 0-65535)"
        ))
    }
}

#[derive(Clone)]
pub struct WebLayer {
    options: Arc<WebOptions>,
}

impl WebLayer {
    pub fn new(options: WebOptions) -> Self {
        Self {
            options: Arc::new(options),
        }
    }
}

impl<S> Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Web {
            inner,
            options: self.options.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Web<S> {
    inner: S,
    options: Arc<WebOptions>,
}

fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"))
}

/// `slotd.v1.BookingService` from `/slotd.v1.BookingService/BookAppointment`.
fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map(|(service, _)| service)
        .unwrap_or("")
}

fn exposed(path: &str) -> bool {
    EXPOSED_SERVICES.contains(&service_of(path))
}

/// How the request's `Origin` stands.
#[derive(Debug, PartialEq)]
enum Origin {
    /// No Origin header (not a browser, or a same-origin GET), or the page's own origin.
    Same,
    /// In `web.allowed_origins`: answered with CORS headers.
    Allowed(HeaderValue),
    Refused,
}

fn origin_of<B>(request: &Request<B>, options: &WebOptions) -> Origin {
    let Some(value) = request.headers().get(header::ORIGIN) else {
        return Origin::Same;
    };
    let Ok(text) = value.to_str() else {
        return Origin::Refused;
    };
    let text = text.to_ascii_lowercase();
    if options.allowed_origins.contains(&text) {
        return Origin::Allowed(value.clone());
    }
    // The pages slotd serves itself: Origin's host[:port] is the Host the browser asked.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let authority = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match (host, authority) {
        (Some(host), Some(authority)) if host.eq_ignore_ascii_case(authority) => Origin::Same,
        _ => Origin::Refused,
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full(Some(bytes::Bytes::from_static(
        text.as_bytes(),
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A body of one chunk (no http-body-util dependency for this).
pub(crate) struct Full(pub(crate) Option<bytes::Bytes>);

impl http_body::Body for Full {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A trailers-only gRPC-Web answer carrying `status` in its headers.
fn grpc_web_status(status: tonic::Status, content_type: Option<HeaderValue>) -> Response<Body> {
    let mut response: Response<Body> = status.into_http();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/grpc-web+proto")),
    );
    response
}

fn cors_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

fn preflight(origin: HeaderValue, request_method: Option<&HeaderValue>) -> Response<Body> {
    if request_method.is_none_or(|m| m.as_bytes() != b"POST") {
        return plain(
            StatusCode::FORBIDDEN,
            "gRPC-Web calls are POST: no other method is allowed\n",
        );
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(PREFLIGHT_MAX_AGE_SECS),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for Web<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone-and-swap keeps the instance poll_ready prepared (tower's convention).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let options = &self.options;
        if !options.grpc_web {
            return Box::pin(inner.oneshot(request));
        }
        let method = request.method().clone();
        if options.pages && (method == Method::GET || method == Method::HEAD) {
            if let Some(page) = pages::page(request.uri().path()) {
                return Box::pin(async move { Ok(page.response(method == Method::HEAD)) });
            }
        }
        let origin = origin_of(&request, options);
        let exposed_path = exposed(request.uri().path());
        if method == Method::OPTIONS {
            let response = match origin {
                Origin::Allowed(origin) if exposed_path => preflight(
                    origin,
                    request
                        .headers()
                        .get(header::ACCESS_CONTROL_REQUEST_METHOD),
                ),
                Origin::Allowed(_) => plain(
                    StatusCode::FORBIDDEN,
                    "only CalendarService, WaitingRoomService and BookingService are served over gRPC-Web\n",
                ),
                Origin::Same | Origin::Refused => plain(
                    StatusCode::FORBIDDEN,
                    "origin not in web.allowed_origins\n",
                ),
            };
            return Box::pin(async move { Ok(response) });
        }
        if !is_grpc_web(request.headers()) {
            // Native gRPC (and, over HTTP/1.1, tonic-web's 400 for anything else).
            return Box::pin(tonic_web::GrpcWebLayer::new().layer(inner).oneshot(request));
        }
        if origin == Origin::Refused {
            let response = plain(StatusCode::FORBIDDEN, "origin not in web.allowed_origins\n");
            return Box::pin(async move { Ok(response) });
        }
        let cors = match origin {
            Origin::Allowed(o) => Some(o),
            _ => None,
        };
        if !exposed_path {
            let status = tonic::Status::from(ApiError::NotServedOverGrpcWeb {
                service: service_of(request.uri().path()).to_owned(),
            });
            let mut response =
                grpc_web_status(status, request.headers().get(header::CONTENT_TYPE).cloned());
            if let Some(origin) = cors {
                cors_headers(response.headers_mut(), origin);
            }
            return Box::pin(async move { Ok(response) });
        }
        let call = tonic_web::GrpcWebLayer::new().layer(inner).oneshot(request);
        Box::pin(async move {
            let mut response = call.await?;
            if let Some(origin) = cors {
                cors_headers(response.headers_mut(), origin);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_scheme_host_and_port_only() {
        for ok in [
            "https://book.example.cn",
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://[::1]:443",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for bad in [
            "book.example.cn",
            "https://",
            "https://book.example.cn/",
            "https://book.example.cn/path",
            "https://*.example.cn",
            "*",
            "null",
            "https://Book.example.cn",
            "https://book.example.cn:99999",
            "https://user@book.example.cn",
            "ftp://book.example.cn",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_three_public_services_are_exposed() {
        assert!(exposed("/slotd.v1.BookingService/BookAppointment"));
        assert!(exposed("/slotd.v1.WaitingRoomService/Watch"));
        assert!(exposed("/slotd.v1.CalendarService/ListPosts"));
        assert!(!exposed("/slotd.v1.AdminService/OpenSlots"));
        assert!(!exposed("/grpc.health.v1.Health/Check"));
        assert!(!exposed(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!exposed("/slotd.v1.BookingServiceX/BookAppointment"));
        assert!(!exposed(""));
    }

    fn request(origin: Option<&str>, host: &str) -> Request<()> {
        let mut b = Request::builder().uri("/x").header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn same_host_is_same_origin_and_others_need_the_list() {
        let options = WebOptions {
            grpc_web: true,
            allowed_origins: vec!["https://book.example.cn".into()],
            pages: false,
        };
        assert_eq!(origin_of(&request(None, "a:1"), &options), Origin::Same);
        assert_eq!(
            origin_of(
                &request(Some("http://127.0.0.1:5000"), "127.0.0.1:5000"),
                &options
            ),
            Origin::Same
        );
        assert!(matches!(
            origin_of(
                &request(Some("https://book.example.cn"), "slotd:443"),
                &options
            ),
            Origin::Allowed(_)
        ));
        assert_eq!(
            origin_of(
                &request(Some("https://evil.example"), "slotd:443"),
                &options
            ),
            Origin::Refused
        );
        assert_eq!(
            origin_of(&request(Some("null"), "slotd:443"), &options),
            Origin::Refused
        );
    }
}
