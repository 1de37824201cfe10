//! Notification URLs in shoutrrr's syntax, as watchtower users write them.

// The settings' vocabulary: targets, errors, helpers.
use super::*;

/// One notification URL, in shoutrrr's syntax where watchtower users will have one.
/// Errors never quote the URL: it may hold a password or a token.
pub(super) fn parse_url(source: &str, text: &str) -> Result<Target, NotifyError> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(setting(
            source,
            "a notification URL needs a scheme; expected generic+https://, https://, slack://, slack+https://, smtp:// or logger://",
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "generic+http" | "generic+https" | "http" | "https" => {
            let scheme = scheme.trim_start_matches("generic+");
            webhook(source, &format!("{scheme}://{rest}"), false)
        }
        "generic" => webhook(source, &format!("https://{rest}"), true),
        "slack+http" | "slack+https" => Ok(Target::Slack(slack_from_http(
            source,
            &text["slack+".len()..],
        )?)),
        "slack" => Ok(Target::Slack(slack_from_shoutrrr(source, text)?)),
        "smtp" | "smtps" => email_from_url(source, text),
        "logger" => Ok(Target::Logger),
        other => Err(setting(
            source,
            format!("unsupported notification URL scheme {other:?}; expected generic+https://, https://, slack://, slack+https://, smtp:// or logger://"),
        )),
    }
}

pub(super) fn parse_http_url(source: &str, text: &str) -> Result<Url, NotifyError> {
    let url = Url::parse(text).map_err(|e| {
        setting(
            source,
            format!("not a valid URL ({e}); expected one like https://host/path"),
        )
    })?;
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
        return Err(setting(
            source,
            "the URL has no host; expected one like https://host/path",
        ));
    }
    Ok(url)
}

/// shoutrrr's `@Name=value` query parameters become headers; `generic://` means https
/// unless `disabletls=yes`.
pub(super) fn webhook(
    source: &str,
    text: &str,
    shoutrrr_generic: bool,
) -> Result<Target, NotifyError> {
    let mut url = parse_http_url(source, text)?;
    let mut headers = Vec::new();
    let mut kept = Vec::new();
    let mut plain_http = false;
    for (key, value) in url.query_pairs() {
        if let Some(name) = key.strip_prefix('@') {
            headers.push((name.to_owned(), value.into_owned()));
        } else if shoutrrr_generic && key.eq_ignore_ascii_case("disabletls") {
            plain_http = parse_bool(source, &value)?;
        } else {
            kept.push((key.into_owned(), value.into_owned()));
        }
    }
    set_query(&mut url, &kept);
    if plain_http {
        // Both are special schemes, so the switch cannot fail.
        let _ = url.set_scheme("http");
    }
    Ok(Target::Webhook(WebhookTarget {
        url: url.to_string(),
        headers,
    }))
}

pub(super) fn set_query(url: &mut Url, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
}

/// A Slack-compatible hook given as http(s); `channel` and `username` may ride in the query.
pub(super) fn slack_from_http(source: &str, text: &str) -> Result<SlackTarget, NotifyError> {
    let mut url = parse_http_url(source, text)?;
    let mut target = SlackTarget {
        url: String::new(),
        username: None,
        channel: None,
    };
    let kept = take_slack_options(&url, &mut target);
    set_query(&mut url, &kept);
    target.url = url.to_string();
    Ok(target)
}

pub(super) fn take_slack_options(url: &Url, target: &mut SlackTarget) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "channel" => target.channel = Some(value.into_owned()),
            "username" | "botname" => target.username = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    kept
}

/// `slack://hooks.slack.com/services/A/B/C`, shoutrrr's `slack://[botname@]A/B/C` and
/// `slack://hook:A-B-C@webhook`, each with optional `?channel=…&username=…`. Parsed by
/// hand because the tokens are case-sensitive and a URL parser may fold the "host".
pub(super) fn slack_from_shoutrrr(source: &str, text: &str) -> Result<SlackTarget, NotifyError> {
    let expected = "expected slack://hooks.slack.com/services/T…/B…/… or slack://[botname@]T…/B…/…";
    let rest = &text["slack://".len()..];
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, path) = match main.split_once('@') {
        Some((userinfo, path)) => (Some(userinfo), path),
        None => (None, main),
    };
    let path = path.trim_end_matches('/');
    let mut target = SlackTarget {
        url: String::new(),
        username: None,
        channel: None,
    };
    let tokens: Vec<&str> = path.split('/').collect();
    match (userinfo.and_then(|u| u.split_once(':')), tokens.as_slice()) {
        (Some((_, token)), ["webhook"]) => {
            let parts: Vec<&str> = token.splitn(3, '-').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(setting(
                    source,
                    format!("the hook token is not A-B-C; {expected}"),
                ));
            }
            target.url = format!("{SLACK_HOOKS}/{}", parts.join("/"));
        }
        (None, [host, ..]) if host.contains('.') => target.url = format!("https://{path}"),
        (_, [a, b, c]) if [a, b, c].iter().all(|t| !t.is_empty() && !t.contains('.')) => {
            target.url = format!("{SLACK_HOOKS}/{a}/{b}/{c}");
            target.username = userinfo.map(percent_decode);
        }
        _ => return Err(setting(source, format!("not a Slack hook URL; {expected}"))),
    }
    if !query.is_empty() {
        let url = Url::parse(&format!("https://query.invalid/?{query}"))
            .map_err(|e| setting(source, format!("bad query ({e}); {expected}")))?;
        take_slack_options(&url, &mut target);
    }
    Ok(target)
}

/// `smtp://user:pass@host:port/?from=a@b&to=c@d,e@f[&starttls=yes|no]`, and `smtps://`
/// for TLS from the start; shoutrrr's `usestarttls` and `encryption` are understood too.
pub(super) fn email_from_url(source: &str, text: &str) -> Result<Target, NotifyError> {
    let expected = "expected smtp://user:password@host:port/?from=a@example.com&to=b@example.com[&starttls=yes|no]";
    let url = Url::parse(text).map_err(|e| setting(source, format!("{e}; {expected}")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| setting(source, format!("the SMTP URL has no host; {expected}")))?;
    let implicit = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if implicit { 465 } else { 25 });
    let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(percent_decode);
    let mut from = None;
    let mut to = Vec::new();
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "from" => from = Some(mailbox(source, &value)?),
            "to" => to.extend(mailboxes(source, &value)?),
            "starttls" | "usestarttls" => {
                tls = Some(match parse_bool(source, &value)? {
                    true => SmtpTls::Required,
                    false => SmtpTls::None,
                })
            }
            "encryption" => tls = encryption(source, &value)?.or(tls),
            // shoutrrr has more (fromname, auth, clienthost…); ignored rather than
            // refused so a watchtower URL keeps working.
            _ => {}
        }
    }
    let from =
        from.ok_or_else(|| setting(source, format!("the SMTP URL has no from=; {expected}")))?;
    if to.is_empty() {
        return Err(setting(
            source,
            format!("the SMTP URL has no to=; {expected}"),
        ));
    }
    let tls = match (implicit, tls) {
        (true, _) => SmtpTls::Implicit,
        (false, Some(tls)) => tls,
        (false, None) => SmtpTls::default_for(port, user.is_some()),
    };
    Ok(Target::Email(EmailTarget {
        from,
        to,
        host: host.to_owned(),
        port,
        user,
        password,
        tls,
        skip_verify: false,
        subject_tag: None,
    }))
}

/// shoutrrr's `encryption=`; `auto` leaves the choice to the port.
pub(super) fn encryption(source: &str, value: &str) -> Result<Option<SmtpTls>, NotifyError> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Ok(Some(SmtpTls::None)),
        "explicittls" => Ok(Some(SmtpTls::Required)),
        "implicittls" => Ok(Some(SmtpTls::Implicit)),
        "auto" => Ok(None),
        _ => Err(setting(
            source,
            format!("encryption={value:?}; expected none, explicittls, implicittls or auto"),
        )),
    }
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Scheme, host and port: enough to tell targets apart in logs, while the path (a Slack
/// hook's secret), query and user info stay out.
pub(in crate::notify) fn redact_url(text: &str) -> String {
    let Ok(url) = Url::parse(text) else {
        return "<unparsable URL>".to_owned();
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if url.path().trim_start_matches('/').is_empty() {
        ""
    } else {
        "/…"
    };
    format!("{}://{host}{port}{path}", url.scheme())
}
