//! Micro-benchmarks of the hot paths (`make bench` runs them after the
//! workload table): a host -> plugin call through the stable ABI, a
//! dataframe get+set pair and an atomic add on the host side, the same add
//! contended by 1, 2 and 4 threads, and a trigger's condition combination.
//! The plugin library comes from the release build (`make bench` builds it).

#![allow(missing_docs, reason = "criterion's macros generate the entry points")]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use otools_abi::ExportKind;
use otools_abi::Value;
use otools_host::dataframe::Dataframe;
use otools_host::instance::{ContextShared, InstanceHost, Wake};
use otools_host::manifest::Mode;
use otools_host::plugin::loader;
use otools_host::plugin::{PluginObject, construct};

fn release_dir() -> PathBuf {
    // target/release/deps/hot_paths-xxxx
    let exe = std::env::current_exe().expect("bench path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/release")
        .to_path_buf()
}

fn host_to_plugin(c: &mut Criterion) {
    let path = release_dir().join("libprobe.so");
    let Ok(lib) = loader::load(&path, false).map(Arc::new) else {
        eprintln!(
            "skipping host_to_plugin: {} not built (run `make bench`)",
            path.display()
        );
        return;
    };
    let Ok(PluginObject::Service(nop)) = construct(&lib, ExportKind::Service, "Nop", "{}") else {
        panic!("probe exports Nop");
    };
    let shared = Arc::new(ContextShared {
        name: "bench".into(),
        level: AtomicU8::new(5),
        stop: Arc::new(AtomicBool::new(false)),
        fatal: AtomicBool::new(false),
        wake: Wake::default(),
        dataframes: Vec::new(),
        all_dataframes: Arc::new(Vec::new()),
        events: Arc::default(),
        router: Arc::new(otools_host::messaging::InProcess::new(Arc::default())),
        cancel: otools_host::messaging::Cancel::default(),
        flows: Arc::default(),
    });
    let host = InstanceHost::new(shared, "nop".into(), lib, "Nop".into(), 1, Arc::default());
    c.bench_function("host -> plugin main() call (Nop)", |b| {
        b.iter(|| host.with_handle(|h| black_box(nop.main(h))));
    });
}

fn dataframe(c: &mut Criterion) {
    let df = Dataframe::new("d", [(String::from("k"), Value::Int(0))]);
    c.bench_function("dataframe get+set pair (host side)", |b| {
        b.iter(|| {
            let n = df
                .get(1, "k", None)
                .ok()
                .flatten()
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            df.set(1, "k", Value::Int(n + 1), None).ok();
        });
    });
    c.bench_function("dataframe atomic add (host side)", |b| {
        b.iter(|| df.add(1, "k", &Value::Int(1), None).ok());
    });
    let mut group = c.benchmark_group("dataframe add contended");
    for threads in [1usize, 2, 4] {
        let df = Arc::new(Dataframe::new("d", []));
        group.bench_function(
            format!("{threads} thread(s), time per add per thread"),
            |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let df = Arc::clone(&df);
                            std::thread::spawn(move || {
                                for _ in 0..iters {
                                    df.add(t as u64 + 1, "k", &Value::Int(1), None).ok();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        let _ = h.join();
                    }
                    start.elapsed()
                });
            },
        );
    }
    group.finish();
}

fn trigger(c: &mut Criterion) {
    let results = [true, false, true];
    c.bench_function("trigger combination (xor of 3)", |b| {
        b.iter(|| Mode::Xor.fires(black_box(results).iter().copied()));
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = host_to_plugin, dataframe, trigger
}
criterion_main!(hot_paths);
