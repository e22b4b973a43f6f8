//! The V2 frame decoder and every reader of server frames: no input panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use myriad::protocol::{self, limits, SlotKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = protocol::decode(text);
        let _ = protocol::check_broadcast(text, "room:a", SlotKind::Null);
        let _ = protocol::check_broadcast(text, "room:a", SlotKind::History);
        let _ = protocol::history_position(text);
        let _ = protocol::broadcast_parts(text);
        let _ = limits::json_deeper_than(text, 64);
    }
});
