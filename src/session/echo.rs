//! `/ws/echo`: every data message goes back unchanged. Uses the same session
//! loop and limits as Phoenix sessions; for conformance suites (Autobahn) and
//! cross-server benchmarks.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::FrameHandler;
use crate::protocol::CloseReason;
use crate::pubsub::mailbox::Outbound;

#[derive(Debug, Default)]
pub struct EchoHandler;

impl FrameHandler for EchoHandler {
    type Completion = std::convert::Infallible;

    fn on_text(&mut self, text: &Utf8Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        out.push(Outbound::Text(text.clone()));
        Ok(())
    }

    fn on_binary(&mut self, data: Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        out.push(Outbound::Binary(data));
        Ok(())
    }
}
