//! The operator console: a static page, its script modules and its style sheet, served by the
//! console function without a token (the page asks the operator for a service token and calls
//! the API with it from the browser). Nothing is loaded from anywhere but this service.

use lambda_http::{Body, Error, Request, Response};

use crate::i18n::Lang;

/// The console's files, as the console function carries them (functions/console/assets).
pub struct ConsoleAssets {
    /// The page, with `{{lang}}` where its language goes.
    pub page: &'static str,
    pub app_js: &'static str,
    pub timeline_js: &'static str,
    pub css: &'static str,
}

pub struct Console {
    assets: ConsoleAssets,
}

/// Scripts and styles from this service only, requests to it only; no inline script or
/// style, no forms posted anywhere, never framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

impl Console {
    pub fn new(assets: ConsoleAssets) -> Console {
        Console { assets }
    }

    /// Answers whichever of the console's routes `req` is for.
    pub async fn serve(&self, req: Request) -> Result<Response<Body>, Error> {
        let started = std::time::Instant::now();
        let path = req.uri().path();
        let response = if path.ends_with("/app.js") {
            console_app(self)
        } else if path.ends_with("/timeline.js") {
            console_timeline(self)
        } else if path.ends_with("/console.css") {
            console_css(self)
        } else {
            let accept = req
                .headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok());
            console_page(self, Lang::from_accept_language(accept))
        };
        tracing::info!(path, status = response.status().as_u16(), "console");
        crate::metrics::static_request("console", response.status().as_u16(), started);
        Ok(response)
    }
}

/// The page in the caller's language: `lang` on the root element picks the script's strings.
pub fn page_html(page: &str, lang: Lang) -> String {
    page.replace("{{lang}}", lang.pick("zh-CN", "en"))
}

/// Short-lived: a deploy reaches open consoles within minutes.
fn answer(content_type: &str, body: String) -> Response<Body> {
    super::static_answer(content_type, 300, Body::Text(body))
}

/// The operator console
///
/// Live calls, one call's story (its participants, a timeline, its events and their
/// deliveries) and an overview, for an operator with a service token. Its text follows
/// Accept-Language (Chinese by default, English).
#[utoipa::path(
    get, path = "/console", tag = "service", operation_id = "consolePage",
    responses((status = 200, description = "An HTML page.", content_type = "text/html",
        body = String)),
)]
pub(crate) fn console_page(console: &Console, lang: Lang) -> Response<Body> {
    let mut response = answer(
        "text/html; charset=utf-8",
        page_html(console.assets.page, lang),
    );
    response
        .headers_mut()
        .insert("vary", http::HeaderValue::from_static("Accept-Language"));
    super::with_policy(response, PAGE_POLICY)
}

/// The console's script
///
/// The page's behaviour (a JavaScript module).
#[utoipa::path(
    get, path = "/console/app.js", tag = "service", operation_id = "consoleScript",
    responses((status = 200, description = "JavaScript.", content_type = "text/javascript",
        body = String)),
)]
pub(crate) fn console_app(console: &Console) -> Response<Body> {
    answer(
        "text/javascript; charset=utf-8",
        console.assets.app_js.to_owned(),
    )
}

/// The console's timeline and formats
///
/// Plain functions the page draws a call's timeline and its numbers with (a JavaScript
/// module).
#[utoipa::path(
    get, path = "/console/timeline.js", tag = "service", operation_id = "consoleTimeline",
    responses((status = 200, description = "JavaScript.", content_type = "text/javascript",
        body = String)),
)]
pub(crate) fn console_timeline(console: &Console) -> Response<Body> {
    answer(
        "text/javascript; charset=utf-8",
        console.assets.timeline_js.to_owned(),
    )
}

/// The console's style sheet
///
/// How the page looks, on a desktop and on a phone.
#[utoipa::path(
    get, path = "/console/console.css", tag = "service", operation_id = "consoleStyle",
    responses((status = 200, description = "CSS.", content_type = "text/css", body = String)),
)]
pub(crate) fn console_css(console: &Console) -> Response<Body> {
    answer("text/css; charset=utf-8", console.assets.css.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_takes_the_language_of_the_caller() {
        let page = "<html lang=\"{{lang}}\">";
        assert_eq!(page_html(page, Lang::Zh), "<html lang=\"zh-CN\">");
        assert_eq!(page_html(page, Lang::En), "<html lang=\"en\">");
    }

    #[test]
    fn the_policy_lets_the_page_reach_this_service_only() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(PAGE_POLICY.contains(directive), "{directive}");
        }
        assert!(!PAGE_POLICY.contains("unsafe"));
        assert!(!PAGE_POLICY.contains("http"));
    }
}
