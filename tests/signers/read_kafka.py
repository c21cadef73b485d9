"""Reads a Kafka topic with confluent-kafka and parses every message with the
cloudevents SDK's Kafka binding (binary mode); prints one JSON line per event.
Usage: read_kafka.py BOOTSTRAP TOPIC PARTITIONS COUNT
"""
import json
import sys

from cloudevents.kafka import KafkaMessage, from_binary
from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop-reader", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
seen = 0
while seen < count:
    message = consumer.poll(10)
    if message is None:
        sys.exit(f"only {seen} of {count} messages arrived")
    if message.error():
        sys.exit(str(message.error()))
    event = from_binary(KafkaMessage(headers=dict(message.headers() or []), key=message.key(), value=message.value()))
    print(json.dumps({
        "id": event["id"],
        "type": event["type"],
        "source": event["source"],
        "partitionkey": event.get("partitionkey").decode() if isinstance(event.get("partitionkey"), bytes) else event.get("partitionkey"),
        "data": event.get_data(),
    }), flush=True)
    seen += 1
consumer.close()
