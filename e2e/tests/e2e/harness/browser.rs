//! A real browser for the pages the bridge serves: Debian's headless Chromium, driven over
//! the W3C WebDriver protocol by Debian's `chromedriver`.
//!
//! WebDriver is a small JSON-over-HTTP protocol, so this speaks it with the `reqwest` client the
//! harness already has instead of pulling in a browser-automation crate. `scripts/test.sh`
//! installs both packages; `CHROMIUM` and `CHROMEDRIVER` point elsewhere when set.
//!
//! Chromium starts with the flags this machine needs: no sandbox (tests run as root), and no
//! background networking (the closed network refuses those connections). chromedriver runs in a
//! process group of its own, so dropping a [`Browser`] kills it and the Chromium it started,
//! however the test ended.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value as Json, json};

use super::process::free_ports;
use super::wait::{PROMPTLY, poll_until};

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to listen after it is spawned.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`: every command's URL starts here.
    session: String,
    driver: Child,
    /// Chromium's profile, deleted when the browser is dropped.
    _profile: tempfile::TempDir,
}

/// An executable from `env` if set, else `default`; an error saying how to install it.
fn executable(env: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.is_file() {
        bail!(
            "{} not found (set {env} to use another path): install Debian's `chromium` and \
             `chromium-driver` packages (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn launch() -> anyhow::Result<Browser> {
        let chromium = executable("CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = executable("CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let port = free_ports(1)?[0];
        let driver = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {}", chromedriver.display()))?
        };
        let profile = tempfile::Builder::new()
            .prefix("st2-matrix-e2e-chromium-")
            .tempdir()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        // A browser whose driver never came up still kills the driver on drop.
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let up = poll_until(DRIVER_START_TIMEOUT, || async {
            let status: Json = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        if up.is_none() {
            bail!("chromedriver did not answer on {base}/status within {DRIVER_START_TIMEOUT:?}");
        }
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--user-data-dir={}", browser._profile.path().display()),
                    ],
                },
            }},
        });
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await
            .context("creating a WebDriver session (is chromium's version the driver's?)")?;
        let id = created["sessionId"]
            .as_str()
            .context("the new session has no sessionId")?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    /// Sends one WebDriver command and returns its `value`; a WebDriver error becomes an
    /// error naming it.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Json>,
    ) -> anyhow::Result<Json> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("WebDriver {method} {url}"))?;
        let status = response.status();
        let mut answer: Json = response
            .json()
            .await
            .with_context(|| format!("WebDriver {method} {url}: the answer is not JSON"))?;
        if !status.is_success() {
            bail!(
                "WebDriver {method} {url} answered {status}: {} ({})",
                answer["value"]["error"],
                answer["value"]["message"]
            );
        }
        Ok(answer["value"].take())
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> anyhow::Result<Json> {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// The element `css` selects; an error if there is none.
    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .with_context(|| format!("finding {css:?} on the page"))?;
        found[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{css:?}: no element reference in {found}"))
    }

    /// Types `text` into the field `css` selects, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await?;
        Ok(())
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// The `value` property of the element `css` selects (e.g. a hidden form field's).
    pub async fn value_of(&self, css: &str) -> anyhow::Result<String> {
        let element = self.element(css).await?;
        let value = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{element}/property/value"),
                None,
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The page's title.
    pub async fn title(&self) -> anyhow::Result<String> {
        let title = self.command(reqwest::Method::GET, "/title", None).await?;
        Ok(title.as_str().unwrap_or_default().to_owned())
    }

    /// The text of the page's body, as rendered.
    pub async fn text(&self) -> anyhow::Result<String> {
        let body = self.element("body").await?;
        let text = self
            .command(reqwest::Method::GET, &format!("/element/{body}/text"), None)
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the page's title is `title` (e.g. after a form was submitted), and returns
    /// the page's text. Panics with the page's text when it does not get there in time.
    pub async fn wait_for_title(&self, title: &str) -> anyhow::Result<String> {
        let reached = poll_until(PROMPTLY, || async {
            (self.title().await.ok()? == title).then_some(())
        })
        .await;
        let text = self.text().await?;
        if reached.is_none() {
            panic!(
                "timed out after {PROMPTLY:?} waiting for the page titled {title:?}; the page is titled {:?} and reads:\n{text}",
                self.title().await.unwrap_or_default()
            );
        }
        Ok(text)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started. Ending the
        // WebDriver session first would be politer, but needs an await a drop cannot have.
        let group = i32::try_from(self.driver.id()).expect("a pid fits in i32");
        // SAFETY: kill(2) with a negative pid signals a process group; the group is the one
        // chromedriver leads (`process_group(0)` at spawn), and its leader is not reaped yet.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
