//! Typed per-request state, built up as the phases run.

use std::time::Instant;

use crate::http::h1::{Framing, RequestHead};
use crate::route::path::Segments;
use crate::route::trie::Captures;
use crate::route::StageRef;

/// How far the request body has been read from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    /// Nothing has been read yet (or there is no body).
    Unread,
    /// All of it has been read (and forwarded or discarded).
    Done,
    /// Reading stopped part way: the connection cannot be reused.
    Broken,
}

/// One request's state.
pub struct RequestCtx {
    pub head: RequestHead,
    pub request_id: String,
    pub start: Instant,
    pub segs: Segments,
    pub body: BodyState,
    /// Set by routing.
    pub stage: Option<StageRef>,
    pub captures: Captures,
}

impl RequestCtx {
    pub fn new(head: RequestHead, request_id: String) -> RequestCtx {
        let body = if head.framing == Framing::None {
            BodyState::Done
        } else {
            BodyState::Unread
        };
        RequestCtx {
            head,
            request_id,
            start: Instant::now(),
            segs: Segments::default(),
            body,
            stage: None,
            captures: Captures::new(),
        }
    }

    /// The decoded value of path variable `i`, segments joined with '/'.
    pub fn path_var(&self, i: usize, mut each: impl FnMut(&str, bool)) {
        let (Some(c), Some(st)) = (self.captures.get(i), self.stage) else {
            return;
        };
        for k in c.start..c.end {
            each(self.segs.get(st.base_len + k as usize), k + 1 < c.end);
        }
    }
}
