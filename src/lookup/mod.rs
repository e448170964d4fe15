//! Per-user routing by the operator's own HTTP service
//! (`user_lookup_url`): on `USER`, a GET names the user's pool or backend.
//!
//! The pure parts, unit-tested without sockets: `url` (the template, its
//! placeholders and their encoding), `answer` (status and body to an
//! [`Outcome`]) and `cache` (what is kept, how long, the size bound).
//! `http` makes the request.

pub mod answer;
pub mod cache;
pub mod http;
pub mod url;

pub use answer::{BackendRef, Failure, Found, Outcome, Target};
pub use url::{Login, UrlTemplate};
