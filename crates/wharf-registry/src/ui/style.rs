//! The UI's look, in one place every page (and any admin page added later) inherits: one
//! stylesheet and the favicon, served from `/ui/` so that the pages' CSP allows styles and
//! images from the registry itself and nothing inline. The stylesheet's address carries a
//! hash of its text, so that it can be cached for good and still change with a release.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::HeaderValue;
use maud::{html, Markup, PreEscaped};
use sha2::{Digest as _, Sha256};

/// Every page's policy: no script at all; styles and images only from the registry's own
/// `/ui/` assets, never inline; forms post only here; never framed (clickjacking).
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = r#"
:root{--brand:#0b5cad;--brand-dark:#0a2f57;--bg:#f3f5f8;--card:#fff;--text:#1c2733;--muted:#5d6b7b;
--line:#e0e5eb;--ok-bg:#e7f5ec;--ok:#1d6b35;--err-bg:#fdeceb;--err:#a4261c;--radius:8px}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
background:var(--bg);color:var(--text)}
a{color:var(--brand);text-decoration:none}
a:hover{text-decoration:underline}
header.top{background:var(--brand-dark);color:#fff}
header.top .bar{max-width:76rem;margin:0 auto;padding:.55rem 1rem;display:flex;flex-wrap:wrap;
align-items:center;gap:.4rem 1.25rem}
.brand{display:flex;align-items:center;gap:.55rem;color:#fff;font-weight:650;font-size:1.05rem;min-width:0}
.brand:hover{text-decoration:none}
.brand img{width:28px;height:28px;flex:none}
.brand span{overflow-wrap:anywhere}
nav.main{display:flex;flex-wrap:wrap;gap:.15rem}
nav.main a{color:#d5e3f3;padding:.3rem .6rem;border-radius:6px}
nav.main a:hover,nav.main a.on{background:rgba(255,255,255,.14);color:#fff;text-decoration:none}
.me{margin-left:auto;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem;color:#d5e3f3}
.me a{color:#fff}
main{max-width:76rem;margin:0 auto;padding:1.1rem 1rem 3rem;overflow-wrap:anywhere}
h1{font-size:1.45rem;margin:.3rem 0 1rem;overflow-wrap:anywhere;font-weight:650}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
p{margin:.5rem 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1rem 1.1rem;
margin-bottom:1rem}
table{border-collapse:separate;border-spacing:0;width:100%;background:var(--card);border:1px solid var(--line);
border-radius:var(--radius);overflow:hidden}
th,td{padding:.55rem .8rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line);
overflow-wrap:anywhere}
th{font-size:.76rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);background:#f8fafc;
font-weight:600;white-space:nowrap}
th a{color:inherit}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover td{background:#f8fbff}
td.num,th.num{text-align:right;white-space:nowrap}
td.main a{font-weight:600}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;overflow-wrap:anywhere}
button,.button{font:inherit;font-size:.92rem;cursor:pointer;border-radius:6px;border:1px solid var(--brand);
background:var(--brand);color:#fff;padding:.38rem .9rem;display:inline-block;line-height:1.4}
.button:hover{text-decoration:none}
button.secondary,.button.secondary{background:#fff;color:var(--brand)}
button.danger,.button.danger{background:var(--err);border-color:var(--err);color:#fff}
button:disabled{opacity:.45;cursor:not-allowed}
header.top button{background:transparent;border-color:rgba(255,255,255,.45);padding:.15rem .6rem}
input,select{font:inherit;font-size:.95rem;padding:.38rem .6rem;border:1px solid #c3ccd6;border-radius:6px;
background:#fff;color:var(--text);max-width:100%}
label{display:inline-flex;align-items:center;gap:.35rem;flex-wrap:wrap}
form.inline{display:inline}
form.signin{max-width:24rem}
form.signin label{display:flex;flex-direction:column;align-items:stretch;gap:.2rem}
.toolbar{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:0 0 1rem}
.toolbar input[type=search]{flex:1 1 14rem}
.toolbar .total{margin-left:auto;color:var(--muted)}
.notice,.err{padding:.6rem .9rem;border-radius:var(--radius);margin:0 0 1rem;overflow-wrap:anywhere}
.notice{background:var(--ok-bg);color:var(--ok);border:1px solid #b5dec1}
.err{background:var(--err-bg);color:var(--err);border:1px solid #f2c1bc}
.muted{color:var(--muted)}
.empty{background:var(--card);border:1px dashed #c3ccd6;border-radius:var(--radius);padding:1.5rem;
text-align:center;color:var(--muted)}
.pull{display:flex;align-items:center;gap:.6rem;background:#0f1c2b;color:#9fb3c8;border-radius:var(--radius);
padding:.45rem .8rem;margin:0 0 1rem;font-size:.85rem}
.pull input{flex:1;min-width:0;background:transparent;color:#e8eef4;border:0;padding:.2rem 0;
font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9rem}
.pager{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5rem;margin-top:.8rem}
.pager .muted{order:0}
.badge{display:inline-block;padding:0 .5rem;border-radius:999px;background:#e9eef4;color:var(--muted);
font-size:.78rem;white-space:nowrap}
.lock{display:inline-flex;vertical-align:-2px;margin-left:.3rem}
.lock svg{width:14px;height:14px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
ol,ul{padding-left:1.3rem}
@media (max-width:640px){
body{font-size:14.5px}
header.top .bar{gap:.3rem .8rem}
.me{margin-left:0}
main{padding:.8rem .7rem 2rem}
h1{font-size:1.2rem}
table.list{border:0;background:transparent}
table.list thead{display:none}
table.list,table.list tbody,table.list tr,table.list td{display:block;width:100%}
table.list tr{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);margin-bottom:.6rem;
padding:.35rem 0}
table.list td{border:0;padding:.2rem .8rem;display:flex;justify-content:space-between;gap:1rem;text-align:right}
table.list td::before{content:attr(data-label);color:var(--muted);text-align:left;flex:none}
table.list td.main{text-align:left;font-size:1.02rem}
table.list td.main::before{content:none}
table.list td:empty{display:none}
tbody tr:hover td{background:transparent}
table{table-layout:fixed}
th{white-space:normal;letter-spacing:0;overflow-wrap:normal;word-break:normal}
th,td{padding:.45rem .5rem}
dl.facts{grid-template-columns:1fr}
dl.facts dd{margin-bottom:.4rem}
}
"#;

/// The favicon and header logo: a ship carrying containers, in the UI's colours.
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#0b5cad"/><rect x="8" y="10" width="5" height="5" rx="1" fill="#9fd0ff"/><rect x="13.5" y="10" width="5" height="5" rx="1" fill="#fff"/><rect x="19" y="10" width="5" height="5" rx="1" fill="#9fd0ff"/><rect x="13.5" y="4.5" width="5" height="5" rx="1" fill="#ffd27a"/><path d="M4 16.5h24l-3.5 7.5h-17z" fill="#fff"/><path d="M3 26.5c2.2 1.3 4.3 1.3 6.5 0s4.3-1.3 6.5 0 4.3 1.3 6.5 0 4.3-1.3 6.5 0" stroke="#9fd0ff" stroke-width="1.6" fill="none"/></svg>"##;

/// A padlock, inline (no request, nothing a CSP must allow), for immutable tags.
pub fn lock() -> Markup {
    html! {
        span.lock title="immutable: an immutable rule keeps this tag where it is" aria-label="immutable" {
            (PreEscaped(r##"<svg viewBox="0 0 16 16" aria-hidden="true"><path fill="#7a5a00" d="M4.5 7V5a3.5 3.5 0 0 1 7 0v2h.5A1 1 0 0 1 13 8v6a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1zm1.6 0h3.8V5a1.9 1.9 0 0 0-3.8 0z"/></svg>"##))
        }
    }
}

/// `/ui/style.css?v=<hash>`: the address pages link, changing when the stylesheet does.
pub fn stylesheet_href() -> &'static str {
    static HREF: OnceLock<String> = OnceLock::new();
    HREF.get_or_init(|| {
        let hash = hex::encode(Sha256::digest(CSS.as_bytes()));
        format!("/ui/style.css?v={}", &hash[..16])
    })
}

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

pub async fn stylesheet() -> Response {
    // The address changes with the text, so a browser may keep it for good.
    asset(
        "text/css; charset=utf-8",
        CSS,
        "public, max-age=31536000, immutable",
    )
}

pub async fn favicon() -> Response {
    // An SVG may carry script: forbid it outright, whoever opens the file.
    let mut resp = asset("image/svg+xml", FAVICON, "public, max-age=86400");
    resp.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'"),
    );
    resp
}
