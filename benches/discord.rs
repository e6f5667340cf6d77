//! Interaction-to-callback latency through the fake Discord gateway: the real bot, connected by
//! serenity to the loopback fake, answers 1,000 `/release` commands one after another; the fake
//! measures from sending the INTERACTION_CREATE dispatch to receiving the callback POST.
//! Target (issue 4): p99 < 20 ms. Run: `cargo bench --bench discord`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use support::fake_discord::{CHANNEL_ID, GUILD_ID};
use support::{TestBot, DISCORD_DEV};

const INTERACTIONS: u64 = 1_000;
const WARM_UP: u64 = 50;

fn main() {
    let runtime = support::bench_runtime();
    runtime.block_on(run());
}

async fn run() {
    let bot = TestBot::builder()
        .discord()
        .start()
        .await
        .expect("sqlite is always available");
    let fake = bot.discord.as_ref().expect("fake Discord");
    fake.wait_session(Duration::from_secs(20)).await;
    // Something to report on: api 1.0.0 in dev.
    bot.reach("api", "1.0.0", &["dev"]).await;

    let mut latencies = Vec::new();
    for n in 0..WARM_UP + INTERACTIONS {
        let id = 1_700_000_000_000_000_000 + n;
        let (subcommand, options): (&str, &[(&str, &str)]) = match n % 3 {
            0 => ("status", &[]),
            1 => ("status", &[("service", "api")]),
            _ => ("help", &[("command", "promote")]),
        };
        let data = fake.command_interaction(
            id,
            &format!("token-{id}"),
            DISCORD_DEV,
            &[],
            CHANNEL_ID,
            GUILD_ID,
            subcommand,
            options,
        );
        fake.dispatch("INTERACTION_CREATE", data).await;
        let callback = fake.wait_callback(id, Duration::from_secs(5)).await;
        assert_eq!(callback.kind, 4, "answered with a message: {callback:?}");
        if n >= WARM_UP {
            latencies.push(
                callback
                    .latency
                    .expect("dispatched interactions have a latency"),
            );
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "discord interaction → callback over {} interactions: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms (target p99 < 20 ms)",
        latencies.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(1.0)),
        ms(mean),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
