//! The cluster envelope decoders, with and without a cluster secret.
#![no_main]
use libfuzzer_sys::fuzz_target;
use myriad::pubsub::broker::sign::Signer;
use myriad::pubsub::broker::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_frame(data);
    let _ = wire::decode_control(&Signer::new(None), data);
    let signed = Signer::new(Some("a-cluster-secret-of-at-least-32-bytes"));
    let _ = wire::decode_control(&signed, data);
    if let Ok(msg) = wire::decode_frame(data) {
        let _ = wire::verify_publication(&signed, "room:a", &msg);
        let _ = wire::verify_history(
            &signed,
            &msg.origin,
            "chat:a",
            msg.history_meta(),
            msg.frame,
            msg.sig,
        );
    }
});
