// An http-mode function on Express, as the node templates run it.
// Usage: node express_app.js PORT. Every route reports what Express saw.
const express = require("express");
const zlib = require("zlib");

const app = express();

function rawBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", () => resolve(Buffer.concat(parts)));
    req.on("error", reject);
  });
}

app.all("/echo", async (req, res) => {
  const body = await rawBody(req);
  res.json({
    framework: "express",
    method: req.method,
    path: req.path,
    query: req.originalUrl.includes("?") ? req.originalUrl.split("?")[1] : "",
    content_length: req.headers["content-length"] ?? null,
    transfer_encoding: req.headers["transfer-encoding"] ?? null,
    framework_length: req.headers["content-length"] === undefined ? null : Number(req.headers["content-length"]),
    body_len: body.length,
    body_crc: zlib.crc32 ? zlib.crc32(body) : null,
    custom: req.headers["x-custom"] ?? null,
    expect: req.headers["expect"] ?? null,
  });
});

app.get("/cookies", (req, res) => {
  res.append("Set-Cookie", ["a=a-value; Path=/", "b=b-value; Path=/", "c=c-value; Path=/"]);
  res.type("text/plain").send("cookies\n");
});

app.get("/stream", async (req, res) => {
  res.type("text/plain");
  for (let i = 0; i < 5; i++) {
    res.write(`part-${i}\n`);
    await new Promise((r) => setTimeout(r, 300));
  }
  res.end();
});

app.get("/big", (req, res) => {
  const size = Number(req.query.size ?? 5 * 1000 * 1000);
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = i % 256;
  res.type("application/octet-stream").send(out);
});

app.listen(Number(process.argv[2]), "127.0.0.1");
