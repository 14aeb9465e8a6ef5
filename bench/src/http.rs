//! Just enough HTTP/1.1 for a local Lambda Runtime API, a local gateway and a load driver:
//! keep-alive, Content-Length and chunked bodies. Every peer is on 127.0.0.1 and is either
//! this harness or the lambda_runtime client, so anything unusual is an error, not a case.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The start line and headers; None on a clean end of stream before the first byte.
async fn read_head<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<Option<(String, Vec<(String, String)>)>> {
    let mut start = String::new();
    if r.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut size = start.len();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed inside the header"));
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(bad("header too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some((start.trim_end().to_owned(), headers)))
}

async fn read_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    headers: &[(String, String)],
) -> io::Result<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return read_chunked(r).await;
    }
    let len = match header(headers, "content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(format!("bad content-length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(bad("body too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                if r.read_line(&mut trailer).await? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).await?;
    }
}

/// One request; None when the peer closed the connection between requests.
pub async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Request>> {
    let Some((start, headers)) = read_head(r).await? else {
        return Ok(None);
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("malformed request line {start:?}")));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let body = read_body(r, &headers).await?;
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

pub async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Response> {
    let (start, headers) = read_head(r)
        .await?
        .ok_or_else(|| bad("connection closed before the response"))?;
    let status = start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("malformed status line {start:?}")))?;
    let body = read_body(r, &headers).await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let start = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    write_message(w, start, headers, body).await
}

pub async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let start = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    write_message(w, start, headers, body).await
}

/// Head and body in one write: one segment on the wire, so Nagle never holds half of it.
async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: String,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::BufReader;

    use super::*;

    #[tokio::test]
    async fn a_request_round_trips_with_its_body() {
        let mut wire = Vec::new();
        write_request(
            &mut wire,
            "POST",
            "/api/rooms?x=1",
            &[("authorization", "Bearer t")],
            b"{\"a\":1}",
        )
        .await
        .expect("write");
        let mut r = BufReader::new(&wire[..]);
        let req = read_request(&mut r)
            .await
            .expect("read")
            .expect("one request");
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/api/rooms?x=1");
        assert_eq!(header(&req.headers, "Authorization"), Some("Bearer t"));
        assert_eq!(req.body, b"{\"a\":1}");
        assert!(read_request(&mut r).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn keep_alive_requests_follow_each_other() {
        let wire = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let mut r = BufReader::new(&wire[..]);
        let a = read_request(&mut r).await.expect("a").expect("a");
        let b = read_request(&mut r).await.expect("b").expect("b");
        assert_eq!((a.target.as_str(), b.target.as_str()), ("/a", "/b"));
        assert!(a.body.is_empty());
    }

    #[tokio::test]
    async fn chunked_bodies_are_joined() {
        let wire = b"POST /r HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
        let mut r = BufReader::new(&wire[..]);
        let req = read_request(&mut r).await.expect("read").expect("request");
        assert_eq!(req.body, b"abcde");
    }

    #[tokio::test]
    async fn a_response_carries_status_headers_and_body() {
        let mut wire = Vec::new();
        write_response(&mut wire, 202, &[("x-id", "7")], b"ok")
            .await
            .expect("write");
        let res = read_response(&mut BufReader::new(&wire[..]))
            .await
            .expect("read");
        assert_eq!(res.status, 202);
        assert_eq!(header(&res.headers, "X-Id"), Some("7"));
        assert_eq!(res.body, b"ok");
    }

    #[tokio::test]
    async fn a_truncated_head_is_an_error() {
        let wire = b"GET /a HTTP/1.1\r\nhost: x\r\n";
        let err = read_request(&mut BufReader::new(&wire[..])).await;
        assert!(err.is_err());
    }
}
