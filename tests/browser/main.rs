//! The Management Console in a real browser: headless Chromium driven through
//! WebDriver (Debian's `chromium` and `chromium-driver`, installed with apt-get
//! when missing) against a three-node cluster through its balancer. Screenshots of
//! every page land in `CARGO_TARGET_TMPDIR/console-screenshots`, printed at the end.
//!
//! A test binary of its own: cargo runs test binaries one after another, so the
//! browser's CPU does not slow the whole-cluster tests of `tests/it`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use spectrum::client::{AckLevel, AdminClient, Role};

const BOOTSTRAP: &str = "it-console-bootstrap-token";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest the test waits for anything the page shows.
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// Installs Chromium and its WebDriver with apt-get when missing; panics, saying
/// why, when it cannot.
fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let apt = |args: &[&str]| {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| {
                panic!("the browser test needs chromium and chromium-driver: cannot run apt-get: {e}")
            });
        assert!(
            status.success(),
            "the browser test needs chromium and chromium-driver: apt-get {args:?} failed"
        );
    };
    apt(&["update"]);
    apt(&["install", "-y", "chromium", "chromium-driver"]);
    assert!(Path::new(CHROMEDRIVER).exists(), "apt-get installed no {CHROMEDRIVER}");
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,1100"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// The page under test, with where its screenshots go.
struct Console {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Console {
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn open(&self, page: &str) {
        self.client.goto(&format!("{}/console#/{page}", self.base)).await.unwrap();
    }

    /// The text of the first element matching `css` ("" when there is none).
    async fn text(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e && !e.closest('[hidden]') ? e.textContent : '';";
        let v = self.client.execute(script, vec![json!(css)]).await.unwrap();
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element at `css` shows text containing `needle`.
    async fn wait_text(&self, css: &str, needle: &str, shot: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let text = self.text(css).await;
            if !text.is_empty() && text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("FAILED-{shot}")).await;
                panic!("{css} never showed {needle:?} (it shows {text:?}); see {}", self.shots.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the number in attribute `data-{attr}` of the element at `css`
    /// is above zero; returns it.
    async fn wait_positive(&self, css: &str, attr: &str, shot: &str) -> f64 {
        let deadline = Instant::now() + PAGE_WAIT;
        let script = "const e = document.querySelector(arguments[0]); return e ? (e.dataset[arguments[1]] || '') : '';";
        loop {
            let v = self.client.execute(script, vec![json!(css), json!(attr)]).await.unwrap();
            let n: f64 = v.as_str().unwrap_or_default().parse().unwrap_or(0.0);
            if n > 0.0 {
                return n;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("FAILED-{shot}")).await;
                panic!("{css} never drew a figure above zero ({v}); see {}", self.shots.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css`.
    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Types `text` into the input at `css`, in place of what it held.
    async fn fill(&self, css: &str, text: &str) {
        let input = self.client.wait().at_most(PAGE_WAIT).for_element(Locator::Css(css)).await;
        let input = input.unwrap_or_else(|e| panic!("{css}: {e}"));
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Picks the resource kind and waits for its form (the fields are drawn anew).
    async fn resource_kind(&self, kind: &str, field: &str) {
        let select = self.client.find(Locator::Css("#resource-kind")).await.unwrap();
        select.select_by_value(kind).await.unwrap();
        self.client.wait().at_most(PAGE_WAIT).for_element(Locator::Css(field)).await.unwrap();
    }

    /// Clicks the element at `css` once the page shows it (a table is drawn
    /// after its data arrives), finding it again if the page redrew it meanwhile.
    async fn click(&self, css: &str) {
        for _ in 0..3 {
            let element = self
                .client
                .wait()
                .at_most(PAGE_WAIT)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => continue,
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
        panic!("{css} kept being redrawn");
    }

    async fn sign_in(&self, token: &str) {
        self.open("overview").await;
        let input =
            self.client.wait().at_most(PAGE_WAIT).for_element(Locator::Css("#signin-token")).await.unwrap();
        input.send_keys(token).await.unwrap();
        self.click("#signin-button").await;
        self.wait_text("#members-table tbody", "node-3", "sign-in").await;
    }

    async fn sign_out(&self) {
        self.click("#signout").await;
        self.wait_text("#page-signin h2", "Sign in", "sign-out").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_uses_the_console_through_the_balancer_and_a_viewer_is_refused_writes() {
    ensure_chromium();
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let mut cluster = spectrum::Cluster::builder("it-console".parse().unwrap())
        .size(3)
        .management_token(BOOTSTRAP.parse().unwrap())
        .start()
        .await
        .expect("cluster starts");
    let base = cluster.balancer_url();
    let admin =
        AdminClient::connect(&cluster.balancer_addr(), Some(BOOTSTRAP.parse().unwrap())).await.unwrap();
    let vera = admin.add_user("vera", Role::Viewer, AckLevel::All).await.unwrap().token.expose().to_owned();
    let data = tempfile::tempdir().unwrap();
    let postal = data.path().join("postal.db");
    std::fs::write(&postal, "MAIN STREET|SPRINGFIELD|49001\n").unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let driver = Driver::start();
    let console = Console { client: browser(&driver).await, base, shots };
    let run =
        tokio::time::timeout(Duration::from_secs(120), script(&console, &mut cluster, &vera, &postal)).await;
    let _ = console.client.clone().close().await;
    drop(driver);
    cluster.shutdown().await;
    run.expect("the browser test took over two minutes");
    println!("console screenshots: {}", console.shots.display());
}

/// What a person does in the console.
async fn script(c: &Console, cluster: &mut spectrum::Cluster, viewer: &str, postal: &Path) {
    c.sign_in(BOOTSTRAP).await;
    resources_dataflows_and_nodes(c, postal).await;
    editing_keeps_what_the_form_does_not_show(c, cluster, postal).await;
    licenses_users_and_audit(c).await;
    conflict_on_the_overview(c, cluster).await;

    // A node goes away: the page keeps working through the balancer, and shows it.
    assert!(cluster.stop_node("node-1").await);
    c.open("overview").await;
    c.wait_text("#members-table tr[data-node='node-1'] .state", "left", "node-gone").await;
    c.screenshot("10-overview-node-1-left").await;

    c.sign_out().await;
    c.sign_in(viewer).await;
    viewer_is_refused(c).await;

    // Straight from a node, the page says there is no balancer to chart.
    let node = cluster.node("node-2").expect("node-2 runs").url().to_owned();
    let direct = Console { client: c.client.clone(), base: node, shots: c.shots.clone() };
    direct.sign_in(viewer).await;
    direct.wait_text("#balancer-note", "Not served through a balancer", "no-balancer").await;
    direct.screenshot("12-overview-straight-from-a-node").await;
}

/// Two nodes write one key without hearing of each other's write (each applied
/// by its node's store, never pushed, as in a partition): once anti-entropy has
/// run, the overview lists the conflict, whichever node answers.
async fn conflict_on_the_overview(c: &Console, cluster: &spectrum::Cluster) {
    for (node, value) in [("node-2", "hello"), ("node-3", "bonjour")] {
        let store = cluster.node(node).expect("a member").store();
        store.apply(spectrum_replication::WriteBatch::new().put("settings/greeting", value)).await.unwrap();
    }
    c.open("overview").await;
    c.wait_text("#conflicts-table tbody", "settings/greeting", "overview-conflict").await;
    c.wait_text("#conflict-count", "(1)", "overview-conflict-count").await;
    c.screenshot("9-overview-conflict").await;
}

/// The overview; a resource with a bad field, then fixed; a dataflow; drain and undrain.
async fn resources_dataflows_and_nodes(c: &Console, postal: &Path) {
    c.wait_text("#members-table tbody", "alive", "overview").await;
    c.wait_text("#replication-summary", "Replication: lww (last-writer-wins", "overview-replication").await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // a second sample on the live charts
    // The balancer's figures, live: every node gets requests (the page's own
    // polling), so the rate and latency charts draw figures above zero.
    let rate = c.wait_positive("#chart-rate", "peak", "balancer-rate").await;
    let latency = c.wait_positive("#chart-latency", "peak", "balancer-latency").await;
    c.wait_text("#balancer-note", "Strategy round_robin", "balancer-note").await;
    for node in ["node-1", "node-2", "node-3"] {
        let requests = c.text(&format!("#balancer-table tr[data-node='{node}'] .requests")).await;
        assert!(requests.parse::<u64>().is_ok_and(|n| n > 0), "{node}: {requests:?} requests");
    }
    println!("balancer chart: {rate:.1} requests/s at peak, latency {latency} µs at peak");
    c.screenshot("1-overview").await;

    // A resource with a bad field: the API's message appears beside that field.
    c.open("resources").await;
    c.wait_text("#availability-table tbody", "none", "resources").await;
    c.resource_kind("database", "#field-spec-location-path").await;
    c.fill("#field-name", "postal-db").await;
    c.fill("#field-spec-location-path", "relative/postal.db").await;
    c.click("#resource-create").await;
    let error =
        c.wait_text(".field-error[data-error-for='spec.location.path']", "absolute", "bad-field").await;
    assert!(c.text("#resource-error").await.is_empty(), "the error is beside the field, not under the form");
    c.screenshot("2-resource-field-error").await;
    println!("beside spec.location.path: {error}");

    // Fixed: listed, and available on every member.
    c.fill("#field-spec-location-path", postal.to_str().unwrap()).await;
    c.click("#resource-create").await;
    c.wait_text("#resources-table tr[data-name='postal-db']", "database", "resource-listed").await;
    for node in ["node-1", "node-2", "node-3"] {
        let row = format!("#availability-table tr[data-name='postal-db'][data-node='{node}']");
        c.wait_text(&row, "yes", "availability").await;
    }
    c.screenshot("3-resources").await;

    // A dataflow, created in the form.
    c.open("dataflows").await;
    c.fill("#dataflow-name", "clean").await;
    c.click("#dataflow-save").await;
    c.wait_text("#dataflows-table tr[data-name='clean']", "trim", "dataflow").await;
    c.screenshot("4-dataflows").await;

    // Drain a node and see its state change, then undrain it.
    c.open("nodes").await;
    c.wait_text("#nodes-table tr[data-node='node-3'] .state", "active", "nodes").await;
    c.click("#nodes-table tr[data-node='node-3'] button.drain").await;
    c.wait_text("#nodes-table tr[data-node='node-3'] .state", "draining", "drain").await;
    c.screenshot("5-nodes-drained").await;
    c.click("#nodes-table tr[data-node='node-3'] button.undrain").await;
    c.wait_text("#nodes-table tr[data-node='node-3'] .state", "active", "undrain").await;
}

/// A database resource with a custom category and a per-node path, which the
/// form does not show, edited in the console: only the field changed changes
/// (the trial that found it lost `location.overrides` on every edit).
async fn editing_keeps_what_the_form_does_not_show(c: &Console, cluster: &spectrum::Cluster, postal: &Path) {
    let admin =
        AdminClient::connect(&cluster.balancer_addr(), Some(BOOTSTRAP.parse().unwrap())).await.unwrap();
    let path = postal.to_str().unwrap();
    let definition = json!({"name": "streets-eu", "spec": {"kind": "database", "category": "streets",
        "location": {"kind": "local", "path": path, "overrides": {"node-3": path}}}});
    admin.create_resource(definition.to_string(), false, AckLevel::All).await.unwrap();
    c.open("resources").await;
    c.click("#resources-table tr[data-name='streets-eu'] button.edit").await;
    c.wait_text("#resource-form-title", "Edit resource streets-eu", "resource-edit").await;
    c.fill("#field-description", "European streets").await;
    c.click("#resource-create").await;
    c.wait_text("#resources-table tr[data-name='streets-eu']", "European streets", "resource-edited").await;
    let stored = admin.resource("streets-eu", spectrum::client::ReadAfter::Anything).await.unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored.definition).unwrap();
    assert_eq!(stored["description"], "European streets");
    assert_eq!(stored["spec"]["category"], "streets", "{stored}");
    assert_eq!(stored["spec"]["location"]["overrides"], json!({"node-3": path}), "{stored}");
}

/// A license and a user, set in their forms; the audit log.
async fn licenses_users_and_audit(c: &Console) {
    c.open("licenses").await;
    c.wait_text("#licenses-table tbody", "none", "licenses").await;
    c.fill("#license-form input[name='owner']", "Example Corp").await;
    c.fill("#license-form input[name='seats']", "3").await;
    c.fill("#license-form input[name='expires']", "2099-12-31").await;
    c.click("#license-save").await;
    c.wait_text("#licenses-table tr[data-name='main']", "Example Corp", "license").await;
    c.screenshot("6-licenses").await;
    c.open("users").await;
    c.wait_text("#users-table tbody", "vera", "users").await;
    c.fill("#user-name", "ci").await;
    c.client.find(Locator::Css("#user-role")).await.unwrap().select_by_value("operator").await.unwrap();
    c.click("#user-add").await;
    c.wait_text("#new-token-value", "spt_", "user-token").await;
    c.wait_text("#users-table tr[data-name='ci']", "operator", "user-listed").await;
    c.screenshot("7-users").await;
    c.open("audit").await;
    c.wait_text("#audit-table tbody", "AddUser", "audit").await;
    c.screenshot("8-audit").await;
}

/// A viewer sees everything and may change nothing.
async fn viewer_is_refused(c: &Console) {
    c.open("resources").await;
    c.wait_text("#resources-table tr[data-name='postal-db']", "database", "viewer-resources").await;
    c.wait_text("#availability-error", "needs the operator role", "viewer-check").await;
    c.resource_kind("jdbc", "#field-spec-url").await;
    c.fill("#field-name", "orders").await;
    c.fill("#field-spec-url", "jdbc:postgresql://127.0.0.1:5432/orders").await;
    c.fill("#field-spec-driver", "org.postgresql.Driver").await;
    c.click("#resource-create").await;
    c.wait_text(
        "#resource-error",
        "CreateResource needs the admin role; user \"vera\" is a viewer",
        "viewer-create",
    )
    .await;
    c.screenshot("11-viewer-refused-resource").await;
    c.open("nodes").await;
    c.wait_text("#nodes-table tr[data-node='node-2'] .state", "active", "viewer-nodes").await;
    c.click("#nodes-table tr[data-node='node-2'] button.drain").await;
    c.wait_text("#message", "SetNodeState needs the operator role", "viewer-drain").await;
    c.screenshot("12-viewer-refused-drain").await;
    assert_eq!(c.count("#nodes-table .state.draining").await, 0, "nothing was drained");
}
