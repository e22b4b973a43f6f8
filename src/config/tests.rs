use super::*;

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn toml_overrides_defaults() {
    let c = Config::from_toml(
        "idle_timeout = \"5s\"\nmailbox_capacity = 8\nslow_consumer = \"drop_oldest\"",
    )
    .unwrap();
    assert_eq!(c.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.mailbox_capacity, 8);
    assert_eq!(c.slow_consumer, SlowConsumerPolicy::DropOldest);
    assert_eq!(c.max_restarts, 3);
}

#[test]
fn namespaces_from_toml() {
    let c = Config::from_toml(
        "[[namespaces]]\npattern = \"events:*\"\npublish = \"server\"\nhistory_size = 10\nhistory_ttl = \"30s\"\n",
    )
    .unwrap();
    assert_eq!(c.namespaces.len(), 1);
    assert_eq!(c.namespaces[0].publish, Publish::Server);
    assert_eq!(c.namespaces[0].history_size, 10);
    assert!(!c.namespaces[0].presence);
    let err = Config::from_toml("[[namespaces]]\npattern = \"a*b\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("namespaces"), "{err}");
    let err = Config::from_toml("[[namespaces]]\npattern = \"a:*\"\npresense = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("presense"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("idle_timeot = \"5s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_timeot"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let err = Config::from_toml("idle_timeout = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_timeout"), "{err}");
    let err = Config::from_toml("mailbox_capacity = 0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mailbox_capacity"), "{err}");
    let err = Config::from_toml("slow_consumer = \"maybe\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("slow_consumer"), "{err}");
}

#[test]
fn the_replay_window_is_bounded_both_ways() {
    for bad in ["0s", "500ms", "2h"] {
        let err = Config::from_toml(&format!("cluster_replay_window = \"{bad}\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster_replay_window"), "{bad}: {err}");
    }
    let ok = Config::from_toml("cluster_replay_window = \"5m\"").unwrap();
    assert_eq!(
        ok.cluster_replay_window,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn layers_apply_in_order() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "m.toml",
            "idle_timeout = \"5s\"\nmax_restarts = 7\nmailbox_capacity = 9",
        )?;
        jail.set_env("MYRIAD_MAX_RESTARTS", "8");
        jail.set_env("MYRIAD_MAILBOX_CAPACITY", "10");
        let flags = ServeFlags {
            mailbox_capacity: Some(11),
            ..ServeFlags::default()
        };
        let c = Config::load(Some(Path::new("m.toml")), &flags).map_err(|e| e.to_string())?;
        assert_eq!(c.idle_timeout, Duration::from_secs(5)); // file
        assert_eq!(c.max_restarts, 8); // env over file
        assert_eq!(c.mailbox_capacity, 11); // flag over env
        assert_eq!(c.drain_timeout, Duration::from_secs(10)); // default
        Ok(())
    });
}

#[test]
fn an_unknown_env_key_is_ignored_and_warned_about_with_the_closest_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("MYRIAD_IDLE_TIMEOUTT", "5s");
        jail.set_env("MYRIAD_BIN", "/usr/local/bin/myriad");
        let c = Config::load(None, &ServeFlags::default()).unwrap();
        assert_eq!(c.idle_timeout, Config::default().idle_timeout);
        let warnings = super::keys::unknown_env(std::env::vars());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("MYRIAD_IDLE_TIMEOUTT") && w.contains("MYRIAD_IDLE_TIMEOUT?")),
            "{warnings:?}"
        );
        Ok(())
    });
}

#[test]
fn broker_urls_are_quoted_without_their_credentials() {
    assert_eq!(redacted_url("nats://u:p@host:4222"), "nats://***@host:4222");
    assert_eq!(
        redacted_url("redis://:secret@host:6379/0"),
        "redis://***@host:6379/0"
    );
    assert_eq!(redacted_url("redis://host:6379"), "redis://host:6379");
    let config = Config {
        broker: BrokerKind::Nats,
        broker_url: Some("redis://:hunter2@host".into()),
        ..Config::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(
        !err.contains("hunter2") && err.contains("***@host"),
        "{err}"
    );
}
