//! `/api/v1/inspections`: every route and every error mode, on Postgres and on SQLite.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{BACKENDS, Backend, TestApp};

fn valid(name: &str) -> Value {
    json!({
        "name": name,
        "description": "prod account",
        "configs": "aws-cloudtrail-logs-1\n/aws/cloudtrail/org",
        "aws": {
            "region": "us-east-1",
            "account_id": "123456789012",
            "access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "session_token": "FwoGZXIvYXdzEXAMPLETOKEN"
        },
        "ignore": {"error_codes": ["ThrottlingException"], "principal_arns": ["arn:aws:sts::*:assumed-role/ci-*"]},
        "alert_policy": {"guance_alert_policy_uuids": ["altpl_0123456789abcdef"], "notify_levels": ["critical", "error"], "silence_minutes": 30}
    })
}

/// Secrets must never come back, in any shape.
fn assert_no_secrets(v: &Value) {
    let text = v.to_string();
    for secret in ["wJalrXUtnFEMI", "FwoGZXIvYXdzEXAMPLETOKEN", "secret_access_key\":\"", "session_token\":\""] {
        assert!(!text.contains(secret), "response leaks {secret}: {text}");
    }
}

async fn each_backend<F, Fut>(f: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in BACKENDS {
        f(TestApp::new(backend).await).await;
    }
}

#[tokio::test]
async fn create_read_update_delete() {
    each_backend(|app| async move {
        let (status, headers, created) = app.call(Method::POST, "/api/v1/inspections", Some(valid("prod"))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(headers["location"], format!("/api/v1/inspections/{id}").as_str());
        assert_eq!(created["log_groups"], json!(["aws-cloudtrail-logs-1", "/aws/cloudtrail/org"]));
        assert_eq!(created["enabled"], true);
        assert_eq!(created["lookback_minutes"], 60);
        assert_eq!(created["delivery_delay_minutes"], 10);
        assert_eq!(created["baseline_days"], 7);
        assert_eq!(created["strategy"], "filter_log_events");
        assert_eq!(created["aws"]["secret_access_key_set"], true);
        assert_eq!(created["aws"]["session_token_set"], true);
        assert_eq!(created["aws"]["access_key_id"], "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(created["alert_policy"]["silence_minutes"], 30);
        assert_eq!(created["last_run"], Value::Null);
        assert_no_secrets(&created);

        let (status, got) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        // The same, but for the trigger id, which only the creating answer shows.
        let mut shown_once = created.clone();
        shown_once.as_object_mut().unwrap().remove("trigger_id");
        assert_eq!(got, shown_once);

        // PATCH: present fields replace; secrets can be cleared with null.
        let (status, patched) = app
            .patch(
                &format!("/api/v1/inspections/{id}"),
                json!({"enabled": false, "lookback_minutes": 120, "strategy": "logs_insights",
                       "aws": {"access_key_id": null, "secret_access_key": null, "session_token": null, "role_arn": "arn:aws:iam::123456789012:role/reader", "external_id": "ext-1"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["enabled"], false);
        assert_eq!(patched["lookback_minutes"], 120);
        assert_eq!(patched["strategy"], "logs_insights");
        assert_eq!(patched["aws"]["secret_access_key_set"], false);
        assert_eq!(patched["aws"]["access_key_id"], Value::Null);
        assert_eq!(patched["aws"]["role_arn"], "arn:aws:iam::123456789012:role/reader");
        assert_eq!(patched["name"], "prod");
        assert_eq!(patched["log_groups"], created["log_groups"]);
        assert_ne!(patched["updated_at"], created["updated_at"]);

        let (status, _, body) = app.call(Method::DELETE, &format!("/api/v1/inspections/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(body, Value::Null);
        let (status, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "not_found");
        let (status, _, _) = app.call(Method::DELETE, &format!("/api/v1/inspections/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn secrets_are_write_only_everywhere() {
    each_backend(|app| async move {
        let created = app.create_inspection(valid("secretive")).await;
        let id = created["id"].as_str().unwrap();
        let (_, list) = app.get("/api/v1/inspections").await;
        assert_no_secrets(&list);
        let (_, one) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_no_secrets(&one);
        let (_, patched) = app.patch(&format!("/api/v1/inspections/{id}"), json!({"description": "x"})).await;
        assert_no_secrets(&patched);
        assert_eq!(patched["aws"]["secret_access_key_set"], true, "a PATCH without aws keeps the secret");
    })
    .await;
}

#[tokio::test]
async fn duplicate_name_is_409() {
    each_backend(|app| async move {
        app.create_inspection(valid("same")).await;
        let (status, v) = app.post("/api/v1/inspections", valid("same")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(v["error"]["code"], "name_taken");
        // Renaming onto a taken name is the same conflict.
        let other = app.create_inspection(valid("other")).await;
        let (status, v) =
            app.patch(&format!("/api/v1/inspections/{}", other["id"].as_str().unwrap()), json!({"name": "same"})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(v["error"]["code"], "name_taken");
    })
    .await;
}

#[tokio::test]
async fn validation_lists_every_bad_field() {
    let app = TestApp::new(Backend::Sqlite).await;
    let (status, v) = app
        .post(
            "/api/v1/inspections",
            json!({
                "name": "",
                "log_groups": ["ok", "bad name!", "ok"],
                "aws": {"region": "moon-1", "account_id": "abc"},
                "lookback_minutes": 2000,
                "delivery_delay_minutes": 121,
                "baseline_days": 91
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "validation_failed");
    let fields: Vec<&str> = v["error"]["fields"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "aws.account_id",
            "aws.region",
            "baseline_days",
            "delivery_delay_minutes",
            "log_groups[1]",
            "log_groups[2]",
            "lookback_minutes",
            "name"
        ]
    );

    let (status, v) = app.post("/api/v1/inspections", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = v["error"]["fields"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["aws", "log_groups", "name"]);

    let fifty_one: Vec<String> = (0..51).map(|i| format!("g{i}")).collect();
    let (status, v) = app
        .post("/api/v1/inspections", json!({"name": "n", "log_groups": fifty_one, "aws": {"region": "us-east-1"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["log_groups"].is_array());

    let (status, v) = app
        .post(
            "/api/v1/inspections",
            json!({"name": "n", "log_groups": ["a"], "configs": "b", "aws": {"region": "us-east-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["configs"].is_array());

    let (status, v) = app
        .post(
            "/api/v1/inspections",
            json!({"name": "n", "log_groups": ["a"], "aws": {"region": "us-east-1", "secret_access_key": "only-half"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["aws.access_key_id"].is_array());
    assert!(!v.to_string().contains("only-half"), "a rejected secret is not echoed: {v}");

    let (status, v) = app
        .post(
            "/api/v1/inspections",
            json!({"name": "n", "log_groups": ["a"], "aws": {"region": "us-east-1"}, "alert_policy": {"guance_alert_policy_uuids": ["nope"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["alert_policy.guance_alert_policy_uuids[0]"].is_array());
}

#[tokio::test]
async fn malformed_json_wrong_types_and_unknown_fields() {
    let app = TestApp::new(Backend::Sqlite).await;
    let raw = |body: &'static str, ct: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/inspections")
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, _, body) = app.send(raw("{\"name\": ", "application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "malformed_json");

    let (status, _, body) = app.send(raw("{\"name\": 5}", "application/json")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_body");
    assert!(v["error"]["fields"]["name"].is_array(), "{v}");

    let (status, _, body) = app.send(raw("{\"name\": \"x\", \"colour\": \"red\"}", "application/json")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown field `colour`"), "{v}");

    let (status, _, body) =
        app.send(raw("{\"aws\": {\"region\": \"us-east-1\", \"colour\": 1}}", "application/json")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"]["fields"]["aws"].is_array() || v["error"]["fields"]["aws.colour"].is_array(), "{v}");

    let (status, _, body) = app.send(raw("name=x", "application/x-www-form-urlencoded")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn body_limit_unknown_routes_and_methods_answer_json() {
    let app = TestApp::with_settings(
        Backend::Sqlite,
        crate::common::test_runner_settings(),
        cloudtrail_inspector::http::HttpSettings { max_body_bytes: 1024, ..Default::default() },
    )
    .await;
    let big = json!({"name": "x".repeat(4096)});
    let (status, _, v) = app.call(Method::POST, "/api/v1/inspections", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "payload_too_large");

    let (status, v) = app.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");

    let (status, _, v) = app.call(Method::PUT, "/api/v1/inspections", Some(json!({}))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["code"], "method_not_allowed");
    assert!(v["error"]["message"].is_string());

    let (status, v) = app.get("/api/v1/inspections/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn list_pages_and_filters() {
    each_backend(|app| async move {
        for i in 0..7 {
            let mut body = valid(&format!("Team-{i}"));
            if i % 2 == 1 {
                body["enabled"] = json!(false);
            }
            app.create_inspection(body).await;
        }
        app.create_inspection(valid("100%_literal")).await;

        // Pages of 3 walk all 8, oldest first, without repeats.
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let uri = match &cursor {
                Some(c) => format!("/api/v1/inspections?limit=3&cursor={c}"),
                None => "/api/v1/inspections?limit=3".into(),
            };
            let (status, page) = app.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 3);
            names.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_string()));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(names, ["Team-0", "Team-1", "Team-2", "Team-3", "Team-4", "Team-5", "Team-6", "100%_literal"]);

        let (_, page) = app.get("/api/v1/inspections?enabled=false").await;
        let disabled: Vec<&str> =
            page["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(disabled, ["Team-1", "Team-3", "Team-5"]);

        let (_, page) = app.get("/api/v1/inspections?name=team-").await;
        assert_eq!(page["items"].as_array().unwrap().len(), 7, "name filter is case-insensitive");
        // `%` and `_` are literal characters in the filter, not wildcards.
        let (_, page) = app.get("/api/v1/inspections?name=0%25_").await;
        let found: Vec<&str> = page["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(found, ["100%_literal"]);

        for bad in ["limit=0", "limit=201", "limit=abc", "cursor=%%%", "enabled=maybe"] {
            let (status, v) = app.get(&format!("/api/v1/inspections?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(v["error"]["message"].is_string());
        }
    })
    .await;
}

#[tokio::test]
async fn health_and_readiness() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let (status, v) = app.get("/healthz").await;
        assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
        let (status, v) = app.get("/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["database"], if backend == Backend::Postgres { "postgres" } else { "sqlite" });
    }
}

#[tokio::test]
async fn trigger_id_timeout_and_schedule() {
    each_backend(|app| async move {
        let created = app.create_inspection(valid("scheduled")).await;
        let id = created["id"].as_str().unwrap().to_string();
        // Defaults: the original's timeout=900 and fixed_crontab='0 * * * *'.
        assert_eq!(created["timeout_seconds"], 900);
        assert_eq!(created["schedule"], "0 * * * *");
        assert_eq!(created["schedule_timezone"], "UTC");
        assert!(created["next_run_at"].is_string(), "{created}");
        let trigger = created["trigger_id"].as_str().unwrap();
        assert_eq!(trigger.len(), 64);
        let other = app.create_inspection(valid("scheduled-too")).await;
        assert_ne!(other["trigger_id"], created["trigger_id"], "every inspection has its own");

        let (status, patched) = app
            .patch(
                &format!("/api/v1/inspections/{id}"),
                json!({"timeout_seconds": 60, "schedule": " */15 8-18 * * mon-fri ", "schedule_timezone": "Asia/Shanghai"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["timeout_seconds"], 60);
        assert_eq!(patched["schedule"], "*/15 8-18 * * mon-fri");
        assert_eq!(patched["schedule_timezone"], "Asia/Shanghai");
        assert!(patched.get("trigger_id").is_none(), "shown only by create and rotate: {patched}");
        let (_, read) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert!(read.get("trigger_id").is_none(), "{read}");
        let hash = cloudtrail_inspector::model::inspection::trigger_id_hash(trigger);
        let found = app.store().inspection_by_trigger_hash(&hash).await.unwrap().expect("editing keeps the trigger id");
        assert_eq!(found.id.to_string(), id);

        for (body, field, hint) in [
            (json!({"schedule": "61 * * * *"}), "schedule", "5-field cron"),
            (json!({"schedule": "0 * * *"}), "schedule", "5-field cron"),
            (json!({"schedule": "0 0 0 * * *"}), "schedule", "5-field cron"),
            (json!({"schedule": "0 0 31 2 *"}), "schedule", "never"),
            (json!({"schedule_timezone": "Mars/Olympus_Mons"}), "schedule_timezone", "IANA"),
            (json!({"timeout_seconds": 0}), "timeout_seconds", "between 1 and 3600"),
            (json!({"timeout_seconds": 3601}), "timeout_seconds", "between 1 and 3600"),
        ] {
            let (status, v) = app.patch(&format!("/api/v1/inspections/{id}"), body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
            let msgs = v["error"]["fields"][field].as_array().unwrap_or_else(|| panic!("{body}: {v}"));
            assert!(msgs.iter().any(|m| m.as_str().unwrap().contains(hint)), "{body}: {v}");
        }
        let (_, unchanged) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(unchanged["schedule"], "*/15 8-18 * * mon-fri");
    })
    .await;
}

#[tokio::test]
async fn inspections_from_before_the_migration_get_a_trigger_id_and_defaults() {
    use cloudtrail_inspector::model::inspection::{new_trigger_id, trigger_id_hash};
    use sqlx::migrate::Migrator;
    use std::borrow::Cow;

    for backend in BACKENDS {
        let guard = crate::common::empty_database(backend).await;
        let dir = match backend {
            Backend::Postgres => "migrations/postgres",
            Backend::Sqlite => "migrations/sqlite",
        };
        let mut first = Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).await.unwrap();
        first.migrations = Cow::Owned(first.migrations[..1].to_vec());
        // Settings as the first release stored them: no timeout, schedule or time zone.
        let settings = json!({"source": {"kind": "cloudwatch_logs"}, "log_groups": ["g"], "aws": {"region": "us-east-1"},
            "lookback_minutes": 60, "delivery_delay_minutes": 10, "baseline_days": 7, "max_catch_up_minutes": 1440,
            "strategy": "filter_log_events"});
        let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
        let now = chrono::Utc::now();
        let insert = "insert into inspections (id, name, settings, created_at, updated_at) values ($1, $2, $3, $4, $4)";
        match backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&guard.url).await.unwrap();
                first.run(&pool).await.unwrap();
                for (n, id) in ids.iter().enumerate() {
                    sqlx::query(insert)
                        .bind(id)
                        .bind(format!("old-{n}"))
                        .bind(sqlx::types::Json(&settings))
                        .bind(now)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                pool.close().await;
            }
            Backend::Sqlite => {
                let opts = guard.url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                first.run(&pool).await.unwrap();
                for (n, id) in ids.iter().enumerate() {
                    sqlx::query(insert)
                        .bind(id)
                        .bind(format!("old-{n}"))
                        .bind(sqlx::types::Json(&settings))
                        .bind(now)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                pool.close().await;
            }
        }

        let store = cloudtrail_inspector::store::connect(&guard.url, 2, crate::common::test_cipher()).await.unwrap();
        store.migrate().await.unwrap();
        let a = store.get_inspection(ids[0]).await.unwrap().unwrap();
        let b = store.get_inspection(ids[1]).await.unwrap().unwrap();
        for i in [&a, &b] {
            assert_eq!(i.settings.timeout_seconds, 900);
            assert_eq!(i.settings.schedule, "0 * * * *");
            assert_eq!(i.settings.schedule_timezone, "UTC");
            // Their trigger ids were made by the migrations and never shown: rotating gives one.
            assert!(i.trigger_id.is_none());
            let rotated = store.rotate_trigger_id(i.id, &new_trigger_id(), chrono::Utc::now()).await.unwrap().unwrap();
            let t = rotated.trigger_id.unwrap();
            assert_eq!(t.expose().len(), 64, "{backend:?}");
            let hash = trigger_id_hash(t.expose());
            assert_eq!(store.inspection_by_trigger_hash(&hash).await.unwrap().unwrap().id, i.id);
        }
        // Each gets the Guance registration job that inspections created since get.
        let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
        let lease = later + chrono::TimeDelta::minutes(1);
        let jobs = store.claim_checker_jobs(later, lease, 10, later - chrono::TimeDelta::minutes(5)).await.unwrap();
        let mut registered: Vec<_> = jobs.iter().filter_map(|j| j.inspection_id).collect();
        registered.sort();
        assert_eq!(registered, ids, "{backend:?}");
    }
}

/// The migrator of `backend` with only its first `n` migrations.
async fn first_migrations(backend: Backend, n: usize) -> sqlx::migrate::Migrator {
    let dir = match backend {
        Backend::Postgres => "migrations/postgres",
        Backend::Sqlite => "migrations/sqlite",
    };
    let mut m = sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).await.unwrap();
    m.migrations = std::borrow::Cow::Owned(m.migrations[..n].to_vec());
    m
}

#[tokio::test]
async fn trigger_ids_are_stored_as_hashes_only_and_urls_in_use_keep_working() {
    use cloudtrail_inspector::model::inspection::{new_trigger_id, trigger_id_hash};
    for backend in BACKENDS {
        // A database as the previous release left it: the clear id beside its hash.
        let guard = crate::common::empty_database(backend).await;
        let id = uuid::Uuid::now_v7();
        let old = new_trigger_id();
        let settings = json!({"log_groups": ["g"], "aws": {"region": "us-east-1"}, "lookback_minutes": 60,
            "delivery_delay_minutes": 10, "baseline_days": 7, "max_catch_up_minutes": 1440, "strategy": "filter_log_events"});
        let insert = "insert into inspections (id, name, settings, created_at, updated_at, trigger_id, trigger_id_hash) \
            values ($1, 'in-use', $2, $3, $3, $4, $5)";
        let now = chrono::Utc::now();
        let columns = "select count(*) from inspections where trigger_id is not null";
        match backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&guard.url).await.unwrap();
                first_migrations(backend, 3).await.run(&pool).await.unwrap();
                let q = sqlx::query(insert).bind(id).bind(sqlx::types::Json(&settings)).bind(now);
                q.bind(old.expose()).bind(trigger_id_hash(old.expose())).execute(&pool).await.unwrap();
                let store =
                    cloudtrail_inspector::store::connect(&guard.url, 2, crate::common::test_cipher()).await.unwrap();
                store.migrate().await.unwrap();
                assert!(sqlx::query(columns).execute(&pool).await.is_err(), "the clear column is gone");
                check_hash_only(&store, id, &old).await;
            }
            Backend::Sqlite => {
                let opts = guard.url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                first_migrations(backend, 3).await.run(&pool).await.unwrap();
                let q = sqlx::query(insert).bind(id).bind(sqlx::types::Json(&settings)).bind(now);
                q.bind(old.expose()).bind(trigger_id_hash(old.expose())).execute(&pool).await.unwrap();
                let store =
                    cloudtrail_inspector::store::connect(&guard.url, 2, crate::common::test_cipher()).await.unwrap();
                store.migrate().await.unwrap();
                assert!(sqlx::query(columns).execute(&pool).await.is_err(), "the clear column is gone");
                check_hash_only(&store, id, &old).await;
            }
        }
    }
}

async fn check_hash_only(
    store: &cloudtrail_inspector::store::DynStore,
    id: uuid::Uuid,
    old: &cloudtrail_inspector::model::Secret,
) {
    let hash = cloudtrail_inspector::model::inspection::trigger_id_hash(old.expose());
    let found = store.inspection_by_trigger_hash(&hash).await.unwrap().expect("the URL in use still works");
    assert_eq!(found.id, id);
    assert!(found.trigger_id.is_none());
    // A new inspection's id is on the created value only.
    let draft = cloudtrail_inspector::model::inspection::InspectionDraft::of(&found);
    let draft = cloudtrail_inspector::model::inspection::InspectionDraft { name: "new".into(), ..draft };
    let created = store.create_inspection(uuid::Uuid::now_v7(), &draft, chrono::Utc::now()).await.unwrap();
    let shown = created.trigger_id.expect("shown at creation");
    let again = store.get_inspection(created.id).await.unwrap().unwrap();
    assert!(again.trigger_id.is_none());
    let hash = cloudtrail_inspector::model::inspection::trigger_id_hash(shown.expose());
    assert_eq!(store.inspection_by_trigger_hash(&hash).await.unwrap().unwrap().id, created.id);
}

#[tokio::test]
async fn nul_characters_are_refused_alike_on_both_backends() {
    each_backend(|app| async move {
        let created = app.create_inspection(valid("nul")).await;
        let id = created["id"].as_str().unwrap();
        let mut new = valid("nul-too");
        new["description"] = json!("a\u{0}b");
        let (status, v) = app.post("/api/v1/inspections", new).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"]["fields"]["description"].is_array(), "{v}");
        for (body, field) in [
            (json!({"description": "a\u{0}b"}), "description"),
            (json!({"aws": {"endpoint_url": "http://127.0.0.1\u{0}/"}}), "aws.endpoint_url"),
            (json!({"aws": {"role_arn": "arn:aws:iam::123456789012:role/a\u{0}"}}), "aws.role_arn"),
            (json!({"ignore": {"event_sources": ["s3\u{0}"]}}), "ignore.event_sources[0]"),
        ] {
            let (status, v) = app.patch(&format!("/api/v1/inspections/{id}"), body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{:?} {body}: {v}", app.backend);
            assert!(v["error"]["fields"][field].is_array(), "{body}: {v}");
        }
        for uri in [
            "/api/v1/inspections?name=%00".to_string(),
            format!("/api/v1/inspections/{id}/clusters?error_code=Access%00Denied"),
            format!("/api/v1/inspections/{id}/clusters?event_source=%00"),
        ] {
            let (status, v) = app.get(&uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{:?} {uri}: {v}", app.backend);
            assert!(v["error"]["message"].as_str().unwrap().contains("NUL"), "{v}");
        }
        let (_, unchanged) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(unchanged["description"], "prod account");
    })
    .await;
}

#[tokio::test]
async fn names_are_normalised_and_invisible_characters_refused() {
    each_backend(|app| async move {
        app.create_inspection(json!({"name": "Caf\u{e9}", "log_groups": ["g"], "aws": {"region": "us-east-1"}})).await;
        // The same name, with the accent as a combining character.
        let (status, v) = app
            .post(
                "/api/v1/inspections",
                json!({"name": "Cafe\u{301}", "log_groups": ["g"], "aws": {"region": "us-east-1"}}),
            )
            .await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("name_taken")), "{v}");
        let (_, found) = app.get("/api/v1/inspections?name=cafe%CC%81").await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
        for name in ["prod\u{202E}dorp", "\u{FEFF}prod", "pr\u{200B}od", "prod\u{2066}", "prod\u{200F}"] {
            let (status, v) = app
                .post("/api/v1/inspections", json!({"name": name, "log_groups": ["g"], "aws": {"region": "us-east-1"}}))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}: {v}");
            assert!(v["error"]["fields"]["name"][0].as_str().unwrap().contains("invisible"), "{v}");
        }
    })
    .await;
}

#[tokio::test]
async fn endpoint_urls_are_urls_and_metadata_services_are_refused() {
    each_backend(|app| async move {
        let created = app.create_inspection(valid("endpoints")).await;
        let id = created["id"].as_str().unwrap();
        for bad in [
            "http://",
            "http://%00/",
            "http://127.0.0.1:65536/",
            "http://user:pass@127.0.0.1/",
            "http://127.0.0.1/\u{1b}[31m",
            "http://127.0.0.1/\u{202E}",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/",
        ] {
            let (status, v) =
                app.patch(&format!("/api/v1/inspections/{id}"), json!({"aws": {"endpoint_url": bad}})).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {v}");
            assert!(v["error"]["fields"]["aws.endpoint_url"].is_array(), "{bad:?}: {v}");
        }
        let (status, v) = app
            .patch(&format!("/api/v1/inspections/{id}"), json!({"aws": {"endpoint_url": "http://127.0.0.1:4566"}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    })
    .await;
    // An operator may allow metadata addresses (a test double listening on one, say).
    let http = cloudtrail_inspector::http::HttpSettings { allow_metadata_endpoints: true, ..Default::default() };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let mut body = valid("allowed");
    body["aws"]["endpoint_url"] = json!("http://169.254.169.254:4566");
    app.create_inspection(body).await;
}

#[tokio::test]
async fn bodies_that_are_not_objects_start_nothing() {
    let app = TestApp::new(Backend::Sqlite).await;
    let created = app.create_inspection(valid("objects-only")).await;
    let id = created["id"].as_str().unwrap();
    for (uri, body) in [
        (format!("/api/v1/inspections/{id}/runs?wait=false"), "[]"),
        (format!("/api/v1/inspections/{id}/runs?wait=false"), "[true]"),
        (format!("/api/v1/inspections/{id}/runs?wait=false"), "null"),
        ("/api/v1/inspections".to_string(), "[\"a\", [], [], {}]"),
    ] {
        let req = Request::post(&uri).header("content-type", "application/json").body(Body::from(body)).unwrap();
        let (status, _, bytes) = app.send(req).await;
        assert!(status.is_client_error(), "{uri} {body}: {status}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["fields"]["body"][0], "must be a JSON object", "{uri} {body}: {v}");
    }
    let (_, runs) = app.get(&format!("/api/v1/runs?inspection_id={id}")).await;
    assert_eq!(runs["items"], json!([]), "{runs}");
}
