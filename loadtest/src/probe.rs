//! `loadtest probe`: one HTTP GET against a deployment, passed when the answer is 200
//! (and, if asked, a JSON object holding a key). `helm test` runs it from the loadtest
//! image, which has no shell and no curl, to check the signal node's `/readyz` and a
//! TURN credential through the release's Services. Plain HTTP only: in-cluster
//! Services; bounded in time and size.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer read.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `http://host[:port]/path`.
    #[arg(long, env = "LOADTEST_PROBE_URL")]
    pub url: String,
    /// The answer must be a JSON object holding this key (`iceServers`).
    #[arg(long)]
    pub json_key: Option<String>,
    /// How long the whole request may take.
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    pub timeout: Duration,
}

fn humantime_secs(text: &str) -> Result<Duration, String> {
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("{text:?}: seconds, like 10s"))
}

/// Runs the probe; Ok with a line to print when it passed.
pub async fn run(args: &ProbeArgs) -> anyhow::Result<String> {
    let (status, body) = tokio::time::timeout(args.timeout, get(&args.url))
        .await
        .with_context(|| format!("{}: no answer within {:?}", args.url, args.timeout))??;
    if status != 200 {
        bail!("{}: HTTP {status}: {}", args.url, String::from_utf8_lossy(&body).chars().take(200).collect::<String>());
    }
    if let Some(key) = &args.json_key {
        let json: serde_json::Value =
            serde_json::from_slice(&body).with_context(|| format!("{}: the answer is not JSON", args.url))?;
        if json.get(key).is_none() {
            bail!("{}: the answer has no {key:?}", args.url);
        }
    }
    Ok(format!("{}: 200", args.url))
}

/// A GET with `Connection: close`: the status and the body.
async fn get(url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs (in-cluster Services)")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let address = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let mut stream = TcpStream::connect(&address).await.with_context(|| format!("connecting to {address}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer).await?;
    parse(&answer)
}

fn parse(answer: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).context("no status in the answer")?;
    let body = &answer[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").context("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("a chunk size that is not hex")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("a chunk shorter than its size");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (503, b"abcde".to_vec()));
        assert!(parse(b"garbage").is_err());
    }

    #[tokio::test]
    async fn a_probe_passes_on_200_with_its_key_and_fails_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"iceServers\":[]}",
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\ndraining",
            ] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await.unwrap();
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let probe = |key: Option<&str>| ProbeArgs {
            url: format!("http://{addr}/api/turn/config"),
            json_key: key.map(str::to_owned),
            timeout: Duration::from_secs(5),
        };
        assert!(run(&probe(Some("iceServers"))).await.is_ok());
        let missing = run(&probe(Some("iceServers"))).await.unwrap_err().to_string();
        assert!(missing.contains("no \"iceServers\""), "{missing}");
        let refused = run(&probe(None)).await.unwrap_err().to_string();
        assert!(refused.contains("HTTP 503"), "{refused}");
    }
}
