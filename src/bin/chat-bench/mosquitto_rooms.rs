//! The rooms workload, Mosquitto side: one topic per room, its members QoS 1 subscribers with persistent sessions, one publisher at the same rate; delivered messages per second and publish-to-subscriber latency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rumqttc::{Event, Packet, QoS};
use tokio::task::JoinSet;

use super::mosquitto::{new_client, now_nanos, wait_for, Broker, SETUP_WINDOW};
use super::params::Params;
use super::procstat::CpuMeter;
use super::report::Row;

/// Unacknowledged publishes of the publisher.
const INFLIGHT: u16 = 1000;

struct Tally {
    subscribed: AtomicUsize,
    delivered: AtomicUsize,
    latencies: Mutex<Histogram<u64>>,
    error: OnceLock<String>,
}

/// `rooms` topics `r/<k>` with `room_members` subscribers each (client ids `r<k>m<i>`, QoS 1,
/// `clean_session=false`); one publisher publishes `room_rate` messages a second for `room_secs`
/// round-robin over the topics, each payload its publish time.
pub async fn run(params: &Params) -> Result<Vec<Row>> {
    let (rooms, members) = (params.rooms.max(1), params.room_members.max(2));
    let broker = Broker::start().await?;
    let tally = Arc::new(Tally {
        subscribed: AtomicUsize::new(0),
        delivered: AtomicUsize::new(0),
        latencies: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?),
        error: OnceLock::new(),
    });
    let setup = Instant::now();
    let mut subscribers = JoinSet::new();
    let everyone = rooms * members;
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(10) * everyone as u32;
    for n in 0..everyone {
        let (k, i) = (n % rooms, n / rooms);
        wait_for(deadline, || {
            check(&tally).map(|()| n < tally.subscribed.load(Ordering::Relaxed) + SETUP_WINDOW)
        })
        .await
        .context("rooms: subscribing")?;
        subscribers.spawn(subscriber(
            format!("r{k}m{i}"),
            format!("r/{k}"),
            broker.port,
            tally.clone(),
        ));
    }
    wait_for(deadline, || {
        check(&tally).map(|()| tally.subscribed.load(Ordering::Relaxed) >= everyone)
    })
    .await
    .context("rooms: subscribing")?;
    let setup_secs = setup.elapsed().as_secs_f64();

    let (publisher, mut events) = new_client(
        "rooms-publisher".into(),
        broker.port,
        INFLIGHT,
        usize::from(INFLIGHT),
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let counted = acked.clone();
    subscribers.spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let cpu = CpuMeter::start(&broker.and_bench());
    let total = (params.room_rate * params.room_secs).max(1) as usize;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        check(&tally)?;
        let due =
            ((start.elapsed().as_secs_f64() * params.room_rate as f64) as usize + 1).min(total);
        while sent < due {
            publisher
                .publish(
                    format!("r/{}", sent % rooms),
                    QoS::AtLeastOnce,
                    false,
                    now_nanos().to_string(),
                )
                .await
                .context("publish")?;
            sent += 1;
        }
    }
    let expected = total * members;
    wait_for(Instant::now() + Duration::from_secs(120), || {
        check(&tally).map(|()| tally.delivered.load(Ordering::Relaxed) >= expected)
    })
    .await
    .with_context(|| {
        format!(
            "rooms: {} of {expected} delivered",
            tally.delivered.load(Ordering::Relaxed)
        )
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu_note = cpu.report();
    subscribers.abort_all();
    let h = tally
        .latencies
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let notes = format!(
        "{rooms} topics x {members} QoS 1 subscribers (persistent sessions), one publisher at {} \
         msg/s for {} s ({total} publishes, {expected} deliveries, {} acknowledged); setup \
         {setup_secs:.1} s; CPU {cpu_note}",
        params.room_rate,
        params.room_secs,
        acked.load(Ordering::Relaxed)
    );
    Ok(vec![
        Row::new(
            "mosquitto",
            "rooms",
            "delivered_msgs_per_s",
            expected as f64 / secs,
            "msg/s",
        )
        .note(notes),
        Row::new(
            "mosquitto",
            "rooms",
            "p50_ms",
            ms(h.value_at_quantile(0.5)),
            "ms",
        ),
        Row::new(
            "mosquitto",
            "rooms",
            "p99_ms",
            ms(h.value_at_quantile(0.99)),
            "ms",
        ),
        Row::new(
            "mosquitto",
            "rooms",
            "p99.9_ms",
            ms(h.value_at_quantile(0.999)),
            "ms",
        ),
    ])
}

fn check(tally: &Tally) -> Result<()> {
    match tally.error.get() {
        Some(e) => bail!("{e}"),
        None => Ok(()),
    }
}

/// One member: subscribes to its room's topic, then counts messages and their latency.
async fn subscriber(id: String, topic: String, port: u16, tally: Arc<Tally>) {
    let (client, mut events) = new_client(id.clone(), port, 1, 10);
    if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce).await {
        let _ = tally.error.set(format!("{id}: subscribe: {e}"));
        return;
    }
    let mut failures = 0;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                tally.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let sent = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                if let (Some(sent), Ok(mut h)) = (sent, tally.latencies.lock()) {
                    h.saturating_record(now_nanos().saturating_sub(sent));
                }
                tally.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if failures > 5 {
                    let _ = tally.error.set(format!("{id}: {e}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
