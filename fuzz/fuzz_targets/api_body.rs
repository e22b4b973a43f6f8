//! The `/api` body parsers: arbitrary bytes as a broadcast and a disconnect
//! body. No panic, and whatever is accepted holds the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use myriad::config::Config;
use myriad::server::api_body;

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    if let Ok(b) = api_body::broadcast(data, &config) {
        assert!(b.topic.len() <= config.max_topic_length);
        assert!(b.event.len() <= config.max_event_length);
        assert!(b.payload.starts_with('{'));
    }
    let _ = api_body::disconnect(data);
});
