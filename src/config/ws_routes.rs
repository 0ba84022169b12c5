//! WebSocket routes: the keys of an http route they cannot use, refused by name.

use super::*;

impl Validator {
    /// Keys a WebSocket route cannot use are refused by name: callers are authorized, keyed
    /// and validated once, on `$connect`; answers are never cached or mapped.
    pub(super) fn websocket_route(&mut self, rkey: &str, r: &Route) {
        let connect = r.key == "$connect";
        let v = &r.validation_spec;
        let validated = r.validation.is_some()
            || v.request_validator.is_some()
            || !v.request_models.is_empty()
            || !v.required_parameters.is_empty();
        let mapped =
            |f: fn(&crate::config::Transform) -> bool| r.transform.as_deref().is_some_and(f);
        let unused: [(&str, bool, &str); 9] = [
            (
                "authorizer",
                !connect && r.authorizer.is_some(),
                "only $connect is authorized",
            ),
            (
                "authorization",
                !connect && r.iam,
                "only $connect is authorized",
            ),
            (
                "api_key_required",
                !connect && r.api_key_required,
                "only $connect checks the key",
            ),
            (
                "cache",
                r.cache.is_some(),
                "WebSocket routes are not cached",
            ),
            (
                "request_validator",
                validated,
                "WebSocket routes are not validated",
            ),
            (
                "request_parameters",
                !r.request_parameters.is_empty(),
                "WebSocket routes are not mapped",
            ),
            (
                "response_parameters",
                !r.response_parameters.is_empty(),
                "WebSocket routes are not mapped",
            ),
            (
                "integration.request_templates",
                mapped(|t| !t.request.is_empty()),
                "WebSocket messages are not mapped: the integration gets the message as sent",
            ),
            (
                "integration.responses",
                mapped(|t| !t.responses.is_empty()),
                "WebSocket answers are not mapped: the client gets the integration's body as it came",
            ),
        ];
        for (key, set, why) in unused {
            if set {
                self.err(&format!("{rkey}.{key}"), format!("is not used here: {why}"));
            }
        }
    }
}
