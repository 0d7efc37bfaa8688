//! A small W3C WebDriver client for ChromeDriver: starts `chromedriver` on a
//! free loopback port, opens a Chromium session, navigates windows and runs
//! asynchronous scripts. Dropping a guard ends what it started.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thiserror::Error;

/// ChromeDriver from Debian's `chromium-driver` package.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Chromium from Debian's `chromium` package.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Maximum time from spawning ChromeDriver until `GET /status` reports ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time of one WebDriver HTTP request. Opening a session, which
/// starts Chromium, takes the longest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Failure of a ChromeDriver process or WebDriver command.
#[derive(Debug, Error)]
pub enum WebDriverError {
    /// ChromeDriver could not be started (e.g. the package is not installed).
    #[error("spawning {CHROMEDRIVER} failed: {source}")]
    Spawn {
        #[source]
        source: io::Error,
    },
    /// ChromeDriver did not report ready in time.
    #[error("chromedriver on port {port} was not ready within {READY_TIMEOUT:?}")]
    NotReady { port: u16 },
    /// The HTTP request to ChromeDriver failed or timed out.
    #[error("{method} {url} failed: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// ChromeDriver returned a WebDriver error, e.g. `session not created`
    /// with Chromium's own output when the browser fails to start.
    #[error("{method} {url} returned `{error}`: {message}")]
    Command {
        method: &'static str,
        url: String,
        error: String,
        message: String,
    },
    /// The response lacked a field this client needs.
    #[error("{method} {url} returned no {field}: {body}")]
    MissingField {
        method: &'static str,
        url: String,
        field: &'static str,
        body: Value,
    },
    /// A page function rejected its promise with the JS error `message`.
    #[error("page function {function} failed: {message}")]
    Script { function: String, message: String },
}

/// A running ChromeDriver process; dropping it kills the process.
pub struct ChromeDriver {
    child: Child,
    base_url: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl ChromeDriver {
    /// Starts ChromeDriver on a free port of 127.0.0.1, writing its output to
    /// `log_path`, and waits until it is ready.
    pub async fn start(log_path: &Path) -> Result<Self, WebDriverError> {
        let port = free_port();
        let log = File::create(log_path).map_err(|source| WebDriverError::Spawn { source })?;
        let stderr = log
            .try_clone()
            .map_err(|source| WebDriverError::Spawn { source })?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| WebDriverError::Spawn { source })?;

        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        let driver = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path: log_path.to_owned(),
            http,
        };
        driver.wait_ready(port).await?;
        Ok(driver)
    }

    async fn wait_ready(&self, port: u16) -> Result<(), WebDriverError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/status", self.base_url);
        loop {
            if let Ok(response) = self.http.get(&url).send().await {
                if let Ok(body) = response.json::<Value>().await {
                    if body["value"]["ready"] == Value::Bool(true) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(WebDriverError::NotReady { port });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a session: starts Chromium with `args` and the given script and
    /// page-load timeouts.
    pub async fn new_session(
        &self,
        args: &[String],
        script_timeout: Duration,
    ) -> Result<Session, WebDriverError> {
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                    "timeouts": {
                        "script": script_timeout.as_millis() as u64,
                        "pageLoad": 15_000,
                        "implicit": 0,
                    },
                }
            }
        });
        let url = format!("{}/session", self.base_url);
        let value = send(&self.http, "POST", &url, Some(capabilities)).await?;
        let Some(id) = value["sessionId"].as_str() else {
            return Err(WebDriverError::MissingField {
                method: "POST",
                url,
                field: "sessionId",
                body: value,
            });
        };
        Ok(Session {
            http: self.http.clone(),
            url: format!("{url}/{id}"),
            deleted: false,
        })
    }

    /// Returns the last `lines` lines of ChromeDriver's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- chromedriver output ({}) ---\n{}",
            self.log_path.display(),
            all[start..].join("\n")
        )
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An open WebDriver session, i.e. one Chromium instance. Dropping it without
/// [`Session::delete`] still sends `DELETE /session/{id}`, which quits Chromium.
pub struct Session {
    http: reqwest::Client,
    url: String,
    deleted: bool,
}

impl Session {
    /// Loads `url` in the current window and waits for the load to finish.
    pub async fn navigate(&self, url: &str) -> Result<(), WebDriverError> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Returns the handle of the current window.
    pub async fn window_handle(&self) -> Result<String, WebDriverError> {
        let value = self.command("GET", "/window", None).await?;
        self.string_field(value, None, "/window")
    }

    /// Opens a new window and returns its handle without switching to it.
    pub async fn new_window(&self) -> Result<String, WebDriverError> {
        let value = self
            .command("POST", "/window/new", Some(json!({ "type": "window" })))
            .await?;
        self.string_field(value, Some("handle"), "/window/new")
    }

    /// Makes `handle` the window that later commands act on.
    pub async fn switch_to_window(&self, handle: &str) -> Result<(), WebDriverError> {
        self.command("POST", "/window", Some(json!({ "handle": handle })))
            .await
            .map(drop)
    }

    /// Calls the page's global async function `function` with `args` and
    /// returns the value its promise resolves with.
    pub async fn call(&self, function: &str, args: &[Value]) -> Result<Value, WebDriverError> {
        // WebDriver passes a callback as the last argument. The page function
        // is looked up by name so that its rejection message reaches the test.
        let script = r#"
            const done = arguments[arguments.length - 1];
            const [name, ...args] = Array.from(arguments).slice(0, -1);
            Promise.resolve()
                .then(() => window[name](...args))
                .then((value) => done({ value }),
                      (error) => done({ error: String((error && error.stack) || error) }));
        "#;
        let mut all_args = vec![Value::String(function.to_owned())];
        all_args.extend_from_slice(args);
        let result = self
            .command(
                "POST",
                "/execute/async",
                Some(json!({ "script": script, "args": all_args })),
            )
            .await?;

        if let Some(message) = result.get("error") {
            return Err(WebDriverError::Script {
                function: function.to_owned(),
                message: message.as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(result.get("value").cloned().unwrap_or(Value::Null))
    }

    /// Ends the session, which quits Chromium.
    pub async fn delete(mut self) -> Result<(), WebDriverError> {
        self.deleted = true;
        send(&self.http, "DELETE", &self.url, None).await.map(drop)
    }

    async fn command(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.url);
        send(&self.http, method, &url, body).await
    }

    fn string_field(
        &self,
        value: Value,
        field: Option<&'static str>,
        path: &str,
    ) -> Result<String, WebDriverError> {
        let found = match field {
            Some(field) => value[field].as_str(),
            None => value.as_str(),
        };
        match found {
            Some(text) => Ok(text.to_owned()),
            None => Err(WebDriverError::MissingField {
                method: "GET",
                url: format!("{}{path}", self.url),
                field: field.unwrap_or("string value"),
                body: value,
            }),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.deleted {
            delete_blocking(&self.url);
        }
    }
}

/// W3C WebDriver key of an element reference in a response.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

// Page interaction used by the join-page tests; chromium_whip.rs does not
// call these, hence `allow(dead_code)`.
#[allow(dead_code)]
impl Session {
    /// Runs `script` synchronously in the page with `args` and returns what
    /// it returns.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, WebDriverError> {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
            .await
    }

    /// Clicks the first element matching the CSS `selector`, as a user
    /// would: scrolled into view, with a real pointer event.
    pub async fn click(&self, selector: &str) -> Result<(), WebDriverError> {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await?;
        let Some(element) = found[ELEMENT_KEY].as_str() else {
            return Err(WebDriverError::MissingField {
                method: "POST",
                url: format!("{}/element", self.url),
                field: ELEMENT_KEY,
                body: found,
            });
        };
        self.command("POST", &format!("/element/{element}/click"), Some(json!({})))
            .await
            .map(drop)
    }

    /// Resizes the current window to `width` x `height` CSS pixels. In
    /// headless Chromium the viewport then has the same size.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), WebDriverError> {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await
        .map(drop)
    }

    /// Takes a PNG screenshot of the current window's viewport.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>, WebDriverError> {
        use base64::Engine as _;

        let value = self.command("GET", "/screenshot", None).await?;
        let encoded = self.string_field(value, None, "/screenshot")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|error| WebDriverError::Script {
                function: "screenshot".to_owned(),
                message: format!("the screenshot is not valid base64: {error}"),
            })
    }
}

/// Sends one WebDriver command and returns the `value` of its response.
async fn send(
    http: &reqwest::Client,
    method: &'static str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let http_error = |source| WebDriverError::Http {
        method,
        url: url.to_owned(),
        source,
    };
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let response = request.send().await.map_err(http_error)?;
    let mut body: Value = response.json().await.map_err(http_error)?;
    let value = body["value"].take();

    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(WebDriverError::Command {
            method,
            url: url.to_owned(),
            error: error.to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(value)
}

/// Sends `DELETE` to a session URL from a synchronous context (a `Drop`),
/// waiting at most 5 s for each socket operation. Errors are ignored because
/// the namespace guard kills whatever is left.
fn delete_blocking(session_url: &str) {
    let Some(rest) = session_url.strip_prefix("http://") else {
        return;
    };
    let Some((host, path)) = rest.split_once('/') else {
        return;
    };
    let Ok(mut stream) = TcpStream::connect(host) else {
        return;
    };
    let timeout = Some(Duration::from_secs(5));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let request = format!(
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // ChromeDriver replies once Chromium has quit. One read waits for the
        // reply without waiting for the server to close the connection.
        let mut response = [0u8; 1024];
        let _ = stream.read(&mut response);
    }
}

/// Finds a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
///
/// NOTE: another process can take the port before ChromeDriver binds it.
/// ChromeDriver then never reports ready and the test fails with `NotReady`.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding a TCP port on 127.0.0.1 failed")
        .port()
}
