//! Paging through a topic with cursors, and the topic listing.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn pages_follow_next_cursors_without_gaps_or_repeats() {
    let ws = Workspace::new();
    ws.topic("pages", 3, "");
    let server = ws.serve(&[]);
    let url = server.events_url("pages");
    let client = client();
    for n in 0..25u64 {
        let (status, body) = publish(
            &client,
            &url,
            &event(&format!("p-{n}"), n, &format!("key-{}", n % 5)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let mut seen = Vec::new();
    let mut from = "earliest".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = client
            .get(&url)
            .query(&[("from", from.as_str()), ("limit", "7")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        from = page["next"].as_str().unwrap().to_owned();
        if events.is_empty() {
            break;
        }
        pages += 1;
        seen.extend(events.iter().map(|e| e["data"]["n"].as_u64().unwrap()));
    }
    assert_eq!(pages, 4);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..25).collect::<Vec<_>>(),
        "every event exactly once"
    );
    // Events of one key share a partition, so they keep their order.
    for key in 0..5 {
        let of_key: Vec<_> = seen.iter().filter(|n| *n % 5 == key).collect();
        assert!(
            of_key.windows(2).all(|w| w[0] < w[1]),
            "key {key}: {of_key:?}"
        );
    }

    // `latest` is empty now; a publish's position resumes right after it.
    let page: Value = client
        .get(&url)
        .query(&[("from", "latest")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
    let (_, body) = publish(&client, &url, &event("after", 100, "key-1")).await;
    let position = body["events"][0]["position"].as_str().unwrap().to_owned();
    let (_, _) = publish(&client, &url, &event("later", 101, "key-1")).await;
    let page: Value = client
        .get(&url)
        .query(&[("from", position.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["later"]);

    // A cursor for another partition count is refused, naming the problem.
    let response = client
        .get(&url)
        .query(&[("from", "0.0")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("3"),
        "{body}"
    );
}

#[tokio::test]
async fn topics_lists_types_and_schemas() {
    let ws = Workspace::new();
    ws.topic("listed", 2, "retention = \"1h\"");
    let server = ws.serve(&[]);
    let body: Value = client()
        .get(format!("{}/v1/topics", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let topic = &body["topics"][0];
    assert_eq!(topic["name"], "listed");
    assert_eq!(topic["partitions"], 2);
    assert_eq!(topic["retention"]["max_age_seconds"], 3600);
    assert_eq!(topic["types"]["test.event"]["schema"]["required"][0], "n");
}
