//! The API's own documentation, without a token: the OpenAPI document and a page that renders
//! it with Redoc, whose bundle the api-docs function carries (no CDN).

use lambda_http::{Body, Error, Request, Response};

/// The three answers, built once per instance.
pub struct Docs {
    document: String,
    redoc_js: &'static str,
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Call rooms API</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="openapi.json" hide-download-button="false"></redoc>
<script src="docs/redoc.standalone.js"></script>
</body>
</html>
"#;

/// The page loads only from this service; Redoc styles inline and runs its search in a
/// worker it makes from a blob.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' \
'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl Docs {
    pub fn new(redoc_js: &'static str) -> Docs {
        Docs {
            document: crate::openapi::document().to_string(),
            redoc_js,
        }
    }

    /// Answers whichever of the three routes `req` is for.
    pub async fn serve(&self, req: Request) -> Result<Response<Body>, Error> {
        let started = std::time::Instant::now();
        let path = req.uri().path();
        let response = if path.ends_with("/openapi.json") {
            openapi_json(self)
        } else if path.ends_with("/redoc.standalone.js") {
            docs_asset(self)
        } else {
            docs_page()
        };
        tracing::info!(path, status = response.status().as_u16(), "docs");
        crate::metrics::static_request("api-docs", response.status().as_u16(), started);
        Ok(response)
    }
}

/// The OpenAPI document
///
/// This API's OpenAPI 3.1 document (what the docs page renders).
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "service", operation_id = "openapiDocument",
    responses((status = 200, description = "The document.", body = Object)),
)]
pub(crate) fn openapi_json(docs: &Docs) -> Response<Body> {
    super::static_answer("application/json", 300, Body::Text(docs.document.clone()))
}

/// The docs page
///
/// The document rendered by Redoc, served with its assets by this service.
#[utoipa::path(
    get, path = "/api/docs", tag = "service", operation_id = "docsPage",
    responses((status = 200, description = "An HTML page.", content_type = "text/html",
        body = String)),
)]
pub(crate) fn docs_page() -> Response<Body> {
    let response =
        super::static_answer("text/html; charset=utf-8", 300, Body::Text(PAGE.to_owned()));
    super::with_policy(response, PAGE_POLICY)
}

/// The docs page's renderer
///
/// Redoc's standalone bundle, as published on npm (see functions/api-docs/assets).
#[utoipa::path(
    get, path = "/api/docs/redoc.standalone.js", tag = "service", operation_id = "docsRenderer",
    responses((status = 200, description = "JavaScript.", content_type = "text/javascript",
        body = String)),
)]
pub(crate) fn docs_asset(docs: &Docs) -> Response<Body> {
    super::static_answer(
        "text/javascript; charset=utf-8",
        86_400,
        Body::Text(docs.redoc_js.to_owned()),
    )
}
