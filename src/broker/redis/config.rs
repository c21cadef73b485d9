//! The redis backend's settings.

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    /// Prefix of every key Switchyard writes.
    pub prefix: String,
}
