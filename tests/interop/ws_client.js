// A websocket client for the relay tests (Node `ws`): runs one scenario, prints JSON.
const WebSocket = require("ws");
const [url, scenario, arg] = process.argv.slice(2);

function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url + path, { perMessageDeflate: false, maxPayload: 64 << 20 });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}
function next(ws) {
  return new Promise((resolve) => ws.once("message", (data, isBinary) => resolve({ data, isBinary })));
}

async function basic() {
  const out = {};
  const ws = await open("/ws");
  ws.send("hello");
  let m = await next(ws);
  out.text = m.data.toString(); out.text_is_binary = m.isBinary;
  ws.send(Buffer.from([0, 1, 255]));
  m = await next(ws);
  out.binary = [...m.data]; out.binary_is_binary = m.isBinary;
  // A fragmented message: three frames, the first two without FIN.
  ws.send("frag-1 ", { fin: false }); ws.send("frag-2 ", { fin: false }); ws.send("frag-3", { fin: true });
  out.fragmented = (await next(ws)).data.toString();
  const t = Date.now();
  await new Promise((resolve) => { ws.once("pong", resolve); ws.ping("are you there"); });
  out.pong_ms = Date.now() - t;
  const big = Buffer.alloc(16 << 20, 7);
  ws.send(big);
  m = await next(ws);
  out.big_ok = Buffer.compare(m.data, big) === 0; out.big_len = m.data.length;
  out.close_code = await new Promise((resolve) => { ws.once("close", (code) => resolve(code)); ws.close(1000, "done"); });
  return out;
}

async function serverClose() {
  const ws = await open("/ws");
  const code = new Promise((resolve) => ws.once("close", (c, reason) => resolve({ close_code: c, reason: reason.toString() })));
  ws.send("close:" + (arg || "4002"));
  return code;
}

const scenarios = { basic, server_close: serverClose };
scenarios[scenario]().then((r) => { console.log(JSON.stringify(r)); process.exit(0); },
  (e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); });
