//! Starting the service and talking to it.

use std::net::SocketAddr;

use credentials::{App, CredentialsConfig, RunningApp};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const REALM: &str = "example.org";
pub const SECRET: &str = "0123456789abcdef-test-secret";

/// A running service and a client for it.
pub struct Service {
    pub app: RunningApp,
    pub http: reqwest::Client,
}

impl Service {
    /// Starts the service with these settings on top of `HOST=127.0.0.1 PORT=0`.
    pub async fn start(pairs: &[(&str, &str)]) -> Service {
        telemetry::init_for_tests();
        let mut all = vec![("HOST", "127.0.0.1"), ("PORT", "0")];
        all.extend_from_slice(pairs);
        let config = CredentialsConfig::from_pairs(&all).unwrap_or_else(|e| panic!("test config: {e}"));
        let app = App::build(config).await.expect("service starts").spawn();
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap();
        Service { app, http }
    }

    pub fn addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// GET with headers; returns status, headers and the body as JSON (Null if not JSON).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
        let mut request = self.http.get(self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("service answers");
        read(response).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
        let mut request = self.http.post(self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        read(request.send().await.expect("service answers")).await
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("service answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

async fn read(response: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Settings for the REST source against a coturn on `port` of 127.0.0.1.
pub fn rest_settings(port: &str) -> Vec<(&'static str, String)> {
    vec![("TURN_REALM", REALM.into()), ("TURN_HOST", "127.0.0.1".into()), ("TURN_PORT", port.into())]
}

/// Borrows owned pairs as the `&[(&str, &str)]` the service takes.
pub fn pairs<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    owned.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A small HTTP server for stubs: answers with `router` on a free loopback port.
pub async fn stub(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}
