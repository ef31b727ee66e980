// Drives socket.io-client sockets for the signal node's integration tests: one JSON
// command per stdin line, one JSON report per stdout line. Several clients live in one
// process (a test with 40 clients starts one Node.js, not 40).
//
// Commands:
//   {"op":"connect","client":C,"url":U,"namespace":"/","transports":["websocket"],"upgrade":true,"auth":{...},
//    "withCredentials":false,   (true: keep cookies, as a browser does behind a sticky load balancer)
//    "reconnection":false}      (true: reconnect by itself, quickly, as deployed clients do)
//   {"op":"emit","client":C,"event":E,"args":[...],"ack":true,"seq":N}
//   {"op":"disconnect","client":C}     a Socket.IO DISCONNECT, then the transport closes (a goodbye)
//   {"op":"close_engine","client":C}   closes the Engine.IO connection as the client library does (a goodbye:
//                                      a `1` close packet over polling, a close frame over WebSocket)
//   {"op":"drop","client":C,"url":U}   loses the transport without a word (a lost connection: no close
//                                      frame, no close packet); a reconnecting client comes back at U
//   {"op":"move","client":C,"url":U}   a reconnecting client's next attempt goes to U
// Reports:
//   {"client":C,"connected":ID,"transport":T,"recovered":B}   on every connect (ID is socket.id;
//                                                             B is socket.recovered)
//   {"client":C,"upgraded":T}                     when the transport changes
//   {"client":C,"event":E,"args":[...]}           for every event the server sent
//   {"client":C,"ack":N,"args":[...]}             for an acknowledged emit
//   {"client":C,"disconnected":REASON}
//   {"client":C,"connect_error":MESSAGE}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();
const report = (line) => process.stdout.write(JSON.stringify(line) + "\n");

function connect({
  client,
  url,
  namespace = "/",
  transports = ["websocket"],
  upgrade = true,
  auth,
  withCredentials = false,
  reconnection = false,
}) {
  const socket = io(url + (namespace === "/" ? "" : namespace), {
    transports,
    upgrade,
    auth,
    withCredentials,
    reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    forceNew: true,
    timeout: 10000,
  });
  sockets.set(client, socket);
  socket.io.on("open", () => socket.io.engine.on("upgrade", (t) => report({ client, upgraded: t.name })));
  socket.on("connect", () => {
    report({ client, connected: socket.id, transport: socket.io.engine.transport.name, recovered: socket.recovered });
  });
  socket.on("connect_error", (err) => report({ client, connect_error: err.message }));
  socket.on("disconnect", (reason) => report({ client, disconnected: reason }));
  socket.onAny((event, ...args) => report({ client, event, args }));
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  const socket = sockets.get(cmd.client);
  switch (cmd.op) {
    case "connect":
      connect(cmd);
      break;
    case "emit":
      if (cmd.ack) {
        socket.emit(cmd.event, ...cmd.args, (...args) => report({ client: cmd.client, ack: cmd.seq, args }));
      } else {
        socket.emit(cmd.event, ...cmd.args);
      }
      break;
    case "disconnect":
      socket.disconnect();
      break;
    case "close_engine":
      socket.io.engine.close();
      break;
    case "drop": {
      // The manager reconnects to its uri. The transport goes as a lost network takes it:
      // a WebSocket's TCP connection is destroyed (no close frame); polling stops without
      // its close packet.
      socket.io.uri = cmd.url;
      const transport = socket.io.engine.transport;
      if (transport.name === "websocket" && typeof transport.ws?.terminate === "function") {
        transport.ws.terminate();
      } else {
        transport.doClose = () => {};
        socket.io.engine.close();
      }
      break;
    }
    case "move":
      socket.io.uri = cmd.url;
      break;
    default:
      report({ error: `unknown op ${cmd.op}` });
  }
}
for (const socket of sockets.values()) socket.disconnect();
