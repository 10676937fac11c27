//! A real browser for the dashboard tests: Debian's headless Chromium driven by its
//! `chromedriver` over the W3C WebDriver protocol, which is JSON over HTTP, so a handful of
//! requests with reqwest replace a WebDriver client crate.
//!
//! The browser runs with a throwaway profile and loopback only; it and its driver are stopped
//! when the [`Browser`] is dropped (the session is deleted first, which closes Chromium).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::{free_port, wait_for};

/// The driver installed with Debian's `chromium-driver`.
const CHROMEDRIVER: &str = "chromedriver";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        crate::ensure_installed();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver)");
        let http = reqwest::Client::new();
        let status_url = format!("http://127.0.0.1:{port}/status");
        wait_for("chromedriver to be ready", Duration::from_secs(60), || {
            let http = http.clone();
            let status_url = status_url.clone();
            async move {
                let status: Value = http.get(&status_url).send().await.ok()?.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("browser profile dir");
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--disable-extensions",
                            "--disable-background-networking",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", profile.path().display()),
                        ],
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser.call("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        browser
    }

    /// A WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let response = request
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"));
        let answer: Value = response.json().await.expect("WebDriver answers JSON");
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path} failed: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url` (returns once the page's load event fired).
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn execute(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call("POST", &self.session_path("/execute/sync"), body)
            .await
    }

    /// Sends keystrokes to the focused element (WebDriver key codes, e.g. `\u{E007}` Enter).
    pub async fn keys(&self, text: &str) {
        let active = self
            .call("GET", &self.session_path("/element/active"), Value::Null)
            .await;
        let Some(element) = active.as_object().and_then(|object| object.values().next()) else {
            panic!("no focused element: {active}");
        };
        let Some(element) = element.as_str() else {
            panic!("bad element reference: {active}");
        };
        let path = self.session_path(&format!("/element/{element}/value"));
        self.call("POST", &path, json!({ "text": text })).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .call("GET", &self.session_path("/screenshot"), Value::Null)
            .await;
        let encoded = encoded.as_str().expect("screenshot as base64");
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("screenshot base64")
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint):
    /// objects with `level` (`SEVERE` for errors) and `message`.
    pub async fn console(&self) -> Vec<Value> {
        let entries = self
            .call(
                "POST",
                &self.session_path("/se/log"),
                json!({ "type": "browser" }),
            )
            .await;
        entries.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session closes Chromium; plain blocking HTTP, as Drop cannot await.
        if !self.session.is_empty() {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.port
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
