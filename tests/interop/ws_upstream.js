// A websocket upstream for the relay tests (Node `ws`): echoes every message, keeping its type.
// "close:<code>" closes with that code.
const { WebSocketServer } = require("ws");
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]), perMessageDeflate: false, maxPayload: 64 << 20 });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text && text.startsWith("close:")) return ws.close(Number(text.slice(6)), "bye");
    ws.send(data, { binary: isBinary });
  });
});
