//! The kafka backend's settings.

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Replication factor of topics Switchyard creates.
    pub replication_factor: i32,
    /// Extra librdkafka properties (TLS, SASL, …), passed through as given.
    pub options: Vec<(String, String)>,
}
