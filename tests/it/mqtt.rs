//! The MQTT bridge and Home Assistant discovery against a real broker (Debian's mosquitto,
//! started by the test on a free port with a password file) and a real subscriber
//! (`mosquitto_sub`): events in id order, the picture on the snapshot topic, retained
//! discovery configs, availability by shutdown and by the Will, commands, and nothing lost
//! when the broker or porchlight itself goes away.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::broker::{Broker, DEVICE_USER, Message, TEST_USER};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn config(broker: &Broker, device_id: &str, extra: &str) -> String {
    format!(
        "mqtt_url = \"{}\"\ndevice_id = \"{device_id}\"\n{extra}\n",
        broker.url()
    )
}

/// Event ids from messages on `<prefix>/events/...`, in arrival order.
fn event_ids(messages: &[Message], prefix: &str) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{prefix}/events/")))
        .map(|m| m.json()["id"].as_u64().expect("event id"))
        .collect()
}

fn wait_streaming(port: u16) {
    let deadline = Instant::now() + WAIT;
    while get(port, "/api/status", None).json()["camera"]["state"] != "streaming" {
        assert!(Instant::now() < deadline, "the camera never streamed");
        thread::sleep(Duration::from_millis(20));
    }
}

fn mqtt_status(port: u16) -> Value {
    get(port, "/api/status", None).json()["mqtt"].clone()
}

#[test]
fn events_pictures_and_discovery_reach_the_broker() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/front/#"]);
    let server = Server::with_config(
        &config(&broker, "front", "public_url = \"http://door.local:8080\""),
        &[],
    );
    let port = server.port();
    let online = sub.wait_for("porchlight/front/availability", WAIT);
    assert_eq!(online.text(), "online");
    assert!(
        !online.retained,
        "a live subscriber sees it as it is published"
    );
    wait_streaming(port);

    let mut sent = vec![trigger(port, None)];
    for i in 0..5 {
        sent.push(post_event(port, None, "visitor_seen", json!({"n": i})));
    }
    sent.push(trigger(port, None));
    let ids: Vec<u64> = sent.iter().map(id_of).collect();
    let got = sub.collect_until(WAIT, |got| {
        event_ids(got, "porchlight/front").len() >= ids.len()
    });
    assert_eq!(
        event_ids(&got, "porchlight/front"),
        ids,
        "every event once, in id order"
    );
    for event in &sent {
        let topic = format!(
            "porchlight/front/events/{}",
            event["event_type"].as_str().unwrap()
        );
        let message = got
            .iter()
            .find(|m| m.topic == topic && m.json()["id"] == event["id"])
            .unwrap_or_else(|| panic!("event {} not on {topic}", event["id"]));
        assert_eq!(
            message.json(),
            *event,
            "the event object as the API shows it"
        );
        assert!(!message.retained);
    }

    // The snapshot topic holds the JPEG of the latest event with one, retained.
    let last = sent.last().unwrap();
    let jpeg = get(port, last["snapshot_url"].as_str().unwrap(), None).body;
    assert_eq!(&jpeg[..2], b"\xFF\xD8");
    let retained = broker.retained("porchlight/front/snapshot");
    assert_eq!(retained.len(), 1);
    assert_eq!(
        retained[0].payload, jpeg,
        "the retained picture is the last ring's"
    );

    // Status: retained, the status object.
    let status = broker.retained("porchlight/front/status");
    assert_eq!(status.len(), 1);
    let status = status[0].json();
    assert!(status["uptime_s"].is_number() && status["events"].is_object());

    // The bridge shows in status and metrics, measured.
    let deadline = Instant::now() + WAIT;
    while mqtt_status(port)["last_published_id"] != json!(ids.last().unwrap()) {
        assert!(Instant::now() < deadline, "status: {}", mqtt_status(port));
        thread::sleep(Duration::from_millis(20));
    }
    let mqtt = mqtt_status(port);
    assert_eq!(mqtt["connected"], true);
    assert_eq!(mqtt["backlog"], 0);
    assert_eq!(
        mqtt["broker"],
        format!("mqtt://127.0.0.1:{}", broker.port())
    );
    assert!(
        !mqtt.to_string().contains(DEVICE_USER.1),
        "no password in status"
    );
    let metrics = get(port, "/metrics", None).text();
    assert!(
        metrics.contains("porchlight_mqtt_connected 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "porchlight_mqtt_last_published_id {}\n",
            ids.last().unwrap()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("porchlight_mqtt_backlog_events 0\n"));
}

#[test]
fn discovery_configs_are_retained_complete_and_removed_when_turned_off() {
    let broker = Broker::start();
    let data = TempDir::new("mqtt-discovery");
    let args = ["--data-dir", &data.path_str()];
    let extra = "public_url = \"http://door.local:8080\"\nmqtt_commands = true";
    let mut server = Server::with_config(&config(&broker, "porch", extra), &args);
    let sub = broker.subscribe(&["porchlight/porch/availability"]);
    sub.wait_for("porchlight/porch/availability", WAIT);

    let configs: BTreeMap<String, Value> = broker
        .retained("homeassistant/#")
        .into_iter()
        .map(|m| (m.topic.clone(), m.json()))
        .collect();
    let expected = [
        "homeassistant/event/porch/doorbell/config",
        "homeassistant/binary_sensor/porch/motion/config",
        "homeassistant/camera/porch/snapshot/config",
        "homeassistant/sensor/porch/cpu/config",
        "homeassistant/sensor/porch/temperature/config",
        "homeassistant/sensor/porch/viewers/config",
        "homeassistant/button/porch/ring/config",
        "homeassistant/button/porch/restart_camera/config",
    ];
    assert_eq!(
        configs.keys().cloned().collect::<Vec<_>>(),
        {
            let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            e.sort();
            e
        },
        "one retained config per entity"
    );
    let mut unique_ids = Vec::new();
    for (topic, config) in &configs {
        unique_ids.push(config["unique_id"].as_str().unwrap().to_string());
        assert!(config["name"].is_string(), "{topic}");
        assert_eq!(
            config["availability_topic"], "porchlight/porch/availability",
            "{topic}"
        );
        let device = &config["device"];
        assert_eq!(
            device["identifiers"],
            json!(["porchlight_porch"]),
            "{topic}"
        );
        assert_eq!(device["configuration_url"], "http://door.local:8080");
        assert!(device["sw_version"].is_string() && device["model"].is_string());
    }
    unique_ids.sort();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), expected.len(), "unique_ids are unique");
    let doorbell = &configs["homeassistant/event/porch/doorbell/config"];
    assert_eq!(doorbell["device_class"], "doorbell");
    assert_eq!(doorbell["event_types"], json!(["doorbell_pressed"]));
    assert_eq!(
        doorbell["state_topic"],
        "porchlight/porch/events/doorbell_pressed"
    );
    assert_eq!(
        configs["homeassistant/camera/porch/snapshot/config"]["topic"],
        "porchlight/porch/snapshot"
    );
    assert_eq!(
        configs["homeassistant/binary_sensor/porch/motion/config"]["device_class"],
        "motion"
    );
    assert_eq!(
        configs["homeassistant/button/porch/ring/config"]["command_topic"],
        "porchlight/porch/command/trigger_doorbell"
    );

    // Off: every config is cleared (an empty retained message deletes it).
    server.stop();
    let mut server = Server::with_config(&config(&broker, "porch", "ha_discovery = false"), &args);
    let online = sub.collect_until(WAIT, |got| got.last().is_some_and(|m| m.text() == "online"));
    assert!(!online.is_empty());
    assert!(
        broker.retained("homeassistant/#").is_empty(),
        "no discovery config left"
    );
    server.stop();
}

#[test]
fn availability_goes_offline_on_sigterm_and_by_the_will_on_kill_9() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/door/availability"]);
    let data = TempDir::new("mqtt-avail");
    let args = ["--data-dir", &data.path_str()];
    let toml = config(&broker, "door", "");

    let mut server = Server::with_config(&toml, &args);
    assert_eq!(
        sub.wait_for("porchlight/door/availability", WAIT).text(),
        "online"
    );
    server.stop();
    assert_eq!(
        sub.wait_for("porchlight/door/availability", WAIT).text(),
        "offline",
        "a clean shutdown says offline itself"
    );
    let retained = broker.retained("porchlight/door/availability");
    assert_eq!(retained[0].text(), "offline", "and it is retained");
    let log = server.stderr_with("MQTT: disconnected");
    assert!(log.contains("MQTT: disconnected"), "{log}");

    let mut server = Server::with_config(&toml, &args);
    assert_eq!(
        sub.wait_for("porchlight/door/availability", WAIT).text(),
        "online"
    );
    server.kill9();
    assert_eq!(
        sub.wait_for("porchlight/door/availability", WAIT).text(),
        "offline",
        "the broker publishes the Will when porchlight vanishes"
    );
    assert_eq!(
        broker.retained("porchlight/door/availability")[0].text(),
        "offline"
    );
}

/// Kills the broker in the middle of a burst of 500 events and restarts it 5 s later: every
/// event reaches the subscriber; the only duplicates are events that were in flight.
#[test]
fn a_broker_outage_mid_burst_loses_no_event() {
    const BURST: usize = 500;
    let mut broker = Broker::start();
    let server = Server::with_config(&config(&broker, "burst", ""), &[]);
    let port = server.port();
    let sub = broker.subscribe(&["porchlight/burst/#"]);
    // The bridge may connect before the subscriber: its `online` is retained anyway.
    let deadline = Instant::now() + WAIT;
    while mqtt_status(port)["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "never connected: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }

    let producer = thread::spawn(move || {
        (0..BURST)
            .map(|i| id_of(&post_event(port, None, "burst", json!({"n": i}))))
            .collect::<Vec<u64>>()
    });
    let mut before = sub.collect_until(WAIT, |got| event_ids(got, "porchlight/burst").len() >= 150);
    broker.kill();
    let killed_at = Instant::now();
    before.extend(sub.until_disconnected(WAIT));
    // The restarted broker first lets in only the test's subscriber, so it is subscribed
    // before porchlight can publish again; then porchlight's user is let in (SIGHUP reload).
    broker.write_users(&[TEST_USER]);
    thread::sleep(Duration::from_secs(5).saturating_sub(killed_at.elapsed()));
    broker.restart();
    let sub = broker.subscribe(&["porchlight/burst/events/#"]);
    broker.write_users(&[DEVICE_USER, TEST_USER]);
    broker.reload();

    let ids = producer.join().expect("producer");
    assert_eq!(ids.len(), BURST);
    let mut all = event_ids(&before, "porchlight/burst");
    let after = sub.collect_until(Duration::from_secs(90), |got| {
        let mut seen: Vec<u64> = event_ids(got, "porchlight/burst");
        seen.extend(&all);
        ids.iter().all(|id| seen.contains(id))
    });
    let after_ids = event_ids(&after, "porchlight/burst");
    let mut sorted = after_ids.clone();
    sorted.sort_unstable();
    assert_eq!(after_ids, sorted, "in id order after the reconnect too");
    all.extend(after_ids);
    let lost: Vec<&u64> = ids.iter().filter(|id| !all.contains(id)).collect();
    assert!(lost.is_empty(), "lost across the outage: {lost:?}");
    let duplicates = all.len() - ids.len();
    eprintln!(
        "broker outage: {} events, 0 lost, {duplicates} duplicate(s) ({} before the kill)",
        ids.len(),
        event_ids(&before, "porchlight/burst").len()
    );
    assert!(
        duplicates <= 16,
        "only the in-flight window may come twice, got {duplicates}"
    );
    let log = server.stderr_with("MQTT: lost the connection");
    assert!(log.contains("MQTT: lost the connection"), "{log}");
}

/// Events stored but not yet acknowledged when porchlight is killed are published after it
/// starts again.
#[test]
fn unacknowledged_events_are_published_after_a_kill_9_and_restart() {
    let mut broker = Broker::start();
    let data = TempDir::new("mqtt-restart");
    let args = ["--data-dir", &data.path_str()];
    let toml = config(&broker, "again", "");
    let mut server = Server::with_config(&toml, &args);
    let port = server.port();
    let sub = broker.subscribe(&["porchlight/again/events/#"]);
    let first = post_event(port, None, "early", json!({}));
    let got = sub.collect_until(WAIT, |got| !got.is_empty());
    assert_eq!(event_ids(&got, "porchlight/again"), vec![id_of(&first)]);
    drop(sub);

    broker.kill();
    let waiting: Vec<u64> = (0..20)
        .map(|i| id_of(&post_event(port, None, "while_away", json!({"n": i}))))
        .collect();
    server.kill9();
    broker.restart();
    let sub = broker.subscribe(&["porchlight/again/events/#"]);
    let server = Server::with_config(&toml, &args);
    let got = sub.collect_until(WAIT, |got| {
        event_ids(got, "porchlight/again").ends_with(&waiting[waiting.len() - 1..])
    });
    let ids = event_ids(&got, "porchlight/again");
    let resent: Vec<u64> = ids.iter().copied().filter(|id| *id < waiting[0]).collect();
    assert_eq!(
        ids[resent.len()..],
        waiting[..],
        "every event stored while the broker was away, in order"
    );
    eprintln!(
        "porchlight kill -9: {} waiting events published after the restart, {} earlier one(s) again",
        waiting.len(),
        resent.len()
    );
    drop(server);
}

#[test]
fn three_doors_on_one_broker() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/+/events/#"]);
    let doors = ["door_a", "door_b", "door_c"];
    let servers: Vec<Server> = doors
        .iter()
        .map(|id| Server::with_config(&config(&broker, id, ""), &[]))
        .collect();
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for round in 0..10 {
        for (door, server) in doors.iter().zip(&servers) {
            let event = post_event(server.port(), None, "knock", json!({"round": round}));
            expected
                .entry(door.to_string())
                .or_default()
                .push(id_of(&event));
        }
    }
    let got = sub.collect_until(WAIT, |got| got.len() >= 30);
    for door in doors {
        assert_eq!(
            event_ids(&got, &format!("porchlight/{door}")),
            expected[door],
            "{door}: every event, in order"
        );
    }
    let configs = broker.retained("homeassistant/event/#");
    let mut devices: Vec<String> = configs
        .iter()
        .map(|m| {
            m.json()["device"]["identifiers"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        [
            "porchlight_door_a",
            "porchlight_door_b",
            "porchlight_door_c"
        ],
        "three devices, one doorbell each"
    );
}

#[test]
fn commands_over_mqtt_run_the_websocket_commands() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/cmd/#"]);
    let server = Server::with_config(&config(&broker, "cmd", "mqtt_commands = true"), &[]);
    let port = server.port();
    sub.wait_for("porchlight/cmd/availability", WAIT);
    // The bridge subscribes right after `online`; its status tells when the SUBACK came.
    let log = server.stderr_with("MQTT: connected");
    assert!(log.contains("MQTT: connected"), "{log}");
    let publish_until_answered = |topic: &str, payload: &str| -> Value {
        // A command published before the bridge's SUBACK would be lost; retry until answered.
        let result = format!("{topic}/result");
        for _ in 0..50 {
            broker.publish(topic, payload, false);
            if let Some(m) = (0..50)
                .filter_map(|_| sub.next(Duration::from_millis(100)))
                .find(|m| m.topic == result)
            {
                return m.json();
            }
        }
        panic!("no answer on {result}");
    };

    let answer = publish_until_answered(
        "porchlight/cmd/command/trigger_doorbell",
        r#"{"request_id":"r1"}"#,
    );
    assert_eq!(answer["type"], "command_result");
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["request_id"], "r1");
    assert_eq!(answer["result"]["source"], "mqtt");
    let id = answer["result"]["id"].as_u64().unwrap();
    assert_eq!(
        get(port, &format!("/api/events/{id}"), None).json()["source"],
        "mqtt",
        "stored like any ring"
    );

    let answer = publish_until_answered(
        "porchlight/cmd/command/set_quality",
        r#"{"quality":"low","request_id":2}"#,
    );
    assert_eq!(answer["result"], json!({"quality": "low"}));
    let answer =
        publish_until_answered("porchlight/cmd/command/set_quality", r#"{"quality":"8k"}"#);
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "bad_params");
    let answer = publish_until_answered("porchlight/cmd/command/reboot", "{}");
    assert_eq!(answer["code"], "unknown_command");
    let answer = publish_until_answered("porchlight/cmd/command/get_system_status", "not json");
    assert_eq!(answer["code"], "bad_json");
    // A payload far over anything a command can be (64 KiB) is skipped unread, with a
    // warning; the connection stays up and the next command is answered.
    let huge = "x".repeat(100_000);
    broker.publish("porchlight/cmd/command/trigger_doorbell", &huge, false);
    let deadline = Instant::now() + WAIT;
    while !server.stderr().contains("ignored a ") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let answer = publish_until_answered(
        "porchlight/cmd/command/get_system_status",
        r#"{"request_id":"after"}"#,
    );
    assert_eq!(answer["type"], "command_result", "{answer}");
    assert!(
        !server.stderr().contains("lost the connection"),
        "{}",
        server.stderr()
    );
    // Still serving after the bad ones.
    assert_eq!(get(port, "/api/status", None).status, 200);
}

#[test]
fn without_mqtt_commands_command_topics_are_not_read() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/quiet/#"]);
    let server = Server::with_config(&config(&broker, "quiet", ""), &[]);
    sub.wait_for("porchlight/quiet/availability", WAIT);
    broker.publish("porchlight/quiet/command/trigger_doorbell", "{}", false);
    // A marker event after the command: if the command had run, its ring would come first.
    let marker = post_event(server.port(), None, "marker", json!({}));
    let got = sub.collect_until(WAIT, |got| {
        got.iter()
            .any(|m| m.topic == "porchlight/quiet/events/marker")
    });
    assert!(
        !got.iter()
            .any(|m| m.topic.contains("doorbell_pressed") || m.topic.ends_with("/result")),
        "{:?}",
        got.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    assert_eq!(event_ids(&got, "porchlight/quiet"), vec![id_of(&marker)]);
}

#[test]
fn an_unreachable_broker_never_stops_the_server() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let toml = format!("mqtt_url = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"lonely\"\n");
    let mut server = Server::with_config(&toml, &[]);
    let event = post_event(server.port(), None, "still_stored", json!({}));
    let status = mqtt_status(server.port());
    assert_eq!(status["connected"], false);
    assert_eq!(status["backlog"], 1, "{status}");
    assert!(status["last_published_id"].as_u64().unwrap() < id_of(&event));
    let deadline = Instant::now() + WAIT;
    while !server.stderr().contains("MQTT: cannot reach") {
        assert!(Instant::now() < deadline, "no warning: {}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    server.stop();
}

#[test]
fn bad_mqtt_config_exits_2_naming_the_key() {
    for (toml, key) in [
        ("mqtt_url = \"http://broker\"", "mqtt_url"),
        ("mqtt_url = \"mqtt://broker:99999\"", "mqtt_url"),
        ("mqtt_url = \"mqtts://broker\"", "mqtt_url"),
        (
            "mqtt_url = \"mqtt://b\"\ndevice_id = \"Front Door\"",
            "device_id",
        ),
        (
            "mqtt_url = \"mqtt://b\"\nmqtt_prefix = \"a/#\"",
            "mqtt_prefix",
        ),
        (
            "mqtt_url = \"mqtt://b\"\nha_discovery_prefix = \"/ha\"",
            "ha_discovery_prefix",
        ),
        (
            "mqtt_url = \"mqtt://b\"\nha_discovery = \"yes\"",
            "ha_discovery",
        ),
        (
            "mqtt_url = \"mqtt://b\"\nmqtt_commands = 1",
            "mqtt_commands",
        ),
        ("public_url = \"door.local\"", "public_url"),
    ] {
        let dir = TempDir::new("mqtt-bad-config");
        let file = dir.write("bad.toml", toml);
        let finished = run_to_exit(
            &["--check-config", &file.to_string_lossy()],
            Duration::from_secs(10),
        );
        assert_eq!(
            finished.code(),
            Some(2),
            "{toml}: {:?}",
            finished.stderr_lines()
        );
        let lines = finished.stderr_lines();
        assert!(
            lines.iter().any(|l| l.contains(key)),
            "{toml}: the error names {key}: {lines:?}"
        );
    }
}

/// Waits for the bridge's first warning about `broker` and returns it.
fn cannot_reach_line(server: &Server) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = server
            .stderr()
            .lines()
            .find(|l| l.contains("MQTT: cannot reach"))
        {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no warning: {}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
}

/// A broker that refuses porchlight's password, and a peer that is not a broker at all (it
/// hangs up, or answers the CONNECT with something other than CONNACK): each is one warning
/// that says what went wrong (never the password), the bridge stays disconnected and keeps
/// the events for later, and the server serves.
#[test]
fn a_refused_or_wrong_broker_is_named_in_one_warning_and_events_are_kept() {
    let broker = Broker::start();
    let wrong_password = format!(
        "mqtt_url = \"mqtt://{}:not-the-password@127.0.0.1:{}\"\ndevice_id = \"refused\"\n",
        DEVICE_USER.0,
        broker.port()
    );
    let server = Server::with_config(&wrong_password, &[]);
    let line = cannot_reach_line(&server);
    assert!(
        line.contains("the broker refused the connection: ") && line.contains("check mqtt_url"),
        "{line}"
    );
    assert!(
        !server.stderr().contains("not-the-password"),
        "the log shows the password"
    );
    let event = post_event(server.port(), None, "kept_for_later", json!({}));
    let status = mqtt_status(server.port());
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["backlog"], 1, "{status}");
    assert!(status["last_published_id"].as_u64().unwrap() < id_of(&event));
    drop(server);

    // Not a broker: a peer that reads the CONNECT, then hangs up or answers PINGRESP.
    for (answer, said) in [
        (&[][..], "closed the connection before CONNACK"),
        (&[0xD0, 0x00][..], "the broker sent PingResp before CONNACK"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            // The whole CONNECT, so that hanging up is a clean FIN rather than a reset over
            // unread bytes.
            let kind = read_packet(&mut stream).unwrap();
            assert_eq!(kind, 0x10, "the first packet is a CONNECT");
            stream.write_all(answer).unwrap();
        });
        let toml = format!("mqtt_url = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"odd\"\n");
        let server = Server::with_config(&toml, &[]);
        let line = cannot_reach_line(&server);
        assert!(line.contains(said), "{line}");
        peer.join().unwrap();
        assert_eq!(get(server.port(), "/api/status", None).status, 200);
    }
}

/// What Home Assistant's entities read, retained so that one subscribing later sees the state:
/// the motion sensor follows `motion_detected` (ON) and `motion_ended` (OFF); the camera
/// entity gets the newest event picture as soon as the bridge connects, also a picture taken
/// while no broker could be reached.
#[test]
fn motion_state_and_the_latest_picture_are_retained_for_late_subscribers() {
    let data = TempDir::new("mqtt-picture");
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let away = format!("mqtt_url = \"mqtt://127.0.0.1:{unreachable}\"\ndevice_id = \"yard\"\n");
    let server = Server::with_config(&away, &["--data-dir", &data.path_str()]);
    wait_streaming(server.port());
    let rung = trigger(server.port(), None);
    let picture = get(server.port(), rung["snapshot_url"].as_str().unwrap(), None).body;
    assert_eq!(&picture[..2], &[0xFF, 0xD8]);
    drop(server);

    let broker = Broker::start();
    let server = Server::with_config(
        &config(&broker, "yard", ""),
        &["--data-dir", &data.path_str()],
    );
    let port = server.port();
    let sub = broker.subscribe(&["porchlight/yard/motion", "porchlight/yard/snapshot"]);
    let first = sub.wait_for("porchlight/yard/snapshot", WAIT);
    assert!(
        first.payload == picture,
        "not the picture of the ring while away"
    );
    let detected = post_event(port, None, "motion_detected", json!({}));
    assert_eq!(sub.wait_for("porchlight/yard/motion", WAIT).text(), "ON");
    let ended = post_event(port, None, "motion_ended", json!({}));
    assert_eq!(sub.wait_for("porchlight/yard/motion", WAIT).text(), "OFF");

    let retained = broker.retained("porchlight/yard/#");
    let on = |topic: &str| {
        retained
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("nothing retained on {topic}"))
    };
    assert_eq!(on("porchlight/yard/motion").text(), "OFF");
    // The newest event picture: each event posted with a live camera carries one.
    let newest = [&ended, &detected, &rung]
        .into_iter()
        .find_map(|e| e["snapshot_url"].as_str())
        .unwrap();
    let newest = get(port, newest, None).body;
    assert!(
        on("porchlight/yard/snapshot").payload == newest,
        "not the newest picture"
    );
}

/// Reads one whole MQTT packet (type byte, remaining length, rest); returns its type byte.
fn read_packet(stream: &mut std::net::TcpStream) -> std::io::Result<u8> {
    use std::io::Read;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let kind = byte[0];
    let (mut remaining, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte)?;
        remaining |= usize::from(byte[0] & 0x7F) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    stream.read_exact(&mut vec![0u8; remaining])?;
    Ok(kind)
}

/// A broker that accepts the connection and then hangs up at once (an ACL that refuses, or
/// another client taking the same client id) is not reconnected to every second forever:
/// the backoff keeps growing until a connection lasts.
#[test]
fn a_broker_that_accepts_then_hangs_up_is_retried_with_growing_backoff() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if read_packet(&mut stream).ok() != Some(0x10) {
                continue;
            }
            accepted_tx.send(Instant::now()).ok();
            // CONNACK, accepted; then the first packet the bridge sends, and hang up.
            if stream.write_all(&[0x20, 0x02, 0x00, 0x00]).is_ok() {
                read_packet(&mut stream).ok();
            }
        }
    });
    let toml = format!("mqtt_url = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"flaky\"\n");
    let server = Server::with_config(&toml, &[]);
    let connects: Vec<Instant> = (0..4)
        .map(|_| accepted.recv_timeout(WAIT).expect("the bridge reconnects"))
        .collect();
    let gaps: Vec<Duration> = connects.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s, 2 s, 4 s: each gap at least 1.5 times the one before (a little scheduling slack).
    for pair in gaps.windows(2) {
        assert!(
            pair[1] >= pair[0] + pair[0] / 2,
            "reconnects {gaps:?} apart: the backoff does not grow"
        );
    }
    server.stderr_with("ms after it was accepted");
    assert_eq!(get(server.port(), "/api/status", None).status, 200);
}

/// A command topic whose name is tens of KiB long (MQTT allows 65 535 bytes per topic) could
/// not be answered on `<name>/result` (too long a topic): it is ignored with a warning, and
/// the connection and later commands go on. The longest topic that still fits the bridge's
/// 64 KiB packet limit: QoS 0, no payload, a 4-byte fixed header and the topic's 2-byte
/// length, so `/result` takes it past 65 535.
#[test]
fn a_command_with_a_huge_name_is_ignored_and_the_connection_stays() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/longcmd/#"]);
    let server = Server::with_config(&config(&broker, "longcmd", "mqtt_commands = true"), &[]);
    sub.wait_for("porchlight/longcmd/availability", WAIT);
    server.stderr_with("MQTT: connected");
    let command = "porchlight/longcmd/command/";
    let long = format!("{command}{}", "x".repeat(65_536 - 4 - 2 - command.len()));
    assert!(long.len() + "/result".len() > usize::from(u16::MAX));
    let publish_long = || {
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args([
                "-u",
                TEST_USER.0,
                "-P",
                TEST_USER.1,
                "-q",
                "0",
                "-n",
                "-t",
                &long,
            ])
            .output()
            .expect("run mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    };
    let answered = |request_id: &str| -> Value {
        let result = "porchlight/longcmd/command/get_system_status/result";
        for _ in 0..50 {
            publish_long();
            broker.publish(
                "porchlight/longcmd/command/get_system_status",
                &format!(r#"{{"request_id":"{request_id}"}}"#),
                false,
            );
            if let Some(m) = (0..50)
                .filter_map(|_| sub.next(Duration::from_millis(100)))
                .find(|m| m.topic == result && m.json()["request_id"] == request_id)
            {
                return m.json();
            }
        }
        panic!("no answer on {result}: {}", server.stderr());
    };
    assert_eq!(answered("first")["type"], "command_result");
    assert_eq!(answered("second")["type"], "command_result");
    let log = server.stderr_with("-byte name");
    assert!(!log.contains("lost the connection"), "{log}");
    let metrics = get(server.port(), "/metrics", None).text();
    assert!(
        metrics.contains("porchlight_mqtt_connects_total 1\n"),
        "{metrics}"
    );
}

/// A peer that answers the CONNECT with the start of a long packet and then a byte a second
/// (never a whole CONNACK) is given up on within the connect timeout, not one read timeout
/// per byte: the bridge warns and retries instead of hanging in its connect.
#[test]
fn a_peer_trickling_its_first_packet_is_given_up_on() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_packet(&mut stream).unwrap();
        // A PUBLISH header announcing 60 000 bytes, which then come one a second.
        stream.write_all(&[0x30, 0xE0, 0xD4, 0x03]).unwrap();
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done.recv_timeout(Duration::from_secs(1))
        {
            if stream.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let toml = format!("mqtt_url = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"trickle\"\n");
    let server = Server::with_config(&toml, &[]);
    let line = cannot_reach_line(&server);
    assert!(line.contains("no whole CONNACK"), "{line}");
    drop(done_tx);
    peer.join().unwrap();
    assert_eq!(get(server.port(), "/api/status", None).status, 200);
}

/// A broker restarted without persistence forgets every retained message: the bridge
/// announces again on the new connection, so Home Assistant finds the device, its
/// availability `online` and the latest picture as before, with no restart of porchlight.
#[test]
fn a_restarted_broker_gets_availability_discovery_and_the_picture_again() {
    let mut broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/again/availability"]);
    let server = Server::with_config(&config(&broker, "again", ""), &[]);
    sub.wait_for("porchlight/again/availability", WAIT);
    wait_streaming(server.port());
    trigger(server.port(), None);
    let deadline = Instant::now() + WAIT;
    while broker.retained("porchlight/again/snapshot").is_empty() {
        assert!(Instant::now() < deadline, "no picture before the restart");
        thread::sleep(Duration::from_millis(50));
    }
    broker.kill();
    broker.restart();
    let deadline = Instant::now() + WAIT;
    loop {
        let availability = broker.retained("porchlight/again/availability");
        let configs = broker.retained("homeassistant/+/again/+/config");
        let picture = broker.retained("porchlight/again/snapshot");
        if availability.first().is_some_and(|m| m.text() == "online")
            && configs.iter().filter(|m| !m.payload.is_empty()).count() == 6
            && picture.len() == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: availability {:?}, {} configs, {} pictures",
            availability.first().map(Message::text),
            configs.len(),
            picture.len()
        );
        thread::sleep(Duration::from_millis(100));
    }
}
