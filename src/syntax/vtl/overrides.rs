//! What a template may override, as Amazon API Gateway's `$context.requestOverride` and
//! `$context.responseOverride` name them: `#set($context.responseOverride.status = 400)`.
//! Each is set at most once (a second is an error, as Amazon answers 5XX), and applied once
//! the whole template has run.

/// One overridable part of the request or the answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Override {
    Status,
    ResponseHeader(String),
    RequestHeader(String),
    RequestQuery(String),
    RequestPath(String),
}

/// Overrides of the request (a request template's).
pub(crate) const OVERRIDES_REQUEST: u8 = 1;
/// Overrides of the answer (a response template's).
pub(crate) const OVERRIDES_RESPONSE: u8 = 2;

impl Override {
    pub(crate) fn bit(&self) -> u8 {
        match self {
            Override::Status | Override::ResponseHeader(_) => OVERRIDES_RESPONSE,
            _ => OVERRIDES_REQUEST,
        }
    }

    /// As a template writes it.
    pub(crate) fn name(&self) -> String {
        match self {
            Override::Status => "$context.responseOverride.status".into(),
            Override::ResponseHeader(n) => format!("$context.responseOverride.header.{n}"),
            Override::RequestHeader(n) => format!("$context.requestOverride.header.{n}"),
            Override::RequestQuery(n) => format!("$context.requestOverride.querystring.{n}"),
            Override::RequestPath(n) => format!("$context.requestOverride.path.{n}"),
        }
    }

    /// Whether `self` and `other` name one thing (header names without case).
    fn same(&self, other: &Override) -> bool {
        match (self, other) {
            (Override::ResponseHeader(a), Override::ResponseHeader(b))
            | (Override::RequestHeader(a), Override::RequestHeader(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

/// What a template's overrides set, in the order they ran.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Overrides {
    pub set: Vec<(Override, String)>,
}

impl Overrides {
    /// Notes `o = value`; `Err` when `o` was set already.
    pub(super) fn put(&mut self, o: Override, value: String) -> Result<(), String> {
        if self.set.iter().any(|(x, _)| x.same(&o)) {
            return Err(format!(
                "{} is overridden twice (an override is final)",
                o.name()
            ));
        }
        self.set.push((o, value));
        Ok(())
    }
}
