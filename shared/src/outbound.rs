//! Outbound HTTPS from the functions: one reqwest configuration (rustls on ring with the
//! webpki roots, like the LiveKit client) for the migrate function's CloudFormation reply and
//! for the Secrets Manager SDK.
//!
//! The SDK's own HTTP client (aws-smithy-http-client) would link a second hyper client with
//! HTTP/2 into every binary for one request per cold start; reqwest is already there through
//! livekit-api, so the SDK sends its request through it instead.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;

/// A reqwest builder on rustls with ring and the webpki roots: one crypto provider per binary.
pub fn https_builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

/// The HTTP client for an AWS SDK config: each connector honours the SDK's connect and read
/// timeouts (the operation timeouts stay with the SDK).
pub fn sdk_http_client() -> SharedHttpClient {
    http_client_fn(|settings, _components| {
        SharedHttpConnector::new(ReqwestConnector::new(settings))
    })
}

#[derive(Debug)]
struct ReqwestConnector {
    client: Result<reqwest::Client, String>,
}

impl ReqwestConnector {
    fn new(settings: &HttpConnectorSettings) -> Self {
        let client = https_builder()
            .map_err(|e| e.to_string())
            .and_then(|builder| {
                with_timeouts(builder, settings.connect_timeout(), settings.read_timeout())
                    .build()
                    .map_err(|e| e.to_string())
            });
        ReqwestConnector { client }
    }
}

fn with_timeouts(
    builder: reqwest::ClientBuilder,
    connect: Option<Duration>,
    read: Option<Duration>,
) -> reqwest::ClientBuilder {
    let builder = match connect {
        Some(timeout) => builder.connect_timeout(timeout),
        None => builder,
    };
    match read {
        Some(timeout) => builder.read_timeout(timeout),
        None => builder,
    }
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => {
                let error = ConnectorError::other(reason.clone().into(), None);
                return HttpConnectorFuture::ready(Err(error));
            }
        };
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request)?;
            let response = client.execute(request).await.map_err(classify)?;
            from_reqwest(response).await
        })
    }
}

/// The SDK's request as a reqwest one. Secrets Manager requests carry small in-memory JSON
/// bodies; a streaming body is refused rather than buffered in secret.
fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    let bytes = body
        .bytes()
        .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?
        .to_vec();
    let request = http::Request::from_parts(parts, bytes);
    reqwest::Request::try_from(request).map_err(|e| ConnectorError::user(e.into()))
}

async fn from_reqwest(response: reqwest::Response) -> Result<HttpResponse, ConnectorError> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(classify)?;
    let mut http_response = http::Response::new(SdkBody::from(body));
    *http_response.status_mut() = status;
    *http_response.headers_mut() = headers;
    HttpResponse::try_from(http_response).map_err(|e| ConnectorError::other(e.into(), None))
}

/// Keeps the SDK's error kinds: an unreachable endpoint is io, a slow one a timeout.
fn classify(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}
