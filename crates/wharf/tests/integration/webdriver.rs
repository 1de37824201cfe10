//! A small WebDriver client over chromedriver's HTTP API with the blocking reqwest the
//! tests already use: the few commands the UI tests need, without an async runtime or
//! another crate's abstractions between the test and the protocol (W3C WebDriver).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::harness::{free_port, require, Proc};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _driver: Proc,
}

impl Browser {
    /// Headless Debian chromium through chromedriver (package chromium-driver).
    pub fn start() -> Browser {
        require("chromium", "chromium");
        require("chromedriver", "chromium-driver");
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Proc(child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        Browser {
            base,
            session,
            http,
            _driver: driver,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status();
        let v: Value = resp.json().unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.get("/url").as_str().unwrap().to_owned()
    }

    /// Wait (up to 10 s) until the address contains `part`: a click that navigates may
    /// return before the next page has replaced this one.
    pub fn wait_url(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.url().contains(part) {
            assert!(
                Instant::now() < deadline,
                "never reached {part}: at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap().to_owned()
    }

    /// The visible text of the page. A page being replaced (a navigation still under way)
    /// has no body, or a stale one, for a moment: read it again.
    pub fn text(&self) -> String {
        let session = format!("{}/session/{}", self.base, self.session);
        let settling = |v: &Value| {
            let e = &v["value"]["error"];
            // Chromium also reports a body from the page being replaced as an unknown
            // error: "Node with given id does not belong to the document".
            let replaced = v["value"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not belong to the document"));
            e == "stale element reference" || e == "no such element" || replaced
        };
        for _ in 0..100 {
            let found: Value = self
                .http
                .post(format!("{session}/element"))
                .json(&json!({ "using": "css selector", "value": "body" }))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if let Some(body) = found["value"][ELEMENT].as_str() {
                let v: Value = self
                    .http
                    .get(format!("{session}/element/{body}/text"))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                if let Some(text) = v["value"].as_str() {
                    return text.to_owned();
                }
                assert!(settling(&v), "WebDriver text: {v}");
            } else {
                assert!(settling(&found), "WebDriver find body: {found}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the page never settled")
    }

    /// The first element matching `css`; fails the test if none.
    pub fn find(&self, css: &str) -> String {
        let v = self.post("/element", json!({ "using": "css selector", "value": css }));
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub fn count(&self, css: &str) -> usize {
        self.post(
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .as_array()
        .unwrap()
        .len()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/clear"), json!({}));
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }

    /// A cookie's value, HttpOnly ones included.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.get("/cookie")
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["value"].as_str().unwrap().to_owned())
    }

    pub fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Resize the window; headless Chromium's viewport is the window.
    pub fn set_width(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }));
    }

    /// Run a script in the page (the test driver's own, not the page's: pages have none)
    /// and return its value.
    pub fn script(&self, source: &str) -> Value {
        self.post("/execute/sync", json!({ "script": source, "args": [] }))
    }

    /// How much wider than the viewport the document is (0: nothing overflows sideways).
    pub fn overflow_x(&self) -> i64 {
        let v = self.script("return document.documentElement.scrollWidth - window.innerWidth;");
        v.as_i64().unwrap_or_else(|| panic!("scroll width: {v}"))
    }

    /// The viewport's width in CSS pixels.
    pub fn viewport_width(&self) -> i64 {
        self.script("return window.innerWidth;").as_i64().unwrap()
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<Value> {
        self.post("/se/log", json!({ "type": "browser" }))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
    }
}
