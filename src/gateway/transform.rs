//! Mapping templates at run time: the request template picked by content type (or the
//! passthrough behaviour's 415), rendered into the body the integration gets; and the
//! integration response picked by the integration's status, whose template renders the
//! answer. Routes without templates pay one branch.

use std::sync::Arc;

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::ctx::{RequestCtx, RouteMatch};
use crate::config::{HeaderSource, Passthrough, Transform};
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::h1::Framing;
use crate::http::write::Answer;
use crate::shard::ShardSnap;
use crate::syntax::vtl::{self, Env, Template};

/// What templates read besides the payload: `$input.params()`, `$context`, `$stageVariables`.
#[derive(Debug)]
pub(crate) struct TemplateVars {
    params: Value,
    context: Value,
    stage_variables: Value,
}

fn failed(why: String) -> Error {
    Error::downstream(Kind::TemplateFailed(why.into()), "mapping template")
}

/// Runs the route's request template (reading the body), and keeps what its response
/// templates need. For a mock, the template's `{"statusCode": N}` is the status its
/// integration responses are chosen by (as Amazon API Gateway's mock integration does):
/// returned when it says one.
pub(crate) async fn request(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: RouteMatch,
    http: bool,
) -> Result<Option<u16>, Error> {
    let route = &ss.snap.config.apis[m.api].routes[m.route];
    let Some(t) = &route.transform else {
        return Ok(None);
    };
    let mut mock_status = None;
    let ct = super::validate::media_type(ctx);
    let template = t.request.iter().find(|(c, _)| *c == *ct).map(|(_, t)| t);
    let refuse = match (template, t.passthrough) {
        (Some(_), _) | (None, Passthrough::WhenNoMatch) => false,
        (None, Passthrough::WhenNoTemplates) => !t.request.is_empty(),
        (None, Passthrough::Never) => true,
    };
    if refuse {
        return Err(Error::downstream(
            Kind::UnsupportedMediaType,
            "no request template",
        ));
    }
    // Only what the route's templates read is built.
    let reads = t
        .request
        .iter()
        .map(|(_, t)| t)
        .chain(
            t.responses
                .iter()
                .flat_map(|r| r.templates.iter().map(|(_, t)| t)),
        )
        .fold(0u8, |acc, t| {
            acc | [
                vtl::READS_PARAMS,
                vtl::READS_CONTEXT,
                vtl::READS_STAGE_VARIABLES,
            ]
            .into_iter()
            .filter(|b| t.reads(*b))
            .fold(0, |x, b| x | b)
        });
    let reads = t
        .responses
        .iter()
        .flat_map(|r| &r.headers)
        .fold(reads, |acc, (_, h)| match h {
            HeaderSource::Context(_) => acc | vtl::READS_CONTEXT,
            HeaderSource::StageVariable(_) => acc | vtl::READS_STAGE_VARIABLES,
            _ => acc,
        });
    let vars = vars(ss, conn, ctx, m, reads);
    if let Some(template) = template {
        let len = super::validate::read_body(ss, conn, ctx).await?;
        let body = super::validate::decoded(ss, ctx, &conn.buf[..len])?.into_owned();
        let (parsed, parse_error) = match parse_if(
            template.reads(vtl::READS_JSON),
            ctx.body_json.as_deref(),
            &body,
        ) {
            Ok(v) => (v, None),
            Err(e) => (None, Some(e)),
        };
        // A template that reads the body's JSON when there is none gets Amazon's 400, with the
        // parser's why (`$input.json` rendered `null`, `$input.path` its own text): when it
        // reads it, not when it only could in a branch not taken.
        let not_json =
            (template.reads(vtl::READS_JSON) && ctx.body_json.is_none() && parsed.is_none())
                .then(|| parse_error.unwrap_or_default());
        let json = ctx.body_json.as_deref().or(parsed.as_ref());
        let (out, overrides) = render(template, &body, (json, not_json.as_deref()), &vars)?;
        if http {
            let params = &ss.snap.config.apis[m.api].routes[m.route].params;
            request_overrides(ctx, &overrides, params)?;
            // The integration gets the rendered body, with its length.
            let rest = conn.buf.split_off(len);
            let mut buf = BytesMut::with_capacity(out.len() + rest.len());
            buf.extend_from_slice(out.as_bytes());
            buf.extend_from_slice(&rest);
            conn.buf = buf;
            ctx.body_rendered = ctx.head.framing == Framing::None;
            ctx.head.framing = Framing::Length(out.len() as u64);
            // Waiting in the buffer to be sent, as a body read with the head is (a request
            // that came without one was done with its body; one too big to go out with the
            // head is streamed from here).
            ctx.body = super::ctx::BodyState::Unread;
            // The template read the body decoded, and what it wrote is not encoded: the
            // client's `Content-Encoding` does not go with it (as Amazon's).
            ctx.edits
                .get_or_insert_with(Default::default)
                .drop
                .push("content-encoding".into());
        } else {
            mock_status = serde_json::from_str::<Value>(&out)
                .ok()
                .and_then(|v| v.get("statusCode").and_then(Value::as_u64))
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (200..=599).contains(s) && *s != 204 && *s != 304);
        }
    }
    if !t.responses.is_empty() {
        if http {
            // The answer is read whole and rendered: asked for as it is, not in a coding the
            // client's `Accept-Encoding` names (the template would read gzip), unless the
            // route's own mapping sets the header.
            let e = ctx.edits.get_or_insert_with(Default::default);
            if !e.drops(b"accept-encoding") {
                e.drop.push("accept-encoding".into());
                e.add.extend_from_slice(b"accept-encoding: identity\r\n");
            }
        }
        ctx.transform = Some((t.clone(), Box::new(vars)));
    }
    Ok(mock_status)
}

/// Renders `t` over `body` and its JSON (when it is JSON and a template reads it).
fn render(
    t: &Template,
    body: &[u8],
    (json, not_json): (Option<&Value>, Option<&str>),
    vars: &TemplateVars,
) -> Result<(String, vtl::Overrides), Error> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(body),
    };
    let env = Env {
        body: &text,
        json,
        not_json,
        params: &vars.params,
        context: &vars.context,
        stage_variables: &vars.stage_variables,
    };
    t.render_overriding(&env)
        .map_err(|e| match e.strip_prefix(vtl::NOT_JSON) {
            Some(why) => Error::downstream(
                Kind::BodyNotJson(why.chars().take(200).collect::<String>().into()),
                "request template",
            ),
            None => failed(e),
        })
}

/// A request template's `$context.requestOverride.header.NAME`, `.querystring.NAME` and
/// `.path.NAME`, as edits of what goes to the integration (after the route's parameter
/// mapping: an override is final).
fn request_overrides(
    ctx: &mut RequestCtx,
    o: &vtl::Overrides,
    params: &[String],
) -> Result<(), Error> {
    for (what, value) in &o.set {
        match what {
            // A path variable of the route (one it lacks is checked at load). Its `/` stay
            // separators, so a `.` or `..` segment is refused as a mapped path's is: an
            // upstream that resolves it would serve a path the route does not name.
            vtl::Override::RequestPath(name) => {
                // Decoded, and `\` a separator too (IIS and some servlet containers read it
                // as one), as a mapped path is checked.
                if crate::syntax::path::has_dot_segment(value.as_bytes()) {
                    return Err(Error::downstream(
                        Kind::BadRequest(crate::syntax::path::PathError::DotSegment.message()),
                        "requestOverride.path",
                    ));
                }
                if let Some(i) = params.iter().position(|p| p == name) {
                    let e = ctx.edits.get_or_insert_with(Default::default);
                    e.path_vars.push((i, value.clone()));
                }
            }
            vtl::Override::RequestHeader(name) => {
                let e = ctx.edits.get_or_insert_with(Default::default);
                let lower = name.to_ascii_lowercase();
                remove_line(&mut e.add, name.as_bytes());
                if !e.drop.contains(&lower) {
                    e.drop.push(lower);
                }
                e.add.extend_from_slice(name.as_bytes());
                e.add.extend_from_slice(b": ");
                e.add.extend(
                    value
                        .trim()
                        .bytes()
                        .filter(|&b| crate::syntax::is_value_byte(b)),
                );
                e.add.extend_from_slice(b"\r\n");
            }
            vtl::Override::RequestQuery(name) => {
                let current = match ctx.edits.as_ref().and_then(|e| e.query.clone()) {
                    Some(q) => q,
                    None => ctx.head.query_bytes().unwrap_or_default().to_vec(),
                };
                let mut q = Vec::with_capacity(current.len() + name.len() + value.len() + 2);
                for pair in current.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                    let n = pair.split(|&b| b == b'=').next().unwrap_or_default();
                    if super::authorizer::percent_decode(n) == name.as_bytes() {
                        continue;
                    }
                    if !q.is_empty() {
                        q.push(b'&');
                    }
                    q.extend_from_slice(pair);
                }
                if !q.is_empty() {
                    q.push(b'&');
                }
                crate::syntax::path::encode_component(name.as_bytes(), &mut q);
                q.push(b'=');
                crate::syntax::path::encode_component(value.as_bytes(), &mut q);
                ctx.edits.get_or_insert_with(Default::default).query = Some(q);
            }
            // Refused at load; a response template's are applied to its answer.
            _ => {}
        }
    }
    Ok(())
}

/// Removes the header lines named `name` from `lines` (`Name: value\r\n` each).
fn remove_line(lines: &mut Vec<u8>, name: &[u8]) {
    let mut kept = Vec::with_capacity(lines.len());
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let n = line.split(|&b| b == b':').next().unwrap_or_default();
        if !n.eq_ignore_ascii_case(name) {
            kept.extend_from_slice(line);
        }
    }
    *lines = kept;
}

/// `body` parsed as JSON when `needed` and `json` (a parse made before) is not there.
/// An empty payload (or only white space) reads as `{}`, as Amazon's does (a GET through the
/// method-request passthrough template gets `"body-json" : {}`).
/// The body's JSON when a template reads it and it was not parsed before; `Err` says why it
/// is not JSON (nested past the parser's 128 levels included: it said nothing).
fn parse_if(needed: bool, json: Option<&Value>, body: &[u8]) -> Result<Option<Value>, String> {
    if !needed || json.is_some() {
        return Ok(None);
    }
    if body.trim_ascii().is_empty() {
        return Ok(Some(Value::Object(Map::new())));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn vars(ss: &ShardSnap, conn: &Conn, ctx: &RequestCtx, m: RouteMatch, reads: u8) -> TemplateVars {
    let api = &ss.snap.config.apis[m.api];
    let stage = &api.stages[m.stage];
    let mut out = TemplateVars {
        params: Value::Null,
        context: Value::Null,
        stage_variables: Value::Null,
    };
    if reads & vtl::READS_STAGE_VARIABLES != 0 {
        out.stage_variables = Value::Object(
            stage
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    if reads & (vtl::READS_PARAMS | vtl::READS_CONTEXT) == 0 {
        return out;
    }
    let route = &api.routes[m.route];
    let mut path = Map::new();
    for (i, name) in route.params.iter().enumerate() {
        let mut v = String::new();
        ctx.path_var(i, |s, more| {
            v.push_str(s);
            if more {
                v.push('/');
            }
        });
        path.insert(name.clone(), Value::String(v));
    }
    let mut query = Map::new();
    for pair in ctx
        .head
        .query_bytes()
        .unwrap_or_default()
        .split(|&b| b == b'&')
    {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let k = String::from_utf8_lossy(&super::authorizer::percent_decode(k)).into_owned();
        let v = String::from_utf8_lossy(&super::authorizer::percent_decode(v)).into_owned();
        query.entry(k).or_insert(Value::String(v));
    }
    let mut header = Map::new();
    for (n, v) in ctx.head.headers() {
        let n = String::from_utf8_lossy(n).into_owned();
        header
            .entry(n)
            .or_insert_with(|| Value::String(String::from_utf8_lossy(v).into_owned()));
    }
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
    out.params = json!({ "path": path, "querystring": query, "header": header });
    out.context = json!({
            "requestId": ctx.request_id.as_str(),
            "extendedRequestId": ctx.request_id.as_str(),
            "stage": crate::config::stage_of(&stage.name),
            "apiId": api.name,
            "httpMethod": text(ctx.head.method_bytes()),
            "resourcePath": super::responses::resource_path(&route.key),
            "routeKey": route.key,
            "path": text(ctx.head.path_bytes()),
            "domainName": text(ctx.domain_name()),
            "protocol": ctx.protocol(),
            "identity": {
                "sourceIp": ctx.source_ip(&conn.peer_ip),
                "userAgent": text(ctx.head.header(b"user-agent").unwrap_or_default()),
            },
    });
    // When the request arrived, as the access log says it (`requestTime` in its form).
    let since = std::time::Instant::now().saturating_duration_since(ctx.timings.received);
    let epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.saturating_sub(since).as_millis() as u64);
    let mut clf = Vec::with_capacity(26);
    crate::observe::access::clf_time_into(epoch_ms, &mut clf);
    out.context["requestTimeEpoch"] = json!(epoch_ms);
    out.context["requestTime"] = text(&clf);
    // Amazon's names Tollgate has no value for are empty, as Amazon's are where they do not
    // apply: a ported template reads "" rather than its own text.
    for name in ["accountId", "resourceId"] {
        out.context[name] = json!("");
    }
    let id = &mut out.context["identity"];
    for name in [
        "accountId",
        "apiKey",
        "apiKeyId",
        "accessKey",
        "caller",
        "cognitoAuthenticationProvider",
        "cognitoAuthenticationType",
        "cognitoIdentityId",
        "cognitoIdentityPoolId",
        "principalOrgId",
        "user",
        "userArn",
    ] {
        id[name] = json!("");
    }
    if let Some(k) = &ctx.principal.api_key {
        id["apiKeyId"] = json!(&*k.id);
        // The key the check took, from the API's api_key_source.
        let value = super::api_key::presented(ss, ctx, m.api)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        id["apiKey"] = json!(value);
    }
    if let Some(crate::gateway::ctx::Authorized::Iam(key)) = &ctx.principal.authorizer {
        id["accessKey"] = json!(&**key);
    }
    // Without an authorizer, its principal is an empty string as the other names that do not
    // apply are (a template read `$context.authorizer.principalId` as its own text).
    out.context["authorizer"] =
        authorizer(ctx).unwrap_or_else(|| json!({"principalId": "", "claims": {}}));
    out
}

/// `$context.authorizer`: what the route's authorizer established, as Amazon API Gateway's
/// templates read it (`claims.NAME` of a JWT; `principalId` and each `context` value of an
/// external authorizer; `principalId`, the access key id, of a SigV4 caller).
fn authorizer(ctx: &RequestCtx) -> Option<Value> {
    use crate::gateway::ctx::Authorized;
    Some(match ctx.principal.authorizer.as_ref()? {
        Authorized::Jwt(v) => json!({ "claims": v.claims }),
        Authorized::External(d) => {
            let mut m = d.context.clone();
            if let Some(p) = &d.principal_id {
                m.insert("principalId".into(), Value::String(p.clone()));
            }
            Value::Object(m)
        }
        Authorized::Iam(key) => json!({ "principalId": &**key }),
    })
}

/// What the integration answered, as integration responses read it.
pub(crate) struct Answered<'a> {
    pub status: u16,
    /// Its header lines (name, value).
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
    /// The body already parsed (a mock's fixed body).
    pub json: Option<&'a Value>,
}

/// A mapped header value longer than this is left out.
const MAX_MAPPED_HEADER: usize = 8 << 10;

/// The integration's answer through its integration response: status, headers and the
/// template's body (`None`: the integration has no responses, the answer goes as it came;
/// 500 when it has some and none matches, as Amazon answers).
pub(crate) fn respond(
    t: &Transform,
    vars: &TemplateVars,
    i: Answered<'_>,
) -> Result<Option<Answer>, Error> {
    let Some(r) = t.response_for(i.status) else {
        if t.responses.is_empty() {
            return Ok(None);
        }
        // Responses, none for this status and none without a pattern: Amazon's 500 (its log
        // says "No match for output mapping and no default output mapping configured"). The
        // integration's own answer — its headers, an error page — does not reach the client.
        return Err(Error::upstream(
            Kind::TemplateFailed(
                format!(
                    "no match for output mapping and no default output mapping configured; the integration answered {}",
                    i.status
                )
                .into(),
            ),
            "integration responses",
        ));
    };
    // The template for JSON if there is one, else the first.
    let template = r
        .templates
        .iter()
        .find(|(c, _)| c == "application/json")
        .or_else(|| r.templates.first());
    let needs_json = template.is_some_and(|(_, t)| t.reads(vtl::READS_JSON))
        || r.headers
            .iter()
            .any(|(_, h)| matches!(h, HeaderSource::Body(Some(_))));
    let parsed = parse_if(needs_json, i.json, i.body).ok().flatten();
    let json = i.json.or(parsed.as_ref());
    let first = |name: &str| {
        i.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    };
    let mut headers = Vec::new();
    for (n, src) in &r.headers {
        let value: Option<std::borrow::Cow<'_, [u8]>> = match src {
            HeaderSource::Static(v) => Some(v.as_bytes().into()),
            HeaderSource::Header(h) => first(h).map(Into::into),
            HeaderSource::MultiHeader(h) => {
                let all: Vec<&[u8]> = i
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(h.as_bytes()))
                    .map(|(_, v)| *v)
                    .collect();
                (!all.is_empty()).then(|| all.join(&b","[..]).into())
            }
            HeaderSource::Body(None) => Some(i.body.into()),
            HeaderSource::Body(Some(p)) => {
                json.and_then(|j| vtl::select(j, p).ok().flatten())
                    .map(|v| match &*v {
                        Value::String(s) => s.clone().into_bytes().into(),
                        other => other.to_string().into_bytes().into(),
                    })
            }
            HeaderSource::StageVariable(name) => vars.stage_variables[name.as_str()]
                .as_str()
                .map(|v| v.as_bytes().to_vec().into()),
            HeaderSource::Context(name) => {
                let v = name.split('.').fold(&vars.context, |v, k| &v[k]);
                match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.as_bytes().to_vec().into()),
                    other => Some(other.to_string().into_bytes().into()),
                }
            }
        };
        // One line of visible text: control characters leave, and an over-long value
        // (a whole body, say) leaves the header out.
        let Some(value) = value.filter(|v| v.len() <= MAX_MAPPED_HEADER) else {
            continue;
        };
        headers.extend_from_slice(n.as_bytes());
        headers.extend_from_slice(b": ");
        headers.extend(
            value
                .trim_ascii()
                .iter()
                .filter(|&&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
        );
        headers.extend_from_slice(b"\r\n");
    }
    let (body, ct, overrides) = match template {
        Some((ct, tpl)) => {
            let (body, o) = render(tpl, i.body, (json, None), vars)?;
            (body.into_bytes(), Some(ct.as_bytes()), o)
        }
        None => (i.body.to_vec(), first("content-type"), Default::default()),
    };
    if let Some(ct) = ct.filter(|_| !r.headers.iter().any(|(n, _)| n == "content-type")) {
        headers.extend_from_slice(b"content-type: ");
        headers.extend_from_slice(ct);
        headers.extend_from_slice(b"\r\n");
    }
    // `$context.responseOverride`: final, over the integration response's own.
    let mut status = r.status.unwrap_or(i.status);
    for (what, value) in &overrides.set {
        match what {
            vtl::Override::Status => {
                status = value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    // A final status with a body, as an integration response's own `status`
                    // (an interim 1xx would have the body read as the next answer).
                    .filter(|s| (200..=599).contains(s) && *s != 204 && *s != 304)
                    .ok_or_else(|| {
                        failed(format!(
                            "$context.responseOverride.status = {value:?}: not a status from 200 to 599 (but 204 and 304)"
                        ))
                    })?;
            }
            // (Headers the gateway writes itself are refused at load.)
            vtl::Override::ResponseHeader(name) => {
                remove_line(&mut headers, name.as_bytes());
                headers.extend_from_slice(name.as_bytes());
                headers.extend_from_slice(b": ");
                headers.extend(
                    value
                        .trim()
                        .bytes()
                        .filter(|&b| crate::syntax::is_value_byte(b)),
                );
                headers.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    Ok(Some(Answer {
        status,
        headers,
        content_type: None,
        body,
        ratelimit: true,
    }))
}

/// The kept transform of a request, for its answer.
pub(crate) type Kept = (Arc<Transform>, Box<TemplateVars>);
