//! Every combination of builder settings either builds a working client or
//! returns an error; none panics, now or when the client is used.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use proptest::prelude::*;
use segment_client::{HttpClient, IdentifyParams, Identity};

fn duration() -> impl Strategy<Value = Duration> {
    // Mostly workable values, so that both outcomes are common.
    prop_oneof![
        1 => Just(Duration::ZERO),
        1 => Just(Duration::from_nanos(1)),
        100 => (1u64..100_000).prop_map(Duration::from_millis),
        1 => Just(Duration::from_secs(24 * 3600)),
        1 => Just(Duration::from_secs(24 * 3600 + 1)),
        1 => Just(Duration::from_secs(u64::MAX)),
        1 => Just(Duration::MAX),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        30 => 1usize..3000,
        1 => Just(32_999),
        4 => Just(33_100),
        30 => Just(500_000),
        1 => Just(500_001),
        1 => Just(usize::MAX),
    ]
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::MIN_POSITIVE),
        Just(1e-300),
        Just(1e300),
        0.001f64..10_000.0,
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "http://127.0.0.1:9".to_owned(),
        "https://api.segment.io".to_owned(),
        "https://proxy.example/prefix".to_owned(),
        "http://127.0.0.1:9/v1/batch".to_owned(),
        "https://key@api.segment.io".to_owned(),
        "ftp://x".to_owned(),
        "".to_owned(),
        "not a url".to_owned(),
    ])
}

#[derive(Debug, Clone)]
struct Settings {
    key: String,
    host: String,
    sizes: [usize; 4],
    durations: [Duration; 8],
    rate: Option<f64>,
    gzip_level: u32,
    attempts: u32,
}

/// Half workable settings, half anything: both outcomes stay common.
fn settings() -> impl Strategy<Value = Settings> {
    prop_oneof![workable(), any_settings()]
}

fn workable() -> impl Strategy<Value = Settings> {
    let ms = || (1u64..100_000).prop_map(Duration::from_millis);
    (
        1usize..=2500,
        33_100usize..=500_000,
        1usize..16,
        1usize..10_000,
        [ms(), ms(), ms(), ms(), ms(), ms(), ms(), ms()],
        prop::option::of(0.01f64..1000.0),
        0u32..=9,
        1u32..20,
    )
        .prop_map(
            |(batch, bytes, in_flight, queue, mut durations, rate, gzip_level, attempts)| {
                // The max backoff is at least the initial one.
                durations[7] = durations[7].max(durations[6]);
                Settings {
                    key: "key".into(),
                    host: "http://127.0.0.1:9".into(),
                    sizes: [batch, bytes, in_flight, queue],
                    durations,
                    rate,
                    gzip_level,
                    attempts,
                }
            },
        )
}

fn any_settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![1 => Just(String::new()), 1 => Just("  ".to_owned()), 8 => Just("key".to_owned())],
        prop_oneof![8 => Just("http://127.0.0.1:9".to_owned()), 4 => host()],
        [size(), size(), size(), size()],
        [
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
        ],
        prop::option::of(rate()),
        prop_oneof![8 => 0u32..10, 1 => 10u32..12],
        prop_oneof![1 => Just(0u32), 8 => 1u32..20, 1 => Just(u32::MAX)],
    )
        .prop_map(
            |(key, host, sizes, durations, rate, gzip_level, attempts)| Settings {
                key,
                host,
                sizes,
                durations,
                rate,
                gzip_level,
                attempts,
            },
        )
}

fn build(s: &Settings) -> Result<HttpClient, segment_client::SegmentError> {
    let [batch, bytes, in_flight, queue] = s.sizes;
    let [
        flush_interval,
        request,
        flush,
        shutdown,
        outage,
        budget,
        initial,
        max,
    ] = s.durations;
    let mut builder = HttpClient::builder(s.key.clone())
        .host(s.host.clone())
        .batch_size(batch)
        .max_batch_bytes(bytes)
        .max_in_flight(in_flight)
        .queue_capacity(queue.min(1_000_000))
        .gzip_level(s.gzip_level)
        .max_attempts(s.attempts)
        .flush_interval(flush_interval)
        .request_timeout(request)
        .flush_timeout(flush)
        .shutdown_timeout(shutdown)
        .outage_after(outage)
        .retry_budget(budget)
        .backoff(initial, max);
    if let Some(rate) = s.rate {
        builder = builder.requests_per_second(rate);
    }
    builder.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_combination_builds_or_errors_and_never_panics(s in settings()) {

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async {
                match build(&s) {
                    Err(error) => {
                        assert!(error.is_config(), "{error:?}");
                        assert!(!error.message().contains("key@"), "{error}");
                    }
                    Ok(client) => {
                        // Use it: queue, flush briefly, close; nothing listens on :9.
                        let _ = client.try_identify(IdentifyParams::new(Identity::user("u")));
                        let _ = client.flush_with_timeout(Duration::from_millis(10)).await;
                        let _ = client
                            .close_and_flush_with_timeout(Duration::from_millis(10))
                            .await;
                    }
                }
            });
        }));
        prop_assert!(outcome.is_ok(), "panicked for {:?}", s);
    }
}

/// The strategy reaches both outcomes often, or the property above proves little.
#[test]
fn the_settings_strategy_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut built, mut refused) = (0, 0);
    for _ in 0..300 {
        let s = settings().new_tree(&mut runner).unwrap().current();
        // Checked without a runtime: the client gets its own thread.
        match build(&s) {
            Ok(client) => {
                built += 1;
                drop(client);
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        built > 20 && refused > 20,
        "built {built}, refused {refused}"
    );
}

// A backoff too short to wait retried a failing host in a tight loop: with
// unlimited attempts a client against a closed port spun until its outage
// bound (and forever in paused time, which hung the property test above).
#[test]
fn a_backoff_too_short_to_wait_is_refused() {
    let with = |initial, max| {
        HttpClient::builder("key")
            .host("http://127.0.0.1:9")
            .backoff(initial, max)
            .build()
    };
    let ms = Duration::from_millis;
    for (initial, max) in [
        (Duration::ZERO, ms(100)),
        (Duration::from_nanos(1), Duration::from_nanos(1)),
        (Duration::from_micros(999), ms(100)),
        (ms(10), ms(5)),
        (ms(10), Duration::ZERO),
    ] {
        let error = with(initial, max).err();
        assert!(
            error.as_ref().is_some_and(|e| e.is_config()),
            "backoff {initial:?} up to {max:?}: {error:?}"
        );
    }
    assert!(with(ms(1), ms(1)).is_ok());
    assert!(with(ms(500), Duration::from_secs(60)).is_ok());
}
