//! The nats backend's settings.

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    /// Prefix of stream names and subjects.
    pub prefix: String,
}
