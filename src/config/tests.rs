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

#[test]
fn byte_sizes_and_enum_spellings_work_in_every_layer() {
    // The file: units, and enum names in any case with `-` or `_`.
    let c = Config::from_toml(
        "mailbox_max_bytes = \"8MiB\"\nmax_message_size = \"128 KiB\"\nmax_frame_size = 65536\n\
         slow_consumer = \"DROP-OLDEST\"\njwt_algorithm = \"hs256\"\nbroker = \"Local\"\n\
         memory_high_watermark = \"12GiB\"\n[[namespaces]]\npattern = \"e:*\"\npublish = \"SERVER\"\n\
         presence = true\npresence_mode = \"Count\"\n[hooks]\nmax_response_bytes = \"32KiB\"\n",
    )
    .unwrap();
    assert_eq!(c.mailbox_max_bytes, 8 << 20);
    assert_eq!(c.max_message_size, 128 << 10);
    assert_eq!(c.slow_consumer, SlowConsumerPolicy::DropOldest);
    assert_eq!(c.jwt_algorithm, JwtAlgorithm::HS256);
    assert_eq!(
        c.memory_high_watermark,
        units::MemoryWatermark::Bytes(12 << 30)
    );
    assert_eq!(c.namespaces[0].publish, Publish::Server);
    assert_eq!(c.namespaces[0].presence_mode, PresenceMode::Count);
    assert_eq!(c.hooks.max_response_bytes, 32 << 10);
    let err = Config::from_toml("mailbox_max_bytes = \"8 parsecs\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mailbox_max_bytes") && err.contains("64KiB"),
        "{err}"
    );
    // The environment and the flags take the same spellings.
    figment::Jail::expect_with(|jail| {
        jail.set_env("MYRIAD_MAILBOX_MAX_BYTES", "64KiB");
        jail.set_env("MYRIAD_SLOW_CONSUMER", "Drop_Oldest");
        let c = Config::load(None, &ServeFlags::default()).map_err(|e| e.to_string())?;
        assert_eq!(c.mailbox_max_bytes, 64 << 10);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::DropOldest);
        Ok(())
    });
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        flags: ServeFlags,
    }
    let cli = <Cli as clap::Parser>::try_parse_from([
        "myriad",
        "--mailbox-max-bytes",
        "1MiB",
        "--slow-consumer",
        "DROP_OLDEST",
        "--jwt-algorithm",
        "hs256",
        "--broker",
        "NATS",
    ])
    .unwrap();
    assert_eq!(cli.flags.mailbox_max_bytes, Some(1 << 20));
    assert_eq!(
        cli.flags.slow_consumer,
        Some(SlowConsumerPolicy::DropOldest)
    );
    assert_eq!(cli.flags.jwt_algorithm, Some(JwtAlgorithm::HS256));
    assert_eq!(cli.flags.broker, Some(BrokerKind::Nats));
    assert!(
        <Cli as clap::Parser>::try_parse_from(["myriad", "--mailbox-max-bytes", "lots"]).is_err()
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let c = Config {
        mailbox_capacity: 0,
        max_seconds: 0,
        max_topic_length: 0,
        ..Config::default()
    };
    let problems: Vec<String> = c.problems().iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    for key in ["mailbox_capacity", "max_seconds", "max_topic_length"] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key}: {problems:?}"
        );
    }
    let err = c.validate().unwrap_err();
    assert_eq!(err.each().len(), 3);
    assert!(err.to_string().starts_with("3 problems"), "{err}");
}

#[test]
fn print_names_each_value_s_source_and_redacts_secrets() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "p.toml",
            "idle_timeout = \"5s\"\napi_keys = [\"k-file-secret\"]\n",
        )?;
        jail.set_env("MYRIAD_MAX_RESTARTS", "8");
        jail.set_env("MYRIAD_CLUSTER_SECRET", "c".repeat(40));
        let flags = ServeFlags {
            mailbox_capacity: Some(11),
            broker: Some(BrokerKind::Redis),
            broker_url: Some("redis://:hunter2@127.0.0.1:6379".into()),
            ..ServeFlags::default()
        };
        let text = Config::explain(Some(Path::new("p.toml")), &flags).map_err(|e| e.to_string())?;
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line("idle_timeout").ends_with("# file p.toml"), "{text}");
        assert!(line("max_restarts").ends_with("# env MYRIAD_MAX_RESTARTS"));
        assert!(line("mailbox_capacity").ends_with("# flag --mailbox-capacity"));
        assert!(line("drain_timeout").ends_with("# default"));
        assert!(line("cluster_secret").contains("<redacted>"), "{text}");
        assert!(line("api_keys").contains("<redacted>"), "{text}");
        assert!(line("broker_url").contains("***@127.0.0.1"), "{text}");
        for secret in ["k-file-secret", "hunter2", "cccccccc"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("# jwt_secret is not set"), "{text}");
        assert!(text.contains("[[namespaces]]"), "{text}");
        Ok(())
    });
}
