//! The reference pages (`web.enabled`): static files embedded in the binary with
//! `include_str!`, served by [`super::WebLayer`] for `GET`/`HEAD`. They call slotd over
//! gRPC-Web from the same origin, so they need no CORS entry.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tonic::body::Body;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file the pages consist of, by the path it is served at.
pub const PAGES: &[Page] = &[
    Page {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("pages/index.html"),
    },
    Page {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("pages/index.html"),
    },
    Page {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("pages/app.js"),
    },
    Page {
        path: "/assets/grpc-web.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("pages/grpc-web.js"),
    },
    Page {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("pages/style.css"),
    },
];

/// The page served at `path`, if any (`/` is the index).
pub fn page(path: &str) -> Option<&'static Page> {
    PAGES.iter().find(|p| p.path == path)
}

impl Page {
    /// The answer to `GET` (or `HEAD`: headers only) of this page.
    pub fn response(&self, head: bool) -> Response<Body> {
        let body = if head {
            Body::empty()
        } else {
            Body::new(super::Full(Some(bytes::Bytes::from_static(
                self.body.as_bytes(),
            ))))
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self' about:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}
