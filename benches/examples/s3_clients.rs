//! Issue #13, "choose, measure, say why": Sluice's own S3 writer (`S3Store`, on
//! `aws-sdk-s3`) against `object_store`'s `AmazonS3` (`put_multipart` + `WriteMultipart`),
//! uploading the same bytes as one multipart object into one local Garage node.
//!
//! Both clients get the same endpoint, credentials, part size (8 MiB), concurrency (2 parts
//! in flight while the next fills), unsigned bodies (`UNSIGNED-PAYLOAD`) and no checksums,
//! and are fed the same in-memory data in 256 KiB chunks, as the import pipeline feeds its
//! store. Each upload runs in a child process of its own, so that its CPU time
//! (`CLOCK_PROCESS_CPUTIME_ID`: user + system, all threads) and its peak memory (`VmHWM`,
//! reset through `/proc/self/clear_refs` once the data and the client are ready) belong to
//! that client alone; rounds alternate which client goes first. The parent prints every
//! upload, the medians and the object_store/Sluice ratios.
//!
//! ```sh
//! cargo run --release -p sluice-benches --features s3-clients --example s3_clients
//! SLUICE_BENCH_BYTES=$((256<<20)) SLUICE_BENCH_ROUNDS=5 cargo run --release … # other sizes
//! ```

use std::error::Error;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use sluice_pipeline::store::s3::{
    garage, S3Config, DEFAULT_ABANDON_AFTER, DEFAULT_CREATE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use sluice_pipeline::store::space::Reserve;
use sluice_pipeline::store::{Access, S3Store, Store};

/// The `sluice` binary's allocator, so that the memory figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Sluice's default part size (`store.s3.part_size`).
const PART_SIZE: usize = 8 << 20;
/// Sluice's default parts in flight per writer (`store.s3.parts_in_flight`).
const PARTS_IN_FLIGHT: usize = 2;
/// The pipeline's chunk size (what a store's `append` receives).
const CHUNK: usize = 256 << 10;
/// Distinct random bytes held in memory and fed over and over: smaller than the upload, so
/// that the peak memory shows the client's buffers rather than the data's.
const POOL: usize = 32 << 20;
/// Default upload size (`SLUICE_BENCH_BYTES`).
const DEFAULT_BYTES: u64 = 1 << 30;
/// Default rounds (`SLUICE_BENCH_ROUNDS`); each uploads once through each client.
const DEFAULT_ROUNDS: usize = 3;
/// Threads of the client's runtime: Sluice's store runs [`sluice_pipeline::store::s3::IO_THREADS`],
/// object_store gets as many.
const IO_THREADS: usize = sluice_pipeline::store::s3::IO_THREADS;

/// The two clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// Sluice's `S3Store` writer (`aws-sdk-s3`).
    Sluice,
    /// `object_store::aws::AmazonS3` with `WriteMultipart`.
    ObjectStore,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Sluice => "sluice",
            Client::ObjectStore => "object_store",
        }
    }

    fn parse(name: &str) -> Result<Client> {
        match name {
            "sluice" => Ok(Client::Sluice),
            "object_store" => Ok(Client::ObjectStore),
            other => Err(format!("unknown client {other:?}").into()),
        }
    }
}

/// One upload's figures, as a child prints them.
#[derive(Clone, Copy, Debug)]
struct Run {
    wall: Duration,
    cpu: Duration,
    /// Peak resident memory above the resident memory once data and client were ready.
    peak_over_baseline_kib: u64,
}

fn main() -> ExitCode {
    // reqwest's rustls without a provider of its own (object_store's `ring` setup).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--child") => child(args.get(2..).unwrap_or_default()),
        None => parent(),
        Some(other) => Err(format!("unknown argument {other:?} (this program takes none)").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3_clients: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A number from the environment, or `default`.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

fn parent() -> Result<()> {
    let bytes: u64 = env_number("SLUICE_BENCH_BYTES", DEFAULT_BYTES)?;
    let rounds: usize = env_number("SLUICE_BENCH_ROUNDS", DEFAULT_ROUNDS)?;
    if bytes == 0 || rounds == 0 {
        return Err("SLUICE_BENCH_BYTES and SLUICE_BENCH_ROUNDS must be positive".into());
    }
    let garage = garage::shared();
    let exe = std::env::current_exe()?;
    println!(
        "{bytes} bytes per upload, {} MiB parts, {PARTS_IN_FLIGHT} in flight, {} KiB chunks, \
         unsigned bodies; Garage at {}; load average at start: {}",
        PART_SIZE >> 20,
        CHUNK >> 10,
        garage.endpoint,
        load_average()
    );
    let mut runs: Vec<(Client, Run)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Client::Sluice, Client::ObjectStore]
        } else {
            [Client::ObjectStore, Client::Sluice]
        };
        for client in order {
            let prefix = garage.config().prefix;
            let out = Command::new(&exe)
                .args(["--child", client.name(), &garage.endpoint, &prefix])
                .arg(bytes.to_string())
                .output()?;
            if !out.status.success() {
                return Err(format!(
                    "{} upload failed: {}",
                    client.name(),
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            let run = parse_run(&String::from_utf8_lossy(&out.stdout))?;
            println!(
                "round {round}: {:<12} {}",
                client.name(),
                describe(bytes, &run)
            );
            runs.push((client, run));
        }
    }
    let sluice = median_run(&runs, Client::Sluice);
    let object_store = median_run(&runs, Client::ObjectStore);
    println!("medians of {rounds} rounds:");
    println!("  {:<12} {}", "sluice", describe(bytes, &sluice));
    println!(
        "  {:<12} {}",
        "object_store",
        describe(bytes, &object_store)
    );
    println!(
        "object_store / sluice: CPU per GiB {:.2}, MB/s {:.2}, peak memory {:.2}",
        object_store.cpu.as_secs_f64() / sluice.cpu.as_secs_f64(),
        sluice.wall.as_secs_f64() / object_store.wall.as_secs_f64(),
        kib_ratio(
            object_store.peak_over_baseline_kib,
            sluice.peak_over_baseline_kib
        ),
    );
    println!("load average at end: {}", load_average());
    Ok(())
}

/// `N MB in T s: R MB/s, C CPU s/GiB, peak +M MiB`.
fn describe(bytes: u64, run: &Run) -> String {
    let mb = bytes as f64 / 1e6;
    let gib = bytes as f64 / f64::from(1u32 << 30);
    format!(
        "{mb:.0} MB in {:6.2} s: {:6.1} MB/s, CPU {:5.2} s/GiB, peak +{:.1} MiB",
        run.wall.as_secs_f64(),
        mb / run.wall.as_secs_f64(),
        run.cpu.as_secs_f64() / gib,
        run.peak_over_baseline_kib as f64 / 1024.0
    )
}

fn kib_ratio(a: u64, b: u64) -> f64 {
    a as f64 / (b.max(1) as f64)
}

/// Each figure's median over one client's runs (taken separately).
fn median_run(runs: &[(Client, Run)], client: Client) -> Run {
    let mine: Vec<Run> = runs
        .iter()
        .filter(|(c, _)| *c == client)
        .map(|(_, r)| *r)
        .collect();
    Run {
        wall: median(mine.iter().map(|r| r.wall).collect()),
        cpu: median(mine.iter().map(|r| r.cpu).collect()),
        peak_over_baseline_kib: median(mine.iter().map(|r| r.peak_over_baseline_kib).collect()),
    }
}

/// The middle value (the lower middle of an even count); `T::default()` of none.
fn median<T: Ord + Copy + Default>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A child's line: wall nanoseconds, CPU nanoseconds, peak KiB over baseline.
fn parse_run(line: &str) -> Result<Run> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("child printed {line:?}: {e}"))?;
    match fields.as_slice() {
        [wall, cpu, peak] => Ok(Run {
            wall: Duration::from_nanos(*wall),
            cpu: Duration::from_nanos(*cpu),
            peak_over_baseline_kib: *peak,
        }),
        _ => Err(format!("child printed {line:?}").into()),
    }
}

/// One upload through `client`: `--child CLIENT ENDPOINT PREFIX BYTES`.
fn child(args: &[String]) -> Result<()> {
    let [client, endpoint, prefix, bytes] = args else {
        return Err("usage: --child CLIENT ENDPOINT PREFIX BYTES".into());
    };
    let client = Client::parse(client)?;
    let bytes: u64 = bytes.parse()?;
    let pool = random_pool();
    let id = format!("bench-{}", std::process::id());
    let run = match client {
        Client::Sluice => upload_sluice(endpoint, prefix, &id, &pool, bytes)?,
        Client::ObjectStore => upload_object_store(endpoint, prefix, &id, &pool, bytes)?,
    };
    println!(
        "{} {} {}",
        run.wall.as_nanos(),
        run.cpu.as_nanos(),
        run.peak_over_baseline_kib
    );
    Ok(())
}

/// [`POOL`] bytes of xorshift64* output (the same in every process).
fn random_pool() -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut pool = Vec::with_capacity(POOL);
    while pool.len() < POOL {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        pool.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    Bytes::from(pool)
}

/// `bytes` bytes of `pool`, over and over, in [`CHUNK`]-byte chunks.
fn chunks(pool: &Bytes, bytes: u64) -> impl Iterator<Item = &[u8]> {
    let pool_chunks = pool.len() / CHUNK;
    let whole = bytes / CHUNK as u64;
    let tail = usize::try_from(bytes % CHUNK as u64).unwrap_or(0);
    let sizes = (0..whole).map(|_| CHUNK).chain((tail > 0).then_some(tail));
    sizes.enumerate().filter_map(move |(i, n)| {
        let at = (i % pool_chunks.max(1)).checked_mul(CHUNK)?;
        pool.get(at..at.checked_add(n)?)
    })
}

/// The process's CPU time so far (user + system, every thread).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status").into())
}

/// Times `upload`: wall and CPU time, and the peak memory above the memory before it.
fn measure(upload: impl FnOnce() -> Result<()>) -> Result<Run> {
    // Resets VmHWM to the current RSS (proc(5), clear_refs "5").
    std::fs::write("/proc/self/clear_refs", "5")?;
    let baseline = status_kib("VmRSS")?;
    let (cpu, wall) = (process_cpu(), Instant::now());
    upload()?;
    let (wall, cpu) = (wall.elapsed(), process_cpu().saturating_sub(cpu));
    let peak = status_kib("VmHWM")?;
    Ok(Run {
        wall,
        cpu,
        peak_over_baseline_kib: peak.saturating_sub(baseline),
    })
}

fn upload_sluice(endpoint: &str, prefix: &str, id: &str, pool: &Bytes, bytes: u64) -> Result<Run> {
    let config = S3Config {
        endpoint: Some(endpoint.to_owned()),
        region: garage::REGION.to_owned(),
        bucket: garage::BUCKET.to_owned(),
        prefix: prefix.to_owned(),
        path_style: true,
        access_key_id: garage::ACCESS_KEY_ID.to_owned(),
        secret_access_key: garage::SECRET_ACCESS_KEY.to_owned(),
        session_token: None,
        part_size: PART_SIZE,
        parts_in_flight: PARTS_IN_FLIGHT,
        node_parts_in_flight: PARTS_IN_FLIGHT,
        abandon_after: DEFAULT_ABANDON_AFTER,
        create_timeout: DEFAULT_CREATE_TIMEOUT,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        sign_payload: false,
    };
    let scratch = tempfile::tempdir()?;
    let store = S3Store::open(config, scratch.path(), Reserve::Bytes(0))?;
    let key = store.key(id)?;
    let run = measure(|| {
        let mut writer = store.begin(id, Access::Append)?;
        for chunk in chunks(pool, bytes) {
            writer.append(chunk)?;
        }
        Ok(writer.commit()?)
    })?;
    check_size(endpoint, &key, bytes)?;
    store.delete(id)?;
    Ok(run)
}

fn upload_object_store(
    endpoint: &str,
    prefix: &str,
    id: &str,
    pool: &Bytes,
    bytes: u64,
) -> Result<Run> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(IO_THREADS)
        .enable_all()
        .build()?;
    let s3 = object_store_client(endpoint)?;
    let path = ObjectPath::from(format!("{prefix}images/{id}"));
    let run = measure(|| {
        runtime.block_on(async {
            let upload = s3.put_multipart(&path).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for chunk in chunks(pool, bytes) {
                // What bounds memory: `write` itself never waits.
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(chunk);
            }
            writer.finish().await?;
            Result::Ok(())
        })
    })?;
    runtime.block_on(async {
        let meta = s3.head(&path).await?;
        if meta.size != bytes {
            return Err(format!("{path} holds {} bytes, not {bytes}", meta.size).into());
        }
        s3.delete(&path).await?;
        Result::Ok(())
    })?;
    Ok(run)
}

/// `object_store`'s client of the Garage node: path style, plain HTTP, unsigned bodies.
fn object_store_client(endpoint: &str) -> Result<AmazonS3> {
    Ok(AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region(garage::REGION)
        .with_bucket_name(garage::BUCKET)
        .with_access_key_id(garage::ACCESS_KEY_ID)
        .with_secret_access_key(garage::SECRET_ACCESS_KEY)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_unsigned_payload(true)
        .build()?)
}

/// Checks (after the timing, with a client of its own) that `key` holds `bytes` bytes.
fn check_size(endpoint: &str, key: &str, bytes: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s3 = object_store_client(endpoint)?;
    let path = ObjectPath::from(key);
    let meta = runtime.block_on(s3.head(&path))?;
    if meta.size != bytes {
        return Err(format!("{key} holds {} bytes, not {bytes}", meta.size).into());
    }
    Ok(())
}
