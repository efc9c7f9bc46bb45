//! The console in a real browser: headless Chromium loads the pages from the service on a
//! real port and the test reads what it rendered (`--dump-dom`, after parsing, styles and
//! any script would have run) and keeps a screenshot of each page under
//! `target/console-screenshots/`.
//!
//! Chromium is `$CHROMIUM` or the first of `chromium`, `chromium-browser`, `google-chrome` on
//! the PATH. CI installs it (`.ci/run`) and the test fails there without it; elsewhere it is
//! skipped with a note.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use crate::common::Backend;
use crate::console;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    format!("http://{addr}")
}

/// Runs Chromium once on `url` with `action` (`--dump-dom` or `--screenshot=…`); returns
/// what it printed.
async fn chromium_run(bin: &PathBuf, url: &str, action: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1360,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(action)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish loading {url}"))
        .expect("Chromium starts");
    assert!(out.status.success(), "Chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium built for `url`, after saving a screenshot of it as `<name>.png`.
async fn look(bin: &PathBuf, url: &str, name: &str) -> String {
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    chromium_run(bin, url, &[format!("--screenshot={}", shot.display())]).await;
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot of {url}");
    chromium_run(bin, url, &["--dump-dom".to_string()]).await
}

/// No element made from record text: the hostile values are in the DOM only as text.
fn assert_text_only(dom: &str, page: &str) {
    for element in ["<script", "<img", "onerror=\"", "onload=\"", "<b>demo"] {
        assert!(!dom.contains(element), "{page}: {element} became an element:\n{dom}");
    }
}

#[tokio::test]
async fn a_person_with_a_browser_sees_the_console() {
    let Some(bin) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must install Chromium (see .ci/run)");
        eprintln!("browser test skipped: no Chromium here (apt-get install chromium)");
        return;
    };
    let s = console::seed(Backend::Sqlite).await;
    // Without API_TOKEN the console is open; with one it asks for it, and share links open.
    let open = serve(s.app.router.clone()).await;
    let locked = serve(console::locked(&s.app.state)).await;

    let dom = look(&bin, &format!("{open}/console"), "overview").await;
    assert!(dom.contains("console &lt;b&gt;demo&lt;/b&gt;"), "{dom}");
    let last_run = dom.split("class=\"last-run\"").nth(1).expect("a last-run cell");
    let last_run = &last_run[..last_run.find("</td>").unwrap()];
    assert!(last_run.contains(">succeeded<"), "{last_run}");
    assert!(last_run.contains("minutes ago") || last_run.contains("just now"), "the last run's age: {last_run}");
    assert_text_only(&dom, "overview");

    let dom = look(&bin, &format!("{open}/console/inspections/{}", s.inspection_id), "inspection").await;
    let chart = dom.split("<svg").nth(1).expect("the runs chart is drawn");
    assert!(chart.contains("<rect class=\"bar"), "{chart}");
    assert!(dom.contains("CloudWatch.5"), "matched CIS rules are shown");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the hostile principal, as text");
    assert_text_only(&dom, "inspection");

    let dom = look(&bin, &format!("{open}/console/runs/{}", s.run_id), "run").await;
    assert!(dom.contains("Log groups") && dom.contains("console-trail"), "{dom}");
    assert_text_only(&dom, "run");

    let dom = look(&bin, &format!("{open}/console/events/{}", s.event_ids[0]), "event").await;
    assert!(dom.contains("Related events") && dom.contains("not_sent"), "{dom}");
    assert_text_only(&dom, "event");

    // The locked service: the person is sent to sign in…
    let dom = look(&bin, &format!("{locked}/console"), "sign-in").await;
    assert!(dom.contains("type=\"password\"") && dom.contains("API token"), "{dom}");
    assert!(!dom.contains("console &lt;b&gt;demo"), "nothing is shown before signing in");

    // …but the links of a Guance event open their page without a token.
    let message = console::event_message(&s.app, &s.event_ids[0]).await;
    for kind in ["clusters", "runs"] {
        let link = console::message_link(&message, kind);
        let dom = look(&bin, &format!("{locked}{link}"), &format!("shared-{kind}")).await;
        assert!(dom.contains("Shared link: this page only"), "{kind}: {dom}");
        assert_text_only(&dom, kind);
    }
    let hostile_cluster = {
        let mut found = None;
        for c in &s.cluster_ids {
            let req = axum::http::Request::get(format!("/console/clusters/{c}")).body(axum::body::Body::empty());
            let (_, _, page) = console::send(&s.app.router, req.unwrap()).await;
            if page.contains("onerror=alert(1)&gt;") {
                found = Some(c.clone());
            }
        }
        found.expect("a cluster of the hostile record")
    };
    let key = &s.app.state.settings.console.key;
    let link = key.sign_link(&format!("/console/clusters/{hostile_cluster}"), Utc::now() + TimeDelta::days(1));
    let dom = look(&bin, &format!("{locked}{link}"), "shared-hostile-cluster").await;
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "the record's user agent, as text: {dom}");
    assert!(dom.contains("&lt;/pre&gt;&lt;script&gt;alert(2)"), "the message cannot close its block: {dom}");
    assert_text_only(&dom, "hostile cluster");

    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let dom = look(&bin, &format!("{locked}{tampered}"), "tampered-link").await;
    assert!(dom.contains("not valid") && !dom.contains("CloudTrail record"), "{dom}");
    let expired = key.sign_link(&format!("/console/clusters/{hostile_cluster}"), Utc::now() - TimeDelta::minutes(1));
    let dom = look(&bin, &format!("{locked}{expired}"), "expired-link").await;
    assert!(dom.contains("this link has expired") && !dom.contains("CloudTrail record"), "{dom}");
}
