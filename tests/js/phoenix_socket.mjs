// A phoenix.js socket over `ws` that reconnects and rejoins fast (tests wait
// for it), remembered in `sockets` so the test file can disconnect them all.
import { Socket } from "phoenix";
import WebSocket from "ws";

export function connectSocket(url, sockets) {
  const socket = new Socket(url, { transport: WebSocket, rejoinAfterMs: () => 50, reconnectAfterMs: () => 50 });
  sockets.push(socket);
  socket.connect();
  return socket;
}
