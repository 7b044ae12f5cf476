//! End-to-end tests of the runtime against real Python workers running the real SDK
//! (python/sluice), real pyarrow, a real pyarrow-less venv and a real uv.

use arrow_array::{
    Array, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use futures::StreamExt;
use serde_json::json;
use sluice_core::{Code, Error};
use sluice_runtime::{CallLogs, CallOutput, CallSpec, ModuleSpec, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cfg(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: dir.join("d"),
        // Shared and persistent so repeated runs do not download packages again.
        uv_cache_dir: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-uv-cache"),
        ),
        call_timeout: Duration::from_secs(30),
        worker_start_timeout: Duration::from_secs(30),
        ..RuntimeConfig::default()
    }
}

async fn runtime(dir: &Path) -> Runtime {
    Runtime::start(cfg(dir)).await.unwrap()
}

fn module(revision_id: i64, source: &str) -> ModuleSpec {
    ModuleSpec {
        revision_id,
        filename: "sales.py".into(),
        source: source.into(),
        env_hash: "base".into(),
        lock: String::new(),
    }
}

fn call(feed: &str, params: serde_json::Value) -> CallSpec {
    CallSpec {
        feed: feed.into(),
        params,
        sources: "{}".into(),
        passthrough: true,
        request_id: "t".into(),
    }
}

async fn collect(out: CallOutput) -> (SchemaRef, Vec<RecordBatch>, CallLogs) {
    match out {
        CallOutput::Rows {
            schema,
            mut batches,
            done,
        } => {
            let mut all = Vec::new();
            while let Some(b) = batches.next().await {
                let b = b.unwrap();
                assert_eq!(b.schema(), schema, "every batch has the call's schema");
                all.push(b);
            }
            (schema, all, done.await.unwrap().unwrap())
        }
        other => panic!("expected rows, got {other:?}"),
    }
}

async fn rows(
    rt: &Runtime,
    m: &ModuleSpec,
    feed: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>, CallLogs), Error> {
    Ok(collect(rt.call(m, call(feed, json!({}))).await?).await)
}

async fn first_int(rt: &Runtime, m: &ModuleSpec, feed: &str) -> i64 {
    let (_, batches, _) = rows(rt, m, feed).await.unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

const SALES: &str = r#"
from datetime import date, datetime
import os, time
import sluice

@sluice.feed(cache="5m")
def sales(region: str = "EU", since: date = date(2024, 1, 1), n: int = 3):
    """Daily sales for one region."""
    print("computing", region)
    return [{"day": date(2024, 1, i + 1), "region": region, "amount": i * 1.5, "units": i,
             "at": datetime(2024, 1, 1, 12, 0, i)} for i in range(n)]

@sluice.feed
def pid():
    return [{"pid": os.getpid()}]

@sluice.feed
def boom():
    print("about to fail")
    raise ValueError("boom")

@sluice.feed
def die():
    os._exit(1)

@sluice.feed
def slow():
    time.sleep(10)
    return [{"x": 1}]

@sluice.feed
def nap():
    time.sleep(1.5)
    return [{"x": 1}]

@sluice.feed
def hog():
    block = bytearray(3 * 1024 * 1024 * 1024)
    return [{"n": len(block)}]

@sluice.feed
def echo(i: int = 0):
    return [{"i": i, "pid": os.getpid()}]

@sluice.feed
def die_soon():
    time.sleep(0.005)
    os._exit(1)

@sluice.feed
def nothing():
    return []

@sluice.feed
def big(n: int = 1000000):
    for i in range(n):
        yield {"i": i, "s": "row"}

@sluice.feed
def late_type():
    for i in range(30000):
        yield {"i": i, "a": None if i < 20000 else i}

@sluice.feed
def passthrough(region: str = "EU"):
    return sluice.sql("warehouse", "select day, amount from sales where region = :region", region=region)
"#;

#[tokio::test]
async fn inspect_reports_signatures() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let feeds = rt.inspect(&module(-1, SALES)).await.unwrap();
    let sales = feeds.iter().find(|f| f.name == "sales").unwrap();
    assert_eq!(sales.doc, "Daily sales for one region.");
    assert_eq!(sales.cache.as_deref(), Some("5m"));
    let names: Vec<_> = sales
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.ty.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("region", "str"), ("since", "date"), ("n", "int")]
    );
    assert_eq!(sales.params[1].default, Some(json!("2024-01-01")));
    assert!(feeds.iter().any(|f| f.name == "big"));
    // The throwaway worker left no pool behind.
    assert!(rt.stats().is_empty());
}

#[tokio::test]
async fn inspect_syntax_error_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let src = "import sluice\n\n@sluice.feed\ndef f():\n    return [{'a': 1}\n\nx = (\n";
    let e = rt.inspect(&module(-2, src)).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule, "{e}");
    assert_eq!(e.extra["file"], "sales.py");
    let line = e.extra["line"].as_u64().unwrap();
    assert!((5..=7).contains(&line), "line {line}: {e}");
    let data_dir = d.path().display().to_string();
    assert!(
        !e.message.contains(&data_dir),
        "internal path leaked: {}",
        e.message
    );
    assert!(e.message.contains("sales.py"), "{}", e.message);
}

#[tokio::test]
async fn inspect_exact_syntax_error_line() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let src = "import sluice\n\n\n@sluice.feed\ndef f(:\n    return []\n";
    let e = rt.inspect(&module(-3, src)).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule);
    assert_eq!(e.extra["line"], 5, "{e}");
}

#[tokio::test]
async fn inspect_missing_import() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let src = "import sluice\nimport sluice_surely_not_installed\n\n@sluice.feed\ndef f():\n    return []\n";
    let e = rt.inspect(&module(-4, src)).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule);
    assert_eq!(e.extra["file"], "sales.py");
    assert_eq!(e.extra["line"], 2, "{e}");
    assert!(
        e.message.contains("sluice_surely_not_installed"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("# /// script"),
        "tells what to do: {}",
        e.message
    );
    assert!(
        !e.traceback
            .unwrap_or_default()
            .contains(&d.path().display().to_string())
    );
    // A call on a module that does not load says so the same way.
    let e = rt
        .call(&module(4, src), call("f", json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule, "{e}");
    assert_eq!(e.extra["file"], "sales.py");
    assert!(
        !e.message.contains(&d.path().display().to_string()),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn inspect_module_without_feeds() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let e = rt
        .inspect(&module(-5, "import sluice\n\ndef f():\n    return []\n"))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule);
    assert!(e.message.contains("no feed"), "{}", e.message);
    assert_eq!(e.extra["file"], "sales.py");
}

#[tokio::test]
async fn rows_via_arrow() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(10, SALES);
    let out = rt
        .call(
            &m,
            call(
                "sales",
                json!({"region": "US", "since": "2024-01-01", "n": 3}),
            ),
        )
        .await
        .unwrap();
    let (schema, batches, logs) = collect(out).await;
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["day", "region", "amount", "units", "at"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Date32);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    assert_eq!(schema.field(3).data_type(), &DataType::Int64);
    assert!(matches!(
        schema.field(4).data_type(),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    ));
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 3);
    let b = &batches[0];
    assert_eq!(
        b.column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(2),
        "US"
    );
    assert_eq!(
        b.column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(2),
        3.0
    );
    assert_eq!(
        b.column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap()
            .value(1),
        19724
    );
    assert_eq!(logs.rows, 3);
    assert_eq!(logs.stdout, "computing US\n");
    assert!(logs.duration_ms >= 0.0);
}

/// A venv made with the standard library's venv module has no pyarrow, so its workers
/// send ROWS frames, which the runtime converts to Arrow itself.
#[tokio::test]
async fn rows_via_rows_frames_without_pyarrow() {
    let d = tempfile::tempdir().unwrap();
    let python = no_pyarrow_venv(d.path());
    let rt = Runtime::start(RuntimeConfig {
        python,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(11, SALES);
    let out = rt
        .call(&m, call("sales", json!({"region": "EU", "n": 4})))
        .await
        .unwrap();
    let (schema, batches, logs) = collect(out).await;
    assert_eq!(schema.field(0).data_type(), &DataType::Date32);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    assert_eq!(schema.field(3).data_type(), &DataType::Int64);
    assert_eq!(
        schema.field(4).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 4);
    let b = &batches[0];
    assert_eq!(
        b.column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(3),
        3
    );
    assert_eq!(
        b.column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap()
            .value(0),
        19723
    );
    let at = b
        .column(4)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(at.value(2), 1_704_110_402_000_000);
    assert_eq!(logs.rows, 4);
    // A streamed generator through ROWS too, several frames.
    let out = rt.call(&m, call("big", json!({"n": 25000}))).await.unwrap();
    let (_, batches, logs) = collect(out).await;
    assert!(batches.len() >= 2, "{} batches", batches.len());
    assert_eq!(logs.rows, 25000);
}

#[tokio::test]
async fn empty_result_has_no_columns() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let (schema, batches, logs) = rows(&rt, &module(12, SALES), "nothing").await.unwrap();
    assert!(schema.fields().is_empty());
    assert!(batches.is_empty());
    assert_eq!(logs.rows, 0);
}

#[tokio::test]
async fn sql_passthrough_and_materialised() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("warehouse.db");
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect({:?}); c.execute('create table sales(day text, region text, amount real)'); c.executemany('insert into sales values (?,?,?)', [('2024-01-01','EU',1.5),('2024-01-02','EU',2.5),('2024-01-02','US',9.0)]); c.commit()",
            db.display().to_string()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let rt = runtime(d.path()).await;
    let m = module(13, SALES);
    match rt
        .call(&m, call("passthrough", json!({"region": "EU"})))
        .await
        .unwrap()
    {
        CallOutput::Sql {
            source,
            query,
            params,
            ..
        } => {
            assert_eq!(source, "warehouse");
            assert!(query.contains(":region"), "{query}");
            assert_eq!(params["region"], "EU");
        }
        other => panic!("expected SQL, got {other:?}"),
    }
    // Without passthrough the worker runs the query itself and streams rows.
    let spec = CallSpec {
        passthrough: false,
        sources: json!({"warehouse": {"kind": "sqlite", "path": db}})
            .to_string()
            .into(),
        ..call("passthrough", json!({"region": "EU"}))
    };
    let (schema, batches, _) = collect(rt.call(&m, spec).await.unwrap()).await;
    assert_eq!(schema.fields().len(), 2);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test]
async fn user_exception_keeps_the_worker() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(14, SALES);
    let pid = first_int(&rt, &m, "pid").await;
    let e = rt.call(&m, call("boom", json!({}))).await.unwrap_err();
    assert_eq!(e.code, Code::FeedRaised);
    assert_eq!(e.message, "ValueError: boom");
    let tb = e.traceback.clone().unwrap();
    assert!(tb.contains("raise ValueError(\"boom\")"), "{tb}");
    assert_eq!(e.extra["stdout"], "about to fail\n");
    assert_eq!(
        first_int(&rt, &m, "pid").await,
        pid,
        "the same worker serves the next call"
    );
    assert_eq!(rt.stats()[0].restarts, 0);
}

#[tokio::test]
async fn crash_is_reported_and_the_worker_replaced() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(15, SALES);
    let pid = first_int(&rt, &m, "pid").await;
    let e = rt.call(&m, call("die", json!({}))).await.unwrap_err();
    assert_eq!(e.code, Code::WorkerCrashed, "{e}");
    assert!(e.message.contains("exit code 1"), "{}", e.message);
    assert!(e.message.contains("not retried"), "{}", e.message);
    let next = first_int(&rt, &m, "pid").await;
    assert_ne!(next, pid, "a replacement worker served the next call");
    assert_eq!(rt.stats()[0].restarts, 1);
    // Another pool is unaffected.
    assert!(rows(&rt, &module(16, SALES), "sales").await.is_ok());
}

#[tokio::test]
async fn timeout_kills_and_replaces() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        call_timeout: Duration::from_secs(1),
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(17, SALES);
    let t = Instant::now();
    let e = rt.call(&m, call("slow", json!({}))).await.unwrap_err();
    assert_eq!(e.code, Code::Timeout);
    assert!(e.message.contains("1 s"), "{}", e.message);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the call was cut at the limit"
    );
    assert!(rows(&rt, &m, "sales").await.is_ok());
    assert_eq!(rt.stats()[0].restarts, 1);
}

/// RLIMIT_AS is address space: pyarrow (with numpy and OpenBLAS) cannot even be imported
/// under 256 MB, so the 256 MB case runs on a pyarrow-less venv and the pyarrow case at
/// 512 MB. Either way the 3 GiB allocation fails and the pool serves the next call.
#[tokio::test]
async fn memory_hog_fails_and_the_pool_recovers() {
    let d = tempfile::tempdir().unwrap();
    let venv = no_pyarrow_venv(d.path());
    for (python, mb) in [(venv, 256), (PathBuf::from("python3"), 512)] {
        let rt = Runtime::start(RuntimeConfig {
            memory_limit_mb: mb,
            python,
            ..cfg(d.path())
        })
        .await
        .unwrap();
        let m = module(18, SALES);
        let e = rt.call(&m, call("hog", json!({}))).await.unwrap_err();
        assert!(
            matches!(e.code, Code::FeedRaised | Code::WorkerCrashed),
            "{mb} MB: {e}"
        );
        assert!(
            e.message.contains("MemoryError") || e.code == Code::WorkerCrashed,
            "{e}"
        );
        let (_, batches, _) = rows(&rt, &m, "sales").await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        rt.shutdown().await;
    }
}

/// A venv made by the standard library's venv module: the base interpreter without its
/// site-packages, so without pyarrow.
fn no_pyarrow_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let python = venv.join("bin/python");
    let probe = std::process::Command::new(&python)
        .args(["-c", "import pyarrow"])
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "the test venv must not see pyarrow"
    );
    python
}

#[tokio::test]
async fn full_queue_is_too_many_requests() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 1,
        queue: 1,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(19, SALES);
    rt.warm(&m).await.unwrap();
    let (r1, m1) = (rt.clone(), m.clone());
    let first = tokio::spawn(async move { rows(&r1, &m1, "nap").await.map(|_| ()) });
    wait_for(|| rt.stats()[0].busy == 1).await;
    let (r2, m2) = (rt.clone(), m.clone());
    let second = tokio::spawn(async move { rows(&r2, &m2, "nap").await.map(|_| ()) });
    wait_for(|| rt.stats()[0].waiting == 1).await;
    let e = rt.call(&m, call("sales", json!({}))).await.unwrap_err();
    assert_eq!(e.code, Code::TooManyRequests);
    assert_eq!(e.retry_after, Some(1));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let s = &rt.stats()[0];
    assert_eq!((s.workers, s.busy, s.waiting), (1, 0, 0));
}

async fn wait_for(cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "condition not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn million_row_generator_streams() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(20, SALES);
    let CallOutput::Rows {
        schema,
        mut batches,
        done,
    } = rt.call(&m, call("big", json!({}))).await.unwrap()
    else {
        panic!("rows expected")
    };
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    let (mut n, mut count, mut largest, mut last) = (0usize, 0usize, 0usize, -1i64);
    while let Some(b) = batches.next().await {
        let b = b.unwrap();
        let ints = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ints.value(0), last + 1, "rows arrive in order");
        last = ints.value(ints.len() - 1);
        n += b.num_rows();
        count += 1;
        largest = largest.max(b.num_rows());
    }
    assert_eq!(n, 1_000_000);
    // Streamed in bounded pieces, never one 1M-row batch.
    assert!(
        count >= 10 && largest <= 100_000,
        "{count} batches, largest {largest}"
    );
    assert_eq!(done.await.unwrap().unwrap().rows, 1_000_000);
}

/// The SDK types a column by its first non-null value, but the call's schema is fixed by
/// the first frame: a column that starts all-null cannot take values later without losing
/// them, so the stream fails loudly instead, and the worker is replaced.
#[tokio::test]
async fn values_after_an_all_null_start_fail_loudly() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(22, SALES);
    let CallOutput::Rows {
        schema,
        mut batches,
        done,
    } = rt.call(&m, call("late_type", json!({}))).await.unwrap()
    else {
        panic!("rows expected")
    };
    assert_eq!(schema.field(1).data_type(), &DataType::Null);
    let mut err = None;
    while let Some(b) = batches.next().await {
        if let Err(e) = b {
            err = Some(e);
        }
    }
    let e = err.expect("the stream must not silently drop the values");
    assert_eq!(e.code, Code::FeedRaised);
    assert!(e.message.contains("column 'a'"), "{}", e.message);
    assert_eq!(done.await.unwrap().unwrap_err().code, Code::FeedRaised);
    assert!(rows(&rt, &m, "sales").await.is_ok());
}

#[tokio::test]
async fn dropping_a_stream_mid_call_frees_the_slot() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 1,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(21, SALES);
    let CallOutput::Rows {
        mut batches, done, ..
    } = rt.call(&m, call("big", json!({}))).await.unwrap()
    else {
        panic!("rows expected")
    };
    let first = batches.next().await.unwrap().unwrap();
    assert!(first.num_rows() < 1_000_000);
    drop(batches);
    assert!(done.await.is_err(), "no logs for a call that never ended");
    // The only slot is free again and the next call works on a fresh worker.
    let (_, b, _) = rows(&rt, &m, "sales").await.unwrap();
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}

#[tokio::test]
async fn concurrent_calls_across_two_pools() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 2,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let (a, b) = (module(30, SALES), module(31, SALES));
    let t = Instant::now();
    let calls: Vec<_> = [&a, &a, &b, &b]
        .into_iter()
        .map(|m| {
            let (rt, m) = (rt.clone(), m.clone());
            tokio::spawn(async move { rows(&rt, &m, "nap").await.map(|(_, b, _)| b.len()) })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let stats = rt.stats();
    assert_eq!(
        stats.iter().map(|s| s.revision_id).collect::<Vec<_>>(),
        vec![30, 31]
    );
    assert!(
        stats.iter().all(|s| s.workers == 2 && s.busy == 0),
        "{stats:?}"
    );
    eprintln!(
        "4 concurrent 1.5 s calls on two pools took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn warm_retire_and_shutdown() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_min: 2,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(40, SALES);
    rt.warm(&m).await.unwrap();
    assert_eq!(rt.stats()[0].workers, 2);
    // Retiring while a call is in flight: the call still finishes.
    let (r1, m1) = (rt.clone(), m.clone());
    let inflight = tokio::spawn(async move { rows(&r1, &m1, "nap").await.map(|_| ()) });
    wait_for(|| rt.stats().first().is_some_and(|s| s.busy == 1)).await;
    rt.retire(40).await;
    assert!(rt.stats().is_empty());
    inflight.await.unwrap().unwrap();
    rt.warm(&module(41, SALES)).await.unwrap();
    rt.shutdown().await;
    assert!(rt.stats().is_empty());
    let e = rt
        .call(&module(41, SALES), call("sales", json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::RuntimeUnavailable);
}

/// Dependencies declared in PEP 723 are resolved by uv, which is provisioned into the
/// data dir from PyPI because it is not on PATH (nor configured) here.
#[tokio::test]
async fn pep723_dependencies_with_uv() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let src = "# /// script\n# dependencies = [\"tabulate\"]\n# ///\nimport sluice, tabulate\n\n@sluice.feed\ndef t():\n    return [{\"v\": tabulate.__version__, \"file\": tabulate.__file__}]\n";
    let msgs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = msgs.clone();
    let progress = move |m: String| sink.lock().unwrap().push(m);
    let p = rt.prepare(src, &progress).await.unwrap();
    assert_eq!(p.requirements, vec!["tabulate"]);
    assert!(p.lock.contains("tabulate=="), "{}", p.lock);
    assert_eq!(p.env_hash.len(), 16);
    let log = msgs.lock().unwrap().clone();
    let uv_on_path = std::process::Command::new("uv")
        .arg("--version")
        .output()
        .is_ok();
    if !uv_on_path {
        assert!(
            log.iter().any(|m| m.starts_with("provisioning uv")),
            "{log:?}"
        );
        assert!(d.path().join("d/tools/uv/bin/uv").is_file());
    }
    assert!(
        log.iter().any(|m| m.starts_with("resolving tabulate")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|m| m.starts_with("installing 1 packages into env")),
        "{log:?}"
    );
    let env_dir: PathBuf = d.path().join("d/envs").join(&p.env_hash);
    assert!(env_dir.join(".sluice-env-complete").is_file());

    // Preparing again reuses the env.
    msgs.lock().unwrap().clear();
    assert_eq!(rt.prepare(src, &progress).await.unwrap(), p);
    assert!(
        msgs.lock().unwrap().iter().any(|m| m.ends_with("cached")),
        "{:?}",
        msgs.lock().unwrap()
    );

    let m = ModuleSpec {
        env_hash: p.env_hash.clone(),
        lock: p.lock.clone(),
        ..module(50, src)
    };
    assert_eq!(rt.inspect(&m).await.unwrap()[0].name, "t");
    let (_, batches, _) = rows(&rt, &m, "t").await.unwrap();
    let file = batches[0]
        .column_by_name("file")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert!(
        file.starts_with(&env_dir.display().to_string()),
        "tabulate comes from the env: {file}"
    );

    // Without the package the same module is rejected at inspect with a hint.
    let e = rt.inspect(&module(-51, src)).await.unwrap_err();
    assert!(e.message.contains("tabulate"), "{e}");

    // A package that does not exist fails resolution, naming it.
    let bad =
        "# /// script\n# dependencies = [\"sluice-no-such-package-qq\"]\n# ///\nimport sluice\n";
    let e = rt.prepare(bad, &|_| {}).await.unwrap_err();
    assert_eq!(e.code, Code::DependencyResolutionFailed);
    assert!(
        e.message.contains("sluice-no-such-package-qq"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn no_dependencies_needs_no_uv() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        uv: Some("/nonexistent/uv".into()),
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let p = rt
        .prepare(SALES, &|m| panic!("no progress expected: {m}"))
        .await
        .unwrap();
    assert_eq!(p.env_hash, "base");
    assert!(p.lock.is_empty() && p.requirements.is_empty());
    let e = rt
        .prepare("# /// script\n# dependencies = [\n# ///\n", &|_| {})
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidFeedModule);
}

/// Numbers for the report (run with --nocapture): worker start and per-call overhead.
#[tokio::test]
async fn measure_overheads() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(60, SALES);
    let t = Instant::now();
    rt.warm(&m).await.unwrap();
    let start = t.elapsed();
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        rows(&rt, &m, "pid").await.unwrap();
    }
    let per_call = t.elapsed() / n;
    eprintln!(
        "worker start (with pyarrow): {start:?}; per-call round trip (1 row via Arrow): {per_call:?}"
    );
    assert!(per_call < Duration::from_secs(5));
}

#[tokio::test]
async fn a_worker_killed_while_idle_is_replaced_without_failing_a_call() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path()).await;
    let m = module(21, SALES);
    let pid = first_int(&rt, &m, "pid").await;
    // Killed between calls, as the OOM killer or an operator's kill -9 would. Right
    // away (the pool only re-checks workers idle for a while) and after a pause.
    for pause in [Duration::ZERO, Duration::from_millis(700)] {
        let pid = first_int(&rt, &m, "pid").await;
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100) + pause).await;
        let next = first_int(&rt, &m, "pid").await;
        assert_ne!(next, pid, "a fresh worker served the call");
    }
    assert_ne!(first_int(&rt, &m, "pid").await, pid);
}

/// Call `echo(i)` and return (i, pid) as the worker saw them.
async fn echo(rt: &Runtime, m: &ModuleSpec, i: i64) -> Result<(i64, i64), Error> {
    let (_, batches, _) = collect(rt.call(m, call("echo", json!({ "i": i }))).await?).await;
    let col = |n: usize| {
        batches[0]
            .column(n)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    Ok((col(0), col(1)))
}

#[tokio::test]
async fn quick_calls_queue_behind_busy_workers_and_each_gets_its_own_answer() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 2,
        queue: 64,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(22, SALES);
    rt.warm(&m).await.unwrap();
    for i in 0..5 {
        echo(&rt, &m, i).await.unwrap();
    }
    // 200 calls from 16 concurrent callers on 2 workers: most wait, and calls that wait
    // while every worker runs a quick call are queued behind one.
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (rt, m) = (rt.clone(), m.clone());
            tokio::spawn(async move {
                let mut pids = std::collections::HashSet::new();
                for k in 0..12 {
                    let i = t * 1000 + k;
                    let (got, pid) = echo(&rt, &m, i).await.unwrap();
                    assert_eq!(got, i, "a caller got another call's answer");
                    pids.insert(pid);
                }
                pids
            })
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for t in tasks {
        pids.extend(t.await.unwrap());
    }
    let s = &rt.stats()[0];
    assert!(
        s.queued_behind > 0,
        "no call was queued behind a busy worker: {s:?}"
    );
    assert_eq!((s.busy, s.waiting, s.restarts), (0, 0, 0), "{s:?}");
    assert!(pids.len() <= 2, "more workers than pool_max: {pids:?}");
}

#[tokio::test]
async fn a_call_queued_behind_a_crashing_one_runs_on_a_fresh_worker() {
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 1,
        queue: 8,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(23, SALES);
    rt.warm(&m).await.unwrap();
    // Until the timing works out: the second call must arrive while the first runs.
    for attempt in 0.. {
        assert!(
            attempt < 20,
            "never managed to queue a call behind die_soon"
        );
        for i in 0..5 {
            echo(&rt, &m, i).await.unwrap();
        }
        let before = rt.stats()[0].queued_behind;
        let (r1, m1) = (rt.clone(), m.clone());
        let dying = tokio::spawn(async move { rows(&r1, &m1, "die_soon").await.map(|_| ()) });
        while rt.stats()[0].busy == 0 {
            tokio::task::yield_now().await;
        }
        let queued = echo(&rt, &m, 7).await;
        let e = dying.await.unwrap().unwrap_err();
        assert_eq!(e.code, Code::WorkerCrashed, "{e}");
        // Whether or not it was queued behind the crash, the quick call succeeded:
        // the crash was not passed on to it.
        assert_eq!(queued.unwrap().0, 7);
        if rt.stats()[0].queued_behind > before {
            break;
        }
    }
}

/// A caller whose CALL is queued behind a busy worker and who then goes away (a client
/// hanging up) costs nothing: the worker runs that call to its end unread and carries on
/// with the calls queued behind it, each of which gets its own answer. No worker restarts.
#[tokio::test]
async fn a_queued_call_whose_caller_went_away_is_drained_not_killed() {
    const SRC: &str = r#"
import os, time
import sluice

@sluice.feed
def echo(i: int = 0):
    return [{"i": i, "pid": os.getpid()}]

@sluice.feed
def short():
    time.sleep(0.05)
    return [{"i": -1, "pid": os.getpid()}]
"#;
    let d = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        pool_max: 1,
        queue: 8,
        ..cfg(d.path())
    })
    .await
    .unwrap();
    let m = module(24, SRC);
    rt.warm(&m).await.unwrap();
    let pid = echo(&rt, &m, 0).await.unwrap().1;
    // Until the timing works out: the first echo call must be queued behind `short`
    // while it runs (queueing stops once the current call has run for 10 ms), the second
    // waits for the worker.
    for attempt in 0.. {
        assert!(attempt < 20, "never managed to queue a call behind `short`");
        for i in 0..5 {
            echo(&rt, &m, i).await.unwrap();
        }
        let before = rt.stats()[0].queued_behind;
        let (r1, m1) = (rt.clone(), m.clone());
        let first = tokio::spawn(async move { rows(&r1, &m1, "short").await.map(|_| ()) });
        while rt.stats()[0].busy == 0 {
            tokio::task::yield_now().await;
        }
        let (r2, m2) = (rt.clone(), m.clone());
        let abandoned = tokio::spawn(async move { echo(&r2, &m2, 1).await });
        while rt.stats()[0].waiting == 0 {
            tokio::task::yield_now().await;
        }
        let (r3, m3) = (rt.clone(), m.clone());
        let behind = tokio::spawn(async move { echo(&r3, &m3, 2).await });
        while rt.stats()[0].waiting < 2 {
            tokio::task::yield_now().await;
        }
        let queued = rt.stats()[0].queued_behind - before;
        abandoned.abort();
        first.await.unwrap().unwrap();
        let (i, p) = behind.await.unwrap().unwrap();
        assert_eq!(
            i, 2,
            "the call behind the abandoned one got another call's answer"
        );
        let s = &rt.stats()[0];
        assert_eq!(s.restarts, 0, "{s:?}");
        assert_eq!(p, pid, "the worker was replaced");
        if queued == 1 {
            // The abandoned call was queued behind `short`, so it ran on this worker,
            // unread, and the next call still found the same worker.
            assert_eq!(echo(&rt, &m, 3).await.unwrap(), (3, pid));
            return;
        }
    }
}
