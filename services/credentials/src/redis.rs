//! One way to connect to Redis for this service: a URL, bounded timeouts, and a
//! reconnect policy that outlives a Redis restart.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::ReconnectPolicy;

/// A command client and, when asked for, a subscriber client to the same server.
pub struct RedisClients {
    pub client: Client,
    pub subscriber: Option<SubscriberClient>,
}

/// Connects now; fails if Redis cannot be reached or the URL is bad. The error text
/// never contains the URL (it may hold a password).
pub async fn connect(url: &str, with_subscriber: bool) -> Result<RedisClients, fred::error::Error> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(5);
            p.broadcast_channel_capacity = 1024;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
            c.max_command_attempts = 2;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    let client = builder.build()?;
    client.init().await?;
    let subscriber = if with_subscriber {
        let subscriber = builder.build_subscriber_client()?;
        subscriber.init().await?;
        Some(subscriber)
    } else {
        None
    };
    Ok(RedisClients { client, subscriber })
}
