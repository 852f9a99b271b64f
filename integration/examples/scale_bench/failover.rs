//! The scale bench's faults and its sustained rate: a replica killed under the cells that
//! watch it (FAILOVER=1), both replicas killed and started again (RESTART=1), and a change
//! every INTERVAL_MS for SUSTAIN seconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use tokio::sync::mpsc;

use super::controls::{usage, usage_of, Control};
use super::pct;

/// What each cell reports: (cell, revision, when).
pub type Views = mpsc::UnboundedReceiver<(usize, u64, Instant)>;

/// Takes every view already reported into `latest`.
fn drain(rx: &mut Views, latest: &mut [u64]) {
    while let Ok((i, r, _)) = rx.try_recv() {
        latest[i] = r;
    }
}

/// Makes one change through `admin`, retrying until a replica takes it; returns the revision
/// the cells must reach to have it.
async fn change(admin: &Client, rx: &mut Views, latest: &mut [u64], p: c2c_api::Policy) -> u64 {
    drain(rx, latest);
    let target = latest.iter().max().copied().unwrap_or(0) + 1;
    while admin.add_policies(std::slice::from_ref(&p)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    target
}

/// Waits (60 s from `from` at most) until every cell `which` picks has `target`, sampling the
/// RSS of `pids` meanwhile. Returns the cells' times in seconds from `from` (sorted), how many
/// never had it, and the peak RSS summed over `pids`.
async fn wait_back(
    rx: &mut Views,
    latest: &mut [u64],
    which: impl Fn(usize) -> bool,
    target: u64,
    from: Instant,
    pids: &[u32],
) -> (Vec<f64>, usize, u64) {
    let mut back: Vec<Option<f64>> = vec![None; latest.len()];
    let deadline = from + Duration::from_secs(60);
    let rss = || pids.iter().map(|p| usage(*p).1).sum::<u64>();
    let mut peak = rss();
    let waiting = |back: &[Option<f64>]| (0..back.len()).any(|i| which(i) && back[i].is_none());
    while waiting(&back) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((i, r, at))) =
            tokio::time::timeout(left.min(Duration::from_millis(200)), rx.recv()).await
        else {
            peak = peak.max(rss());
            if Instant::now() >= deadline {
                break;
            }
            continue;
        };
        latest[i] = r;
        if r >= target && back[i].is_none() {
            back[i] = Some(at.duration_since(from).as_secs_f64());
        }
    }
    let mut times: Vec<f64> = (0..back.len())
        .filter(|i| which(*i))
        .filter_map(|i| back[i])
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let missed = (0..back.len()).filter(|i| which(*i)).count() - times.len();
    (times, missed, peak.max(rss()))
}

/// "in X s (p50 Y s, p99 Z s)" of sorted times.
fn spread(times: &[f64]) -> String {
    if times.is_empty() {
        return "in - s".into();
    }
    format!(
        "in {:.1} s (p50 {:.1} s, p99 {:.1} s)",
        times.last().unwrap(),
        pct(times, 0.5),
        pct(times, 0.99)
    )
}

/// Kills (-9) the first replica, which the even cells watch, makes one change through the
/// second, and prints how long each even cell took to have it, and how many never did.
pub async fn fail_over(
    controls: &mut Vec<Control>,
    issuer: &[u8],
    token: &str,
    rx: &mut Views,
    latest: &mut [u64],
    policy: c2c_api::Policy,
) {
    let dead = controls.remove(0);
    let survivor = &controls[0];
    let (cpu0, rss0) = usage(survivor.child.id());
    let killed = Instant::now();
    drop(dead); // SIGKILL, then reaped
    let admin = Client::new(&survivor.url, issuer, Auth::Token(token.trim().into())).unwrap();
    let target = change(&admin, rx, latest, policy).await;
    let pid = [survivor.child.id()];
    let (times, missed, peak) = wait_back(rx, latest, |i| i % 2 == 0, target, killed, &pid).await;
    let (cpu1, rss1) = usage(survivor.child.id());
    println!(
        "failover: {} cells back on a stream {}, missed revisions {missed}; surviving replica: {:.1} CPU s in the storm, RSS {:.1} -> {:.1} MiB (peak {:.1})",
        times.len(),
        spread(&times),
        cpu1 - cpu0,
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        peak as f64 / 1048576.0,
    );
    println!("failover: the surviving replica shed {}", survivor.shed());
}

/// Kills (-9) every replica, starts them again on the same addresses and database, makes one
/// change, and prints how long until every cell had it. (After a failover, that is the one
/// replica left: every cell's storm comes to it, the dead one's address refusing.)
pub async fn restart_all(
    controls: &mut [Control],
    issuer: &[u8],
    token: &str,
    rx: &mut Views,
    latest: &mut [u64],
    policy: c2c_api::Policy,
) {
    let killed = Instant::now();
    for c in controls.iter_mut() {
        c.kill();
    }
    for c in controls.iter_mut() {
        c.start_again();
    }
    let listening = killed.elapsed().as_secs_f64();
    let (cpu0, _) = usage_of(controls);
    let admin = Client::new(&controls[0].url, issuer, Auth::Token(token.trim().into())).unwrap();
    let target = change(&admin, rx, latest, policy).await;
    let pids: Vec<u32> = controls.iter().map(|c| c.child.id()).collect();
    let (times, missed, peak) = wait_back(rx, latest, |_| true, target, killed, &pids).await;
    let (cpu1, rss1) = usage_of(controls);
    println!(
        "restart: every replica ({}) killed and listening again after {listening:.1} s; {} cells back on a stream {}, missed revisions {missed}; replicas: {:.1} CPU s until then, RSS {:.1} MiB (peak {:.1})",
        controls.len(),
        times.len(),
        spread(&times),
        cpu1 - cpu0,
        rss1 as f64 / 1048576.0,
        peak as f64 / 1048576.0,
    );
    for (k, c) in controls.iter().enumerate() {
        println!("restart: replica {} shed {}", k + 1, c.shed());
    }
}

/// A change every `every` for `secs`, made on a timer whatever the cells do (not waiting for
/// them); per change, the time until every cell had it, and whether the last changes took
/// longer than the first (falling behind).
pub async fn sustain(
    controls: &[Control],
    admin: &Client,
    rx: &mut Views,
    latest: &mut [u64],
    policies: Vec<c2c_api::Policy>,
    every: Duration,
) {
    drain(rx, latest);
    let n = latest.len();
    let base = latest.iter().max().copied().unwrap_or(0);
    let total = policies.len();
    let (cpu0, _) = usage_of(controls);
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let issuer = {
        let (admin, sent) = (admin.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for p in policies {
                tick.tick().await;
                // Its time is noted before it is sent: no cell can have it sooner.
                sent.lock().unwrap().push(Instant::now());
                admin.add_policies(&[p]).await.unwrap();
            }
            Instant::now()
        })
    };
    let mut next = vec![0usize; n]; // the first change each cell has not had
    let (mut all_ms, mut have) = (vec![0f64; total], vec![0usize; total]);
    let mut per_watch: Vec<f32> = Vec::with_capacity(n * total);
    let mut done = 0;
    let deadline = start + every * total as u32 + Duration::from_secs(60);
    while done < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((i, r, at))) = tokio::time::timeout(left, rx.recv()).await else {
            break;
        };
        latest[i] = r;
        let sent = sent.lock().unwrap();
        while next[i] < sent.len() && base + (next[i] as u64) < r {
            let k = next[i];
            let ms = at.duration_since(sent[k]).as_secs_f64() * 1000.0;
            per_watch.push(ms as f32);
            all_ms[k] = all_ms[k].max(ms);
            have[k] += 1;
            done += usize::from(have[k] == n);
            next[i] += 1;
        }
    }
    let made_by = issuer.await.unwrap();
    let (cpu1, _) = usage_of(controls);
    let rate = total as f64 / made_by.duration_since(start).as_secs_f64();
    let tenth = (total / 10).max(1);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (first, last) = (median(&all_ms[..tenth]), median(&all_ms[total - tenth..]));
    let mut sorted_all = all_ms.clone();
    sorted_all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    per_watch.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let per_watch: Vec<f64> = per_watch.iter().map(|x| f64::from(*x)).collect();
    println!(
        "sustained: {total} changes at {:.1}/s asked, {rate:.1}/s made; until all {n} cells had a change: p50 {:.0} ms, p99 {:.0} ms (first tenth's median {first:.0} ms, last tenth's {last:.0} ms); per cell p99 {:.0} ms; changes not every cell had: {}; control CPU {:.0} ms per change",
        1.0 / every.as_secs_f64(),
        pct(&sorted_all, 0.5),
        pct(&sorted_all, 0.99),
        if per_watch.is_empty() { f64::NAN } else { pct(&per_watch, 0.99) },
        total - done,
        (cpu1 - cpu0) * 1000.0 / total as f64,
    );
}
